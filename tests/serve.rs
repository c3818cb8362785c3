//! `weft serve` driven by real clients: the Rust `tokio-postgres` driver (simple and extended
//! protocols, parameters, binary results, errors, cancel, SUBSCRIBE), Debian's `psql` (meta
//! commands), and plain HTTP. Each test starts the real binary on free loopback ports.

mod common;

use common::Server;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};
use tokio_postgres::{NoTls, SimpleQueryMessage};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

const SCHEMA: &str = "CREATE TABLE orders (id BIGINT PRIMARY KEY, customer TEXT, amount DOUBLE);
    CREATE MATERIALIZED VIEW totals AS SELECT customer, sum(amount) AS total, count(*) AS n FROM orders GROUP BY customer";

fn rows_of(messages: &[SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
    messages
        .iter()
        .filter_map(|message| match message {
            SimpleQueryMessage::Row(row) => {
                Some((0..row.len()).map(|index| row.get(index).map(str::to_string)).collect())
            }
            _ => None,
        })
        .collect()
}

#[test]
fn simple_and_extended_protocols_with_parameters_and_every_type() {
    let server = Server::start("protocols", &[]);
    runtime().block_on(async {
        let client = server.connect().await;
        client.batch_execute(SCHEMA).await.unwrap();
        client.simple_query("INSERT INTO orders VALUES (1, 'ada', 10.0), (2, 'bob', 5.5)").await.unwrap();
        let messages = client.simple_query("SELECT customer, total, n FROM totals ORDER BY customer").await.unwrap();
        assert_eq!(
            rows_of(&messages),
            vec![
                vec![Some("ada".into()), Some("10".into()), Some("1".into())],
                vec![Some("bob".into()), Some("5.5".into()), Some("1".into())]
            ]
        );

        // Server-side parameters, typed by weft: an INSERT's by its columns, a query's by DataFusion.
        let insert = client.prepare("INSERT INTO orders VALUES ($1, $2, $3)").await.unwrap();
        assert_eq!(insert.params(), &[tokio_postgres::types::Type::INT8, tokio_postgres::types::Type::TEXT, tokio_postgres::types::Type::FLOAT8]);
        let inserted = client.execute(&insert, &[&3i64, &"o'neil", &2.25f64]).await.unwrap();
        assert_eq!(inserted, 1);
        let rows = client.query("SELECT total, n FROM totals WHERE customer = $1", &[&"o'neil"]).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].get::<_, f64>(0), 2.25);
        assert_eq!(rows[0].get::<_, i64>(1), 1);
        let rows = client.query("SELECT id FROM orders WHERE amount > $1 ORDER BY id", &[&5.0f64]).await.unwrap();
        assert_eq!(rows.iter().map(|row| row.get::<_, i64>(0)).collect::<Vec<_>>(), vec![1, 2]);

        // Every weft type, in binary (tokio-postgres asks for binary results) and text.
        client
            .batch_execute(
                "CREATE TABLE kinds (b BOOLEAN, i BIGINT, d DOUBLE, t TEXT, y BYTEA, ts TIMESTAMP);
                 INSERT INTO kinds VALUES (true, -7, 1.5, 'é', X'00ff', CAST('2024-05-06 07:08:09.123456' AS TIMESTAMP)),
                                          (NULL, NULL, NULL, NULL, NULL, NULL)",
            )
            .await
            .unwrap();
        let rows = client.query("SELECT b, i, d, t, y, ts FROM kinds ORDER BY i NULLS LAST", &[]).await.unwrap();
        let types: Vec<_> = rows[0].columns().iter().map(|column| column.type_().clone()).collect();
        use tokio_postgres::types::Type;
        assert_eq!(types, vec![Type::BOOL, Type::INT8, Type::FLOAT8, Type::TEXT, Type::BYTEA, Type::TIMESTAMP]);
        assert!(rows[0].get::<_, bool>(0));
        assert_eq!(rows[0].get::<_, i64>(1), -7);
        assert_eq!(rows[0].get::<_, String>(3), "é");
        assert_eq!(rows[0].get::<_, Vec<u8>>(4), vec![0, 255]);
        let timestamp: std::time::SystemTime = rows[0].get(5);
        let micros = timestamp.duration_since(std::time::UNIX_EPOCH).unwrap().as_micros();
        assert_eq!(micros, 1_714_979_289_123_456);
        assert_eq!(rows[1].get::<_, Option<i64>>(1), None);
        let text = rows_of(&client.simple_query("SELECT b, y, ts FROM kinds WHERE i = -7").await.unwrap());
        assert_eq!(text, vec![vec![Some("t".into()), Some("\\x00ff".into()), Some("2024-05-06 07:08:09.123456".into())]]);

        // A transaction is one timestamp; a rolled-back one leaves nothing.
        client.batch_execute("BEGIN; INSERT INTO orders VALUES (10, 'zed', 1.0); ROLLBACK").await.unwrap();
        assert!(client.query("SELECT * FROM totals WHERE customer = 'zed'", &[]).await.unwrap().is_empty());
        let transaction_client = server.connect().await;
        transaction_client.batch_execute("BEGIN; INSERT INTO orders VALUES (11, 'amy', 1.0)").await.unwrap();
        let seen = transaction_client.query("SELECT count(*) FROM orders WHERE id = 11", &[]).await.unwrap();
        assert_eq!(seen[0].get::<_, i64>(0), 1, "a transaction sees its own writes");
        transaction_client.batch_execute("COMMIT").await.unwrap();
        let rows = client.query("SELECT n FROM totals WHERE customer = 'amy'", &[]).await.unwrap();
        assert_eq!(rows[0].get::<_, i64>(0), 1);
    });
}

