//! `cargo bench --bench incremental`: the `revenue` view over 1M orders and 10k customers.
//!
//! Measures weft's bulk load, single-row UPDATE latency (statement executed and visible in the
//! view), DataFusion recomputing the same query from scratch on the same in-memory data, and the
//! same query written by hand on differential dataflow (integer tuples, one worker). Prints one
//! JSON line last. `WEFT_BENCH_ORDERS` / `WEFT_BENCH_UPDATES` shrink the run for a quick look.
//!
//! The log is written without fdatasync (`sync: false`): a commit still reaches the operating
//! system before it is acknowledged, so it survives kill -9, but the figures measure weft rather
//! than the disk's flush latency.

use datafusion::arrow::array::{Float64Array, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use differential_dataflow::input::Input;
use std::sync::Arc;
use std::time::{Duration, Instant};
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use weft_core::{Database, Options, Value};

/// mimalloc: dataflow batches allocate and free many small rows, where glibc's malloc spends
/// a large share of the time (measured with `cargo bench --bench incremental`).
#[global_allocator]
static ALLOCATOR: weft::memory::Prefaulting<mimalloc::MiMalloc> = weft::memory::Prefaulting(mimalloc::MiMalloc);

const CUSTOMERS: usize = 10_000;
const REGIONS: usize = 50;
const REVENUE: &str = "SELECT c.region, sum(o.amount) AS total, count(*) AS n \
     FROM orders o JOIN customers c ON o.customer = c.name GROUP BY c.region";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default)
}

