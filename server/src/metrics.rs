//! The server's counters and latency histograms, rendered in the Prometheus text format at
//! `GET /metrics` together with per-view row counts and the memo's hits and misses.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS_SECONDS: [f64; 12] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 1.0, 10.0];

/// A cumulative latency histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS_SECONDS.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        for (bucket, bound) in self.buckets.iter().zip(BUCKETS_SECONDS) {
            if seconds <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bucket, bound) in self.buckets.iter().zip(BUCKETS_SECONDS) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {}", bucket.load(Ordering::Relaxed));
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Counters of the server's work.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Statements executed.
    pub statements: AtomicU64,
    /// Statements that failed.
    pub errors: AtomicU64,
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Subscriptions started.
    pub subscriptions: AtomicU64,
    /// Time to execute a statement batch, reads and writes.
    pub statement_latency: Histogram,
    /// Time from the start of a write until every view reflects it.
    pub update_latency: Histogram,
}

/// What the database reports at scrape time.
pub struct DatabaseFigures {
    /// (view, rows, subscribers)
    pub views: Vec<(String, usize, usize)>,
    /// Tables.
    pub tables: usize,
    /// Calls answered from the memo.
    pub memo_hits: u64,
    /// Calls that ran.
    pub memo_misses: u64,
    /// Mutation effects by status (`pending`, `delivered`, `failed`).
    pub effects: Vec<(&'static str, u64)>,
}

impl Metrics {
    /// The Prometheus text exposition of these metrics and `figures`.
    pub fn render(&self, figures: &DatabaseFigures) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        };
        counter(
            "weft_statements_total",
            "counter",
            "Statement batches executed.",
            self.statements.load(Ordering::Relaxed),
        );
        counter("weft_errors_total", "counter", "Statements that failed.", self.errors.load(Ordering::Relaxed));
        counter("weft_connections", "gauge", "Open client connections.", self.connections.load(Ordering::Relaxed));
        counter(
            "weft_subscriptions_total",
            "counter",
            "Subscriptions opened.",
            self.subscriptions.load(Ordering::Relaxed),
        );
        counter("weft_tables", "gauge", "Tables.", figures.tables as u64);
        counter("weft_views", "gauge", "Maintained views.", figures.views.len() as u64);
        counter("weft_wasm_calls_total", "counter", "Wasm function calls that ran (memo misses).", figures.memo_misses);
        counter("weft_memo_hits_total", "counter", "Wasm invocations answered from the memo.", figures.memo_hits);
        let _ = writeln!(out, "# HELP weft_view_rows Rows in each view.\n# TYPE weft_view_rows gauge");
        for (view, rows, _) in &figures.views {
            let _ = writeln!(out, "weft_view_rows{{view=\"{}\"}} {rows}", escape_label(view));
        }
        let _ = writeln!(
            out,
            "# HELP weft_view_subscribers Open subscriptions of each view.\n# TYPE weft_view_subscribers gauge"
        );
        for (view, _, subscribers) in &figures.views {
            let _ = writeln!(out, "weft_view_subscribers{{view=\"{}\"}} {subscribers}", escape_label(view));
        }
        let _ =
            writeln!(out, "# HELP weft_effects Mutation effects in the outbox by status.\n# TYPE weft_effects gauge");
        for (status, count) in &figures.effects {
            let _ = writeln!(out, "weft_effects{{status=\"{status}\"}} {count}");
        }
        self.statement_latency.render(&mut out, "weft_statement_seconds", "Time to execute a statement batch.");
        self.update_latency.render(&mut out, "weft_update_seconds", "Time until every view reflects a write.");
        out
    }
}

fn escape_label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::{DatabaseFigures, Metrics};
    use std::time::Duration;

    #[test]
    fn histograms_are_cumulative() {
        let metrics = Metrics::default();
        metrics.update_latency.observe(Duration::from_micros(300));
        metrics.update_latency.observe(Duration::from_millis(20));
        let figures = DatabaseFigures {
            views: vec![("v\"1".into(), 3, 1)],
            tables: 1,
            memo_hits: 2,
            memo_misses: 1,
            effects: vec![("failed", 4)],
        };
        let text = metrics.render(&figures);
        assert!(text.contains("weft_update_seconds_bucket{le=\"0.0005\"} 1"), "{text}");
        assert!(text.contains("weft_update_seconds_bucket{le=\"0.025\"} 2"), "{text}");
        assert!(text.contains("weft_update_seconds_count 2"), "{text}");
        assert!(text.contains("weft_view_rows{view=\"v\\\"1\"} 3"), "{text}");
        assert!(text.contains("weft_memo_hits_total 2"), "{text}");
        assert!(text.contains("weft_effects{status=\"failed\"} 4"), "{text}");
    }
}
