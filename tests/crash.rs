//! Crash simulation: a seeded random workload of DDL, DML, Wasm calls and a sink runs against a
//! `weft serve` child process, which is killed with SIGKILL at a random moment of each round and
//! started again on the same data directory. After every restart: every acknowledged statement
//! is present and nothing else (the one in flight when the process died may or may not be);
//! the view equals the batch answer over the table; each distinct invocation has one receipt;
//! and the sink's file, folded, equals the view (no effect applied twice or lost).
//!
//! `WEFT_CRASH_SEED` repeats a run; `WEFT_CRASH_ITERATIONS` sets the rounds (default 4; 1,000 on
//! demand). Write and sync failures inside the log are simulated by the unit tests of `wal` and
//! `database`, which reach its fault hooks.

mod common;

use common::Server;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

/// The answer to a statement: `Some(body)` when the server acknowledged it, `None` when the
/// connection failed (the server died: the statement is in doubt).
fn post(server: &Server, sql: &str) -> Option<(u16, String)> {
    server.try_http("POST", "/query", sql, "")
}

/// `(id, number)` rows of a JSON array of objects.
fn pairs(body: &str, first: &str, second: &str) -> Vec<(i64, i64)> {
    let rows: Vec<serde_json::Value> = serde_json::from_str(body).unwrap_or_else(|_| panic!("not rows: {body}"));
    rows.iter().map(|row| (row[first].as_i64().unwrap(), row[second].as_i64().unwrap())).collect()
}

fn query(server: &Server, sql: &str) -> String {
    let (status, body) = server.http("POST", "/query", sql, "");
    assert_eq!(status, 200, "{sql}: {body}");
    body
}

/// One statement of the workload, and what it does to the model of the table.
enum Operation {
    Upsert(Vec<(i64, i64)>),
    Delete(i64),
}

impl Operation {
    fn sql(&self) -> String {
        match self {
            Operation::Upsert(rows) => {
                // One transaction: delete then insert, so an id may be updated.
                let ids: Vec<String> = rows.iter().map(|(id, _)| id.to_string()).collect();
                let values: Vec<String> = rows.iter().map(|(id, value)| format!("({id}, {value})")).collect();
                format!(
                    "BEGIN; DELETE FROM t WHERE id IN ({}); INSERT INTO t VALUES {}; COMMIT",
                    ids.join(", "),
                    values.join(", ")
                )
            }
            Operation::Delete(id) => format!("DELETE FROM t WHERE id = {id}"),
        }
    }

    fn apply(&self, model: &mut BTreeMap<i64, i64>) {
        match self {
            Operation::Upsert(rows) => model.extend(rows.iter().copied()),
            Operation::Delete(id) => {
                model.remove(id);
            }
        }
    }
}