#[test]
fn errors_carry_sqlstate_and_touch_only_their_client() {
    let server = Server::start("errors", &[]);
    runtime().block_on(async {
        let client = server.connect().await;
        client.batch_execute(SCHEMA).await.unwrap();
        client.batch_execute("INSERT INTO orders VALUES (1, 'ada', 1.0)").await.unwrap();
        let code = |error: tokio_postgres::Error| error.code().map(|code| code.code().to_string());
        let cases = [
            ("SELECT * FROM nowhere", "42P01"),
            ("SELEC 1", "42601"),
            ("INSERT INTO orders VALUES (1, 'again', 2.0)", "23505"),
            ("CREATE TABLE orders (x BIGINT)", "42P07"),
            ("VACUUM orders", "0A000"),
            ("SUBSCRIBE TO nowhere", "42P01"),
            ("RETRY EFFECT 'bafyrmiunknown'", "42704"),
            ("CREATE SINK s FROM orders INTO ftp('x')", "42000"),
        ];
        for (sql, expected) in cases {
            let error = client.simple_query(sql).await.expect_err(sql);
            assert_eq!(code(error).as_deref(), Some(expected), "{sql}");
        }
        // A huge statement is an error for its client only.
        let huge = format!("SELECT {}", vec!["1"; 200_000].join(" + "));
        let error = client.simple_query(&huge).await.expect_err("too complex");
        assert_eq!(code(error).as_deref(), Some("54001"));
        let _ = client.simple_query(&huge).await;
        let still = client.query("SELECT count(*) FROM orders", &[]).await.unwrap();
        assert_eq!(still[0].get::<_, i64>(0), 1);

        // Garbage bytes on a socket, and a client that disconnects mid-query, harm no one else.
        let mut garbage = TcpStream::connect(server.pg).unwrap();
        let _ = garbage.write_all(&[0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
        drop(garbage);
        let quitter = server.connect().await;
        let slow = tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_millis(5), quitter.simple_query("SELECT count(*) FROM orders"))
                .await;
        });
        slow.await.unwrap();
        let other = server.connect().await;
        let rows = other.query("SELECT count(*) FROM orders", &[]).await.unwrap();
        assert_eq!(rows[0].get::<_, i64>(0), 1);
    });
}

#[test]
fn subscribe_streams_every_change_in_order_until_cancelled() {
    let server = Server::start("subscribe", &[]);
    runtime().block_on(async {
        let client = server.connect().await;
        client.batch_execute(SCHEMA).await.unwrap();
        client.batch_execute("INSERT INTO orders VALUES (1, 'ada', 10.0)").await.unwrap();
        let subscriber = server.connect().await;
        let cancel = subscriber.cancel_token();
        let stream = subscriber.query_raw("SUBSCRIBE TO totals", Vec::<i64>::new()).await.unwrap();
        let mut stream = Box::pin(stream);
        let (snapshot_time, diff, customer, total) = next_change(&mut stream).await;
        assert_eq!((diff, customer.as_str(), total), (1, "ada", 10.0));
        client.batch_execute("UPDATE orders SET amount = 12 WHERE id = 1").await.unwrap();
        let first = next_change(&mut stream).await;
        let second = next_change(&mut stream).await;
        assert!(first.0 > snapshot_time && first.0 == second.0, "one timestamp for one update");
        let mut pair = [(first.1, first.3), (second.1, second.3)];
        pair.sort_by_key(|change| change.0);
        assert_eq!(pair, [(-1, 10.0), (1, 12.0)]);
        client.batch_execute("INSERT INTO orders VALUES (2, 'bob', 1.0)").await.unwrap();
        let third = next_change(&mut stream).await;
        assert!(third.0 > first.0);
        assert_eq!((third.1, third.2.as_str()), (1, "bob"));

        // A subscription without the snapshot starts with the next change.
        let quiet = server.connect().await;
        let quiet_rows = quiet.query_raw("SUBSCRIBE totals WITH (SNAPSHOT = false)", Vec::<i64>::new()).await.unwrap();
        let mut quiet_stream = Box::pin(quiet_rows);
        // The server starts the subscription when it executes the statement: wait for it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !server.http("GET", "/metrics", "", "").1.contains("weft_view_subscribers{view=\"totals\"} 2") {
            assert!(Instant::now() < deadline, "the second subscription did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        client.batch_execute("INSERT INTO orders VALUES (3, 'cy', 3.0)").await.unwrap();
        let row =
            tokio::time::timeout(Duration::from_secs(10), next_row(&mut quiet_stream)).await.unwrap().unwrap().unwrap();
        assert_eq!(row.get::<_, String>(2), "cy");

        cancel.cancel_query(NoTls).await.unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match next_row(&mut stream).await {
                    Some(Err(error)) => return error.code().map(|code| code.code().to_string()),
                    Some(Ok(_)) => continue,
                    None => return None,
                }
            }
        })
        .await
        .expect("the cancel ends the subscription");
        assert_eq!(ended.as_deref(), Some("57014"));
        // The cancelled connection serves queries again.
        let rows = subscriber.query("SELECT count(*) FROM totals", &[]).await.unwrap();
        assert_eq!(rows[0].get::<_, i64>(0), 3);
    });
}

