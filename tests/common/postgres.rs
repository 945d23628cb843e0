//! A real PostgreSQL server for the tests, one per test process: Debian's
//! `postgresql` binaries (installed by tests/setup), a cluster made by
//! `initdb` in a temporary directory, listening on a free loopback port.
//! Each caller of [`database`] gets a fresh database of its own.
//!
//! The server is watched by a small shell loop that stops it (and removes
//! its directory) once this process is gone, however it ends. As root the
//! server runs as the `postgres` user: PostgreSQL refuses to run as root.
//!
//! Shared by the library's unit tests (`#[path]`) and the integration tests.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A running server.
pub struct Server {
    pub port: u16,
    pub dir: PathBuf,
    bin: PathBuf,
}

impl Server {
    /// The URL of database `name` as the superuser (trust authentication
    /// on loopback).
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Runs SQL on database `name` with psql (a process: callable from
    /// async tests, where a blocking client may not run).
    pub fn psql(&self, name: &str, sql: &str) -> Result<String, String> {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-q",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
            ])
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-d", name, "-c", sql])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

/// The directory of PostgreSQL's programs: the newest version installed.
fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").is_file())
        .collect();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found
        .pop()
        .expect("PostgreSQL is not installed (/usr/lib/postgresql/*/bin/initdb): run tests/setup")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// `program args...`, as the `postgres` user when this process is root.
fn as_server_user(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The test process's server, started on first use.
pub fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(start)
}

fn start() -> Server {
    let bin = bin_dir();
    let dir = std::env::temp_dir().join(format!("rv-postgres-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("the server's directory");
    if is_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status()
            .expect("chown");
        assert!(status.success(), "chown the server's directory");
    }
    let data = dir.join("data");
    let out = as_server_user(&bin.join("initdb"))
        .args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
            "-D",
        ])
        .arg(&data)
        .output()
        .expect("initdb runs");
    assert!(
        out.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = free_port();
    // Stops the server once this process is gone, then removes its files.
    let watch = r#"
        "$1" -D "$2" -p "$3" -k "$4" -c listen_addresses=127.0.0.1 \
            -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
            -c max_connections=200 >"$4/server.log" 2>&1 &
        server=$!
        while [ -d "/proc/$5" ] && kill -0 "$server" 2>/dev/null; do sleep 1; done
        kill -INT "$server" 2>/dev/null
        wait "$server"
        rm -rf "$4"
    "#;
    // Not waited for: it outlives this process by design, to stop the
    // server after it.
    #[allow(clippy::zombie_processes)]
    let _watcher = as_server_user(Path::new("/bin/sh"))
        .arg("-c")
        .arg(watch)
        .arg("watch")
        .arg(bin.join("postgres"))
        .arg(&data)
        .arg(port.to_string())
        .arg(&dir)
        .arg(std::process::id().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // A group of its own: a signal to the tests' group (a timeout, ^C)
        // leaves the watcher to stop the server and remove its files.
        .process_group(0)
        .spawn()
        .expect("start postgres");
    let server = Server { port, dir, bin };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match server.psql("postgres", "SELECT 1") {
            Ok(_) => return server,
            Err(e) if Instant::now() > deadline => {
                let log =
                    std::fs::read_to_string(server.dir.join("server.log")).unwrap_or_default();
                panic!("PostgreSQL did not start: {e}\n{log}");
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// A new, empty database on the test server; its URL.
pub fn database(hint: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name: String = format!("{hint}_{}", NEXT.fetch_add(1, Ordering::Relaxed))
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let server = server();
    server
        .psql("postgres", &format!("CREATE DATABASE \"{name}\""))
        .expect("CREATE DATABASE");
    server.url(&name)
}
