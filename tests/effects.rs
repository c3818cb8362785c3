//! Managed effects end to end, against real components: a PostgreSQL server from Debian's
//! packages (started here, see `common/postgres.rs`), a local HTTP server that fails on a
//! schedule, and files. Sinks must hold exactly their view after any sequence of changes,
//! crashes and faults; bad input must give clear errors without stopping anything else.
//!
//! Random streams are seeded; set `WEFT_EFFECTS_SEED` to replay one (the seed is printed).

mod common;

use common::postgres::Postgres;
use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weft_core::{Database, Options, Value};

/// xorshift64*: deterministic per seed.
struct Random(u64);

impl Random {
    fn new() -> (Random, u64) {
        let seed = std::env::var("WEFT_EFFECTS_SEED").ok().and_then(|text| text.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
        });
        println!("effects: seed {seed} (WEFT_EFFECTS_SEED={seed} replays it)");
        (Random(seed | 1), seed)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % bound
    }
}

fn data_dir(name: &str) -> PathBuf {
    let directory = std::env::temp_dir().join(format!("weft-effects-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    directory
}

fn open(directory: &PathBuf) -> Database {
    let mut options = Options::new(directory);
    options.sync = false;
    Database::open(options).expect("open database")
}

/// A value as psql prints it (unaligned), so rows compare as text.
fn psql_text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::Bool(b) => if *b { "t" } else { "f" }.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Text(text) => text.to_string(),
        Value::Bytes(_) => unreachable!("no BYTEA here"),
        Value::Timestamp(nanoseconds) => {
            chrono::DateTime::from_timestamp_nanos(*nanoseconds).naive_utc().format("%Y-%m-%d %H:%M:%S").to_string()
        }
    }
}

fn view_text(database: &mut Database, sql: &str) -> Vec<String> {
    let mut rows: Vec<String> = database
        .query(sql)
        .unwrap()
        .iter()
        .map(|row| row.iter().map(psql_text).collect::<Vec<_>>().join("|"))
        .collect();
    rows.sort();
    rows
}

fn effect_rows(database: &mut Database, filter: &str) -> Vec<Vec<Value>> {
    database.query(&format!("SELECT cid, status, attempts, error, name FROM weft.effects WHERE {filter}")).unwrap()
}

fn text(value: &Value) -> String {
    match value {
        Value::Text(text) => text.to_string(),
        Value::Null => String::new(),
        other => format!("{other:?}"),
    }
}

