//! Redis Sentinel of our own (issue 19's tests): a master, a replica and 3 sentinels of
//! Debian's `redis-server`, each on a port the kernel chose, in a temporary directory; gone when
//! dropped. The sentinels watch the master as `mymaster` (quorum 2) and call it down after 1 s.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use super::{cli, free_port, wait_until};

/// The name the sentinels know the master by.
pub const MASTER_NAME: &str = "mymaster";

/// A running master, replica and sentinels.
pub struct OwnSentinel {
    dir: PathBuf,
    /// `(port, process)` of the master and the replica (the master first, at start).
    servers: Vec<(u16, Option<Child>)>,
    sentinels: Vec<(u16, Child)>,
}

fn server(dir: &std::path::Path, port: u16, replica_of: Option<u16>) -> Child {
    let mut command = Command::new("redis-server");
    command
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--dir"])
        .arg(dir);
    if let Some(master) = replica_of {
        command.args(["--replicaof", "127.0.0.1", &master.to_string()]);
    }
    command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server must be installed")
}

impl OwnSentinel {
    /// Starts the master, its replica (synced) and 3 sentinels that all see both and each
    /// other.
    pub async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "tk-redis-sentinel-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let (master, replica) = (free_port(), free_port());
        let mut this = Self {
            servers: vec![
                (master, Some(server(&dir, master, None))),
                (replica, Some(server(&dir, replica, Some(master)))),
            ],
            sentinels: Vec::new(),
            dir,
        };
        wait_until("the replica has synced", || {
            cli(replica, &["INFO", "replication"]).contains("master_link_status:up")
        })
        .await;
        for i in 0..3 {
            let port = free_port();
            let config = this.dir.join(format!("sentinel-{i}.conf"));
            std::fs::write(
                &config,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {dir}\nsentinel monitor {MASTER_NAME} 127.0.0.1 {master} 2\nsentinel down-after-milliseconds {MASTER_NAME} 1000\nsentinel failover-timeout {MASTER_NAME} 5000\nsentinel parallel-syncs {MASTER_NAME} 1\n",
                    dir = this.dir.display()
                ),
            )
            .unwrap();
            let child = Command::new("redis-server")
                .arg(&config)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server must be installed");
            this.sentinels.push((port, child));
        }
        for (port, _) in &this.sentinels {
            wait_until(
                "every sentinel sees the replica and the other sentinels",
                || {
                    let master = cli(*port, &["SENTINEL", "MASTER", MASTER_NAME]);
                    let field = |name: &str| {
                        let mut lines = master.lines();
                        while let Some(line) = lines.next() {
                            if line == name {
                                return lines.next().unwrap_or_default().to_owned();
                            }
                        }
                        String::new()
                    };
                    field("num-slaves") == "1" && field("num-other-sentinels") == "2"
                },
            )
            .await;
        }
        this
    }

    /// The sentinels' URLs (`redis://127.0.0.1:<port>`).
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|(port, _)| format!("redis://127.0.0.1:{port}"))
            .collect()
    }

    /// The master's port, as the first sentinel says.
    pub fn master_port(&self) -> u16 {
        let answer = cli(
            self.sentinels[0].0,
            &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME],
        );
        answer
            .lines()
            .nth(1)
            .and_then(|port| port.trim().parse().ok())
            .unwrap_or_default()
    }

    /// Kills the master now (`kill -9`); the sentinels promote the replica after about 1 s.
    pub fn kill_master(&mut self) -> u16 {
        let port = self.master_port();
        if let Some((_, child)) = self.servers.iter_mut().find(|(p, _)| *p == port) {
            if let Some(mut child) = child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        port
    }
}

impl Drop for OwnSentinel {
    fn drop(&mut self) {
        for (_, child) in &mut self.servers {
            if let Some(mut child) = child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        for (_, child) in &mut self.sentinels {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
