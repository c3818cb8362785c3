//! Pure function calls outside views: one run per invocation, memoised across restarts, every
//! outcome (also a failure) a signed receipt in the log.

use weft_core::{Database, Options, Value};
use weft_ipvm::invocation::Outcome;
use weft_wasm::Limits;

const MATH: &[u8] = include_bytes!("../examples/wasm/math.wat");
const TEXT: &[u8] = include_bytes!("../examples/wasm/text.wat");
const SPIN: &[u8] = b"(module (func (export \"spin\") (param i64) (result i64) (loop $l (br $l)) i64.const 0))";

#[test]
fn invocations_run_once_and_receipts_survive_restarts() {
    let directory = fresh_directory("weft-functions");
    let options = Options { data_dir: directory.clone(), workers: 1, sync: true };
    let (receipt_cid, did) = {
        let mut database = Database::open(options.clone()).unwrap();
        let first = database.invoke(MATH, "add_one", vec![Value::Int(42)], None, Limits::default()).unwrap();
        assert!(!first.hit);
        assert_eq!(first.stored.receipt.out, Outcome::Ok(Value::Int(43)));
        let again = database.invoke(MATH, "add_one", vec![Value::Int(42)], None, Limits::default()).unwrap();
        assert!(again.hit);
        assert_eq!(again.stored.cid, first.stored.cid);
        let other = database.invoke(MATH, "add_one", vec![Value::Int(7)], None, Limits::default()).unwrap();
        assert!(!other.hit && other.stored.receipt.ran != first.stored.receipt.ran);
        let text = database
            .invoke(TEXT, "slug", vec![Value::Text("A b".into())], Some(weft_core::ColumnType::Text), Limits::default())
            .unwrap();
        assert_eq!(text.stored.receipt.out, Outcome::Ok(Value::Text("a-b".into())));
        let limits = Limits { fuel: 10_000, memory_bytes: 1 << 20 };
        let spin = database.invoke(SPIN, "spin", vec![Value::Int(1)], None, limits).unwrap();
        assert!(matches!(&spin.stored.receipt.out, Outcome::Error(message) if message.contains("fuel")));
        assert_eq!(database.memo_counts(), (1, 4));
        // The same facts as SQL relations.
        let rows = database
            .query("SELECT i.func, r.ok, r.out FROM weft.receipts r JOIN weft.invocations i ON r.ran = i.cid ORDER BY i.func, r.out")
            .unwrap();
        let text = |value: &str| Value::Text(value.into());
        assert_eq!(
            rows,
            vec![
                vec![text("add_one"), Value::Bool(true), text("43")],
                vec![text("add_one"), Value::Bool(true), text("8")],
                vec![text("slug"), Value::Bool(true), text("\"a-b\"")],
                vec![text("spin"), Value::Bool(false), Value::Null],
            ]
        );
        assert_eq!(
            database.query("SELECT hits, misses, receipts FROM weft.memo_stats").unwrap(),
            vec![vec![Value::Int(1), Value::Int(4), Value::Int(4)]]
        );
        assert!(database.execute("CREATE VIEW r AS SELECT * FROM weft.receipts").is_err());
        // Receipts signed by this process verify, and a checkpoint logs their proofs.
        let live = database.receipt(&first.stored.cid).unwrap();
        let proof = live.signed_proof().unwrap();
        weft_ipvm::identity::verify_proof(database.node_did(), &live.cid.to_bytes(), &proof).unwrap();
        database.checkpoint().unwrap();
        (first.stored.cid, database.node_did().to_string())
    };
    let mut database = Database::open(options).unwrap();
    assert_eq!(database.node_did(), did, "the node key persists");
    for (source, function, arg) in [(MATH, "add_one", 42), (MATH, "add_one", 7), (SPIN, "spin", 1)] {
        let limits = Limits { fuel: 10_000, memory_bytes: 1 << 20 };
        assert!(database.invoke(source, function, vec![Value::Int(arg)], None, limits).unwrap().hit);
    }
    assert_eq!(database.memo_counts(), (3, 0), "nothing ran after the restart");
    let stored = database.receipt(&receipt_cid).expect("receipt by CID").clone();
    let proof = stored.signed_proof().expect("logged receipts are signed");
    weft_ipvm::identity::verify_proof(&stored.receipt.issuer, &stored.cid.to_bytes(), &proof).unwrap();
    assert!(weft_ipvm::identity::verify_proof(&stored.receipt.issuer, b"tampered", &proof).is_err());
    database.checkpoint().unwrap();
    drop(database);
    let database = Database::open(Options { data_dir: directory.clone(), workers: 1, sync: true }).unwrap();
    assert!(database.receipt(&receipt_cid).is_some(), "receipts survive a checkpoint");
    drop(database);
    std::fs::remove_dir_all(&directory).unwrap();
}

