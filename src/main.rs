//! The `weft` command line: an interactive SQL shell, scripted SQL, and demo runs.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use weft_core::{ColumnType, Database, Options, Value};
use weft_server::output::{write_output, OutputFormat};

/// mimalloc: dataflow batches allocate and free many small rows, where glibc's malloc spends
/// a large share of the time (measured with `cargo bench --bench incremental`).
#[global_allocator]
static ALLOCATOR: weft::memory::Prefaulting<mimalloc::MiMalloc> = weft::memory::Prefaulting(mimalloc::MiMalloc);

#[derive(Parser)]
#[command(name = "weft", version, about = "SQL views kept up to date incrementally on differential dataflow")]
struct Cli {
    /// Data directory (created if missing).
    #[arg(long, global = true, default_value = "weft-data")]
    data_dir: PathBuf,
    /// Timely worker threads.
    #[arg(long, global = true, default_value_t = 1)]
    workers: usize,
    /// Do not fdatasync the log on commit: commits survive a process crash but not an OS crash.
    #[arg(long, global = true)]
    no_sync: bool,
    /// The most fuel a function may ask for (`CREATE FUNCTION ... WITH (fuel = n)`, `invoke --fuel`).
    #[arg(long, global = true, default_value_t = weft_core::Policy::DEFAULT_MAX_FUEL)]
    max_fuel: u64,
    /// The most memory a function may ask for, in MiB.
    #[arg(long, global = true, default_value_t = weft_core::Policy::DEFAULT_MAX_MEMORY_MB)]
    max_memory_mb: usize,
    /// Wall-clock milliseconds after which a call is interrupted (its error is not memoised).
    #[arg(long, global = true, default_value_t = weft_core::Policy::DEFAULT_MAX_CALL_MS)]
    max_call_ms: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Interactive SQL shell; or run `-c SQL`, or a file of statements.
    Sql {
        /// SQL to run instead of the shell.
        #[arg(short = 'c', long = "command")]
        command: Option<String>,
        /// Output format.
        #[arg(long, value_parser = format_parser(), default_value = "table")]
        format: OutputFormat,
        /// A file of SQL statements to run.
        file: Option<PathBuf>,
    },
    /// Call a pure Wasm function once: a repeated invocation is a memo hit and runs nothing.
    Invoke {
        /// The module (`.wat` text or `.wasm` binary).
        module: PathBuf,
        /// The exported function.
        function: String,
        /// Arguments: integers, decimals, true/false, null, or text (JSON strings or bare words).
        args: Vec<String>,
        /// The result type, when the export's Wasm result type is not enough (TEXT, BYTEA).
        #[arg(long, value_parser = parse_type)]
        returns: Option<ColumnType>,
        /// Fuel budget of the call.
        #[arg(long, default_value_t = weft_wasm::Limits::default().fuel)]
        fuel: u64,
        /// Memory cap of the call, in MiB.
        #[arg(long, default_value_t = 64)]
        memory_mb: usize,
    },
    /// Print a receipt as DAG-JSON; `--verify` also checks the issuer's signature.
    Receipt {
        /// The receipt's CID.
        cid: String,
        #[arg(long)]
        verify: bool,
    },
    /// Serve the database to PostgreSQL clients (psql, psycopg, JDBC) and over HTTP.
    Serve {
        /// PostgreSQL wire protocol address.
        #[arg(long, default_value = "127.0.0.1:6875")]
        pg: Option<std::net::SocketAddr>,
        /// HTTP address (`/query`, `/subscribe/<view>`, `/metrics`).
        #[arg(long, default_value = "127.0.0.1:6876")]
        http: Option<std::net::SocketAddr>,
        /// Password clients must give (needed to listen beyond loopback).
        #[arg(long, env = "WEFT_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        /// The directory clients' statements may read and write files in (COPY, module paths,
        /// file sinks and sources, `files/append` effects); without it, no files at all.
        #[arg(long)]
        files_root: Option<PathBuf>,
        /// Hosts clients' statements may connect to (`http()`, `http_get`, `postgres()`,
        /// `http/post` effects), as `host[:port]`, comma-separated or repeated; without it, none.
        /// Link-local, multicast and unspecified addresses are never reached.
        #[arg(long, value_delimiter = ',')]
        allow_hosts: Vec<String>,
        /// The most changes a subscriber may fall behind; one further behind is disconnected
        /// with an error saying so, and everyone else goes on.
        #[arg(long, default_value_t = weft_server::ServeOptions::DEFAULT_SUBSCRIBE_BUFFER)]
        subscribe_buffer: usize,
        /// The most rows a query may return (SQLSTATE 54000 beyond).
        #[arg(long, default_value_t = weft_server::ServeOptions::DEFAULT_MAX_RESULT_ROWS)]
        max_result_rows: usize,
        /// How long a statement waits for the writer another session's transaction holds
        /// (SQLSTATE 55P03 after).
        #[arg(long, default_value_t = weft_server::ServeOptions::DEFAULT_LOCK_TIMEOUT_MS)]
        lock_timeout_ms: u64,
        /// Seconds a session may sit idle inside a transaction before it is rolled back and
        /// disconnected (0: never).
        #[arg(long, default_value_t = weft_server::ServeOptions::DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT_S)]
        idle_in_transaction_timeout_s: u64,
        /// The most pgwire connections and HTTP requests at once (SQLSTATE 53300 beyond).
        #[arg(long, default_value_t = weft_server::ServeOptions::DEFAULT_MAX_CONNECTIONS)]
        max_connections: usize,
        /// PEM certificate chain for TLS on the PostgreSQL protocol (with --tls-key).
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// PEM private key for TLS (with --tls-cert).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Listen beyond loopback without a password and TLS.
        #[arg(long)]
        insecure: bool,
    },
    /// Inspect or retry managed effects (the outbox of the sinks).
    Effects {
        #[command(subcommand)]
        action: EffectsAction,
    },
    /// Rewrite a damaged log (`wal`, `outbox`) of the data directory up to its first damage,
    /// printing what is lost; the damaged file is kept beside it as `<name>.damaged`.
    Recover,
    /// Run a SQL script, echoing each statement before its result (the demo).
    Run {
        /// The script.
        file: PathBuf,
        /// Output format.
        #[arg(long, value_parser = format_parser(), default_value = "table")]
        format: OutputFormat,
    },
}

