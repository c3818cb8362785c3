//! Persistence: restarts rebuild identical tables and views (with any worker count), the log is
//! checkpointed, a kill -9 loses no acknowledged commit, and damaged or busy data directories
//! are refused with a clear error.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use weft_core::{Database, Error, Options, Row, Value};

fn temporary_directory(label: &str) -> std::path::PathBuf {
    let directory = std::env::temp_dir().join(format!("weft-persistence-{label}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    directory
}

fn sorted(mut rows: Vec<Row>) -> Vec<Row> {
    rows.sort();
    rows
}

#[test]
fn restart_rebuilds_identical_tables_and_views() {
    let directory = temporary_directory("restart");
    let options = |workers| Options { data_dir: directory.clone(), workers, sync: true };
    let (table_before, view_before, top_before) = {
        let mut database = Database::open(options(1)).unwrap();
        database
            .execute(
                "CREATE TABLE orders (id BIGINT PRIMARY KEY, customer TEXT, amount DOUBLE);
                 CREATE MATERIALIZED VIEW per_customer AS SELECT customer, sum(amount) AS total, count(*) AS n FROM orders GROUP BY customer;
                 CREATE VIEW top AS SELECT id, total FROM (SELECT o.id, p.total FROM orders o JOIN per_customer p ON o.customer = p.customer) ORDER BY total DESC, id LIMIT 3;",
            )
            .unwrap();
        for id in 0..50 {
            database.execute(&format!("INSERT INTO orders VALUES ({id}, 'c{}', {}.5)", id % 7, id)).unwrap();
        }
        database
            .execute("UPDATE orders SET amount = amount * 2 WHERE id < 10; DELETE FROM orders WHERE id % 5 = 0")
            .unwrap();
        database.execute("BEGIN; INSERT INTO orders VALUES (100, 'late', 1.0); ROLLBACK").unwrap();
        (
            sorted(database.query("SELECT * FROM orders").unwrap()),
            sorted(database.view_rows("per_customer").unwrap()),
            sorted(database.view_rows("top").unwrap()),
        )
    };
    assert_eq!(table_before.len(), 40);
    for workers in [3, 1] {
        let database = Database::open(options(workers)).unwrap();
        assert_eq!(sorted(database.view_rows("per_customer").unwrap()), view_before, "workers = {workers}");
        assert_eq!(sorted(database.view_rows("top").unwrap()), top_before, "workers = {workers}");
        drop(database);
    }
    let mut database = Database::open(options(2)).unwrap();
    assert_eq!(sorted(database.query("SELECT * FROM orders").unwrap()), table_before);
    drop(database);
    std::fs::remove_dir_all(&directory).unwrap();
}

#[test]
fn large_statements_log_exactly_what_they_commit() {
    // 70,000 rows: a statement this large has its log frame encoded while its rows are applied.
    let directory = temporary_directory("large");
    let options = Options { data_dir: directory.clone(), workers: 2, sync: false };
    let rows = |ids: std::ops::Range<i64>| -> Vec<Row> {
        ids.map(|id| vec![Value::Int(id), Value::Text(format!("c{}", id % 13).into())]).collect()
    };
    {
        let mut database = Database::open(options.clone()).unwrap();
        database
            .execute("CREATE TABLE t (id BIGINT PRIMARY KEY, name TEXT); CREATE VIEW n AS SELECT count(*) AS n FROM t")
            .unwrap();
        assert_eq!(database.insert_rows("t", rows(0..70_000)).unwrap(), 70_000);
        // A large statement that fails (a duplicate key at its end) logs nothing.
        let error = database.insert_rows("t", rows(70_000..140_000).into_iter().chain(rows(5..6)).collect());
        assert!(error.unwrap_err().to_string().contains("duplicate"), "a duplicate key is refused");
        // A large statement after another in a transaction, rolled back; then one first in a
        // transaction (its frame encoded ahead) followed by another, committed.
        database.execute("BEGIN; INSERT INTO t VALUES (-1, 'x')").unwrap();
        database.insert_rows("t", rows(200_000..270_000)).unwrap();
        database.execute("ROLLBACK").unwrap();
        database.execute("BEGIN").unwrap();
        database.insert_rows("t", rows(300_000..370_000)).unwrap();
        database.execute("INSERT INTO t VALUES (-2, 'y'); COMMIT").unwrap();
        assert_eq!(database.view_rows("n").unwrap(), vec![vec![Value::Int(140_001)]]);
        // Large statements outside a transaction are handed to the engine while they are
        // checked: one that fails leaves no trace in the views, one that succeeds is seen whole.
        let error = database.insert_rows("t", rows(400_000..470_000).into_iter().chain(rows(7..8)).collect());
        assert!(error.is_err(), "a duplicate key is refused");
        database.execute("INSERT INTO t VALUES (-3, 'z')").unwrap();
        assert_eq!(database.view_rows("n").unwrap(), vec![vec![Value::Int(140_002)]]);
        database.execute("DELETE FROM t WHERE id >= 300000").unwrap();
        assert_eq!(database.view_rows("n").unwrap(), vec![vec![Value::Int(70_002)]]);
    }
    let mut database = Database::open(options).unwrap();
    assert_eq!(database.view_rows("n").unwrap(), vec![vec![Value::Int(70_002)]]);
    let expected: Vec<Row> =
        [vec![Value::Int(-2), Value::Text("y".into())], vec![Value::Int(-3), Value::Text("z".into())]]
            .into_iter()
            .chain(rows(0..70_000))
            .collect();
    assert_eq!(sorted(database.query("SELECT * FROM t").unwrap()), sorted(expected));
    drop(database);
    std::fs::remove_dir_all(&directory).unwrap();
}

#[test]
fn long_logs_are_checkpointed_into_a_snapshot() {
    let directory = temporary_directory("checkpoint");
    let options = Options { data_dir: directory.clone(), workers: 1, sync: false };
    {
        let mut database = Database::open(options.clone()).unwrap();
        database
            .execute("CREATE TABLE t (id BIGINT PRIMARY KEY, v BIGINT); CREATE VIEW s AS SELECT sum(v) AS total FROM t")
            .unwrap();
        for id in 0..1_200 {
            database.execute(&format!("INSERT INTO t VALUES ({id}, {id})")).unwrap();
        }
        database.execute("DELETE FROM t WHERE id >= 1000").unwrap();
    }
    let log_size = |directory: &std::path::Path| std::fs::metadata(directory.join("wal")).unwrap().len();
    let before = log_size(&directory);
    {
        // Opening replays 1,200+ frames and rewrites the log as a snapshot.
        let database = Database::open(options.clone()).unwrap();
        assert_eq!(database.view_rows("s").unwrap(), vec![vec![weft_core::Value::Int(499_500)]]);
    }
    let after = log_size(&directory);
    assert!(after < before, "checkpoint should shrink the log: {before} -> {after} bytes");
    let mut database = Database::open(options).unwrap();
    assert_eq!(database.query("SELECT count(*) FROM t").unwrap(), vec![vec![weft_core::Value::Int(1_000)]]);
    assert_eq!(database.view_rows("s").unwrap(), vec![vec![weft_core::Value::Int(499_500)]]);
    drop(database);
    std::fs::remove_dir_all(&directory).unwrap();
}

#[test]
fn kill_nine_loses_no_acknowledged_commit() {
    let directory = temporary_directory("kill");
    let mut child = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["--data-dir", directory.to_str().unwrap(), "--no-sync", "sql"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let mut output = BufReader::new(child.stdout.take().unwrap()).lines();
    writeln!(input, "CREATE TABLE t (id BIGINT PRIMARY KEY, v TEXT);").unwrap();
    writeln!(input, "CREATE VIEW n AS SELECT count(*) AS n FROM t;").unwrap();
    // Keep the pipe full so the process is mid-commit when it is killed.
    let writer = std::thread::spawn(move || {
        for id in 0..100_000 {
            if writeln!(input, "INSERT INTO t VALUES ({id}, 'row {id}');").is_err() {
                break;
            }
        }
    });
    let mut acknowledged = 0;
    while let Some(Ok(line)) = output.next() {
        if line == "INSERT 0 1" {
            acknowledged += 1;
            if acknowledged == 500 {
                break;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let _ = writer.join();
    assert_eq!(acknowledged, 500);
    let mut database = Database::open(Options { data_dir: directory.clone(), workers: 1, sync: false }).unwrap();
    let ids: Vec<i64> = database
        .query("SELECT id FROM t ORDER BY id")
        .unwrap()
        .into_iter()
        .map(|row| match row[0] {
            weft_core::Value::Int(id) => id,
            _ => panic!("id is BIGINT"),
        })
        .collect();
    assert!(ids.len() >= acknowledged, "{} rows survived, {acknowledged} were acknowledged", ids.len());
    assert_eq!(ids, (0..ids.len() as i64).collect::<Vec<_>>(), "commits survive as a prefix");
    assert_eq!(database.view_rows("n").unwrap(), vec![vec![weft_core::Value::Int(ids.len() as i64)]]);
    drop(database);
    std::fs::remove_dir_all(&directory).unwrap();
}

#[test]
fn busy_or_damaged_data_directories_are_refused() {
    let directory = temporary_directory("damaged");
    let options = Options { data_dir: directory.clone(), workers: 1, sync: true };
    let mut database = Database::open(options.clone()).unwrap();
    database.execute("CREATE TABLE t (id BIGINT); INSERT INTO t VALUES (1); INSERT INTO t VALUES (2)").unwrap();
    assert!(matches!(Database::open(options.clone()), Err(Error::Locked(_))));
    drop(database);
    // Flip a byte inside the first frame's payload: frames follow it, so this is damage.
    let path = directory.join("wal");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[14] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let error = Database::open(options.clone()).err().expect("a damaged log is refused").to_string();
    assert!(error.contains("checksum mismatch"), "{error}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "the damaged log is left untouched");
    std::fs::remove_dir_all(&directory).unwrap();
}

#[test]
fn bad_statements_leave_everything_intact() {
    let directory = temporary_directory("bad");
    let mut database = Database::open(Options { data_dir: directory.clone(), workers: 1, sync: false }).unwrap();
    database
        .execute("CREATE TABLE t (id BIGINT PRIMARY KEY, v DOUBLE); INSERT INTO t VALUES (1, 1.0), (2, 2.0)")
        .unwrap();
    database.execute("CREATE VIEW s AS SELECT sum(v) AS total FROM t").unwrap();
    let failures = [
        "SELEC nonsense",
        "INSERT INTO t VALUES (3, 3.0), (1, 9.0)",
        "INSERT INTO t VALUES ('x', 1.0)",
        "UPDATE t SET id = 2 WHERE id = 1",
        "CREATE TABLE t (id BIGINT)",
        "CREATE VIEW w AS SELECT id, row_number() OVER (ORDER BY id) FROM t",
        "CREATE TABLE u (x INTERVAL)",
        "DROP TABLE t",
        "INSERT INTO s VALUES (1.0)",
        "COPY t FROM '/nonexistent/file.csv'",
    ];
    for sql in failures {
        let error = database.execute(sql).err().unwrap_or_else(|| panic!("{sql} should fail"));
        assert!(!error.to_string().is_empty());
    }
    assert_eq!(database.query("SELECT count(*) FROM t").unwrap(), vec![vec![weft_core::Value::Int(2)]]);
    assert_eq!(database.view_rows("s").unwrap(), vec![vec![weft_core::Value::float(3.0)]]);
    drop(database);
    std::fs::remove_dir_all(&directory).unwrap();
}
