//! Python clients against `weft serve`: psycopg 3 (tests/clients/psycopg_client.py, writers.py,
//! injection.py) and the provenance notebook (notebooks/provenance.ipynb), executed headless
//! with nbclient. They need the packages of notebooks/requirements.txt (`.ci/run` installs them).

mod common;

use common::Server;
use std::process::Command;

fn python(script: &str, args: &[&str], server: &Server) -> (bool, String) {
    let root = env!("CARGO_MANIFEST_DIR");
    let chart = server.directory.join("provenance.png");
    let output = Command::new("python3")
        .current_dir(root)
        .arg(script)
        .args(args)
        .env("WEFT_PG", server.dsn())
        .env("WEFT_REPO", root)
        .env("WEFT_NOTEBOOK_CHART", &chart)
        .output()
        .expect("python3 runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    if text.contains("ModuleNotFoundError") {
        panic!("missing Python packages: pip install -r notebooks/requirements.txt\n{text}");
    }
    (output.status.success(), text)
}

#[test]
fn psycopg_client_works_against_the_server() {
    let server = Server::start("psycopg", &[]);
    let (ok, output) = python("tests/clients/psycopg_client.py", &[], &server);
    assert!(ok, "{output}");
    assert!(output.contains("psycopg client checks passed"), "{output}");
}

#[test]
fn psycopg_writers_in_transactions_never_block_or_lose_a_commit() {
    let server = Server::start("writers", &[]);
    let (ok, output) = python("tests/clients/writers.py", &[], &server);
    assert!(ok, "{output}");
    assert!(output.contains("writers checks passed"), "{output}");
}

#[test]
fn psycopg_binds_hostile_parameters_as_values() {
    let server = Server::start("injection-psycopg", &[]);
    let (ok, output) = python("tests/clients/injection.py", &[], &server);
    assert!(ok, "{output}");
    assert!(output.contains("injection checks passed"), "{output}");
}

#[test]
fn provenance_notebook_executes_without_errors() {
    // The notebook creates functions from the repository's example modules.
    let server = Server::start("notebook", &["--files-root", env!("CARGO_MANIFEST_DIR")]);
    let (ok, output) = python("notebooks/run_notebook.py", &["notebooks/provenance.ipynb"], &server);
    assert!(ok, "{output}");
    assert!(server.directory.join("provenance.png").exists(), "the notebook drew its chart");
}
