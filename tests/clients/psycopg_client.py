"""psycopg 3 against `weft serve`: connection start-up, server-side parameters (extended
protocol, text and binary), transactions as psycopg drives them, errors with SQLSTATE,
SUBSCRIBE streamed row by row and ended by a cancel. Run by tests/python_clients.rs with
WEFT_PG set; exits non-zero on the first failed check.
"""
import os
import threading
import time

import psycopg
from psycopg import errors

dsn = os.environ["WEFT_PG"]

with psycopg.connect(dsn, autocommit=True) as conn:
    conn.execute("CREATE TABLE accounts (id BIGINT PRIMARY KEY, owner TEXT, balance DOUBLE, active BOOLEAN)")
    conn.execute(
        "CREATE MATERIALIZED VIEW by_owner AS "
        "SELECT owner, sum(balance) AS total, count(*) AS n FROM accounts WHERE active GROUP BY owner"
    )
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO accounts VALUES (%s, %s, %s, %s)",
            [(i, ["ada", "bob", "cy"][i % 3], float(i), i % 4 != 0) for i in range(1, 31)],
        )
    for binary in (False, True):
        rows = conn.execute(
            "SELECT owner, total, n FROM by_owner WHERE total > %s ORDER BY owner", (0.5,), prepare=True, binary=binary
        ).fetchall()
        expected = {}
        for i in range(1, 31):
            if i % 4 != 0:
                owner = ["ada", "bob", "cy"][i % 3]
                total, n = expected.get(owner, (0.0, 0))
                expected[owner] = (total + i, n + 1)
        assert rows == [(owner, *expected[owner]) for owner in sorted(expected)], rows
    assert conn.execute("SELECT owner FROM accounts WHERE id = %s", (7,)).fetchone() == ("bob",)
    assert conn.execute("SELECT %s::TEXT AS quoted", ("it's",)).fetchone() == ("it's",)

    # Errors carry SQLSTATE and leave the connection usable.
    try:
        conn.execute("INSERT INTO accounts VALUES (1, 'dup', 0, true)")
        raise AssertionError("duplicate key accepted")
    except errors.UniqueViolation:
        pass
    try:
        conn.execute("SELECT * FROM no_such_table")
        raise AssertionError("missing table accepted")
    except errors.UndefinedTable:
        pass
    assert conn.execute("SELECT count(*) FROM accounts").fetchone() == (30,)

# psycopg's default: a transaction opened implicitly, ended by commit() or rollback().
with psycopg.connect(dsn) as conn:
    conn.execute("INSERT INTO accounts VALUES (100, 'dee', 5, true)")
    conn.rollback()
    conn.execute("INSERT INTO accounts VALUES (101, 'dee', 7, true)")
    conn.commit()
    assert conn.execute("SELECT total FROM by_owner WHERE owner = 'dee'").fetchone() == (7.0,)
    conn.commit()

# SUBSCRIBE: the snapshot, then each change as it commits, until cancelled.
subscriber = psycopg.connect(dsn, autocommit=True)
seen = []
failure = []


def listen():
    try:
        with subscriber.cursor() as cur:
            for row in cur.stream("SUBSCRIBE TO by_owner"):
                seen.append(row)
    except errors.QueryCanceled:
        pass
    except Exception as error:  # noqa: BLE001 - reported by the main thread
        failure.append(error)


thread = threading.Thread(target=listen)
thread.start()
deadline = time.time() + 10
while len(seen) < 4 and time.time() < deadline:
    time.sleep(0.02)
assert len(seen) == 4, seen
with psycopg.connect(dsn, autocommit=True) as writer:
    writer.execute("UPDATE accounts SET balance = balance + 1 WHERE id = 101")
deadline = time.time() + 10
while len(seen) < 6 and time.time() < deadline:
    time.sleep(0.02)
changes = sorted(row[1:] for row in seen[4:])
assert changes == [(-1, "dee", 7.0, 1), (1, "dee", 8.0, 1)], seen
subscriber.cancel_safe()
thread.join(10)
assert not thread.is_alive() and not failure, failure
print("psycopg client checks passed")
