//! Load on `weft serve` over loopback: 32 concurrent PostgreSQL clients (tokio-postgres) for a
//! bounded time, mixing prepared point reads of a view, writes (inserts and updates, each a
//! transaction) and SUBSCRIBE streams. Reports queries per second and read / write latency
//! percentiles, and checks that every subscriber saw every change exactly once and in
//! timestamp order: its snapshot plus its changes must equal the view's final contents, with
//! timestamps that never go back.
//!
//! `cargo bench --bench serve` prints one JSON line last. `WEFT_BENCH_SECONDS` sets the load
//! duration (default 10).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_postgres::{Client, NoTls};

const CLIENTS: usize = 32;
const WRITERS: usize = 8;
const SUBSCRIBERS: usize = 4;
const CUSTOMERS: i64 = 100;

async fn connect(port: u16) -> Client {
    let (client, connection) =
        tokio_postgres::connect(&format!("host=127.0.0.1 port={port} user=weft dbname=weft"), NoTls)
            .await
            .expect("connect");
    tokio::spawn(connection);
    client
}

fn percentile(sorted: &[u64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * fraction).round() as usize] as f64 / 1000.0
}

/// A subscriber's view of `totals`: rows (customer, total, n) with multiplicity.
type Contents = BTreeMap<(i64, i64, i64), i64>;

fn main() {
    let seconds: u64 = std::env::var("WEFT_BENCH_SECONDS").ok().and_then(|text| text.parse().ok()).unwrap_or(10);
    let directory = std::env::temp_dir().join(format!("weft-bench-serve-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let options = weft::Options { data_dir: directory.clone(), workers: 1, sync: false };
    let database = weft::Database::open(options).expect("open");
    let serve_options = weft::server::ServeOptions {
        pg: Some(format!("127.0.0.1:{port}").parse().unwrap()),
        http: None,
        password: None,
    };
    std::thread::spawn(move || weft::server::serve(database, serve_options));
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let result = runtime.block_on(async move {
        let setup = connect(port).await;
        setup
            .batch_execute(
                "CREATE TABLE orders (id BIGINT PRIMARY KEY, customer BIGINT, amount BIGINT);
                 CREATE MATERIALIZED VIEW totals AS
                   SELECT customer, sum(amount) AS total, count(*) AS n FROM orders GROUP BY customer;",
            )
            .await
            .unwrap();
        let rows: Vec<String> = (0..10_000).map(|id| format!("({id}, {}, {})", id % CUSTOMERS, id % 7)).collect();
        setup.batch_execute(&format!("INSERT INTO orders VALUES {}", rows.join(","))).await.unwrap();

        let stop = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(Mutex::new(Vec::new()));
        let writes = Arc::new(Mutex::new(Vec::new()));
        let next_id = Arc::new(AtomicU64::new(10_000));

        // Subscribers: accumulate the snapshot and every change; check timestamp order.
        let mut subscribers = Vec::new();
        for _ in 0..SUBSCRIBERS {
            let client = connect(port).await;
            let cancel = client.cancel_token();
            let contents = Arc::new(Mutex::new((Contents::new(), 0u64, true, 0u64)));
            let state = contents.clone();
            let task = tokio::spawn(async move {
                use futures::StreamExt;
                let stream = client.query_raw("SUBSCRIBE TO totals", Vec::<i64>::new()).await.unwrap();
                let mut stream = Box::pin(stream);
                while let Some(Ok(row)) = stream.next().await {
                    let (time, diff): (i64, i64) = (row.get(0), row.get(1));
                    let key = (row.get::<_, i64>(2), row.get::<_, i64>(3), row.get::<_, i64>(4));
                    let mut guard = state.lock().unwrap();
                    let (contents, last_time, ordered, changes) = &mut *guard;
                    *ordered &= time as u64 >= *last_time;
                    *last_time = time as u64;
                    *changes += 1;
                    let count = contents.entry(key).or_insert(0);
                    *count += diff;
                    if *count == 0 {
                        contents.remove(&key);
                    }
                }
                drop(client);
            });
            subscribers.push((contents, cancel, task));
        }

        let started = Instant::now();
        let mut workers = Vec::new();
        for index in 0..CLIENTS - SUBSCRIBERS {
            let client = connect(port).await;
            let (stop, reads, writes, next_id) = (stop.clone(), reads.clone(), writes.clone(), next_id.clone());
            workers.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                let read = client.prepare("SELECT total, n FROM totals WHERE customer = $1").await.unwrap();
                let mut counter = index as i64;
                while !stop.load(Ordering::Relaxed) {
                    counter += 1;
                    let begun = Instant::now();
                    if index < WRITERS {
                        let sql = if counter % 2 == 0 {
                            let id = next_id.fetch_add(1, Ordering::Relaxed);
                            format!("INSERT INTO orders VALUES ({id}, {}, {})", id as i64 % CUSTOMERS, counter % 11)
                        } else {
                            format!("UPDATE orders SET amount = amount + 1 WHERE id = {}", (counter * 37) % 10_000)
                        };
                        client.batch_execute(&sql).await.unwrap();
                    } else {
                        client.query(&read, &[&(counter % CUSTOMERS)]).await.unwrap();
                    }
                    latencies.push(begun.elapsed().as_nanos() as u64);
                }
                if index < WRITERS { writes.lock().unwrap() } else { reads.lock().unwrap() }.extend(latencies);
            }));
        }
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        stop.store(true, Ordering::Relaxed);
        for worker in workers {
            worker.await.unwrap();
        }
        let elapsed = started.elapsed().as_secs_f64();

        // Every subscriber must converge on the view's final contents.
        let mut expected = Contents::new();
        for row in setup.query("SELECT customer, total, n FROM totals", &[]).await.unwrap() {
            let key = (row.get::<_, i64>(0), row.get::<_, i64>(1), row.get::<_, i64>(2));
            *expected.entry(key).or_insert(0) += 1;
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut exact = true;
        let mut delivered = 0;
        for (contents, cancel, task) in subscribers {
            loop {
                let converged = contents.lock().unwrap().0 == expected;
                if converged || Instant::now() > deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let (seen, _, ordered, changes) = contents.lock().unwrap().clone();
            exact &= seen == expected && ordered;
            delivered += changes;
            cancel.cancel_query(NoTls).await.unwrap();
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        let mut reads = reads.lock().unwrap().clone();
        let mut writes = writes.lock().unwrap().clone();
        reads.sort_unstable();
        writes.sort_unstable();
        serde_json::json!({
            "bench": "serve",
            "clients": CLIENTS,
            "writers": WRITERS,
            "readers": CLIENTS - WRITERS - SUBSCRIBERS,
            "subscribers": SUBSCRIBERS,
            "seconds": (elapsed * 10.0).round() / 10.0,
            "queries_per_s": ((reads.len() + writes.len()) as f64 / elapsed).round(),
            "reads_per_s": (reads.len() as f64 / elapsed).round(),
            "writes_per_s": (writes.len() as f64 / elapsed).round(),
            "read_p50_us": percentile(&reads, 0.50),
            "read_p99_us": percentile(&reads, 0.99),
            "write_p50_us": percentile(&writes, 0.50),
            "write_p99_us": percentile(&writes, 0.99),
            "changes_delivered": delivered,
            "subscribers_exact_and_ordered": exact,
        })
    });
    let _ = std::fs::remove_dir_all(&directory);
    println!("{result}");
    if result["subscribers_exact_and_ordered"] != serde_json::json!(true) {
        eprintln!("a subscriber missed, repeated or reordered a change");
        std::process::exit(1);
    }
}