#[test]
fn the_invoke_command_prints_one_json_line() {
    let directory = fresh_directory("weft-invoke-cli");
    let module = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/wasm/math.wat");
    let run = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
            .arg("--data-dir")
            .arg(&directory)
            .args(args)
            .output()
            .unwrap();
        (output.status.success(), String::from_utf8_lossy(&output.stdout).to_string())
    };
    let (ok, first) = run(&["invoke", module, "add_one", "42"]);
    assert!(ok);
    let first: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(first["out"], 43);
    assert_eq!(first["memo"], "miss");
    let (_, second) = run(&["invoke", module, "add_one", "42"]);
    let second: serde_json::Value = serde_json::from_str(&second).unwrap();
    assert_eq!(second["memo"], "hit");
    assert_eq!(second["receipt"], first["receipt"]);
    let (ok, receipt) = run(&["receipt", first["receipt"].as_str().unwrap(), "--verify"]);
    assert!(ok);
    let receipt: serde_json::Value = serde_json::from_str(&receipt).unwrap();
    assert_eq!(receipt["ran"]["/"], first["invocation"]);
    assert_eq!(receipt["out"]["ok"], 43);
    let (ok, _) = run(&["invoke", module, "missing_export", "1"]);
    assert!(!ok, "an error receipt exits non-zero");
    std::fs::remove_dir_all(&directory).unwrap();
}