/// Waits until `condition` holds (applying source reads meanwhile), or fails after `seconds`.
fn eventually(database: &mut Database, seconds: u64, what: &str, mut condition: impl FnMut(&mut Database) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        database.ingest_sources().unwrap();
        if condition(database) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn postgres_sink_holds_the_view_exactly_after_random_changes() {
    let postgres = Postgres::start("sink");
    // No key constraint in PostgreSQL: a change applied twice would show as a duplicate row.
    postgres.psql("CREATE TABLE user_stats (user_id TEXT, clicks BIGINT, total DOUBLE PRECISION, last TIMESTAMP)");
    let directory = data_dir("pg-random");
    let mut database = open(&directory);
    database
        .execute(
            "CREATE TABLE clicks (id BIGINT PRIMARY KEY, user_id TEXT, amount DOUBLE, at TIMESTAMP);
             CREATE MATERIALIZED VIEW user_stats AS
               SELECT user_id, count(*) AS clicks, sum(amount) AS total, max(at) AS last FROM clicks GROUP BY user_id;",
        )
        .unwrap();
    database
        .execute(&format!(
            "CREATE SINK stats_pg FROM user_stats INTO postgres('{}', 'user_stats') KEY (user_id)",
            postgres.conninfo()
        ))
        .unwrap();
    let (mut random, _) = Random::new();
    let mut live: Vec<u64> = Vec::new();
    let mut next_id = 0;
    for transaction in 0..60 {
        let mut statements = Vec::new();
        for _ in 0..=random.below(4) {
            match random.below(3) {
                0 | 1 if live.len() < 200 => {
                    let amount = random.below(40) as f64 / 2.0;
                    // NULL is a user too: its group's key is NULL in PostgreSQL as well.
                    let user = match ["ada", "bob", "cy", "dee", "ed", "O'Neil", ""][random.below(7) as usize] {
                        "" => "NULL".to_string(),
                        name => format!("'{}'", name.replace('\'', "''")),
                    };
                    statements.push(format!(
                        "INSERT INTO clicks VALUES ({next_id}, {user}, {amount}, TIMESTAMP '2026-01-01 00:00:00' + INTERVAL '{} seconds')",
                        random.below(1000)
                    ));
                    live.push(next_id);
                    next_id += 1;
                }
                0 if !live.is_empty() => {
                    let id = live[random.below(live.len() as u64) as usize];
                    statements.push(format!("UPDATE clicks SET amount = amount + 1.5 WHERE id = {id}"));
                }
                _ if !live.is_empty() => {
                    let id = live.swap_remove(random.below(live.len() as u64) as usize);
                    statements.push(format!("DELETE FROM clicks WHERE id = {id}"));
                }
                _ => {}
            }
        }
        let sql = if statements.len() > 1 && transaction % 2 == 0 {
            format!("BEGIN; {}; COMMIT;", statements.join("; "))
        } else {
            statements.join("; ")
        };
        database.execute(&sql).unwrap();
        if transaction % 15 == 14 {
            assert_eq!(database.wait_for_effects(Duration::from_secs(30)), 0, "sink did not catch up");
            let expected = view_text(&mut database, "SELECT user_id, clicks, total, last FROM user_stats");
            assert_eq!(postgres.rows("SELECT user_id, clicks, total, last FROM user_stats"), expected);
        }
    }
    let effects = effect_rows(&mut database, "name = 'stats_pg'");
    assert!(effects.iter().all(|row| text(&row[1]) == "delivered"), "{effects:?}");
    let applied = postgres.psql("SELECT count(*) FROM weft_applied_effects WHERE sink = 'stats_pg'");
    assert_eq!(applied.trim(), effects.len().to_string(), "each effect's key recorded once");
    // A sink dropped and created again under the same name has new keys: it fills the table anew.
    database.execute("DROP SINK stats_pg").unwrap();
    postgres.psql("TRUNCATE user_stats");
    database
        .execute(&format!(
            "CREATE SINK stats_pg FROM user_stats INTO postgres('{}', 'user_stats') KEY (user_id)",
            postgres.conninfo()
        ))
        .unwrap();
    assert_eq!(database.wait_for_effects(Duration::from_secs(30)), 0);
    let expected = view_text(&mut database, "SELECT user_id, clicks, total, last FROM user_stats");
    assert_eq!(postgres.rows("SELECT user_id, clicks, total, last FROM user_stats"), expected);
    drop(database);
    let _ = std::fs::remove_dir_all(&directory);
}

/// Kill -9 weft while its sink delivers thousands of changes to PostgreSQL; after a restart the
/// table equals the view and no effect was applied twice.
#[test]
fn a_crash_during_delivery_applies_nothing_twice() {
    let postgres = Postgres::start("crash");
    postgres.psql("CREATE TABLE mirror (id BIGINT, k BIGINT, v BIGINT)");
    let mut server = common::Server::start("effects-crash", &["--allow-hosts", "127.0.0.1"]);
    let query = |server: &common::Server, sql: &str| {
        let (status, body) = server.http("POST", "/query", sql, "");
        assert_eq!(status, 200, "{sql}: {body}");
        body
    };
    query(&server, "CREATE TABLE events (id BIGINT PRIMARY KEY, k BIGINT, v BIGINT)");
    query(&server, "CREATE MATERIALIZED VIEW mirror AS SELECT id, k, v FROM events WHERE v >= 0");
    query(
        &server,
        &format!("CREATE SINK mirror_pg FROM mirror INTO postgres('{}', 'mirror') KEY (id)", postgres.conninfo()),
    );
    let batches = 120;
    for batch in 0..batches {
        let values: Vec<String> = (0..50).map(|i| format!("({}, {}, {})", batch * 50 + i, i % 7, batch)).collect();
        query(&server, &format!("INSERT INTO events VALUES {}", values.join(", ")));
        if batch % 10 == 9 {
            query(&server, &format!("UPDATE events SET v = v + 1000 WHERE k = {} AND id > {}", batch % 7, batch * 40));
            query(&server, &format!("DELETE FROM events WHERE k = 3 AND id < {}", batch * 30));
        }
    }
    // Kill while delivery is under way (some rows arrived, not all effects delivered).
    let deadline = Instant::now() + Duration::from_secs(30);
    while postgres.psql("SELECT count(*) FROM mirror").trim() == "0" {
        assert!(Instant::now() < deadline, "the sink never started delivering");
        std::thread::sleep(Duration::from_millis(5));
    }
    server.crash_and_restart();
    let expected = {
        let body = query(&server, "SELECT id, k, v FROM mirror");
        let rows: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
        let mut rows: Vec<String> = rows.iter().map(|row| format!("{}|{}|{}", row["id"], row["k"], row["v"])).collect();
        rows.sort();
        rows
    };
    assert!(expected.len() > 4000, "thousands of rows: {}", expected.len());
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let found = postgres.rows("SELECT id, k, v FROM mirror");
        if found == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "PostgreSQL never matched the view ({} vs {} rows)",
            found.len(),
            expected.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(postgres.psql("SELECT count(*) - count(DISTINCT id) FROM mirror").trim(), "0");
    let effects =
        query(&server, "SELECT count(*) AS n FROM weft.effects WHERE name = 'mirror_pg' AND status = 'delivered'");
    let delivered: serde_json::Value = serde_json::from_str(&effects).unwrap();
    assert_eq!(
        postgres.psql("SELECT count(*) FROM weft_applied_effects").trim(),
        delivered[0]["n"].to_string(),
        "every delivered effect's key recorded exactly once"
    );
}

/// What the test's HTTP receiver saw: effects applied (first time per key), and retries.
#[derive(Default)]
struct Received {
    applied: Vec<serde_json::Value>,
    keys: HashSet<String>,
    duplicates: usize,
    requests: usize,
}

/// An HTTP receiver that fails on a schedule: request n answers 500 when n % 6 == 1, drops the
/// connection without an answer when n % 6 == 3, and answers only after the client's timeout
/// when n % 6 == 5 (having applied the effect, so the retry is a duplicate). It deduplicates by
/// `Idempotency-Key`, as the HTTP convention asks of receivers.
fn faulty_receiver() -> (u16, Arc<Mutex<Received>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = Arc::new(Mutex::new(Received::default()));
    let state = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut key = String::new();
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                if let Some((name, value)) = line.split_once(':') {
                    match name.to_ascii_lowercase().as_str() {
                        "idempotency-key" => key = value.trim().to_string(),
                        "content-length" => length = value.trim().parse().unwrap_or(0),
                        _ => {}
                    }
                }
            }
            let mut body = vec![0u8; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let request = {
                let mut state = state.lock().unwrap();
                state.requests += 1;
                state.requests
            };
            match request % 6 {
                1 => {
                    let _ = stream.write_all(
                        b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                    continue;
                }
                3 => continue, // dropped: no answer at all
                _ => {}
            }
            {
                let mut state = state.lock().unwrap();
                if state.keys.insert(key) {
                    state.applied.push(serde_json::from_slice(&body).unwrap());
                } else {
                    state.duplicates += 1;
                }
            }
            if request % 6 == 5 {
                std::thread::sleep(Duration::from_millis(600));
            }
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (port, received)
}

#[test]
fn http_sink_delivers_every_change_once_and_in_order_through_faults() {
    let (port, received) = faulty_receiver();
    let directory = data_dir("http-faults");
    let mut database = open(&directory);
    database
        .execute(&format!(
            "CREATE TABLE readings (sensor TEXT PRIMARY KEY, level BIGINT);
             CREATE MATERIALIZED VIEW alerts AS SELECT sensor, level FROM readings WHERE level > 50;
             CREATE SINK alerts_hook FROM alerts INTO http('http://127.0.0.1:{port}/hook', 'timeout_ms=300') KEY (sensor);"
        ))
        .unwrap();
    let (mut random, _) = Random::new();
    let sensors = ["s1", "s2", "s3", "s4", "s5"];
    let mut present = HashSet::new();
    for _ in 0..40 {
        let sensor = sensors[random.below(5) as usize];
        let level = random.below(100);
        if present.insert(sensor) {
            database.execute(&format!("INSERT INTO readings VALUES ('{sensor}', {level})")).unwrap();
        } else if random.below(4) == 0 {
            present.remove(sensor);
            database.execute(&format!("DELETE FROM readings WHERE sensor = '{sensor}'")).unwrap();
        } else {
            database.execute(&format!("UPDATE readings SET level = {level} WHERE sensor = '{sensor}'")).unwrap();
        }
    }
    assert_eq!(database.wait_for_effects(Duration::from_secs(120)), 0, "the sink did not deliver everything");
    let received = received.lock().unwrap();
    assert!(received.duplicates > 0 && received.requests > received.applied.len(), "the faults were exercised");
    // In order: sequences 0, 1, 2, ... each applied once.
    let sequences: Vec<u64> = received.applied.iter().map(|body| body["sequence"].as_u64().unwrap()).collect();
    assert_eq!(sequences, (0..sequences.len() as u64).collect::<Vec<_>>());
    // Exactly once: folding the applied changes gives the view.
    let mut state: BTreeMap<String, i64> = BTreeMap::new();
    for body in &received.applied {
        for change in body["changes"].as_array().unwrap() {
            let row = format!("{}|{}", change["row"]["sensor"].as_str().unwrap(), change["row"]["level"]);
            *state.entry(row).or_default() += change["diff"].as_i64().unwrap();
        }
    }
    state.retain(|_, count| *count != 0);
    assert!(state.values().all(|count| *count == 1), "{state:?}");
    let folded: Vec<String> = state.into_keys().collect();
    assert_eq!(folded, view_text(&mut database, "SELECT sensor, level FROM alerts"));
    drop(database);
    let _ = std::fs::remove_dir_all(&directory);
}

#[test]
fn file_sources_and_sinks_follow_changes_exactly_once_across_restarts() {
    let directory = data_dir("files");
    let input = directory.join("in");
    let output = directory.join("out");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::write(input.join("a.jsonl"), "{\"user\":\"ada\",\"n\":1}\n{\"user\":\"bob\",\"n\":2}\n").unwrap();
    std::fs::write(input.join("b.csv"), "user,n\ncy,3\n").unwrap();
    let pattern = input.join("*.jsonl");
    let csv_pattern = input.join("*.csv");
    let jsonl_out = output.join("totals.jsonl");
    let setup = format!(
        "CREATE SOURCE clicks FROM files('{}') WITH (poll_ms = 20);
         CREATE SOURCE more_clicks (user TEXT, n BIGINT) FROM files('{}') WITH (poll_ms = 20);
         CREATE MATERIALIZED VIEW totals AS
           SELECT user, sum(n) AS total FROM (SELECT user, n FROM clicks UNION ALL SELECT user, n FROM more_clicks) GROUP BY user;
         CREATE SINK totals_jsonl FROM totals INTO files('{}') KEY (user);
         CREATE SINK totals_csv FROM totals INTO files('{}');
         CREATE SINK totals_parquet FROM totals INTO files('{}');",
        pattern.display(),
        csv_pattern.display(),
        jsonl_out.display(),
        output.join("totals.csv").display(),
        output.join("totals.parquet").display(),
    );
    let folded_jsonl = || {
        let mut state: BTreeMap<String, i64> = BTreeMap::new();
        let mut seen = HashSet::new();
        for line in std::fs::read_to_string(&jsonl_out).unwrap_or_default().lines() {
            let change: serde_json::Value = serde_json::from_str(line).unwrap();
            let row = format!("{}|{}", change["row"]["user"].as_str().unwrap(), change["row"]["total"]);
            assert!(
                seen.insert((change["effect"].to_string(), row.clone(), change["diff"].to_string())),
                "duplicate line {line}"
            );
            *state.entry(row).or_default() += change["diff"].as_i64().unwrap();
        }
        state.retain(|_, count| *count != 0);
        state.into_keys().collect::<Vec<_>>()
    };
    let expected_rows = |database: &mut Database| view_text(database, "SELECT user, total FROM totals");
    {
        let mut database = open(&directory);
        database.execute(&setup).unwrap();
        eventually(&mut database, 10, "the first files", |database| expected_rows(database).len() == 3);
        // Appended lines (one not yet finished), and a new file.
        let mut file = std::fs::OpenOptions::new().append(true).open(input.join("a.jsonl")).unwrap();
        file.write_all(b"{\"user\":\"ada\",\"n\":10}\n{\"user\":\"ed\",").unwrap();
        std::fs::write(input.join("c.jsonl"), "{\"user\":\"dee\",\"n\":4}\n").unwrap();
        eventually(&mut database, 10, "appended lines", |database| {
            expected_rows(database) == ["ada|11", "bob|2", "cy|3", "dee|4"]
        });
        file.write_all(b"\"n\":5}\n").unwrap();
        eventually(&mut database, 10, "the finished line", |database| expected_rows(database).len() == 5);
        assert_eq!(database.wait_for_effects(Duration::from_secs(30)), 0);
        assert_eq!(folded_jsonl(), expected_rows(&mut database));
    }
    // Restart: the sources re-read everything, change nothing, and the sinks write nothing twice.
    let mut database = open(&directory);
    std::fs::write(input.join("d.jsonl"), "{\"user\":\"bob\",\"n\":5}\n").unwrap();
    eventually(&mut database, 10, "the file added while stopped", |database| {
        expected_rows(database) == ["ada|11", "bob|7", "cy|3", "dee|4", "ed|5"]
    });
    assert_eq!(database.wait_for_effects(Duration::from_secs(30)), 0);
    assert_eq!(folded_jsonl(), expected_rows(&mut database));
    let csv = std::fs::read_to_string(output.join("totals.csv")).unwrap();
    assert!(csv.starts_with("diff,user,total\n"), "{csv}");
    // Deleting a file retracts its rows.
    std::fs::remove_file(input.join("d.jsonl")).unwrap();
    eventually(&mut database, 10, "the deleted file", |database| {
        expected_rows(database).contains(&"bob|2".to_string())
    });
    assert_eq!(database.wait_for_effects(Duration::from_secs(30)), 0);
    assert_eq!(folded_jsonl(), expected_rows(&mut database));
    // The Parquet sink holds the current contents; reading it back gives the view.
    let parquet = output.join("totals.parquet");
    let read_back_parquet = |database: &mut Database| {
        database.execute(&format!("DELETE FROM from_parquet; COPY from_parquet FROM '{}'", parquet.display())).unwrap();
        view_text(database, "SELECT user, total FROM from_parquet")
    };
    database.execute("CREATE TABLE from_parquet (user TEXT, total BIGINT)").unwrap();
    assert_eq!(read_back_parquet(&mut database), expected_rows(&mut database));
    // Sinks created again on the same files start them over, exactly once again.
    database.execute("DROP SINK totals_jsonl; DROP SINK totals_parquet").unwrap();
    database
        .execute(&format!(
            "CREATE SINK totals_jsonl FROM totals INTO files('{}') KEY (user);
             CREATE SINK totals_parquet FROM totals INTO files('{}');",
            jsonl_out.display(),
            parquet.display()
        ))
        .unwrap();
    assert_eq!(database.wait_for_effects(Duration::from_secs(30)), 0);
    assert_eq!(folded_jsonl(), expected_rows(&mut database));
    assert_eq!(read_back_parquet(&mut database), expected_rows(&mut database));
    // A source's table cannot be written by statements.
    let error = database.execute("INSERT INTO clicks VALUES ('x', 1)").unwrap_err().to_string();
    assert!(error.contains("filled by source clicks"), "{error}");
    drop(database);
    let _ = std::fs::remove_dir_all(&directory);
}

#[test]
fn bad_connections_tables_and_files_give_clear_errors_and_stop_nothing_else() {
    let postgres = Postgres::start("bad");
    let directory = data_dir("bad");
    std::fs::create_dir_all(directory.join("in")).unwrap();
    let mut database = open(&directory);
    database
        .execute(
            "CREATE TABLE t (id BIGINT PRIMARY KEY, name TEXT);
             CREATE MATERIALIZED VIEW v AS SELECT id, name FROM t;
             INSERT INTO t VALUES (1, 'one'), (2, 'two');",
        )
        .unwrap();
    let unreachable = "host=127.0.0.1 port=1 user=postgres dbname=app connect_timeout=2";
    // A source that cannot be reached is refused at once, naming the problem.
    let error = database
        .execute(&format!("CREATE SOURCE remote FROM postgres('{unreachable}', 'users')"))
        .unwrap_err()
        .to_string();
    assert!(error.contains("source remote") && error.contains("PostgreSQL"), "{error}");
    let error = database.execute(&format!("CREATE SOURCE nothing FROM files('{}/none/*.jsonl')", directory.display()));
    assert!(error.unwrap_err().to_string().contains("declare them"));
    let bad_config = database.execute("CREATE SINK s FROM v INTO postgres('port=notanumber', 't')");
    assert!(bad_config.unwrap_err().to_string().contains("invalid PostgreSQL connection string"));
    // Sinks that cannot deliver: unreachable (transient, retried), wrong role and missing table
    // (permanent, failed), a file that is not Parquet (permanent).
    std::fs::write(directory.join("broken.parquet"), b"this is not parquet").unwrap();
    let wrong_role = postgres.conninfo().replace("user=postgres", "user=nobody");
    database
        .execute(&format!(
            "CREATE SINK down FROM v INTO postgres('{unreachable}', 't');
             CREATE SINK role FROM v INTO postgres('{wrong_role}', 't');
             CREATE SINK missing FROM v INTO postgres('{}', 'no_such_table') KEY (id);
             CREATE SINK broken FROM v INTO files('{}');
             CREATE SINK good FROM v INTO files('{}');",
            postgres.conninfo(),
            directory.join("broken.parquet").display(),
            directory.join("good.jsonl").display(),
        ))
        .unwrap();
    std::fs::write(directory.join("in/bad.jsonl"), "{\"id\": 1}\n{\"id\": oops}\n{\"id\": \"text\"}\n{\"id\": 4}\n")
        .unwrap();
    // A file that is not Parquet: the source still starts (columns declared); the file is named.
    std::fs::write(directory.join("in/fake.parquet"), b"PAR1 but not really").unwrap();
    database
        .execute(&format!("CREATE SOURCE tables (id BIGINT) FROM files('{}/in/*.parquet')", directory.display()))
        .unwrap();
    let problems = effect_rows(&mut database, "name = 'tables' AND status = 'failed'");
    assert!(problems.iter().any(|row| text(&row[3]).contains("fake.parquet is not a Parquet file")), "{problems:?}");
    database
        .execute(&format!(
            "CREATE SOURCE lines (id BIGINT) FROM files('{}/in/*.jsonl') WITH (poll_ms = 20)",
            directory.display()
        ))
        .unwrap();
    let status_of = |database: &mut Database, name: &str| -> (String, i64, String) {
        let rows = effect_rows(database, &format!("name = '{name}' AND stream = 'mutation'"));
        let row = rows.first().unwrap_or_else(|| panic!("no effect for {name}"));
        let Value::Int(attempts) = row[2] else { panic!("{row:?}") };
        (text(&row[1]), attempts, text(&row[3]))
    };
    eventually(&mut database, 30, "the failures to be recorded", |database| {
        status_of(database, "role").0 == "failed"
            && status_of(database, "missing").0 == "failed"
            && status_of(database, "broken").0 == "failed"
            && status_of(database, "down").1 >= 2
            && status_of(database, "good").0 == "delivered"
    });
    let (status, _, error) = status_of(&mut database, "down");
    assert_eq!(status, "pending", "unreachable is transient: {error}");
    assert!(error.contains("PostgreSQL"), "{error}");
    assert!(status_of(&mut database, "role").2.contains("nobody"), "{:?}", status_of(&mut database, "role"));
    assert!(status_of(&mut database, "missing").2.contains("no_such_table"));
    assert!(status_of(&mut database, "broken").2.contains("not a Parquet file"));
    // Malformed lines are skipped and named; the good ones arrive.
    eventually(&mut database, 10, "the good lines", |database| {
        database.query("SELECT id FROM lines").unwrap().len() == 2
    });
    let problems = effect_rows(&mut database, "name = 'lines' AND status = 'failed'");
    let messages: Vec<String> = problems.iter().map(|row| text(&row[3])).collect();
    assert!(messages.iter().any(|m| m.contains("bad.jsonl:2") && m.contains("malformed JSON")), "{messages:?}");
    assert!(messages.iter().any(|m| m.contains("bad.jsonl:3") && m.contains("not a BIGINT")), "{messages:?}");
    // The engine goes on: writes, views and the healthy sink.
    database.execute("INSERT INTO t VALUES (3, 'three')").unwrap();
    eventually(&mut database, 10, "the healthy sink", |_| {
        std::fs::read_to_string(directory.join("good.jsonl")).unwrap_or_default().lines().count() == 3
    });
    // Fixing the cause and retrying delivers, in order, the failed effect and those after it.
    postgres.psql("CREATE TABLE no_such_table (id BIGINT, name TEXT)");
    let failed = effect_rows(&mut database, "name = 'missing' AND status = 'failed'");
    assert_eq!(failed.len(), 1, "a failure holds its sink back: {failed:?}");
    database.retry_effect(&text(&failed[0][0])).unwrap();
    eventually(&mut database, 30, "the retried sink", |_| {
        postgres.rows("SELECT id, name FROM no_such_table") == ["1|one", "2|two", "3|three"]
    });
    let error = database.retry_effect("bafyreinotaneffect").unwrap_err().to_string();
    assert!(error.contains("no effect"), "{error}");
    drop(database);
    let _ = std::fs::remove_dir_all(&directory);
}

/// A tiny HTTP server for reads: answers GET `path` with the body set for it (404 if none) and
/// counts requests per path.
struct Site {
    port: u16,
    bodies: Arc<Mutex<BTreeMap<String, String>>>,
    hits: Arc<Mutex<BTreeMap<String, usize>>>,
}

impl Site {
    fn start() -> Site {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let bodies: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
        let hits: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
        let (serving, counting) = (bodies.clone(), hits.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request = String::new();
                if reader.read_line(&mut request).is_err() {
                    continue;
                }
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                        break;
                    }
                }
                let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
                *counting.lock().unwrap().entry(path.clone()).or_default() += 1;
                let response = match serving.lock().unwrap().get(&path) {
                    Some(body) => {
                        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
                    }
                    None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string(),
                };
                let _ = stream.write_all(response.as_bytes());
            }
        });
        Site { port, bodies, hits }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn set(&self, path: &str, body: &str) {
        self.bodies.lock().unwrap().insert(path.to_string(), body.to_string());
    }

    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

