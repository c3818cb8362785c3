//! Load on `weft serve` over loopback: 32 concurrent PostgreSQL clients (tokio-postgres) for a
//! bounded time, mixing prepared point reads of a view, writes (inserts and updates, each a
//! transaction) and SUBSCRIBE streams. Reports queries per second and read / write latency
//! percentiles, and checks that every subscriber saw every change exactly once and in
//! timestamp order: its snapshot plus its changes must equal the view's final contents, with
//! timestamps that never go back.
//!
//! The load runs in four phases of `WEFT_BENCH_SECONDS` each (default 5), alternating quiet
//! and hostile: in a hostile phase two more clients misbehave, a slow subscriber (it subscribes
//! and never reads its socket, so the server's sends to it stall until it falls behind and is
//! cut off) and an idle transaction (psycopg's default: `BEGIN`, one `SELECT`, then nothing).
//! The other clients' p99 latencies in hostile phases against quiet ones must stay within 2x.
//!
//! `cargo bench --bench serve` prints one JSON line last.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio_postgres::{Client, NoTls};

const CLIENTS: usize = 32;
const WRITERS: usize = 8;
const SUBSCRIBERS: usize = 4;
const CUSTOMERS: i64 = 100;
/// Quiet, hostile, quiet, hostile.
const PHASES: usize = 4;

async fn connect(port: u16) -> Client {
    let (client, connection) =
        tokio_postgres::connect(&format!("host=127.0.0.1 port={port} user=weft dbname=weft"), NoTls)
            .await
            .expect("connect");
    tokio::spawn(connection);
    client
}

/// A client that subscribes to `totals` over a raw socket and then never reads a byte.
async fn slow_subscriber(port: u16) -> tokio::net::TcpStream {
    let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut startup = Vec::new();
    startup.extend(196_608u32.to_be_bytes());
    for field in ["user", "weft", "database", "weft", ""] {
        startup.extend(field.as_bytes());
        startup.push(0);
    }
    let mut message = ((startup.len() + 4) as u32).to_be_bytes().to_vec();
    message.extend(startup);
    let query = b"SUBSCRIBE TO totals\0";
    message.push(b'Q');
    message.extend(((query.len() + 4) as u32).to_be_bytes());
    message.extend(query);
    socket.write_all(&message).await.unwrap();
    socket
}

/// A client inside a transaction that read once and then idles.
async fn idle_transaction(port: u16) -> Client {
    let client = connect(port).await;
    client.batch_execute("BEGIN").await.unwrap();
    client.query("SELECT count(*) FROM totals", &[]).await.unwrap();
    client
}

fn percentile(sorted: &[u64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * fraction).round() as usize] as f64 / 1000.0
}

/// Runs the readers and writers on `clients` for `seconds`: their read and write latencies (ns).
async fn load(clients: &[Arc<Client>], next_id: &Arc<AtomicU64>, seconds: u64) -> (Vec<u64>, Vec<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(Mutex::new(Vec::new()));
    let writes = Arc::new(Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    for (index, client) in clients.iter().enumerate() {
        let (client, stop, reads, writes, next_id) =
            (client.clone(), stop.clone(), reads.clone(), writes.clone(), next_id.clone());
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
    let (reads, writes) = (reads.lock().unwrap().clone(), writes.lock().unwrap().clone());
    (reads, writes)
}

/// A subscriber's view of `totals`: rows (customer, total, n) with multiplicity.
type Contents = BTreeMap<(i64, i64, i64), i64>;

fn main() {
    let seconds: u64 = std::env::var("WEFT_BENCH_SECONDS").ok().and_then(|text| text.parse().ok()).unwrap_or(5);
    let directory = std::env::temp_dir().join(format!("weft-bench-serve-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let options = weft_core::Options { data_dir: directory.clone(), workers: 1, sync: false };
    let database = weft_core::Database::open(options).expect("open");
    let serve_options = weft_server::ServeOptions {
        pg: Some(format!("127.0.0.1:{port}").parse().unwrap()),
        ..weft_server::ServeOptions::default()
    };
    std::thread::spawn(move || weft_server::serve(database, serve_options));
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

        // Readers and writers, in alternating quiet and hostile phases.
        let mut clients = Vec::new();
        for _ in 0..CLIENTS - SUBSCRIBERS {
            clients.push(Arc::new(connect(port).await));
        }
        let started = Instant::now();
        let (mut quiet, mut hostile) = ((Vec::new(), Vec::new()), (Vec::new(), Vec::new()));
        for phase in 0..PHASES {
            let misbehaving = phase % 2 == 1;
            let troublemakers =
                if misbehaving { Some((slow_subscriber(port).await, idle_transaction(port).await)) } else { None };
            let (reads, writes) = load(&clients, &next_id, seconds).await;
            let into = if misbehaving { &mut hostile } else { &mut quiet };
            into.0.extend(reads);
            into.1.extend(writes);
            drop(troublemakers);
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
        for latencies in [&mut quiet.0, &mut quiet.1, &mut hostile.0, &mut hostile.1] {
            latencies.sort_unstable();
        }
        let ratio = |hostile: &[u64], quiet: &[u64]| {
            (percentile(hostile, 0.99) / percentile(quiet, 0.99).max(1e-3) * 100.0).round() / 100.0
        };
        let (read_p99_ratio, write_p99_ratio) = (ratio(&hostile.0, &quiet.0), ratio(&hostile.1, &quiet.1));
        let (reads, writes) = (quiet.0.len() + hostile.0.len(), quiet.1.len() + hostile.1.len());
        serde_json::json!({
            "bench": "serve",
            "clients": CLIENTS,
            "writers": WRITERS,
            "readers": CLIENTS - WRITERS - SUBSCRIBERS,
            "subscribers": SUBSCRIBERS,
            "seconds": (elapsed * 10.0).round() / 10.0,
            "queries_per_s": ((reads + writes) as f64 / elapsed).round(),
            "reads_per_s": (reads as f64 / elapsed).round(),
            "writes_per_s": (writes as f64 / elapsed).round(),
            "read_p50_us": percentile(&quiet.0, 0.50),
            "read_p99_us": percentile(&quiet.0, 0.99),
            "write_p50_us": percentile(&quiet.1, 0.50),
            "write_p99_us": percentile(&quiet.1, 0.99),
            "hostile_read_p99_us": percentile(&hostile.0, 0.99),
            "hostile_write_p99_us": percentile(&hostile.1, 0.99),
            "hostile_read_p99_ratio": read_p99_ratio,
            "hostile_write_p99_ratio": write_p99_ratio,
            "hostile_within_2x": read_p99_ratio <= 2.0 && write_p99_ratio <= 2.0,
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
    if result["hostile_within_2x"] != serde_json::json!(true) {
        eprintln!("a slow subscriber or an idle transaction slowed the other clients' p99 by more than 2x");
    }
}
