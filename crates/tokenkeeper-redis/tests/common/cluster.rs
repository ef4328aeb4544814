//! A Redis Cluster of our own (issue 19's tests): 3 masters and 3 replicas of Debian's
//! `redis-server` on free ports in a temporary directory, made a cluster with
//! `redis-cli --cluster create`, and gone when dropped.
//!
//! Each node's client port and cluster-bus port are both chosen by the kernel (bound to port 0
//! and read back) and given to `redis-server` (`--port`, `--cluster-port`): the default bus port
//! (client port + 10,000) could land on anything.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use super::{cli, free_port, wait_until};

/// A running cluster.
pub struct OwnCluster {
    dir: PathBuf,
    nodes: Vec<Node>,
}

struct Node {
    port: u16,
    child: Option<Child>,
}

impl OwnCluster {
    /// Starts 6 nodes and makes them a cluster (3 masters, a replica each); returns once every
    /// node says `cluster_state:ok` and every replica has synced with its master.
    pub async fn start() -> Self {
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
            let (port, bus) = (free_port(), free_port());
            let child = Command::new("redis-server")
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
                    "1000",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                ])
                .arg(&this.dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server must be installed");
            this.nodes.push(Node {
                port,
                child: Some(child),
            });
        }
        for node in &this.nodes {
            wait_until("a node answers PING", || {
                cli(node.port, &["PING"]).trim() == "PONG"
            })
            .await;
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