#[test]
fn query_effects_read_once_per_ttl_and_update_views_only_when_the_answer_changes() {
    let site = Site::start();
    site.set("/a", "first a");
    site.set("/b", "only b");
    site.set("/ipfs/bafkreiexample", "immutable");
    std::env::set_var("WEFT_IPFS_GATEWAY", format!("http://127.0.0.1:{}", site.port));
    let directory = data_dir("reads");
    let mut database = open(&directory);
    database
        .execute(&format!(
            "CREATE TABLE urls (id BIGINT PRIMARY KEY, url TEXT);
             INSERT INTO urls VALUES (1, '{a}'), (2, '{b}'), (3, '{missing}'), (4, 'ipfs://bafkreiexample');
             CREATE MATERIALIZED VIEW pages WITH (ttl = '1500 ms', concurrency = 2) AS
               SELECT id, url, http_get(url) AS body FROM urls;
             CREATE MATERIALIZED VIEW lengths AS SELECT id, length(body) AS n FROM pages;",
            a = site.url("/a"),
            b = site.url("/b"),
            missing = site.url("/missing"),
        ))
        .unwrap();
    let bodies = |database: &mut Database| view_text(database, "SELECT id, body FROM pages");
    eventually(&mut database, 10, "the first reads", |database| {
        bodies(database) == ["1|first a", "2|only b", "3|", "4|immutable"]
    });
    assert_eq!(view_text(&mut database, "SELECT id, n FROM lengths"), ["1|7", "2|6", "3|", "4|9"]);
    // The same resource wanted again, within the ttl: a memo hit, no request.
    database.execute(&format!("INSERT INTO urls VALUES (5, '{}')", site.url("/a"))).unwrap();
    eventually(&mut database, 10, "the memo hit", |database| bodies(database).contains(&"5|first a".to_string()));
    assert_eq!(site.hits("/a"), 1);
    // Another view reading the same resources shares the observations: memo hits.
    // (Options may also follow the query, as here.)
    database
        .execute(
            "CREATE MATERIALIZED VIEW titles AS SELECT id, http_get(url) FROM urls WHERE id < 3 WITH (ttl = '1 hour')",
        )
        .unwrap();
    eventually(&mut database, 10, "the second view", |database| {
        view_text(database, "SELECT id, http_get FROM titles") == ["1|first a", "2|only b"]
    });
    assert_eq!((site.hits("/a"), site.hits("/b")), (1, 1), "no second read within the ttl");
    // The executor counts the hits when it sees the new view's wanted resources.
    eventually(&mut database, 10, "memo hits to be counted", |database| database.read_counts().0 >= 2);
    assert_eq!((site.hits("/a"), site.hits("/b")), (1, 1), "still no second read");
    database.execute("DROP VIEW titles").unwrap();
    // A failed read is an effect with its error; the view has NULL.
    let failed = effect_rows(&mut database, "stream = 'query' AND status = 'failed'");
    assert!(failed.iter().any(|row| text(&row[3]).contains("HTTP 404")), "{failed:?}");
    // After the ttl, reads are refreshed: a changed answer updates the views, an unchanged one
    // changes nothing downstream; ipfs:// reads never expire.
    let (_, subscription) = database.subscribe("pages").unwrap();
    site.set("/a", "second a");
    eventually(&mut database, 15, "the refresh", |database| bodies(database).contains(&"1|second a".to_string()));
    eventually(&mut database, 15, "b's refresh", |_| site.hits("/b") >= 2);
    database.ingest_sources().unwrap();
    let mut changed_ids = HashSet::new();
    while let Ok(changes) = subscription.changes.try_recv() {
        for (row, _) in changes.updates {
            changed_ids.insert(format!("{:?}", row[0]));
        }
    }
    assert!(!changed_ids.contains(&format!("{:?}", Value::Int(2))), "b did not change: {changed_ids:?}");
    assert!(changed_ids.contains(&format!("{:?}", Value::Int(1))), "{changed_ids:?}");
    assert_eq!(site.hits("/ipfs/bafkreiexample"), 1, "content-addressed reads never expire");
    // Query effects' table is theirs alone.
    let error = database.execute("DELETE FROM weft_reads").unwrap_err().to_string();
    assert!(error.contains("query effects"), "{error}");
    // After a restart, fresh observations are memo hits: nothing is read again at once.
    let a_hits = site.hits("/a");
    drop(database);
    let mut database = open(&directory);
    assert!(bodies(&mut database).contains(&"1|second a".to_string()));
    database.execute("DROP VIEW lengths; DROP VIEW pages").unwrap();
    assert!(database.query("SELECT * FROM weft_wanted_pages").is_err(), "the wanted view goes with its view");
    assert!(site.hits("/a") <= a_hits + 1);
    drop(database);
    let _ = std::fs::remove_dir_all(&directory);
}