/// The next subscription row as (timestamp, diff, customer, total).
async fn next_change(stream: &mut std::pin::Pin<Box<tokio_postgres::RowStream>>) -> (i64, i64, String, f64) {
    let row =
        tokio::time::timeout(Duration::from_secs(10), next_row(stream)).await.expect("a change").unwrap().unwrap();
    (row.get(0), row.get(1), row.get(2), row.get(3))
}

async fn next_row(
    stream: &mut std::pin::Pin<Box<tokio_postgres::RowStream>>,
) -> Option<Result<tokio_postgres::Row, tokio_postgres::Error>> {
    use futures::StreamExt;
    stream.next().await
}

#[test]
fn readers_see_one_timestamp_across_views_while_writers_write() {
    let server = Server::start("consistency", &[]);
    runtime().block_on(async {
        let client = server.connect().await;
        client
            .batch_execute(
                "CREATE TABLE debit (id BIGINT PRIMARY KEY, amount BIGINT);
                 CREATE TABLE credit (id BIGINT PRIMARY KEY, amount BIGINT);
                 CREATE VIEW debits AS SELECT sum(amount) AS total FROM debit;
                 CREATE VIEW credits AS SELECT sum(amount) AS total FROM credit;",
            )
            .await
            .unwrap();
        let writer = server.connect().await;
        let writes = tokio::spawn(async move {
            for id in 0..200i64 {
                writer
                    .batch_execute(&format!(
                        "BEGIN; INSERT INTO debit VALUES ({id}, {id}); INSERT INTO credit VALUES ({id}, {id}); COMMIT"
                    ))
                    .await
                    .unwrap();
            }
        });
        let mut readers = Vec::new();
        for _ in 0..3 {
            let reader = server.connect().await;
            readers.push(tokio::spawn(async move {
                let mut checks = 0;
                loop {
                    let rows = reader
                        .query("SELECT (SELECT total FROM debits) AS d, (SELECT total FROM credits) AS c", &[])
                        .await
                        .unwrap();
                    let (debits, credits): (Option<i64>, Option<i64>) = (rows[0].get(0), rows[0].get(1));
                    assert_eq!(debits, credits, "a read saw one view ahead of the other");
                    checks += 1;
                    if debits == Some((0..200).sum()) {
                        return checks;
                    }
                }
            }));
        }
        writes.await.unwrap();
        for reader in readers {
            assert!(reader.await.unwrap() > 0);
        }
    });
}

