//! Redis servers of a test's own, from Debian's `redis-server` and `redis-cli`: one node it can
//! kill and restart ([`OwnRedis`]), a Redis Cluster of 3 masters and 3 replicas
//! ([`OwnCluster`]) and a master, a replica and 3 sentinels ([`OwnSentinel`]). Every port comes
//! from [`free_port`] (bind-tested, outside the kernel's ephemeral range); each is gone when
//! dropped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub use crate::ports::free_port;

/// `redis-cli -p <port> <args>`'s output.
pub fn cli(port: u16, args: &[&str]) -> String {
    let output = std::process::Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli must be installed");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Polls `check` until it holds (30 s at most).
pub async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A `redis-server` of our own on a free port, so the test can kill and restart it.
pub struct OwnRedis {
    port: u16,
    child: Option<std::process::Child>,
}

impl OwnRedis {
    /// Starts a `redis-server` (no persistence, `DEBUG` enabled) on a free port.
    pub async fn start() -> Self {
        let port = free_port();
        let mut this = Self { port, child: None };
        this.restart().await;
        this
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it again on the same port (after [`OwnRedis::kill`]), empty.
    pub async fn restart(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--enable-debug-command",
                "yes",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server must be installed");
        self.child = Some(child);
        for _ in 0..500 {
            if cli(self.port, &["PING"]).trim() == "PONG" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("redis-server did not start");
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---- Redis Cluster ----

// A Redis Cluster of our own (issue 19's tests): 3 masters and 3 replicas of Debian's
// `redis-server` on free ports in a temporary directory, made a cluster with
// `redis-cli --cluster create`, and gone when dropped.
//
// Each node's client port and cluster-bus port are both chosen by the kernel (bound to port 0
// and read back) and given to `redis-server` (`--port`, `--cluster-port`): the default bus port
// (client port + 10,000) could land on anything.

/// A running cluster.
pub struct OwnCluster {
    dir: PathBuf,
    nodes: Vec<Node>,
}

struct Node {
    port: u16,
    child: Option<Child>,
}

impl Node {
    /// Starts a cluster-enabled `redis-server` in `dir` and waits until it answers `PING`. A
    /// node that exits first (its port taken after all) is started again on other ports.
    async fn start(dir: &std::path::Path, node_timeout_ms: u32) -> Self {
        for _ in 0..5 {
            let (port, bus) = (free_port(), free_port());
            let mut child = Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--cluster-port",
                    &bus.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &format!("nodes-{port}.conf"),
                    "--cluster-node-timeout",
                    &node_timeout_ms.to_string(),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                ])
                .arg(dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server must be installed");
            let mut exited = false;
            wait_until("a node answers PING", || {
                exited = child.try_wait().ok().flatten().is_some();
                exited || cli(port, &["PING"]).trim() == "PONG"
            })
            .await;
            if !exited {
                return Self {
                    port,
                    child: Some(child),
                };
            }
        }
        panic!("redis-server (cluster node) exited at start 5 times");
    }
}

impl OwnCluster {
    /// Starts 6 nodes and makes them a cluster (3 masters, a replica each) with a node timeout
    /// of 1 s; returns once every node says `cluster_state:ok` and every replica has synced
    /// with its master.
    pub async fn start() -> Self {
        Self::start_with_node_timeout(1000).await
    }

    /// [`OwnCluster::start`] with `cluster-node-timeout` `ms`: how long a master may be silent
    /// before its replica takes over.
    pub async fn start_with_node_timeout(ms: u32) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "tk-redis-cluster-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut this = Self {
            dir,
            nodes: Vec::new(),
        };
        for _ in 0..6 {
            let node = Node::start(&this.dir, ms).await;
            this.nodes.push(node);
        }
        let addresses: Vec<String> = this
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli must be installed");
        assert!(
            created.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        for node in &this.nodes {
            wait_until("every node says cluster_state:ok", || {
                cli(node.port, &["CLUSTER", "INFO"]).contains("cluster_state:ok")
            })
            .await;
            // A replica that never synced with its master would not take over from it.
            wait_until("every replica's link to its master is up", || {
                let replication = cli(node.port, &["INFO", "replication"]);
                replication.contains("role:master") || replication.contains("master_link_status:up")
            })
            .await;
        }
        this
    }

    /// The nodes' URLs (`redis://127.0.0.1:<port>`), masters and replicas alike.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect()
    }

    /// The client ports of the nodes that are masters now.
    pub fn masters(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some() && cli(n.port, &["ROLE"]).starts_with("master"))
            .map(|n| n.port)
            .collect()
    }

    /// Kills the node on `port` (`kill -9`): its replica takes over after the node timeout.
    pub fn kill(&mut self, port: u16) {
        if let Some(node) = self.nodes.iter_mut().find(|n| n.port == port) {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---- Sentinel ----

// Redis Sentinel of our own (issue 19's tests): a master, a replica and 3 sentinels of
// Debian's `redis-server`, each on a port the kernel chose, in a temporary directory; gone when
// dropped. The sentinels watch the master as `mymaster` (quorum 2) and call it down after 1 s.

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

    /// The port of the server that is not the master now.
    pub fn replica_port(&self) -> u16 {
        let master = self.master_port();
        self.servers
            .iter()
            .map(|(port, _)| *port)
            .find(|port| *port != master)
            .unwrap_or_default()
    }

    /// Sends `signal` (`STOP`, `CONT`) to the replica's process.
    pub fn signal_replica(&self, signal: &str) {
        let port = self.replica_port();
        if let Some((_, Some(child))) = self.servers.iter().find(|(p, _)| *p == port) {
            let status = Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(child.id().to_string())
                .status()
                .unwrap();
            assert!(status.success());
        }
    }

    /// Closes the master's link to its replica (`CLIENT KILL TYPE replica`): until the replica
    /// connects again (within about a second, unless it is stopped), writes stay on the master.
    pub fn cut_replication(&self) {
        let answer = cli(self.master_port(), &["CLIENT", "KILL", "TYPE", "replica"]);
        assert!(
            answer.trim().parse::<u32>().is_ok_and(|n| n > 0),
            "{answer}"
        );
    }

    /// Waits until the sentinels name a master other than `old` and it answers as a master.
    pub async fn wait_for_new_master(&self, old: u16) -> u16 {
        wait_until("the sentinels promote the replica", || {
            let port = self.master_port();
            port != old && port != 0 && cli(port, &["ROLE"]).starts_with("master")
        })
        .await;
        self.master_port()
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
