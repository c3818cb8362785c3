"""The injection corpus through psycopg against `weft serve`: hostile text bound as parameters
with server-side binding (prepared with prepare=True, and unprepared) and with client-side
binding (psycopg's ClientCursor quotes the values into the query text itself). Every value must
be stored and read back byte for byte, and no other statement may run. The same corpus runs
through tokio-postgres in tests/injection.rs. Run by tests/python_clients.rs with WEFT_PG set;
exits non-zero on the first failed check.
"""
import os

import psycopg

dsn = os.environ["WEFT_PG"]

CORPUS = [
    "plain",
    "it's",
    "''",
    "'",
    "\\",
    "\\'",
    "back\\slash\\",
    "pg_get_expr(",
    "); DELETE FROM pynotes; -- pg_catalog",
    "'); DELETE FROM pynotes; -- pg_catalog",
    "$1",
    "$2 $1 $3",
    "%s %(name)s",
    "x::oid",
    "x::pg_catalog.regclass",
    "OPERATOR(pg_catalog.~)",
    "COLLATE pg_catalog.default",
    "SELECT * FROM pg_catalog.pg_policy",
    "from pg_catalog.x",
    "pg_catalog.array_to_string(c.reloptions, ', ')",
    "; DROP TABLE pynotes; --",
    "/* comment */ --",
    '"quoted identifier"',
    "E'\\x41'",
    "$$dollar$$",
    "line\nbreak\r\ttab",
    "ünïcødé ✓ 日本語 🦀",
    "",
    "'; DELETE FROM pynotes; --" * 1024,
    "x" * (1 << 20),
]


def check(condition, message):
    if not condition:
        raise SystemExit(f"FAILED: {message}")


with psycopg.connect(dsn, autocommit=True) as conn:
    conn.execute("CREATE TABLE pynotes (id BIGINT PRIMARY KEY, body TEXT)")
    conn.execute("INSERT INTO pynotes VALUES (-1, 'sentinel')")
    client = psycopg.ClientCursor(conn)
    expected = 1
    for index, text in enumerate(CORPUS):
        what = f"case {index}: {text[:60]!r}"
        base = index * 10
        conn.execute("INSERT INTO pynotes VALUES (%s, %s)", (base, text), prepare=True)
        conn.execute("INSERT INTO pynotes VALUES (%s, %s)", (base + 1, text), prepare=False)
        client.execute("INSERT INTO pynotes VALUES (%s, %s)", (base + 2, text))
        expected += 3
        count = conn.execute("SELECT count(*) FROM pynotes").fetchone()[0]
        check(count == expected, f"{what}: {count} rows, expected {expected} (another statement ran)")
        for offset in range(3):
            (body,) = conn.execute("SELECT body FROM pynotes WHERE id = %s", (base + offset,)).fetchone()
            check(body == text, f"{what}: row {offset} reads back {body[:60]!r}")
        client.execute("SELECT count(*) FROM pynotes WHERE body = %s AND id >= 0", (text,))
        check(client.fetchone()[0] >= 3, f"{what}: the value as a predicate")
    # The reported attack, both ways of binding.
    for cursor in (conn.cursor(), client):
        cursor.execute(
            "SELECT count(*) FROM pynotes WHERE body IN (lower(%s), %s)",
            ("pg_get_expr(", "); DELETE FROM pynotes; -- pg_catalog"),
        )
        check(cursor.fetchone()[0] == 6, "the rows holding those two texts (three each)")
    count = conn.execute("SELECT count(*) FROM pynotes").fetchone()[0]
    check(count == expected, "the attack deleted nothing")
    check(conn.execute("SELECT body FROM pynotes WHERE id = -1").fetchone()[0] == "sentinel", "sentinel intact")

print(f"injection checks passed: {len(CORPUS)} cases, 3 bindings each")
