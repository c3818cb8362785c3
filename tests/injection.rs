//! The injection corpus: hostile text bound as `$n` parameters (prepared and unprepared
//! statements of tokio-postgres) and sent as correctly quoted literals in simple queries must be
//! stored and read back byte for byte, and no other statement may run. psycopg's paths (server-
//! and client-side binding) run the same corpus in tests/clients/injection.py.

mod common;

use common::Server;

/// Texts that broke, or could break, a server that splices values into SQL text.
fn corpus() -> Vec<String> {
    let mut texts: Vec<String> = [
        "plain",
        "it's",
        "''",
        "'",
        "\\",
        "\\'",
        "back\\slash\\",
        "pg_get_expr(",
        "); DELETE FROM notes; -- pg_catalog",
        "'); DELETE FROM notes; -- pg_catalog",
        "$1",
        "$2 $1 $3",
        "x::oid",
        "x::pg_catalog.regclass",
        "OPERATOR(pg_catalog.~)",
        "COLLATE pg_catalog.default",
        "SELECT * FROM pg_catalog.pg_policy",
        "from pg_catalog.x",
        "pg_catalog.array_to_string(c.reloptions, ', ')",
        "; DROP TABLE notes; --",
        "/* comment */ --",
        "\"quoted identifier\"",
        "E'\\x41'",
        "$$dollar$$",
        "line\nbreak\r\ttab",
        "ünïcødé ✓ 日本語 🦀",
        "",
    ]
    .iter()
    .map(|text| text.to_string())
    .collect();
    texts.push("'; DELETE FROM notes; --".repeat(1 << 10));
    texts.push("x".repeat(1 << 20));
    texts
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn hostile_parameters_round_trip_and_run_nothing_else() {
    let server = Server::start("injection", &[]);
    runtime().block_on(async {
        let client = server.connect().await;
        client.batch_execute("CREATE TABLE notes (id BIGINT PRIMARY KEY, body TEXT)").await.unwrap();
        client.batch_execute("INSERT INTO notes VALUES (-1, 'sentinel a'), (-2, 'sentinel b')").await.unwrap();
        let count = || async {
            let row = client.query_one("SELECT count(*) FROM notes", &[]).await.unwrap();
            row.get::<_, i64>(0)
        };
        let mut expected = 2;
        let prepared_insert = client.prepare("INSERT INTO notes VALUES ($1, $2)").await.unwrap();
        let prepared_read = client.prepare("SELECT body FROM notes WHERE id = $1").await.unwrap();
        for (index, text) in corpus().iter().enumerate() {
            let what = format!("case {index}: {:?}", &text[..text.len().min(60)]);
            let id = index as i64 * 10;
            // A prepared statement, and one parsed afresh for each execution.
            client.execute(&prepared_insert, &[&id, text]).await.unwrap_or_else(|error| panic!("{what}: {error}"));
            client
                .execute("INSERT INTO notes VALUES ($1, $2)", &[&(id + 1), text])
                .await
                .unwrap_or_else(|error| panic!("{what}: {error}"));
            // A simple query with the value quoted as PostgreSQL quotes literals.
            let literal = text.replace('\'', "''");
            client
                .simple_query(&format!("INSERT INTO notes VALUES ({}, '{literal}')", id + 2))
                .await
                .unwrap_or_else(|error| panic!("{what}: {error}"));
            expected += 3;
            assert_eq!(count().await, expected, "{what}: no other statement ran");
            for offset in 0..3 {
                let row = client.query_one(&prepared_read, &[&(id + offset)]).await.unwrap();
                assert_eq!(row.get::<_, Option<String>>(0).as_deref(), Some(text.as_str()), "{what} (row {offset})");
            }
            // The values as predicates: they match exactly the rows that hold them.
            let matched = client
                .query_one("SELECT count(*) FROM notes WHERE body = $1 AND id >= 0", &[text])
                .await
                .unwrap_or_else(|error| panic!("{what}: {error}"));
            assert!(matched.get::<_, i64>(0) >= 3, "{what}");
        }
        // The reported attack: two parameters that, spliced and rewritten as text, became a
        // second statement deleting every row.
        let before = count().await;
        let row = client
            .query_one(
                "SELECT count(*) FROM notes WHERE body IN (lower($1), $2)",
                &[&"pg_get_expr(", &"); DELETE FROM notes; -- pg_catalog"],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, i64>(0), 6, "the rows holding those two texts (three each)");
        client
            .execute(
                "UPDATE notes SET body = lower($1) WHERE body = $2",
                &[&"pg_get_expr(", &"'); DELETE FROM notes; -- pg_catalog"],
            )
            .await
            .unwrap();
        assert_eq!(count().await, before, "the UPDATE deleted nothing");
        let sentinel = client.query_one("SELECT body FROM notes WHERE id = -1", &[]).await.unwrap();
        assert_eq!(sentinel.get::<_, String>(0), "sentinel a");
        // Statements weft cannot run are errors, never silent successes.
        let error = client.batch_execute("SELECT * FROM no_such_relation").await.unwrap_err();
        assert!(error.to_string().contains("no_such_relation") || error.as_db_error().is_some(), "{error}");
    });
}