#[test]
fn psql_meta_commands_list_and_describe_relations() {
    let server = Server::start("psql", &[]);
    let psql = |commands: &[&str]| {
        let mut command = Command::new("psql");
        command.args(["-X", "-h", "127.0.0.1", "-p", &server.pg.port().to_string(), "-U", "weft", "weft"]);
        for text in commands {
            command.args(["-c", text]);
        }
        let output =
            command.env("PGCONNECT_TIMEOUT", "10").output().expect("psql (Debian's postgresql-client) is installed");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr),
        )
    };
    let (ok, out) = psql(&[SCHEMA.split(';').next().unwrap(), SCHEMA.split(';').nth(1).unwrap()]);
    assert!(ok, "{out}");
    let (ok, out) = psql(&["\\dt", "\\dv", "\\d orders", "\\d totals"]);
    assert!(ok, "{out}");
    assert!(out.contains("public | orders | table | weft"), "{out}");
    assert!(out.contains("public | totals | view  | weft") || out.contains("public | totals | view | weft"), "{out}");
    assert!(out.contains("Table \"public.orders\""), "{out}");
    assert!(out.contains(" amount   | double precision"), "{out}");
    assert!(out.contains("View \"public.totals\""), "{out}");
    assert!(out.contains(" n        | bigint"), "{out}");
    let (ok, out) = psql(&["INSERT INTO orders VALUES (1, 'ada', 2.5)", "SELECT customer, total FROM totals"]);
    assert!(ok && out.contains(" ada      |   2.5"), "{out}");
    let (ok, out) = psql(&["SELECT * FROM missing"]);
    assert!(!ok && out.contains("ERROR:"), "{out}");

    // psql prints a subscription as COPY rows as they arrive: timestamp, diff, columns. (psql
    // flushes its output line by line only on a terminal: `script` gives it one.)
    let command =
        format!("psql -X -h 127.0.0.1 -p {} -U weft weft -c 'COPY (SUBSCRIBE TO totals) TO STDOUT'", server.pg.port());
    let mut subscriber = Command::new("script")
        .args(["-qfc", &command, "/dev/null"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(subscriber.stdout.take().unwrap()).lines();
    let snapshot = lines.next().unwrap().unwrap().trim_end().to_string();
    let fields: Vec<&str> = snapshot.split('\t').collect();
    assert_eq!(fields[1..], ["1", "ada", "2.5", "1"], "{snapshot}");
    let (ok, out) = psql(&["INSERT INTO orders VALUES (2, 'bob', 1.5)"]);
    assert!(ok, "{out}");
    let change = lines.next().unwrap().unwrap().trim_end().to_string();
    let fields: Vec<&str> = change.split('\t').collect();
    assert_eq!(fields[1..], ["1", "bob", "1.5", "1"], "{change}");
    assert!(fields[0].parse::<u64>().unwrap() > snapshot.split('\t').next().unwrap().parse::<u64>().unwrap());
    let _ = subscriber.kill();
    let _ = subscriber.wait();
}

#[test]
fn http_query_subscribe_and_metrics() {
    let server = Server::start("http", &[]);
    let (status, body) = server.http("POST", "/query", SCHEMA, "");
    assert_eq!(status, 200, "{body}");
    let (status, body) = server.http("POST", "/query", "INSERT INTO orders VALUES (1, 'ada', 10.0)", "");
    assert_eq!((status, body.trim()), (200, "{\"status\":\"INSERT 0 1\"}"));
    let (status, body) = server.http("POST", "/query", "SELECT customer, total, n FROM totals", "");
    assert_eq!((status, body.trim()), (200, "[{\"customer\":\"ada\",\"total\":10.0,\"n\":1}]"));
    let (status, body) = server.http("POST", "/query", "SELECT * FROM nowhere", "");
    assert_eq!(status, 400);
    assert!(body.contains("\"code\":\"42P01\""), "{body}");

    let mut stream = TcpStream::connect(server.http).unwrap();
    write!(stream, "GET /subscribe/totals HTTP/1.1\r\nHost: {}\r\n\r\n", server.http).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reader = BufReader::new(stream);
    let mut lines = Vec::new();
    let read_json_line = |reader: &mut BufReader<TcpStream>| loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line.starts_with('{') {
            return serde_json::from_str::<serde_json::Value>(&line).unwrap();
        }
    };
    lines.push(read_json_line(&mut reader));
    assert_eq!(lines[0]["diff"], 1);
    assert_eq!(lines[0]["row"]["customer"], "ada");
    server.http("POST", "/query", "UPDATE orders SET amount = 11 WHERE id = 1", "");
    lines.push(read_json_line(&mut reader));
    lines.push(read_json_line(&mut reader));
    let mut diffs: Vec<(i64, f64)> = lines[1..]
        .iter()
        .map(|line| (line["diff"].as_i64().unwrap(), line["row"]["total"].as_f64().unwrap()))
        .collect();
    diffs.sort_by_key(|change| change.0);
    assert_eq!(diffs, vec![(-1, 10.0), (1, 11.0)]);
    assert!(lines[1]["timestamp"].as_u64() > lines[0]["timestamp"].as_u64());

    let (status, metrics) = server.http("GET", "/metrics", "", "");
    assert_eq!(status, 200);
    assert!(metrics.contains("weft_view_rows{view=\"totals\"} 1"), "{metrics}");
    assert!(metrics.contains("weft_view_subscribers{view=\"totals\"} 1"), "{metrics}");
    assert!(metrics.contains("weft_update_seconds_count"), "{metrics}");
    assert!(metrics.contains("weft_memo_hits_total"), "{metrics}");
}

#[test]
fn browsers_cannot_drive_the_http_api() {
    let server = Server::start("browser", &[]);
    assert_eq!(server.http("POST", "/query", "CREATE TABLE t (x BIGINT)", "").0, 200);
    let count = || server.http("POST", "/query", "SELECT count(*) AS n FROM t", "").1;
    assert!(count().contains("\"n\":0"), "{}", count());
    // What a web page can make a browser send: a GET (a link, an image, a form) ...
    let (status, _) = server.http("GET", "/query?sql=INSERT%20INTO%20t%20VALUES%20(1)", "", "");
    assert_eq!(status, 405);
    // ... a cross-origin POST (a form or fetch; browsers add the page's Origin) ...
    let insert = "INSERT INTO t VALUES (2)";
    for origin in ["http://evil.example", "null", "http://127.0.0.1:1"] {
        let (status, body) = server.http("POST", "/query", insert, &format!("Origin: {origin}\r\n"));
        assert_eq!(status, 403, "{origin}: {body}");
    }
    // ... and, after DNS rebinding, a same-origin POST to a name that resolves here.
    let rebound = format!(
        "POST /query HTTP/1.1\r\nHost: evil.example:{port}\r\nOrigin: http://evil.example:{port}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{insert}",
        insert.len(),
        port = server.http.port()
    );
    assert_eq!(server.http_raw(&rebound).0, 421);
    let no_host = format!("POST /query HTTP/1.0\r\nContent-Length: {}\r\n\r\n{insert}", insert.len());
    assert_eq!(server.http_raw(&no_host).0, 400);
    assert!(count().contains("\"n\":0"), "nothing ran: {}", count());
    // The server's own origin (a page it served, were there one) and clients without an Origin
    // (curl, scripts) are served.
    let own = format!("Origin: http://{}\r\n", server.http);
    assert_eq!(server.http("POST", "/query", insert, &own).0, 200);
    assert!(count().contains("\"n\":1"), "{}", count());
}

