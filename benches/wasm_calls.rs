//! `cargo bench --bench wasm_calls`: the cost of pure Wasm calls in weft. Prints one JSON line
//! last. `WEFT_BENCH_CALLS` sets the number of distinct rows (default 10,000,000, as the issue
//! asks; about 7.5 GB peak), `WEFT_BENCH_WORKERS` the timely workers (default 1: the targets
//! are per worker).
//!
//! - `calls_per_s`: a view calling `add_one` over distinct rows: every call runs, and its receipt
//!   is signed, recorded in the memo and logged.
//! - `memo_hits_per_s`: the same view built again: every call is a memo hit.
//! - `wasm_bare_calls_per_s`: the runtime's call path alone (no memo; `add_one`'s module is
//!   stateless, so one instance serves the calls of a store).
//! - `native_calls_per_s`: the same arithmetic as a DataFusion built-in over the same rows.

use std::time::Instant;
use weft_core::{Database, Options, Value};

/// mimalloc, as in the `weft` binary.
#[global_allocator]
static ALLOCATOR: weft::memory::Prefaulting<mimalloc::MiMalloc> = weft::memory::Prefaulting(mimalloc::MiMalloc);

fn main() -> anyhow::Result<()> {
    weft::memory::use_small_pages();
    weft::memory::start_prefaulting();
    let setting = |name: &str, default: usize| -> usize {
        std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default)
    };
    let calls = setting("WEFT_BENCH_CALLS", 10_000_000);
    let workers = setting("WEFT_BENCH_WORKERS", 1);
    let module = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/wasm/math.wat");
    let directory = std::env::temp_dir().join(format!("weft-bench-wasm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    let mut database = Database::open(Options { data_dir: directory.clone(), workers, sync: false })?;
    database.execute(&format!(
        "CREATE TABLE t (x BIGINT PRIMARY KEY);
         CREATE FUNCTION add_one(BIGINT) RETURNS BIGINT LANGUAGE wasm AS '{module}';"
    ))?;
    database.insert_rows("t", (0..calls as i64).map(|x| vec![Value::Int(x)]).collect())?;

    let started = Instant::now();
    database.execute("CREATE VIEW bumped AS SELECT add_one(x) AS y FROM t")?;
    let calls_per_s = calls as f64 / started.elapsed().as_secs_f64();
    let (_, misses) = database.memo_counts();
    anyhow::ensure!(misses == calls as u64, "expected {calls} runs, saw {misses}");

    let started = Instant::now();
    database.execute("CREATE VIEW again AS SELECT add_one(x) AS y FROM t")?;
    let memo_hits_per_s = calls as f64 / started.elapsed().as_secs_f64();
    anyhow::ensure!(database.memo_counts().1 == calls as u64, "the second view ran calls");

    let runtime = weft_wasm::Runtime::new();
    let loaded = runtime.load(&std::fs::read(module)?)?;
    let signature =
        weft_wasm::Signature { params: vec![weft_core::ColumnType::BigInt], result: weft_core::ColumnType::BigInt };
    // Five rounds, the median taken (as for the native figure below): one round is a few
    // milliseconds, short enough for a neighbour on the machine to halve it.
    let bare_calls = calls.min(100_000);
    let mut bare = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        for x in 0..bare_calls as i64 {
            let output =
                runtime.call(&loaded, "add_one", &signature, &[Value::Int(x)], weft_wasm::Limits::default())?;
            std::hint::black_box(output);
        }
        bare.push(started.elapsed());
    }
    bare.sort();
    let wasm_bare_calls_per_s = bare_calls as f64 / bare[bare.len() / 2].as_secs_f64();

    let mut native = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let rows = database.query("SELECT count(x + 1) FROM t")?;
        native.push(started.elapsed());
        anyhow::ensure!(rows == vec![vec![Value::Int(calls as i64)]], "native query returned {rows:?}");
    }
    native.sort();
    let native_calls_per_s = calls as f64 / native[native.len() / 2].as_secs_f64();
    drop(database);
    let _ = std::fs::remove_dir_all(&directory);
    println!(
        "{}",
        serde_json::json!({
            "bench": "wasm_calls",
            "calls": calls,
            "workers": workers,
            "calls_per_s": calls_per_s.round(),
            "memo_hits_per_s": memo_hits_per_s.round(),
            "wasm_bare_calls_per_s": wasm_bare_calls_per_s.round(),
            "native_calls_per_s": native_calls_per_s.round(),
        })
    );
    Ok(())
}