/// A deterministic generator (xorshift64*), so runs are comparable.
struct Random(u64);
impl Random {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

fn percentile(sorted: &[Duration], fraction: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index].as_secs_f64() * 1e6
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

struct HandWritten {
    load_rows_per_s: f64,
    update_p50_us: f64,
}

/// The revenue query on differential dataflow by hand: orders (id, customer, cents),
/// customers (customer, region), sum and count per region through a pair difference.
fn hand_written(orders: &[(u64, u64, i64)], customers: &[(u64, u64)], updates: &[(usize, i64)]) -> HandWritten {
    let orders = orders.to_vec();
    let customers = customers.to_vec();
    let updates = updates.to_vec();
    timely::execute_directly(move |worker| {
        let probe = ProbeHandle::new();
        let (mut order_input, mut customer_input) = worker.dataflow::<u64, _, _>(|scope| {
            let (order_input, orders) = scope.new_collection::<(u64, u64, i64), isize>();
            let (customer_input, customers) = scope.new_collection::<(u64, u64), isize>();
            orders
                .map(|(_id, customer, cents)| (customer, cents))
                .join(customers)
                .explode(|(_customer, (cents, region))| Some((region, (cents as isize, 1isize))))
                .count()
                .probe_with(&probe);
            (order_input, customer_input)
        });
        for customer in &customers {
            customer_input.insert(*customer);
        }
        let started = Instant::now();
        for order in &orders {
            order_input.insert(*order);
        }
        let mut time = 1;
        order_input.advance_to(time);
        customer_input.advance_to(time);
        order_input.flush();
        customer_input.flush();
        worker.step_while(|| probe.less_than(&time));
        let load_rows_per_s = orders.len() as f64 / started.elapsed().as_secs_f64();
        let mut current = orders.clone();
        let mut latencies = Vec::with_capacity(updates.len());
        for (index, cents) in updates {
            let started = Instant::now();
            let old = current[index];
            let new = (old.0, old.1, cents);
            order_input.remove(old);
            order_input.insert(new);
            current[index] = new;
            time += 1;
            order_input.advance_to(time);
            customer_input.advance_to(time);
            order_input.flush();
            customer_input.flush();
            worker.step_while(|| probe.less_than(&time));
            latencies.push(started.elapsed());
        }
        latencies.sort();
        HandWritten { load_rows_per_s, update_p50_us: percentile(&latencies, 0.5) }
    })
}

fn main() -> anyhow::Result<()> {
    weft::memory::use_small_pages();
    weft::memory::start_prefaulting();
    let order_count = env_usize("WEFT_BENCH_ORDERS", 1_000_000);
    let update_count = env_usize("WEFT_BENCH_UPDATES", 2_000);
    let mut random = Random(0x5eed);
    let customers: Vec<(u64, u64)> = (0..CUSTOMERS as u64).map(|index| (index, index % REGIONS as u64)).collect();
    let orders: Vec<(u64, u64, i64)> =
        (0..order_count as u64).map(|id| (id, random.below(CUSTOMERS as u64), random.below(100_000) as i64)).collect();
    let updates: Vec<(usize, i64)> =
        (0..update_count).map(|_| (random.below(order_count as u64) as usize, random.below(100_000) as i64)).collect();

    let directory = std::env::temp_dir().join(format!("weft-bench-incremental-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    let mut database = Database::open(Options { data_dir: directory.clone(), workers: 1, sync: false })?;
    database.execute(
        "CREATE TABLE orders (id BIGINT PRIMARY KEY, customer TEXT, amount DOUBLE);
         CREATE TABLE customers (name TEXT PRIMARY KEY, region TEXT);",
    )?;
    database.execute(&format!("CREATE MATERIALIZED VIEW revenue AS {REVENUE}"))?;
    let customer_rows = customers
        .iter()
        .map(|(index, region)| vec![Value::Text(format!("c{index}").into()), Value::Text(format!("r{region}").into())])
        .collect();
    database.insert_rows("customers", customer_rows)?;
    let order_rows: Vec<_> = orders
        .iter()
        .map(|(id, customer, cents)| {
            vec![
                Value::Int(*id as i64),
                Value::Text(format!("c{customer}").into()),
                Value::float(*cents as f64 / 100.0),
            ]
        })
        .collect();
    let started = Instant::now();
    database.insert_rows("orders", order_rows)?;
    let load_rows_per_s = order_count as f64 / started.elapsed().as_secs_f64();

    let mut latencies = Vec::with_capacity(update_count);
    for (index, cents) in &updates {
        let sql = format!("UPDATE orders SET amount = {} WHERE id = {index}", *cents as f64 / 100.0);
        let started = Instant::now();
        database.execute(&sql)?;
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let update_p50_us = percentile(&latencies, 0.5);
    let update_p99_us = percentile(&latencies, 0.99);

    // The maintained view must equal DataFusion's answer before its numbers mean anything.
    let mut maintained = database.query("SELECT region, total, n FROM revenue ORDER BY region")?;
    let mut batch = database.query(&format!("SELECT * FROM ({REVENUE}) ORDER BY region"))?;
    maintained.sort();
    batch.sort();
    anyhow::ensure!(
        maintained.len() == batch.len(),
        "revenue has {} groups, DataFusion {}",
        maintained.len(),
        batch.len()
    );
    for (left, right) in maintained.iter().zip(&batch) {
        let close = match (&left[1], &right[1]) {
            (Value::Float(a), Value::Float(b)) => (a - b).abs() <= 1e-6 * a.abs().max(1.0),
            _ => false,
        };
        anyhow::ensure!(left[0] == right[0] && left[2] == right[2] && close, "revenue diverged: {left:?} vs {right:?}");
    }

    // DataFusion from scratch over the same data, already in memory as Arrow.
    let order_schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("customer", DataType::Utf8, false),
        Field::new("amount", DataType::Float64, false),
    ]));
    let mut current = orders.clone();
    for (index, cents) in &updates {
        current[*index].2 = *cents;
    }
    let order_batch = RecordBatch::try_new(
        order_schema.clone(),
        vec![
            Arc::new(Int64Array::from_iter_values(current.iter().map(|order| order.0 as i64))),
            Arc::new(StringArray::from_iter_values(current.iter().map(|order| format!("c{}", order.1)))),
            Arc::new(Float64Array::from_iter_values(current.iter().map(|order| order.2 as f64 / 100.0))),
        ],
    )?;
    let customer_schema = Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("region", DataType::Utf8, false),
    ]));
    let customer_batch = RecordBatch::try_new(
        customer_schema.clone(),
        vec![
            Arc::new(StringArray::from_iter_values(customers.iter().map(|customer| format!("c{}", customer.0)))),
            Arc::new(StringArray::from_iter_values(customers.iter().map(|customer| format!("r{}", customer.1)))),
        ],
    )?;
    let context = SessionContext::new();
    context.register_table("orders", Arc::new(MemTable::try_new(order_schema, vec![vec![order_batch]])?))?;
    context.register_table("customers", Arc::new(MemTable::try_new(customer_schema, vec![vec![customer_batch]])?))?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let mut recompute = Vec::new();
    for _ in 0..7 {
        let started = Instant::now();
        let rows: usize = runtime
            .block_on(async { context.sql(REVENUE).await?.collect().await })?
            .iter()
            .map(RecordBatch::num_rows)
            .sum();
        recompute.push(started.elapsed());
        anyhow::ensure!(rows == REGIONS, "DataFusion returned {rows} groups");
    }
    recompute.sort();
    let recompute_ms = recompute[recompute.len() / 2].as_secs_f64() * 1e3;

    let hand = hand_written(&orders, &customers, &updates);
    let rss = peak_rss_mb();
    drop(database);
    let _ = std::fs::remove_dir_all(&directory);

    println!(
        "{}",
        serde_json::json!({
            "bench": "incremental",
            "orders": order_count,
            "customers": CUSTOMERS,
            "updates": update_count,
            "load_rows_per_s": load_rows_per_s.round(),
            "update_p50_us": update_p50_us,
            "update_p99_us": update_p99_us,
            "recompute_ms": recompute_ms,
            "speedup": recompute_ms * 1e3 / update_p50_us,
            "peak_rss_mb": rss.round(),
            "dd_update_p50_us": hand.update_p50_us,
            "dd_load_rows_per_s": hand.load_rows_per_s.round(),
            "overhead_vs_dd": update_p50_us / hand.update_p50_us,
        })
    );
    Ok(())
}
