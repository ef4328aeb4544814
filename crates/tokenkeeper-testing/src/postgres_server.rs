//! A PostgreSQL server of a test's own, from Debian's `postgresql` package: `initdb` in a
//! temporary directory, `postgres` on a port the kernel chose (bind-tested first), trust
//! authentication on loopback, stopped and removed when dropped. As root, the server runs as the
//! `postgres` user (it refuses to run as root).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::ports::free_port;
use crate::redis_servers::wait_until;

/// A running PostgreSQL.
pub struct OwnPostgres {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

/// The directory of the newest installed PostgreSQL's server binaries.
fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's server must be installed (Debian package postgresql)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("PostgreSQL's server must be installed (Debian package postgresql)")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// `program args…`, as the `postgres` user when this process is root.
fn as_owner(program: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

impl OwnPostgres {
    /// Initialises a cluster in a temporary directory and starts it.
    pub async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "tk-postgres-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        if is_root() {
            let status = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&dir)
                .status()
                .unwrap();
            assert!(status.success());
        }
        let initdb = as_owner(&bin_dir().join("initdb"))
            .args(["-D"])
            .arg(dir.join("data"))
            .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert!(
            initdb.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&initdb.stderr)
        );
        let mut this = Self {
            dir,
            port: free_port(),
            child: None,
        };
        this.launch().await;
        this
    }

    async fn launch(&mut self) {
        let child = as_owner(&bin_dir().join("postgres"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", self.dir.display()))
            .args(["-c", "fsync=off", "-c", "max_connections=200"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let (port, isready) = (self.port, bin_dir().join("pg_isready"));
        wait_until("PostgreSQL accepts connections", || {
            Command::new(&isready)
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .await;
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops it at once (`pg_ctl stop -m immediate`: no checkpoint, connections cut), as a
    /// crash would.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = as_owner(&bin_dir().join("pg_ctl"))
                .arg("-D")
                .arg(self.dir.join("data"))
                .args(["stop", "-m", "immediate", "-w"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same data (after [`OwnPostgres::stop`]).
    pub async fn restart(&mut self) {
        self.stop();
        // The port was just released by the server itself; wait until it can be bound again.
        let port = self.port;
        wait_until("the port is free again", || {
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
        })
        .await;
        self.launch().await;
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