#[test]
fn serve_confines_files_and_hosts() {
    let root = common::files_root("confined");
    let outside = common::files_root("outside");
    std::fs::write(root.join("in.csv"), "x\n1\n2\n").unwrap();
    std::fs::write(outside.join("secret.csv"), "TOP SECRET LINE,1\n").unwrap();
    std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
    let server = Server::start("confined", &["--files-root", root.to_str().unwrap()]);
    let query = |sql: &str| server.http("POST", "/query", sql, "");
    assert_eq!(query("CREATE TABLE t (x BIGINT)").0, 200);
    // Inside the root: relative paths resolve there.
    assert_eq!(query("COPY t FROM 'in.csv'").0, 200);
    assert_eq!(query("COPY t TO 'copy.csv'").0, 200);
    assert!(root.join("copy.csv").exists());
    // Out of it: `..`, absolute paths elsewhere, a symbolic link leading out; reading or writing.
    let secret = outside.join("secret.csv");
    let written = outside.join("written.csv");
    for sql in [
        "COPY t FROM '../weft-files-outside-x/secret.csv'".to_string(),
        format!("COPY t FROM '{}'", secret.display()),
        "COPY t FROM 'link/secret.csv'".to_string(),
        format!("COPY t TO '{}'", written.display()),
        "COPY t TO 'link/written.csv'".to_string(),
        format!("CREATE FUNCTION f(BIGINT) RETURNS BIGINT LANGUAGE wasm AS '{}'", secret.display()),
        "CREATE FUNCTION f(BIGINT) RETURNS BIGINT LANGUAGE wasm AS 'link/secret.csv'".to_string(),
        format!("CREATE SINK s FROM t INTO files('{}')", written.display()),
        "CREATE SOURCE src FROM files('link/*.csv')".to_string(),
        "CREATE SINK h FROM t INTO http('http://169.254.169.254/latest')".to_string(),
        "CREATE SINK h FROM t INTO http('http://127.0.0.1:9/')".to_string(),
    ] {
        let (status, body) = query(&sql);
        assert_eq!(status, 400, "{sql}: {body}");
        assert!(body.contains("42501") && body.contains("permission denied"), "{sql}: {body}");
        assert!(!body.contains("TOP SECRET"), "{sql}: {body}");
    }
    assert!(!written.exists(), "nothing written outside the root");
    // A file inside the root that is not a module: the error does not quote it.
    std::fs::write(root.join("notes.csv"), "TOP SECRET LINE,2\n").unwrap();
    let (status, body) = query("CREATE FUNCTION g(BIGINT) RETURNS BIGINT LANGUAGE wasm AS 'notes.csv'");
    assert_eq!(status, 400, "{body}");
    assert!(!body.contains("TOP SECRET"), "{body}");
    assert!(query("SELECT count(*) AS n FROM t").1.contains("\"n\":2"));
    drop(server);
    // Without --files-root, no file at all.
    let server = Server::start("no-files", &[]);
    let (status, body) = server.http("POST", "/query", "COPY (SELECT 1 AS x) TO 'anything.csv'", "");
    assert!(status == 400 && body.contains("no file access"), "{body}");
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_dir_all(&outside);
}