#[derive(Subcommand)]
enum EffectsAction {
    /// Put a failed effect back in line and wait for its delivery.
    Retry {
        /// The effect's CID (from `weft.effects`).
        cid: String,
        /// Seconds to wait for the delivery.
        #[arg(long, default_value_t = 30)]
        wait_s: u64,
    },
    /// List the effects (as `SELECT * FROM weft.effects`).
    List {
        /// Output format.
        #[arg(long, value_parser = format_parser(), default_value = "table")]
        format: OutputFormat,
    },
}

/// How long a one-shot command waits for its sinks to deliver before exiting (what is left is
/// delivered at the next start: it is in the outbox).
const EFFECTS_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// `weft recover`: each log of the data directory cut at its first damage, saying what is lost.
fn recover(data_dir: &std::path::Path) -> anyhow::Result<()> {
    anyhow::ensure!(data_dir.is_dir(), "no data directory at {}", data_dir.display());
    for name in ["wal", "outbox"] {
        let path = data_dir.join(name);
        if !path.exists() {
            continue;
        }
        let recovery = weft_core::wal::recover(&path)?;
        match (&recovery.damage, &recovery.copy) {
            (Some((offset, what)), Some(copy)) => println!(
                "{name}: damaged at byte {offset} ({what}): kept {} frames ({} bytes), lost {} bytes; the damaged file is kept as {}",
                recovery.frames,
                recovery.kept_bytes,
                recovery.lost_bytes,
                copy.display()
            ),
            _ => println!("{name}: not damaged ({} frames, {} bytes); left as it is", recovery.frames, recovery.kept_bytes),
        }
    }
    Ok(())
}

/// COPY's progress as a bar on the terminal (indicatif draws nothing when stderr is not one).
#[derive(Default)]
struct LoadBar(std::sync::Mutex<Option<indicatif::ProgressBar>>);

impl LoadBar {
    fn bar(&self) -> Option<indicatif::ProgressBar> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}

impl weft_core::copy::LoadProgress for LoadBar {
    fn started(&self, table: &str, total_rows: u64) {
        let bar = indicatif::ProgressBar::new(total_rows);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} rows ({per_sec})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(format!("loading {table}"));
        *self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(bar);
    }

    fn converted(&self, rows: u64) {
        if let Some(bar) = self.bar() {
            bar.inc(rows);
        }
    }

    fn committing(&self, table: &str) {
        if let Some(bar) = self.bar() {
            bar.set_message(format!("committing {table}"));
        }
    }

    fn finished(&self) {
        if let Some(bar) = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take() {
            bar.finish_and_clear();
        }
    }
}

