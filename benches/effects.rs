//! Managed effects under load, against real components started here: a PostgreSQL server from
//! Debian's packages and a local HTTP server.
//!
//! - Mutation effects: a view over a table receiving inserts at a target of 100k rows/s (batches
//!   of 2000 rows every 20 ms, one transaction each) is sunk into PostgreSQL; reports the rate
//!   achieved, the rows and effects delivered per second (runs of effects are batched into one
//!   PostgreSQL transaction each) and the lag after the last commit.
//! - Query effects: a view calling `http_get` over 2000 distinct URLs; reports reads per second.
//! - Memo-hit reads: 20000 more rows reading the same URLs within their ttl; reports rows per
//!   second answered without a read.
//!
//! `cargo bench --bench effects` prints one JSON line last. `WEFT_BENCH_SECONDS` sets the write
//! duration (default 5).

#[allow(dead_code)]
#[path = "../tests/common/postgres.rs"]
mod postgres;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};
use weft_core::{Database, Options};

const BATCH_ROWS: usize = 2000;
const BATCH_INTERVAL: Duration = Duration::from_millis(20);
const URLS: usize = 2000;
const MEMO_ROWS: usize = 20_000;

fn serve_pages() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request = String::new();
                let _ = reader.read_line(&mut request);
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                        break;
                    }
                }
                let body = format!("page {}", request.split_whitespace().nth(1).unwrap_or("/"));
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    port
}

fn count(database: &mut Database, sql: &str) -> i64 {
    match database.query(sql).unwrap().first().and_then(|row| row.first()) {
        Some(weft_core::Value::Int(n)) => *n,
        other => panic!("{sql}: {other:?}"),
    }
}

fn main() {
    let seconds: u64 = std::env::var("WEFT_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let postgres = postgres::Postgres::start("bench");
    postgres.psql("CREATE TABLE mirror (id BIGINT PRIMARY KEY, k BIGINT, v BIGINT)");
    let directory = std::env::temp_dir().join(format!("weft-bench-effects-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    let mut options = Options::new(&directory);
    options.sync = false;
    let mut database = Database::open(options).unwrap();
    database
        .execute(&format!(
            "CREATE TABLE events (id BIGINT PRIMARY KEY, k BIGINT, v BIGINT);
             CREATE MATERIALIZED VIEW mirror AS SELECT id, k, v FROM events;
             CREATE SINK mirror_pg FROM mirror INTO postgres('{}', 'mirror') KEY (id);",
            postgres.conninfo()
        ))
        .unwrap();

    // Mutation effects.
    let started = Instant::now();
    let mut next_id = 0usize;
    let mut commits = 0usize;
    while started.elapsed() < Duration::from_secs(seconds) {
        let due = started + BATCH_INTERVAL * commits as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let rows: Vec<weft_core::Row> = (next_id..next_id + BATCH_ROWS)
            .map(|id| {
                vec![
                    weft_core::Value::Int(id as i64),
                    weft_core::Value::Int((id % 97) as i64),
                    weft_core::Value::Int(1),
                ]
            })
            .collect();
        database.insert_rows("events", rows).unwrap();
        next_id += BATCH_ROWS;
        commits += 1;
    }
    let writing = started.elapsed();
    let pending = database.wait_for_effects(Duration::from_secs(600));
    assert_eq!(pending, 0, "the sink did not finish");
    let delivered = started.elapsed();
    let lag = delivered - writing;
    assert_eq!(postgres.psql("SELECT count(*) FROM mirror").trim(), next_id.to_string(), "PostgreSQL holds the view");
    let effects = count(&mut database, "SELECT count(*) FROM weft.effects WHERE name = 'mirror_pg'");

    // Query effects.
    let port = serve_pages();
    let values: Vec<String> = (0..URLS).map(|i| format!("({i}, 'http://127.0.0.1:{port}/p{i}')")).collect();
    database
        .execute(&format!(
            "CREATE TABLE urls (id BIGINT PRIMARY KEY, url TEXT); INSERT INTO urls VALUES {};",
            values.join(", ")
        ))
        .unwrap();
    let reads_started = Instant::now();
    database
        .execute("CREATE MATERIALIZED VIEW pages WITH (ttl = '1 hour', concurrency = 32) AS SELECT id, http_get(url) AS body FROM urls")
        .unwrap();
    while count(&mut database, "SELECT count(body) FROM pages") < URLS as i64 {
        database.ingest_sources().unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    let reads = reads_started.elapsed();

    // Memo-hit reads: more rows wanting the same URLs.
    let values: Vec<String> =
        (0..MEMO_ROWS).map(|i| format!("({}, 'http://127.0.0.1:{port}/p{}')", URLS + i, i % URLS)).collect();
    let hits_started = Instant::now();
    database.execute(&format!("INSERT INTO urls VALUES {}", values.join(", "))).unwrap();
    while count(&mut database, "SELECT count(body) FROM pages") < (URLS + MEMO_ROWS) as i64 {
        database.ingest_sources().unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    let hits = hits_started.elapsed();
    let (_, fetches) = database.read_counts();
    assert_eq!(fetches as usize, URLS, "memo hits read nothing");

    let line = serde_json::json!({
        "bench": "effects",
        "update_rows_per_s": (next_id as f64 / writing.as_secs_f64()).round(),
        "commits": commits,
        "pg_rows_per_s": (next_id as f64 / delivered.as_secs_f64()).round(),
        "pg_effects_per_s": (effects as f64 / delivered.as_secs_f64()).round(),
        "pg_delivery_lag_ms": lag.as_millis() as u64,
        "query_effects_per_s": (URLS as f64 / reads.as_secs_f64()).round(),
        "memo_hit_reads_per_s": (MEMO_ROWS as f64 / hits.as_secs_f64()).round(),
    });
    drop(database);
    let _ = std::fs::remove_dir_all(&directory);
    println!("{line}");
}