#[test]
fn a_slow_subscriber_is_cut_off_and_huge_results_are_refused() {
    let server = Server::start("bounded", &["--subscribe-buffer", "1000", "--max-result-rows", "1000"]);
    assert_eq!(server.http("POST", "/query", "CREATE TABLE t (id BIGINT PRIMARY KEY, body TEXT)", "").0, 200);
    assert_eq!(server.http("POST", "/query", "CREATE MATERIALIZED VIEW v AS SELECT id, body FROM t", "").0, 200);
    // A subscriber that never reads.
    let mut slow = std::net::TcpStream::connect(server.http).unwrap();
    write!(slow, "GET /subscribe/v?snapshot=false HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", server.http)
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !server.http("GET", "/metrics", "", "").1.contains("weft_view_subscribers{view=\"v\"} 1") {
        assert!(std::time::Instant::now() < deadline, "the subscription did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Writers go on while it falls behind (commits of 2,000 rows of 1 KiB fill its socket in a
    // few commits), until the engine cuts it off.
    let body = "x".repeat(1024);
    let mut next = 0;
    while !server.http("GET", "/metrics", "", "").1.contains("weft_view_subscribers{view=\"v\"} 0") {
        assert!(std::time::Instant::now() < deadline, "the slow subscriber was never cut off");
        let values: Vec<String> = (next..next + 2000).map(|id| format!("({id}, '{body}')")).collect();
        let (status, answer) = server.http("POST", "/query", &format!("INSERT INTO t VALUES {}", values.join(",")), "");
        assert_eq!(status, 200, "{answer}");
        next += 2000;
    }
    // Reading it now: what was queued, then the reason it ended.
    slow.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut received = Vec::new();
    let _ = slow.read_to_end(&mut received);
    let received = String::from_utf8_lossy(&received);
    assert!(
        received.contains("fell more than 1000 changes behind"),
        "{}",
        &received[received.len().saturating_sub(300)..]
    );
    assert!(received.contains("53400"));
    // A query returning more rows than allowed is refused without producing them all; a
    // subscription snapshot of one row held many times is one change carrying its count.
    runtime().block_on(async {
        let client = server.connect().await;
        let error = client.simple_query("SELECT 1 FROM t a, t b, t c").await.unwrap_err();
        assert_eq!(error.as_db_error().map(|error| error.code().code()), Some("54000"), "{error:?}");
        let rows = client.query("SELECT id FROM t ORDER BY id LIMIT 1000", &[]).await.unwrap();
        assert_eq!(rows.len(), 1000, "a result of exactly the limit is fine");
    });
    assert_eq!(server.http("POST", "/query", "CREATE TABLE many (x BIGINT)", "").0, 200);
    assert_eq!(server.http("POST", "/query", "CREATE MATERIALIZED VIEW copies AS SELECT x FROM many", "").0, 200);
    let values = vec!["(7)"; 5000].join(",");
    assert_eq!(server.http("POST", "/query", &format!("INSERT INTO many VALUES {values}"), "").0, 200);
    let mut stream = std::net::TcpStream::connect(server.http).unwrap();
    write!(stream, "GET /subscribe/copies HTTP/1.1\r\nHost: {}\r\n\r\n", server.http).unwrap();
    stream.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut first = String::new();
    let mut buffer = [0u8; 4096];
    while !first.contains("\"diff\":5000") {
        match stream.read(&mut buffer) {
            Ok(read) if read > 0 => first.push_str(&String::from_utf8_lossy(&buffer[..read])),
            _ => panic!("no snapshot line with its count: {first}"),
        }
    }
}

#[test]
fn transactions_take_the_writer_at_their_first_write_and_idle_ones_end() {
    let server = Server::start(
        "transactions",
        &["--lock-timeout-ms", "300", "--idle-in-transaction-timeout-s", "1", "--max-connections", "3"],
    );
    runtime().block_on(async {
        let (reader, writer) = (server.connect().await, server.connect().await);
        writer.batch_execute("CREATE TABLE t (id BIGINT PRIMARY KEY)").await.unwrap();
        // A transaction that only reads (a default psycopg connection's) holds no writer.
        reader.batch_execute("BEGIN").await.unwrap();
        reader.query("SELECT count(*) FROM t", &[]).await.unwrap();
        let started = Instant::now();
        writer.batch_execute("INSERT INTO t VALUES (1)").await.unwrap();
        assert!(started.elapsed() < Duration::from_millis(250), "{:?}", started.elapsed());
        // Its first write takes the writer; another writer waits, then gives up (55P03).
        reader.batch_execute("INSERT INTO t VALUES (2)").await.unwrap();
        let error = writer.batch_execute("INSERT INTO t VALUES (3)").await.unwrap_err();
        assert_eq!(error.as_db_error().map(|error| error.code().code()), Some("55P03"), "{error:?}");
        // Reads still see committed data only, and go on.
        let rows = writer.query("SELECT id FROM t ORDER BY id", &[]).await.unwrap();
        assert_eq!(rows.iter().map(|row| row.get::<_, i64>(0)).collect::<Vec<_>>(), vec![1]);
        // Left idle in its transaction, the connection is ended and its write rolled back.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(reader.query("SELECT 1", &[]).await.is_err(), "the idle connection was closed");
        writer.batch_execute("INSERT INTO t VALUES (3)").await.unwrap();
        let rows = writer.query("SELECT id FROM t ORDER BY id", &[]).await.unwrap();
        assert_eq!(rows.iter().map(|row| row.get::<_, i64>(0)).collect::<Vec<_>>(), vec![1, 3]);
        // Driver housekeeping is accepted.
        writer.batch_execute("DEALLOCATE ALL; DISCARD ALL").await.unwrap();
        // Connections beyond --max-connections are refused with 53300.
        let (_second, _third) = (server.connect().await, server.connect().await);
        let refused = server.config().connect(NoTls).await.err().expect("a fourth connection is refused");
        assert_eq!(refused.as_db_error().map(|error| error.code().code()), Some("53300"), "{refused:?}");
    });
}

#[test]
fn a_password_guards_both_protocols() {
    let server = Server::start("password", &["--password", "s3cret"]);
    runtime().block_on(async {
        let mut config = server.config();
        assert!(config.password("wrong").connect(NoTls).await.is_err());
        let (client, connection) = config.password("s3cret").connect(NoTls).await.unwrap();
        tokio::spawn(connection);
        client.simple_query("SELECT 1").await.unwrap();
    });
    assert_eq!(server.http("POST", "/query", "SELECT 1", "").0, 401);
    // Failures from one address slow its next attempts down (100 ms, then doubling, until one
    // succeeds); the right password still gets in.
    assert_eq!(server.http("POST", "/query", "SELECT 1", "Authorization: Bearer s3cre\r\n").0, 401);
    let started = std::time::Instant::now();
    assert_eq!(server.http("POST", "/query", "SELECT 1", "Authorization: Bearer S3CRET\r\n").0, 401);
    assert!(started.elapsed() >= std::time::Duration::from_millis(200), "{:?}", started.elapsed());
    assert_eq!(server.http("POST", "/query", "SELECT 1", "Authorization: Bearer s3cret\r\n").0, 200);
    assert_eq!(server.http("POST", "/query", "SELECT 1", "Authorization: Basic d2VmdDpzM2NyZXQ=\r\n").0, 200);
    // An empty password is no password.
    let empty = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["--data-dir", server.directory.join("empty").to_str().unwrap(), "serve", "--password", ""])
        .env_remove("WEFT_PASSWORD")
        .output()
        .unwrap();
    assert!(!empty.status.success());
    assert!(String::from_utf8_lossy(&empty.stderr).contains("empty password"), "{empty:?}");
    // Beyond loopback without a password, the server refuses to start.
    let refused = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["--data-dir", server.directory.join("other").to_str().unwrap(), "serve", "--pg", "0.0.0.0:0"])
        .env_remove("WEFT_PASSWORD")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("without a password"));
}