/// An empty scratch directory for one test, named `label` and this process's id.
fn fresh_directory(label: &str) -> std::path::PathBuf {
    let directory = std::env::temp_dir().join(format!("{label}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    directory
}

/// The receipt a `weft.receipts` cid cell names, checked to be addressed by its own bytes.
fn receipt_named(database: &Database, cell: &Value) -> weft_ipvm::memo::StoredReceipt {
    let Value::Text(cid) = cell else { panic!("receipt CIDs are text") };
    let stored = database.receipt(&weft_ipvm::invocation::parse_cid(cid).unwrap()).expect("receipt by CID");
    assert_eq!(stored.cid.to_string(), cid.as_str());
    assert_eq!(weft_ipvm::invocation::dag_cbor_cid(&stored.encoded), stored.cid, "bytes match the CID");
    stored
}

/// Checks a receipt's proof against its issuer's signature.
fn verify_signed(stored: &weft_ipvm::memo::StoredReceipt) {
    let proof = stored.signed_proof().unwrap();
    weft_ipvm::identity::verify_proof(&stored.receipt.issuer, &stored.cid.to_bytes(), &proof).unwrap();
}

fn memo_counts(database: &mut Database) -> (i64, i64) {
    match database.query("SELECT hits, misses FROM weft.memo_stats").unwrap().as_slice() {
        [row] => match (&row[0], &row[1]) {
            (Value::Int(hits), Value::Int(misses)) => (*hits, *misses),
            _ => panic!("counts are BIGINT"),
        },
        _ => panic!("one row of counts"),
    }
}

#[test]
fn functions_in_views_run_each_invocation_once_across_rebuilds_and_restarts() {
    let directory = fresh_directory("weft-functions-views");
    let options = Options { data_dir: directory.clone(), workers: 2, sync: false };
    let math = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/wasm/math.wat");
    let text = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/wasm/text.wat");
    {
        let mut database = Database::open(options.clone()).unwrap();
        database
            .execute(&format!(
                "CREATE TABLE t (id BIGINT PRIMARY KEY, amount BIGINT, name TEXT);
                 CREATE FUNCTION add_one(BIGINT) RETURNS BIGINT LANGUAGE wasm AS '{math}';
                 CREATE FUNCTION slugify(TEXT) RETURNS TEXT LANGUAGE wasm AS '{text}' EXPORT 'slug';
                 CREATE MATERIALIZED VIEW bumped AS SELECT id, add_one(amount) AS a, slugify(name) AS s FROM t;"
            ))
            .unwrap();
        let values: Vec<String> = (0..20).map(|id| format!("({id}, {}, 'Name {}')", id % 5, id % 3)).collect();
        database.execute(&format!("INSERT INTO t VALUES {}", values.join(", "))).unwrap();
        // 5 distinct amounts and 3 distinct names: 8 invocations, whatever the row count.
        assert_eq!(memo_counts(&mut database).1, 8);
        let rows = database.query("SELECT a, s FROM bumped WHERE id = 7").unwrap();
        assert_eq!(rows, vec![vec![Value::Int(3), Value::Text("name-1".into())]]);
        // The same view again: all hits.
        database.execute("CREATE VIEW again AS SELECT id, add_one(amount) AS a FROM t").unwrap();
        assert_eq!(memo_counts(&mut database).1, 8);
    }
    let mut database = Database::open(options).unwrap();
    assert_eq!(memo_counts(&mut database).1, 0, "rebuilding views after a restart runs nothing");
    database.execute("UPDATE t SET amount = 100 WHERE id = 0").unwrap();
    assert_eq!(memo_counts(&mut database).1, 1, "a changed row runs exactly its new invocation");
    database.execute("DELETE FROM t WHERE id < 10").unwrap();
    assert_eq!(memo_counts(&mut database).1, 1, "deletions run nothing");
    assert_eq!(
        database.query("SELECT count(*) FROM weft.receipts").unwrap(),
        vec![vec![Value::Int(9)]],
        "receipts are never deleted"
    );
    assert!(database.execute("DROP FUNCTION add_one").is_err(), "views still call it");
    // Receipts signed in batches (8 in the first statement) prove their place in the batch, as
    // read back from the log and again after a checkpoint rewrote it.
    let verify_all = |database: &mut Database| {
        let cids = database.query("SELECT cid FROM weft.receipts").unwrap();
        assert_eq!(cids.len(), 9);
        for row in cids {
            verify_signed(&receipt_named(database, &row[0]));
        }
    };
    verify_all(&mut database);
    database.checkpoint().unwrap();
    drop(database);
    let mut database = Database::open(Options { data_dir: directory.clone(), workers: 1, sync: false }).unwrap();
    verify_all(&mut database);
    assert_eq!(memo_counts(&mut database).1, 0, "nothing ran after the checkpoint either");
    drop(database);
    std::fs::remove_dir_all(&directory).unwrap();
}

#[test]
fn views_calling_functions_over_many_chunks_equal_the_batch_answer() {
    let directory = fresh_directory("weft-functions-chunks");
    let mut database = Database::open(Options { data_dir: directory.clone(), workers: 4, sync: false }).unwrap();
    let math = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/wasm/math.wat");
    database
        .execute(&format!(
            "CREATE TABLE t (id BIGINT PRIMARY KEY, x BIGINT, d BIGINT);
             CREATE FUNCTION add_one(BIGINT) RETURNS BIGINT LANGUAGE wasm AS '{math}';"
        ))
        .unwrap();
    // Views read tables a chunk of rows at a time: 5,000 rows span chunks on each of 4 workers,
    // with NULL arguments, arguments that fail (x / d with d = 0) and repeated arguments.
    let rows: Vec<Vec<Value>> = (0..5000i64)
        .map(|id| {
            let x = if id % 97 == 0 { Value::Null } else { Value::Int(id % 3000) };
            vec![Value::Int(id), x, Value::Int(if id == 4321 { 0 } else { 1 + id % 7 })]
        })
        .collect();
    database.insert_rows("t", rows).unwrap();
    let views = [
        ("plain", "SELECT id, add_one(x) AS y FROM t"),
        ("nested", "SELECT id, add_one(add_one(x)) * 2 AS y, CASE WHEN id % 2 = 0 THEN add_one(id) END AS z FROM t"),
        ("filtered", "SELECT id, add_one(x) AS y FROM t WHERE add_one(id) % 3 = 0 AND x IS NOT NULL"),
        ("failing", "SELECT id, add_one(x / d) AS y FROM t"),
    ];
    // Rows with the same x lie on different workers (rows are spread by their hash): still,
    // each distinct x ran exactly once.
    database.execute(&format!("CREATE VIEW {} AS {}", views[0].0, views[0].1)).unwrap();
    let distinct_x = database.query("SELECT count(DISTINCT x) FROM t").unwrap();
    assert_eq!(distinct_x, vec![vec![Value::Int(memo_counts(&mut database).1)]]);
    for (name, sql) in &views[1..] {
        database.execute(&format!("CREATE VIEW {name} AS {sql}")).unwrap();
    }
    // Every distinct call ran once: at most 3,000 x, 3,000 add_one(x), 5,000 ids and 3,000 x / d.
    let (hits, misses) = memo_counts(&mut database);
    assert!((3000..=14000).contains(&misses), "{misses} runs");
    // The same views again: every call is a hit, answered a chunk at a time.
    for (name, sql) in &views[..3] {
        database.execute(&format!("CREATE VIEW {name}_again AS {sql}")).unwrap();
    }
    let (hits_again, misses_again) = memo_counts(&mut database);
    assert_eq!(misses_again, misses, "building the views again ran nothing");
    assert!(hits_again - hits >= 3 * 4900, "{} hits", hits_again - hits);
    for (name, sql) in &views[..3] {
        let mut maintained = database.query(&format!("SELECT * FROM {name}")).unwrap();
        let mut again = database.query(&format!("SELECT * FROM {name}_again")).unwrap();
        let mut batch = database.query(sql).unwrap();
        maintained.sort();
        again.sort();
        batch.sort();
        assert_eq!(again, maintained, "view {name} built again");
        assert_eq!(maintained.len(), if *name == "filtered" { batch.len() } else { 5000 }, "{name}");
        assert_eq!(maintained, batch, "view {name}");
    }
    let error = database.query("SELECT * FROM failing").unwrap_err().to_string();
    assert!(error.to_lowercase().contains("zero"), "{error}");
    database.execute("DELETE FROM t WHERE d = 0").unwrap();
    assert_eq!(database.query("SELECT count(*) FROM failing").unwrap(), vec![vec![Value::Int(4999)]]);
    drop(database);
    std::fs::remove_dir_all(&directory).unwrap();
}

#[test]
fn failing_calls_name_the_function_and_invocation_or_yield_null() {
    let directory = fresh_directory("weft-functions-errors");
    std::fs::create_dir_all(&directory).unwrap();
    let module = directory.join("trap.wat");
    std::fs::write(&module, "(module (func (export \"check\") (param i64) (result i64) (if (i64.lt_s (local.get 0) (i64.const 0)) (then unreachable)) (local.get 0)))").unwrap();
    let module = module.display();
    let mut database = Database::open(Options { data_dir: directory.join("data"), workers: 1, sync: false }).unwrap();
    database
        .execute(&format!(
            "CREATE TABLE t (x BIGINT);
             CREATE FUNCTION strict_check(BIGINT) RETURNS BIGINT LANGUAGE wasm AS '{module}' EXPORT 'check';
             CREATE FUNCTION lenient_check(BIGINT) RETURNS BIGINT LANGUAGE wasm AS '{module}' EXPORT 'check' ON ERROR NULL;
             CREATE VIEW strict AS SELECT strict_check(x) AS y FROM t;
             CREATE VIEW lenient AS SELECT lenient_check(x) AS y FROM t;
             INSERT INTO t VALUES (1), (-1);"
        ))
        .unwrap();
    let error = database.query("SELECT * FROM strict").unwrap_err().to_string();
    assert!(error.contains("strict_check") && error.contains("bafyrmi") && error.contains("trap"), "{error}");
    let mut lenient = database.query("SELECT y FROM lenient").unwrap();
    lenient.sort();
    assert_eq!(lenient, vec![vec![Value::Null], vec![Value::Int(1)]]);
    // The engine goes on: removing the bad row makes the strict view readable again.
    database.execute("DELETE FROM t WHERE x < 0").unwrap();
    assert_eq!(database.query("SELECT y FROM strict").unwrap(), vec![vec![Value::Int(1)]]);
    assert!(database.execute("CREATE FUNCTION f(BIGINT) RETURNS BIGINT LANGUAGE wasm AS '/no/such.wat'").is_err());
    assert!(database
        .execute(&format!("CREATE FUNCTION g(BIGINT) RETURNS BIGINT LANGUAGE wasm AS '{module}' EXPORT 'nope'"))
        .is_err());
    assert!(database.execute("CREATE FUNCTION h(BIGINT) RETURNS BIGINT LANGUAGE python AS 'x.py'").is_err());
    drop(database);
    std::fs::remove_dir_all(&directory).unwrap();
}

#[test]
fn receipts_of_many_calls_are_signed_in_batches_while_the_view_builds() {
    let directory = fresh_directory("weft-functions-batches");
    let options = Options { data_dir: directory.clone(), workers: 2, sync: false };
    let math = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/wasm/math.wat");
    // More than two full batches of 4,096 and a partial one.
    let calls = 2 * weft_ipvm::receipts::RECEIPTS_PER_BATCH + 1000;
    {
        let mut database = Database::open(options.clone()).unwrap();
        database
            .execute(&format!(
                "CREATE TABLE t (x BIGINT PRIMARY KEY);
                 CREATE FUNCTION add_one(BIGINT) RETURNS BIGINT LANGUAGE wasm AS '{math}';"
            ))
            .unwrap();
        database.insert_rows("t", (0..calls as i64).map(|x| vec![Value::Int(x)]).collect()).unwrap();
        database.execute("CREATE VIEW bumped AS SELECT add_one(x) AS y FROM t").unwrap();
        assert_eq!(memo_counts(&mut database).1, calls as i64);
        // Rows inserted through the Rust API: their calls' receipts are logged by the insert.
        let more = (calls as i64..calls as i64 + 10).map(|x| vec![Value::Int(x)]).collect();
        database.insert_rows("t", more).unwrap();
    }
    let calls = calls + 10;
    let mut database = Database::open(options).unwrap();
    assert_eq!(memo_counts(&mut database).1, 0, "every receipt was logged");
    let rows =
        database.query("SELECT r.cid, i.args FROM weft.receipts r JOIN weft.invocations i ON r.ran = i.cid").unwrap();
    assert_eq!(rows.len(), calls);
    let mut signatures = std::collections::BTreeSet::new();
    for (position, row) in rows.iter().enumerate() {
        let stored = receipt_named(&database, &row[0]);
        match &stored.proof {
            Some(weft_ipvm::memo::ReceiptProof::InBatch { batch, .. }) => signatures.insert(batch.signature().to_vec()),
            other => panic!("a receipt read back from a batch record keeps its batch, not {other:?}"),
        };
        // Rebuilding a path hashes the whole batch (slow in a debug build): check a spread.
        if position % 499 == 0 || position + 1 == rows.len() {
            verify_signed(&stored);
        }
    }
    assert_eq!(signatures.len(), 4, "one signature per batch of up to 4,096 receipts, and the insert's");
    drop(database);
    std::fs::remove_dir_all(&directory).unwrap();
}

#[test]
fn receipts_logged_one_by_one_by_earlier_versions_still_replay() {
    use weft_core::wal::{Record, Wal};
    use weft_ipvm::invocation::{Invocation, Receipt};
    let directory = fresh_directory("weft-functions-legacy");
    std::fs::create_dir_all(&directory).unwrap();
    // A log as versions before receipt batches wrote it: the function's definition is not needed
    // for a receipt, which carries its invocation and its own proof.
    let identity = weft_ipvm::identity::Identity::load_or_create(&directory.join("node.key")).unwrap();
    let module = weft_core::functions::module_cid_of(MATH);
    let invocation = Invocation { module, function: "add_one".into(), args: vec![Value::Int(41)] };
    let receipt = Receipt {
        ran: invocation.cid().unwrap(),
        out: Outcome::Ok(Value::Int(42)),
        fuel: 3,
        duration_us: 1,
        issuer: identity.did().to_string(),
    };
    let receipt_cid = receipt.cid().unwrap();
    let proof = identity.sign_tree(&[receipt_cid.to_bytes()]).unwrap().proof(0);
    {
        let (mut wal, _) = Wal::open(&directory.join("wal"), true).unwrap();
        let record = Record::Receipt {
            invocation: invocation.encode().unwrap(),
            receipt: receipt.encode().unwrap(),
            proof,
            first_seen_ns: 7,
            worker: 0,
        };
        wal.append(&[record]).unwrap();
    }
    let mut database = Database::open(Options { data_dir: directory.clone(), workers: 1, sync: true }).unwrap();
    let stored = database.receipt(&receipt_cid).expect("the old receipt by its CID");
    assert_eq!(stored.receipt, receipt);
    assert_eq!(stored.first_seen_ns, 7);
    weft_ipvm::identity::verify_proof(identity.did(), &receipt_cid.to_bytes(), &stored.signed_proof().unwrap())
        .unwrap();
    let again = database.invoke(MATH, "add_one", vec![Value::Int(41)], None, Limits::default()).unwrap();
    assert!(again.hit, "the old receipt answers the call");
    assert_eq!(again.stored.cid, receipt_cid);
    // A checkpoint keeps it in its old form, with its own proof.
    database.checkpoint().unwrap();
    drop(database);
    let database = Database::open(Options { data_dir: directory.clone(), workers: 1, sync: true }).unwrap();
    assert!(database.receipt(&receipt_cid).is_some());
    drop(database);
    std::fs::remove_dir_all(&directory).unwrap();
}

/// A batch logged as runs ([`Record::ReceiptRuns`]) in the form versions before it logged:
/// with each receipt's two digests.
fn with_digests(bytes: &[u8]) -> weft_ipvm::receipts::LoggedBatch {
    use weft_ipvm::invocation::{dag_cbor_cid, digest_of, Invocation};
    let runs = weft_ipvm::receipts::LoggedRuns::decode(bytes).unwrap();
    let receipts = runs
        .runs
        .into_iter()
        .map(|(function, run)| {
            let (module, export) = &runs.functions[function as usize];
            let module = cid::Cid::try_from(module.as_slice()).unwrap();
            let invocation = Invocation { module, function: export.clone(), args: run.args.to_vec() }.cid().unwrap();
            let receipt = dag_cbor_cid(&run.receipt(invocation, &runs.issuer).encode().unwrap());
            weft_ipvm::receipts::LoggedReceipt {
                invocation: digest_of(&invocation).unwrap(),
                receipt: digest_of(&receipt).unwrap(),
                function,
                run,
            }
        })
        .collect();
    weft_ipvm::receipts::LoggedBatch {
        issuer: runs.issuer,
        signature: runs.signature,
        functions: runs.functions,
        receipts,
    }
}

#[test]
fn receipt_batches_logged_in_earlier_forms_still_replay() {
    use weft_core::wal::{Record, Wal};
    type Form = fn(weft_ipvm::receipts::LoggedBatch) -> Record;
    let fixed_width: Form = Record::Receipts;
    let compact: Form = |batch| Record::CompactReceipts(batch.encode().unwrap());
    for (label, form) in [("fixed-width", fixed_width), ("compact", compact)] {
        let directory = fresh_directory(&format!("weft-functions-{label}"));
        let options = || Options { data_dir: directory.clone(), workers: 1, sync: true };
        let mut database = Database::open(options()).unwrap();
        let cids: Vec<_> = (0..3)
            .map(|x| database.invoke(MATH, "add_one", vec![Value::Int(x)], None, Limits::default()).unwrap().stored.cid)
            .collect();
        drop(database);
        // Rewrite the log as versions before batches of runs wrote it.
        {
            let (mut wal, records) = Wal::open(&directory.join("wal"), true).unwrap();
            let mut batches = 0;
            let records: Vec<Record> = records
                .into_iter()
                .map(|record| match record {
                    Record::ReceiptRuns(bytes) => {
                        batches += 1;
                        form(with_digests(&bytes))
                    }
                    other => other,
                })
                .collect();
            assert!(batches > 0, "new receipts are logged as batches of runs");
            wal.rewrite(&records).unwrap();
        }
        let mut database = Database::open(options()).unwrap();
        for (x, cid) in cids.iter().enumerate() {
            verify_signed(&database.receipt(cid).expect("a receipt of the old log by its CID"));
            let again = database.invoke(MATH, "add_one", vec![Value::Int(x as i64)], None, Limits::default()).unwrap();
            assert!(again.hit && again.stored.cid == *cid, "{label}: the old receipt answers the call");
        }
        // A checkpoint writes them as runs again, and they still verify.
        database.checkpoint().unwrap();
        drop(database);
        let database = Database::open(options()).unwrap();
        for cid in &cids {
            verify_signed(&database.receipt(cid).expect("a receipt by its CID after a checkpoint"));
        }
        drop(database);
        std::fs::remove_dir_all(&directory).unwrap();
    }
}

#[test]
fn receipts_signed_after_a_lookup_by_cid_are_found_by_theirs() {
    let directory = fresh_directory("weft-functions-receipt-index");
    let mut database = Database::open(Options { data_dir: directory.clone(), workers: 1, sync: true }).unwrap();
    let mut cids = Vec::new();
    for x in 0..3 {
        cids.push(database.invoke(MATH, "add_one", vec![Value::Int(x)], None, Limits::default()).unwrap().stored.cid);
        // Each lookup indexes the batches signed since the one before.
        for cid in &cids {
            verify_signed(&database.receipt(cid).expect("every receipt so far by its CID"));
        }
    }
    let unknown = database.invoke(MATH, "add_one", vec![Value::Int(-1)], None, Limits::default()).unwrap().stored;
    assert!(database.receipt(&unknown.invocation.cid().unwrap()).is_none(), "an invocation CID is no receipt CID");
    drop(database);
    std::fs::remove_dir_all(&directory).unwrap();
}

#[test]
fn functions_stay_under_the_ceilings_and_time_is_never_memoised() {
    let directory = fresh_directory("weft-ceilings");
    std::fs::create_dir_all(&directory).unwrap();
    let policy = weft_core::Policy { max_call_ms: 100, max_fuel: u64::MAX / 2, ..weft_core::Policy::local() };
    let options = Options { data_dir: directory.join("data"), workers: 1, sync: false };
    let mut database = Database::open_with_policy(options, policy).unwrap();
    let spin = directory.join("spin.wat");
    std::fs::write(&spin, SPIN).unwrap();
    let create = |fuel: &str| {
        format!("CREATE FUNCTION spin(BIGINT) RETURNS BIGINT LANGUAGE wasm AS '{}' WITH ({fuel})", spin.display())
    };
    // Above the ceilings (memory_mb that would wrap when shifted included): refused.
    for options in ["memory_mb = 257", "memory_mb = 18446744073709551615", "memory_mb = 17592186044416"] {
        let error = database.execute(&create(options)).unwrap_err().to_string();
        assert!(
            error.contains("memory") && (error.contains("max-memory-mb") || error.contains("too large")),
            "{error}"
        );
    }
    let limits = Limits { fuel: 10_000, memory_bytes: 512 << 20 };
    let error = database.invoke(SPIN, "spin", vec![Value::Int(1)], None, limits).err().expect("refused");
    assert!(error.to_string().contains("max-memory-mb"), "{error}");
    // Under them: a call spinning on fuel enough for minutes is interrupted at 100 ms, each time
    // (no memo entry, no receipt), and the database goes on.
    database.execute(&create("fuel = 1000000000000")).unwrap();
    database.execute("CREATE TABLE t (x BIGINT); INSERT INTO t VALUES (1)").unwrap();
    for _ in 0..2 {
        let error = database.query("SELECT spin(x) FROM t").unwrap_err().to_string();
        assert!(error.contains("interrupted after"), "{error}");
    }
    let limits = Limits { fuel: u64::MAX / 2, memory_bytes: 1 << 20 };
    let error = database.invoke(SPIN, "spin", vec![Value::Int(1)], None, limits).err().expect("interrupted");
    assert!(error.to_string().contains("interrupted after"), "{error}");
    assert_eq!(database.query("SELECT count(*) FROM weft.receipts").unwrap(), vec![vec![Value::Int(0)]]);
    assert_eq!(database.query("SELECT count(*) FROM t").unwrap(), vec![vec![Value::Int(1)]]);
    drop(database);
    let _ = std::fs::remove_dir_all(&directory);
}