#[test]
fn effects_returned_by_a_wasm_function_run_once_each() {
    let (port, received) = faulty_receiver();
    let directory = data_dir("requested");
    std::fs::create_dir_all(&directory).unwrap();
    let log = directory.join("requested.jsonl");
    let mut database = open(&directory);
    database
        .execute(&format!(
            "CREATE FUNCTION alert(TEXT, TEXT) RETURNS TEXT LANGUAGE wasm AS 'examples/wasm/effects.wat';
             CREATE TABLE readings (sensor TEXT PRIMARY KEY, level BIGINT);
             CREATE MATERIALIZED VIEW alarms AS
               SELECT sensor, alert('http://127.0.0.1:{port}/alarm', sensor) AS effect FROM readings WHERE level > 90;
             CREATE SINK alarm_effects FROM alarms INTO effects('effect');
             CREATE MATERIALIZED VIEW logged AS
               SELECT sensor, '{{\"connector\":\"files\",\"ability\":\"files/append\",\"resource\":\"{}\",\"payload\":{{\"sensor\":\"' || sensor || '\"}}}}' AS effect
               FROM readings;
             CREATE SINK log_effects FROM logged INTO effects('effect');",
            log.display()
        ))
        .unwrap();
    database.execute("INSERT INTO readings VALUES ('s1', 95), ('s2', 10), ('s3', 99)").unwrap();
    database.execute("UPDATE readings SET level = 97 WHERE sensor = 's2'").unwrap();
    database.execute("DELETE FROM readings WHERE sensor = 's1'").unwrap();
    assert_eq!(database.wait_for_effects(Duration::from_secs(60)), 0);
    let mut messages: Vec<String> =
        received.lock().unwrap().applied.iter().map(|body| body["message"].as_str().unwrap().to_string()).collect();
    messages.sort();
    assert_eq!(messages, ["s1", "s2", "s3"], "each requested POST once; a row leaving undoes nothing");
    let lines = std::fs::read_to_string(&log).unwrap();
    let mut sensors: Vec<String> = lines
        .lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).unwrap()["payload"]["sensor"].as_str().unwrap().to_string()
        })
        .collect();
    sensors.sort();
    assert_eq!(sensors, ["s1", "s2", "s3"]);
    // A description that is not one fails its effect, naming the problem.
    let error = database.execute("CREATE SINK wrong FROM readings INTO effects('level')").unwrap_err().to_string();
    assert!(error.contains("no TEXT column level") || error.contains("only views"), "{error}");
    database
        .execute(
            "CREATE MATERIALIZED VIEW broken AS SELECT sensor, 'not json' AS effect FROM readings;
             CREATE SINK broken_effects FROM broken INTO effects('effect');",
        )
        .unwrap();
    eventually(&mut database, 10, "the failure", |database| {
        !effect_rows(database, "name = 'broken_effects' AND status = 'failed'").is_empty()
    });
    let failed = effect_rows(&mut database, "name = 'broken_effects'");
    assert!(text(&failed[0][3]).contains("not JSON"), "{failed:?}");
    drop(database);
    let _ = std::fs::remove_dir_all(&directory);
}