fn main() -> std::process::ExitCode {
    // Diagnostics of the libraries (`tracing`), on standard error; RUST_LOG chooses (default: info).
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    weft::memory::use_small_pages();
    weft::memory::start_prefaulting();
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // Library errors already include their causes' text: print each new part once.
            let mut message = String::new();
            for cause in error.chain().map(|cause| cause.to_string()) {
                if !message.contains(&cause) {
                    if !message.is_empty() {
                        message.push_str(": ");
                    }
                    message.push_str(&cause);
                }
            }
            eprintln!("ERROR: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Recover = cli.command {
        return recover(&cli.data_dir);
    }
    // The local user reaches what they can; `weft serve`'s clients only what it is told.
    let access = match &cli.command {
        Command::Serve { files_root, allow_hosts, .. } => {
            weft_connectors::access::Access::confined(files_root.as_deref(), allow_hosts).map_err(anyhow::Error::msg)?
        }
        _ => weft_connectors::access::Access::unrestricted(),
    };
    let options = Options { data_dir: cli.data_dir.clone(), workers: cli.workers, sync: !cli.no_sync };
    let max_memory_bytes = cli.max_memory_mb.checked_mul(1 << 20).context("--max-memory-mb is too large")?;
    let policy = weft_core::Policy { access, max_fuel: cli.max_fuel, max_memory_bytes, max_call_ms: cli.max_call_ms };
    let mut database = Database::open_with_policy(options, policy)
        .with_context(|| format!("opening data directory {}", cli.data_dir.display()))?;
    database.report_load_progress(std::sync::Arc::new(LoadBar::default()));
    if !matches!(cli.command, Command::Serve { .. }) {
        // The shell answers psql-style catalog queries as the server does (which attaches its own).
        weft_server::pg_catalog::attach_pg_catalog(&mut database)?;
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let result = match cli.command {
        Command::Recover => unreachable!("recover runs without opening the database"),
        Command::Sql { command: Some(sql), format, .. } => run_script(&mut database, &sql, format, false, &mut out),
        Command::Sql { file: Some(file), format, .. } => {
            let sql = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            run_script(&mut database, &sql, format, false, &mut out)
        }
        Command::Sql { format, .. } => shell(&mut database, format, &mut out),
        Command::Effects { action: EffectsAction::List { format } } => {
            run_script(&mut database, "SELECT * FROM weft.effects", format, false, &mut out)
        }
        Command::Effects { action: EffectsAction::Retry { cid, wait_s } } => {
            database.retry_effect(&cid)?;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(wait_s);
            let (status, error) = loop {
                let (status, error) = database.effect_status(&cid).context("the effect disappeared")?;
                if status != weft_effects::Status::Pending || std::time::Instant::now() >= deadline {
                    break (status, error);
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            };
            let line = serde_json::json!({"effect": cid, "status": status.name(), "error": error});
            writeln!(out, "{line}")?;
            match status {
                weft_effects::Status::Delivered => Ok(()),
                _ => anyhow::bail!("effect {cid} is {}: {}", status.name(), error.unwrap_or_default()),
            }
        }
        Command::Invoke { module, function, args, returns, fuel, memory_mb } => {
            let source = std::fs::read(&module).with_context(|| format!("reading {}", module.display()))?;
            let args = args.iter().map(|arg| parse_argument(arg)).collect();
            let memory_bytes = memory_mb.checked_mul(1 << 20).context("--memory-mb is too large")?;
            let limits = weft_wasm::Limits { fuel, memory_bytes };
            let invoked = database.invoke(&source, &function, args, returns, limits)?;
            let (result, error) = weft_core::functions::outcome_json(&invoked.stored.receipt.out);
            // Keys in the documented order: out, invocation, receipt, memo (then error).
            let mut line = format!(
                "{{\"out\":{result},\"invocation\":\"{}\",\"receipt\":\"{}\",\"memo\":\"{}\"",
                invoked.stored.receipt.ran,
                invoked.stored.cid,
                if invoked.hit { "hit" } else { "miss" },
            );
            if let Some(message) = &error {
                line.push_str(&format!(",\"error\":{}", serde_json::Value::from(message.clone())));
            }
            line.push('}');
            writeln!(out, "{line}")?;
            match error {
                Some(message) => anyhow::bail!("{function}: {message} (invocation {})", invoked.stored.receipt.ran),
                None => Ok(()),
            }
        }
        Command::Receipt { cid, verify } => {
            let cid = weft_ipvm::invocation::parse_cid(&cid)?;
            if let Some(signed) = database.effect_receipt(&cid.to_string()) {
                let ipld = weft_ipvm::invocation::decode(&signed.encoded)?;
                writeln!(out, "{}", weft_ipvm::invocation::dag_json(&ipld))?;
                if verify {
                    let issuer = weft_ipvm::invocation::Receipt::from_ipld(&ipld)?.issuer;
                    weft_ipvm::identity::verify(&issuer, &cid.to_bytes(), &signed.signature)?;
                    eprintln!("verified: signed by {issuer}");
                }
                return Ok(());
            }
            let stored = database.receipt(&cid).with_context(|| format!("no receipt {cid} in this data directory"))?;
            let json = weft_ipvm::invocation::dag_json(&weft_ipvm::invocation::decode(&stored.encoded)?);
            writeln!(out, "{json}")?;
            if verify {
                let proof = stored.signed_proof()?;
                weft_ipvm::identity::verify_proof(&stored.receipt.issuer, &stored.cid.to_bytes(), &proof)?;
                eprintln!("verified: signed by {}", stored.receipt.issuer);
            }
            Ok(())
        }
        Command::Run { file, format } => {
            let sql = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            run_script(&mut database, &sql, format, true, &mut out)
        }
        Command::Serve {
            pg,
            http,
            password,
            subscribe_buffer,
            max_result_rows,
            lock_timeout_ms,
            idle_in_transaction_timeout_s,
            max_connections,
            tls_cert,
            tls_key,
            insecure,
            ..
        } => {
            let options = weft_server::ServeOptions {
                pg,
                http,
                password,
                subscribe_buffer,
                max_result_rows,
                lock_timeout_ms,
                idle_in_transaction_timeout_s,
                max_connections,
                tls: tls_cert.zip(tls_key),
                insecure,
            };
            return Ok(weft_server::serve(database, options)?);
        }
    };
    let pending = database.settle_effects(EFFECTS_WAIT);
    if pending > 0 {
        eprintln!("weft: {pending} effect(s) not delivered yet; they stay in the outbox (see weft.effects)");
    }
    result
}

/// Parses `--format`.
fn format_parser() -> impl clap::builder::TypedValueParser<Value = OutputFormat> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(OutputFormat::NAMES)
        .map(|name| OutputFormat::from_name(&name).expect("the parser admits only listed names"))
}

/// Parses a SQL type name for `--returns`.
fn parse_type(text: &str) -> Result<ColumnType, String> {
    Ok(match text.to_ascii_uppercase().as_str() {
        "BIGINT" => ColumnType::BigInt,
        "DOUBLE" => ColumnType::Double,
        "TEXT" => ColumnType::Text,
        "BYTEA" => ColumnType::Bytea,
        "BOOLEAN" => ColumnType::Boolean,
        "TIMESTAMP" => ColumnType::Timestamp,
        other => return Err(format!("unknown type {other}")),
    })
}

/// Reads a command-line argument as a value: JSON scalars, else bare text.
fn parse_argument(text: &str) -> Value {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Null) => Value::Null,
        Ok(serde_json::Value::Bool(b)) => Value::Bool(b),
        Ok(serde_json::Value::Number(number)) => match number.as_i64() {
            Some(int) => Value::Int(int),
            None => Value::float(number.as_f64().unwrap_or(f64::NAN)),
        },
        Ok(serde_json::Value::String(text)) => Value::Text(text.into()),
        _ => Value::Text(text.into()),
    }
}

