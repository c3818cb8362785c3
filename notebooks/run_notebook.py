"""Executes a notebook headless with nbclient and fails if any cell errors.

Usage: python3 notebooks/run_notebook.py notebooks/provenance.ipynb
(with WEFT_PG pointing at a running `weft serve`). Used by tests/notebooks.rs.
"""
import sys

import nbclient
import nbformat


def main(path: str) -> None:
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": "notebooks"}})
    client.execute()
    print(f"{path}: {len(notebook.cells)} cells executed without errors")


if __name__ == "__main__":
    main(sys.argv[1])
