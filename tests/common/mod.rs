//! A `weft serve` process for integration tests: started on free loopback ports in a
//! temporary data directory, killed on drop.

#![allow(dead_code)]

pub mod postgres;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_postgres::NoTls;

/// A running `weft serve` in a temporary data directory, killed on drop.
pub struct Server {
    child: Child,
    pub pg: SocketAddr,
    pub http: SocketAddr,
    pub directory: PathBuf,
    /// The arguments it was started with beyond the addresses, for a restart.
    extra: Vec<String>,
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// Starts `weft serve` on `directory` with free ports and waits until it listens.
fn spawn(directory: &std::path::Path, extra: &[&str]) -> (Child, SocketAddr, SocketAddr) {
    let (pg, http) = (free_port(), free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_weft"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["--data-dir", directory.to_str().unwrap(), "--no-sync", "serve"])
        .args(["--pg", &pg.to_string(), "--http", &http.to_string()])
        .args(extra)
        .env_remove("WEFT_PASSWORD")
        .stderr(Stdio::null())
        .spawn()
        .expect("start weft serve");
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(pg).is_err() || TcpStream::connect(http).is_err() {
        assert!(Instant::now() < deadline, "weft serve did not start listening");
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, pg, http)
}

/// A fresh directory beside the servers' data directories, for `--files-root`.
pub fn files_root(name: &str) -> PathBuf {
    let directory = std::env::temp_dir().join(format!("weft-files-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory).unwrap();
    directory
}

impl Server {
    pub fn start(name: &str, extra: &[&str]) -> Server {
        let directory = std::env::temp_dir().join(format!("weft-serve-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&directory);
        Server::start_in(directory, extra)
    }

    /// Kills the server with SIGKILL (no shutdown of any kind) and starts it again on the same
    /// data directory.
    pub fn crash_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        let (child, pg, http) = spawn(&self.directory, &extra);
        (self.child, self.pg, self.http) = (child, pg, http);
    }

    /// The server process's id (to kill it from another thread).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn start_in(directory: PathBuf, extra: &[&str]) -> Server {
        let (child, pg, http) = spawn(&directory, extra);
        Server { child, pg, http, directory, extra: extra.iter().map(|arg| arg.to_string()).collect() }
    }

    pub fn config(&self) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config.host("127.0.0.1").port(self.pg.port()).user("weft").dbname("weft");
        config
    }

    pub async fn connect(&self) -> tokio_postgres::Client {
        let (client, connection) = self.config().connect(NoTls).await.expect("connect");
        tokio::spawn(connection);
        client
    }

    /// A raw HTTP/1.1 exchange: the status code and the body. The `Host` header names the
    /// server's address, as a client's does.
    pub fn http(&self, method: &str, path: &str, body: &str, headers: &str) -> (u16, String) {
        self.try_http(method, path, body, headers).expect("an HTTP answer")
    }

    /// As [`Server::http`], but `None` when no whole answer came (the server died).
    pub fn try_http(&self, method: &str, path: &str, body: &str, headers: &str) -> Option<(u16, String)> {
        self.try_http_raw(&format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n{body}",
            self.http,
            body.len()
        ))
    }

    /// Sends `request` as it is: the status code and the body of the answer.
    pub fn http_raw(&self, request: &str) -> (u16, String) {
        self.try_http_raw(request).expect("an HTTP answer")
    }

    fn try_http_raw(&self, request: &str) -> Option<(u16, String)> {
        let mut stream = TcpStream::connect(self.http).ok()?;
        stream.write_all(request.as_bytes()).ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let status = response.get(9..12)?.parse().ok()?;
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        if !head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
            return Some((status, body.to_string()));
        }
        // De-chunk: `size in hex CRLF data CRLF`, ending with a zero size.
        let mut rest = body;
        let mut decoded = String::new();
        while let Some((size, after)) = rest.split_once("\r\n") {
            let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if size == 0 {
                break;
            }
            decoded.push_str(after.get(..size)?);
            rest = after.get(size + 2..)?;
        }
        Some((status, decoded))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}

impl Server {
    /// A libpq connection string for this server.
    pub fn dsn(&self) -> String {
        format!("host=127.0.0.1 port={} user=weft dbname=weft", self.pg.port())
    }
}