#[test]
fn sinks_sources_and_effects_through_the_postgres_protocol() {
    let directory = common::files_root("effects");
    let server = Server::start("effects", &["--files-root", directory.to_str().unwrap()]);
    std::fs::create_dir_all(directory.join("in")).unwrap();
    std::fs::write(directory.join("in/a.jsonl"), "{\"customer\": \"ada\", \"amount\": 2.5}\n").unwrap();
    runtime().block_on(async {
        let client = server.connect().await;
        client
            .batch_execute(&format!(
                "CREATE SOURCE purchases FROM files('{dir}/in/*.jsonl') WITH (poll_ms = 20);
                 CREATE MATERIALIZED VIEW spent AS SELECT customer, sum(amount) AS total FROM purchases GROUP BY customer;
                 CREATE SINK spent_out FROM spent INTO files('{dir}/spent.jsonl') KEY (customer);",
                dir = directory.display()
            ))
            .await
            .unwrap();
        // The server applies new source lines on its own; the sink follows.
        std::fs::write(directory.join("in/b.jsonl"), "{\"customer\": \"ada\", \"amount\": 1.5}\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let rows = client
                .query("SELECT status, rows FROM weft.effects WHERE name = $1 ORDER BY sequence", &[&"spent_out"])
                .await
                .unwrap();
            let statuses: Vec<(String, i64)> = rows.iter().map(|row| (row.get(0), row.get(1))).collect();
            if statuses.len() == 2 && statuses.iter().all(|(status, _)| status == "delivered") {
                assert_eq!(statuses[1].1, 2, "an update is one retraction and one insertion");
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{statuses:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let total: f64 = client.query_one("SELECT total FROM spent", &[]).await.unwrap().get(0);
        assert_eq!(total, 4.0);
        let written = std::fs::read_to_string(directory.join("spent.jsonl")).unwrap();
        assert_eq!(written.lines().count(), 3, "{written}");
        let error = client.simple_query("INSERT INTO purchases VALUES ('x', 1.0)").await.unwrap_err();
        let message = error.as_db_error().map(|error| error.message().to_string()).unwrap_or_default();
        assert!(message.contains("filled by source"), "{error:?}");
    });
}

/// A self-signed certificate for `localhost` and 127.0.0.1, and its key, as PEM files in `directory`.
fn self_signed_certificate(directory: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    std::fs::create_dir_all(directory).unwrap();
    let (certificate, key) = (directory.join("server.crt"), directory.join("server.key"));
    std::fs::write(&certificate, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.key_pair.serialize_pem()).unwrap();
    (certificate, key)
}

#[test]
fn tls_and_scram_for_psql_psycopg_and_https() {
    let directory = common::files_root("tls");
    let (certificate, key) = self_signed_certificate(&directory);
    let server = Server::start(
        "tls",
        &["--password", "s3cret", "--tls-cert", certificate.to_str().unwrap(), "--tls-key", key.to_str().unwrap()],
    );
    let dsn = format!("{} sslmode=require", server.dsn());
    // psql over TLS, authenticating with SCRAM-SHA-256.
    let psql = |password: &str, command: &str| {
        Command::new("psql")
            .args([dsn.as_str(), "-X", "-tA", "-c", command])
            .env("PGPASSWORD", password)
            .output()
            .expect("psql runs")
    };
    let answered = psql("s3cret", "SELECT 40 + 2");
    assert!(answered.status.success(), "{answered:?}");
    assert_eq!(String::from_utf8_lossy(&answered.stdout).trim(), "42");
    let info = psql("s3cret", "\\conninfo");
    assert!(String::from_utf8_lossy(&info.stdout).contains("SSL connection"), "{info:?}");
    let refused = psql("wrong", "SELECT 1");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).to_lowercase().contains("password authentication failed"),
        "{refused:?}"
    );
    // psycopg (libpq 16+) insisting on TLS and on SCRAM-SHA-256: the password never crosses
    // the wire, not even encrypted.
    let script = "import os, psycopg\n\
        with psycopg.connect(os.environ['WEFT_PG'] + ' require_auth=scram-sha-256', password='s3cret') as c:\n\
        \x20   assert c.info.pgconn.ssl_in_use\n\
        \x20   print('psycopg over tls:', c.execute('SELECT 6 * 7').fetchone()[0])\n";
    let output = Command::new("python3").args(["-c", script]).env("WEFT_PG", &dsn).output().expect("python3 runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    if text.contains("ModuleNotFoundError") {
        panic!("missing Python packages: pip install -r notebooks/requirements.txt\n{text}");
    }
    assert!(output.status.success() && text.contains("psycopg over tls: 42"), "{text}");
    // HTTP is HTTPS only: curl trusting the certificate gets in, plain HTTP gets no answer.
    let url = format!("https://127.0.0.1:{}/query", server.http.port());
    let curl = Command::new("curl")
        .args(["-sS", "--cacert", certificate.to_str().unwrap(), "-H", "Authorization: Bearer s3cret"])
        .args(["--data-binary", "SELECT 6 * 7 AS answer", &url])
        .output()
        .expect("curl runs");
    assert!(String::from_utf8_lossy(&curl.stdout).contains("\"answer\":42"), "{curl:?}");
    assert!(server.try_http("POST", "/query", "SELECT 1", "Authorization: Bearer s3cret\r\n").is_none());
    // Beyond loopback, a password without TLS is not enough.
    let refused = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["--data-dir", server.directory.join("open").to_str().unwrap(), "serve", "--password", "x"])
        .args(["--pg", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("without TLS"), "{refused:?}");
}

#[test]
fn http_request_heads_are_bounded() {
    let server = Server::start("heads", &[]);
    // A head beyond 64 KiB, or with too many fields, is refused before anything runs.
    let huge = format!(
        "POST /query HTTP/1.1\r\nHost: {}\r\nX-Filler: {}\r\nContent-Length: 8\r\nConnection: close\r\n\r\nSELECT 1",
        server.http,
        "a".repeat(100 << 10)
    );
    let (status, _) = server.http_raw(&huge);
    assert_eq!(status, 431);
    let many: String = (0..200).map(|index| format!("X-Field-{index}: {index}\r\n")).collect();
    let crowded = format!(
        "POST /query HTTP/1.1\r\nHost: {}\r\n{many}Content-Length: 8\r\nConnection: close\r\n\r\nSELECT 1",
        server.http
    );
    assert_eq!(server.http_raw(&crowded).0, 431);
    // The server is still there.
    assert_eq!(server.http("POST", "/query", "SELECT 1 AS one", "").0, 200);
}

/// Reads backend messages until ReadyForQuery (`Z`); false if the connection ended first.
fn until_ready(stream: &mut TcpStream) -> bool {
    loop {
        let mut head = [0u8; 5];
        if stream.read_exact(&mut head).is_err() {
            return false;
        }
        let length = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut body = vec![0u8; length.saturating_sub(4)];
        if stream.read_exact(&mut body).is_err() {
            return false;
        }
        if head[0] == b'Z' {
            return true;
        }
    }
}

#[test]
fn a_malformed_message_ends_only_its_own_connection_and_releases_the_writer() {
    let server = Server::start("malformed", &["--lock-timeout-ms", "2000"]);
    // A raw client opens a transaction that holds the writer.
    let mut raw = TcpStream::connect(server.pg).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut startup = 196_608u32.to_be_bytes().to_vec();
    for field in ["user", "weft", "database", "weft", ""] {
        startup.extend(field.as_bytes());
        startup.push(0);
    }
    let mut message = ((startup.len() + 4) as u32).to_be_bytes().to_vec();
    message.extend(startup);
    raw.write_all(&message).unwrap();
    assert!(until_ready(&mut raw));
    let query = |sql: &str| {
        let mut message = vec![b'Q'];
        message.extend(((sql.len() + 5) as u32).to_be_bytes());
        message.extend(sql.as_bytes());
        message.push(0);
        message
    };
    raw.write_all(&query("CREATE TABLE t (id BIGINT PRIMARY KEY)")).unwrap();
    assert!(until_ready(&mut raw));
    raw.write_all(&query("BEGIN; INSERT INTO t VALUES (1)")).unwrap();
    assert!(until_ready(&mut raw));
    // Then sends a Bind whose length field says 0 (found by fuzzing: pgwire's decoder panics on
    // it). Its connection ends; no one else notices, and its transaction is rolled back at once.
    raw.write_all(&[b'B', 0, 0, 0, 0, 0, 0, 0, 0, 0x94, 0x94, 0x2b, 0x94, 0x42]).unwrap();
    assert!(!until_ready(&mut raw), "the malformed connection is ended");
    runtime().block_on(async {
        let client = server.connect().await;
        let started = Instant::now();
        client.batch_execute("INSERT INTO t VALUES (2)").await.unwrap();
        assert!(started.elapsed() < Duration::from_millis(1500), "the writer was released: {:?}", started.elapsed());
        let rows = client.query("SELECT id FROM t ORDER BY id", &[]).await.unwrap();
        assert_eq!(rows.iter().map(|row| row.get::<_, i64>(0)).collect::<Vec<_>>(), vec![2]);
    });
}
