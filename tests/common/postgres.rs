//! A real PostgreSQL server for tests: Debian's `postgresql` package, initialised in a temporary
//! directory and started on a free loopback port (as the `postgres` user when the tests run as
//! root, since PostgreSQL refuses to run as root). Stopped and removed on drop.
//!
//! One-time install: `apt-get install postgresql` (`.ci/run` does it).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running PostgreSQL server with a database `app`.
pub struct Postgres {
    child: Child,
    pub port: u16,
    directory: PathBuf,
}

/// The directory of Debian's PostgreSQL binaries (the newest version installed).
fn binaries() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed: apt-get install postgresql")
        .filter_map(Result::ok)
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| bin.join("postgres").exists())
        .collect();
    versions.sort();
    versions.pop().expect("no PostgreSQL server binaries under /usr/lib/postgresql")
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|output| output.stdout.starts_with(b"0\n"))
}

/// A command run as the `postgres` user when we are root.
fn as_owner(program: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

impl Postgres {
    /// Initialises and starts a server, and creates the database `app`.
    pub fn start(name: &str) -> Postgres {
        let bin = binaries();
        let directory = std::env::temp_dir().join(format!("weft-pg-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&directory);
        std::fs::create_dir_all(&directory).unwrap();
        if is_root() {
            assert!(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&directory)
                .status()
                .unwrap()
                .success());
        }
        let data = directory.join("data");
        let initdb = as_owner(&bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync", "-D"])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run initdb");
        assert!(initdb.success(), "initdb failed");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = as_owner(&bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(&directory)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=50"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start postgres");
        let server = Postgres { child, port, directory };
        let deadline = Instant::now() + Duration::from_secs(30);
        while server.try_psql("postgres", "SELECT 1").is_none_or(|out| out.trim() != "1") {
            assert!(Instant::now() < deadline, "PostgreSQL did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        server.psql_in("postgres", "CREATE DATABASE app");
        server
    }

    /// A libpq connection string for database `app`.
    pub fn conninfo(&self) -> String {
        format!("host=127.0.0.1 port={} user=postgres dbname=app", self.port)
    }

    fn try_psql(&self, database: &str, sql: &str) -> Option<String> {
        let output = Command::new("psql")
            .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", "postgres"])
            .args(["-p", &self.port.to_string(), "-d", database, "-c", sql])
            .output()
            .ok()?;
        output.status.success().then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    }

    fn psql_in(&self, database: &str, sql: &str) -> String {
        self.try_psql(database, sql).unwrap_or_else(|| panic!("psql failed: {sql}"))
    }

    /// Runs `sql` in database `app`, returning psql's unaligned output (`|` between columns).
    pub fn psql(&self, sql: &str) -> String {
        self.psql_in("app", sql)
    }

    /// The rows of a query in `app`, sorted, one string per row.
    pub fn rows(&self, sql: &str) -> Vec<String> {
        let mut rows: Vec<String> = self.psql(sql).lines().map(str::to_string).collect();
        rows.sort();
        rows
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}