#[test]
fn kill_nine_at_random_moments_loses_and_doubles_nothing() {
    let seed = std::env::var("WEFT_CRASH_SEED").ok().and_then(|seed| seed.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    let rounds: usize = std::env::var("WEFT_CRASH_ITERATIONS").ok().and_then(|n| n.parse().ok()).unwrap_or(4);
    println!("crash test seed {seed} (WEFT_CRASH_SEED to repeat), {rounds} rounds");
    let mut random = Random(seed | 1);
    let root = common::files_root("crash");
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/wasm/math.wat"), root.join("math.wat")).unwrap();
    let mut server = Server::start("crash", &["--files-root", root.to_str().unwrap()]);
    query(&server, "CREATE TABLE t (id BIGINT PRIMARY KEY, v BIGINT)");
    query(&server, "CREATE FUNCTION add_one(BIGINT) RETURNS BIGINT LANGUAGE wasm AS 'math.wat'");
    query(&server, "CREATE MATERIALIZED VIEW v AS SELECT id, add_one(v) AS w FROM t");
    query(&server, "CREATE SINK s FROM v INTO files('out.jsonl') KEY (id)");
    let mut model: BTreeMap<i64, i64> = BTreeMap::new();
    for round in 0..rounds {
        let context = format!("seed {seed} round {round}");
        // The killer: SIGKILL after a random delay, while statements are in flight.
        let pid = server.pid();
        let delay = Duration::from_millis(20 + random.below(400));
        let killer = std::thread::spawn(move || {
            std::thread::sleep(delay);
            let _ = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status();
        });
        let mut in_doubt = None;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            let operation = if model.is_empty() || random.below(4) != 0 {
                let count = 1 + random.below(20);
                Operation::Upsert(
                    (0..count)
                        .map(|_| (random.below(200) as i64, random.below(50) as i64))
                        .collect::<BTreeMap<_, _>>()
                        .into_iter()
                        .collect(),
                )
            } else {
                let ids: Vec<i64> = model.keys().copied().collect();
                Operation::Delete(ids[random.below(ids.len() as u64) as usize])
            };
            match post(&server, &operation.sql()) {
                Some((200, _)) => operation.apply(&mut model),
                Some((status, body)) => panic!("{context}: {status} {body}"),
                None => {
                    in_doubt = Some(operation);
                    break;
                }
            }
        }
        killer.join().unwrap();
        server.crash_and_restart();
        // Every acknowledged statement is there; the one in flight, whole or not at all.
        let table = pairs(&query(&server, "SELECT id, v FROM t ORDER BY id"), "id", "v");
        let acknowledged: Vec<(i64, i64)> = model.iter().map(|(id, v)| (*id, *v)).collect();
        if table != acknowledged {
            let operation = in_doubt.as_ref().unwrap_or_else(|| panic!("{context}: lost or changed rows"));
            operation.apply(&mut model);
            let with_it: Vec<(i64, i64)> = model.iter().map(|(id, v)| (*id, *v)).collect();
            assert_eq!(table, with_it, "{context}: neither without nor with the statement in flight");
        }
        // The view equals the batch answer over the table.
        let view = pairs(&query(&server, "SELECT id, w FROM v ORDER BY id"), "id", "w");
        let expected: Vec<(i64, i64)> = model.iter().map(|(id, v)| (*id, v + 1)).collect();
        assert_eq!(view, expected, "{context}: view");
        // One receipt per distinct invocation.
        let counts = query(&server, "SELECT count(*) AS n, count(DISTINCT ran) AS d FROM weft.receipts");
        let counts: serde_json::Value = serde_json::from_str(&counts).unwrap();
        assert_eq!(counts[0]["n"], counts[0]["d"], "{context}: a receipt twice: {counts}");
        // The sink's file, folded, is the view: each effect applied once.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let pending = query(&server, "SELECT count(*) AS n FROM weft.effects WHERE status <> 'delivered'");
            if pending.contains("\"n\":0") {
                break;
            }
            assert!(Instant::now() < deadline, "{context}: the sink did not catch up: {pending}");
            std::thread::sleep(Duration::from_millis(20));
        }
        let written = std::fs::read_to_string(root.join("out.jsonl")).unwrap_or_default();
        let mut folded: BTreeMap<(i64, i64), i64> = BTreeMap::new();
        for line in written.lines() {
            let line: serde_json::Value = serde_json::from_str(line).unwrap();
            let key = (line["row"]["id"].as_i64().unwrap(), line["row"]["w"].as_i64().unwrap());
            *folded.entry(key).or_default() += line["diff"].as_i64().unwrap();
        }
        folded.retain(|_, count| *count != 0);
        let sunk: Vec<(i64, i64)> = folded
            .iter()
            .map(|(row, count)| {
                assert_eq!(*count, 1, "{context}: row {row:?} held {count} times in the sink's file");
                *row
            })
            .collect();
        assert_eq!(sunk, expected, "{context}: sink file");
    }
    let _ = std::fs::remove_dir_all(&root);
}