fn weft(directory: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
        .arg("--data-dir")
        .arg(directory)
        .arg("--no-sync")
        .args(args)
        .output()
        .expect("run weft");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn the_command_line_lists_retries_and_verifies_effects() {
    let directory = data_dir("cli");
    std::fs::create_dir_all(&directory).unwrap();
    let target = directory.join("out.parquet");
    std::fs::write(&target, b"not parquet at all").unwrap();
    let (ok, _, stderr) = weft(
        &directory,
        &[
            "sql",
            "-c",
            &format!(
                "CREATE TABLE t (id BIGINT PRIMARY KEY); CREATE MATERIALIZED VIEW v AS SELECT id FROM t;
                 INSERT INTO t VALUES (1), (2); CREATE SINK out FROM v INTO files('{}');",
                target.display()
            ),
        ],
    );
    assert!(ok, "{stderr}");
    let (ok, listed, stderr) = weft(&directory, &["effects", "list", "--format", "json"]);
    assert!(ok, "{stderr}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&listed).unwrap();
    let failed = rows.iter().find(|row| row["name"] == "out").unwrap_or_else(|| panic!("{listed}"));
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(failed["error"].as_str().unwrap().contains("not a Parquet file"), "{failed}");
    // The failure's receipt is signed by the node and names the effect.
    let receipt = failed["receipt"].as_str().unwrap();
    let (ok, printed, stderr) = weft(&directory, &["receipt", receipt, "--verify"]);
    assert!(ok && stderr.contains("verified"), "{stderr}");
    let printed: serde_json::Value = serde_json::from_str(&printed).unwrap();
    assert_eq!(printed["ran"]["/"], failed["cid"], "{printed}");
    assert!(printed["out"]["error"].as_str().unwrap().contains("not a Parquet file"), "{printed}");
    // Fix the cause and retry: delivered.
    std::fs::remove_file(&target).unwrap();
    let cid = failed["cid"].as_str().unwrap();
    let (ok, retried, stderr) = weft(&directory, &["effects", "retry", cid]);
    assert!(ok, "{retried} {stderr}");
    let retried: serde_json::Value = serde_json::from_str(retried.trim()).unwrap();
    assert_eq!(retried["status"], "delivered");
    assert!(target.exists());
    let (ok, _, stderr) = weft(&directory, &["effects", "retry", "bafyrmiunknown"]);
    assert!(!ok && stderr.contains("no effect"), "{stderr}");
    let _ = std::fs::remove_dir_all(&directory);
}