/// Runs every statement of `sql`, stopping at the first error.
fn run_script(
    database: &mut Database,
    sql: &str,
    format: OutputFormat,
    echo: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    for statement in weft_core::functions::split_statements(sql) {
        if echo {
            writeln!(out, "weft> {statement};")?;
        }
        let outputs = database.execute(&statement).with_context(|| format!("in statement: {statement}"))?;
        for output in &outputs {
            write_output(out, output, format)?;
        }
        if echo {
            writeln!(out)?;
        }
    }
    Ok(())
}

/// The interactive shell: statements end with `;`; `\q` quits. Errors are printed and the shell
/// goes on.
fn shell(database: &mut Database, format: OutputFormat, out: &mut dyn Write) -> anyhow::Result<()> {
    let interactive = std::io::stdin().is_terminal();
    let mut buffer = String::new();
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        if interactive {
            write!(out, "{}", if buffer.is_empty() { "weft> " } else { "   -> " })?;
            out.flush()?;
        }
        let Some(line) = lines.next() else { break };
        let line = line?;
        if buffer.is_empty() && matches!(line.trim(), "\\q" | "quit" | "exit") {
            break;
        }
        buffer.push_str(&line);
        buffer.push('\n');
        // A statement ends at a `;` that closes a line outside any string literal.
        let open_quote = buffer.matches('\'').count() % 2 == 1;
        if open_quote || !line.trim_end().ends_with(';') {
            continue;
        }
        let sql = std::mem::take(&mut buffer);
        execute_and_print(database, &sql, format, out)?;
    }
    if !buffer.trim().is_empty() {
        execute_and_print(database, &buffer, format, out)?;
    }
    Ok(())
}

/// Runs `sql` in the shell: results are printed, and an error is printed without stopping.
fn execute_and_print(
    database: &mut Database,
    sql: &str,
    format: OutputFormat,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match database.execute(sql) {
        Ok(outputs) => {
            for output in &outputs {
                write_output(out, output, format)?;
            }
        }
        Err(error) => writeln!(out, "ERROR: {error}")?,
    }
    Ok(())
}
