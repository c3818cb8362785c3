"""Eight psycopg writers on default connections (not autocommit: psycopg sends BEGIN before the
first statement; automatic prepared statements after five executions, and the DEALLOCATE ALL it
sends when it drops them) doing BEGIN; SELECT; INSERT x5; COMMIT or ROLLBACK against `weft
serve`, then pandas reading the result. Every committed row must be there, no rolled-back one.
Run by tests/python_clients.rs with WEFT_PG set; exits non-zero on the first failed check.
"""
import os
import random
import threading

import pandas
import psycopg

dsn = os.environ["WEFT_PG"]
WRITERS, TRANSACTIONS, ROWS = 8, 12, 5

with psycopg.connect(dsn, autocommit=True) as conn:
    conn.execute("CREATE TABLE IF NOT EXISTS w (id BIGINT PRIMARY KEY, writer BIGINT, note TEXT)")

committed = []
failures = []
lock = threading.Lock()


def writer(number):
    rng = random.Random(number)
    try:
        with psycopg.connect(dsn) as conn:
            for transaction in range(TRANSACTIONS):
                conn.execute("SELECT count(*) FROM w WHERE writer = %s", (number,)).fetchone()
                ids = [(number * 1000 + transaction) * 10 + row for row in range(ROWS)]
                for id in ids:
                    conn.execute("INSERT INTO w VALUES (%s, %s, %s)", (id, number, f"it's row {id}"))
                if rng.random() < 0.3:
                    conn.rollback()
                else:
                    conn.commit()
                    with lock:
                        committed.extend(ids)
                if transaction % 5 == 4:
                    # What psycopg does when it resets its prepared statements.
                    conn.execute("DEALLOCATE ALL")
                    conn.commit()
    except Exception as error:  # noqa: BLE001 - reported below
        with lock:
            failures.append(f"writer {number}: {error!r}")


threads = [threading.Thread(target=writer, args=(number,)) for number in range(WRITERS)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
assert not failures, failures

with psycopg.connect(dsn, autocommit=True) as conn:
    frame = pandas.read_sql("SELECT id, writer, note FROM w ORDER BY id", conn)
assert sorted(frame["id"].tolist()) == sorted(committed), (len(frame), len(committed))
assert all(note == f"it's row {id}" for id, note in zip(frame["id"], frame["note"]))
print(f"writers checks passed: {len(committed)} rows committed by {WRITERS} writers")
