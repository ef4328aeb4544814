//! Where a fleet's Redis is — one node, a Redis Cluster, or a master found through Sentinel —
//! and the connections to it (FL-01, FL-02).
//!
//! Every store of this crate talks to Redis through one [`Connector`]:
//!
//! - **One node**: a `ConnectionManager`, which reconnects by itself.
//! - **Cluster**: a cluster connection, which follows `MOVED`/`ASK` and refreshes its slot map
//!   after a failover by itself. Every script of this crate touches one key (or keys under one
//!   hash tag), so it runs on the node that owns the slot.
//! - **Sentinel**: a multiplexed connection to the master the sentinels name (checked with
//!   `ROLE`). A call that fails because the connection broke, timed out or met a read-only
//!   replica (a demoted master) drops the connection; the next call asks the sentinels again.
//!
//! Invalidations are published with plain `PUBLISH`, which a Redis Cluster forwards to every
//! node: an instance subscribes on any one node and hears every message. Sharded pub/sub
//! (`SPUBLISH`) would keep each message on one shard, but each instance would then subscribe on
//! every shard, and follow resharding; invalidations are rare (a forced renewal, a rotation, a
//! logout), so the broadcast costs little and needs nothing to follow.
//!
//! A second connection of the same kind carries the writes that must reach a replica before
//! they are relied on (`WAIT`, FL-03): `WAIT` holds its connection until the replicas answer,
//! and the hot path must not queue behind it.

use std::fmt;
use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, IntoConnectionInfo, Pipeline, RedisFuture, RedisResult, Value};
use tokenkeeper::CacheError;

/// Where the fleet's Redis is: one node, a Redis Cluster, or a master known to Sentinel.
///
/// ```
/// use tokenkeeper_redis::RedisTopology;
/// let one = RedisTopology::node("redis://127.0.0.1:6379");
/// let cluster = RedisTopology::cluster([
///     "redis://10.0.0.1:6379",
///     "redis://10.0.0.2:6379",
///     "redis://10.0.0.3:6379",
/// ]);
/// let sentinel = RedisTopology::sentinel(
///     ["redis://10.0.0.1:26379", "redis://10.0.0.2:26379", "redis://10.0.0.3:26379"],
///     "mymaster",
/// )
/// // The master's own password and database (its host is ignored: the sentinels say it).
/// .master_url("redis://:secret@master/0");
/// # let _ = (one, cluster, sentinel);
/// ```
///
/// URLs may carry credentials; they never appear in `Debug` output, logs or errors.
#[derive(Clone)]
pub struct RedisTopology {
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Node(String),
    Cluster(Vec<String>),
    Sentinel {
        sentinels: Vec<String>,
        master: String,
        master_url: Option<String>,
        master_password: Option<String>,
    },
}

impl fmt::Debug for RedisTopology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Node(_) => f.write_str("RedisTopology::Node"),
            Kind::Cluster(nodes) => write!(f, "RedisTopology::Cluster({} seed nodes)", nodes.len()),
            Kind::Sentinel {
                sentinels, master, ..
            } => write!(
                f,
                "RedisTopology::Sentinel({} sentinels, master {master:?})",
                sentinels.len()
            ),
        }
    }
}

impl RedisTopology {
    /// One Redis node at `url` (`redis://[user:password@]host:port[/db]`, or `rediss://`).
    pub fn node(url: impl Into<String>) -> Self {
        Self {
            kind: Kind::Node(url.into()),
        }
    }

    /// A Redis Cluster known by some of its nodes' URLs (any node will do to start; name
    /// several, so that starting does not depend on one). The cluster's own map of slots is
    /// followed from then on.
    pub fn cluster<S: Into<String>>(nodes: impl IntoIterator<Item = S>) -> Self {
        Self {
            kind: Kind::Cluster(nodes.into_iter().map(Into::into).collect()),
        }
    }

    /// The master named `master` by the sentinels at `sentinels` (their URLs, each with the
    /// sentinel's own password if it has one). After a failover, the next call after an error
    /// asks the sentinels again.
    pub fn sentinel<S: Into<String>>(
        sentinels: impl IntoIterator<Item = S>,
        master: impl Into<String>,
    ) -> Self {
        Self {
            kind: Kind::Sentinel {
                sentinels: sentinels.into_iter().map(Into::into).collect(),
                master: master.into(),
                master_url: None,
                master_password: None,
            },
        }
    }

    /// For [`RedisTopology::sentinel`]: the username, password and database to use on the
    /// master, given as a URL whose host is ignored (`redis://:password@master/2`). Without
    /// it: no password, database 0.
    pub fn master_url(mut self, url: impl Into<String>) -> Self {
        if let Kind::Sentinel { master_url, .. } = &mut self.kind {
            *master_url = Some(url.into());
        }
        self
    }

    /// For [`RedisTopology::sentinel`]: the master's password (over one given by
    /// [`RedisTopology::master_url`]).
    pub fn master_password(mut self, password: impl Into<String>) -> Self {
        if let Kind::Sentinel {
            master_password, ..
        } = &mut self.kind
        {
            *master_password = Some(password.into());
        }
        self
    }

    /// `node`, `cluster` or `sentinel`: for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self.kind {
            Kind::Node(_) => "node",
            Kind::Cluster(_) => "cluster",
            Kind::Sentinel { .. } => "sentinel",
        }
    }
}

impl From<&str> for RedisTopology {
    fn from(url: &str) -> Self {
        Self::node(url)
    }
}

impl From<String> for RedisTopology {
    fn from(url: String) -> Self {
        Self::node(url)
    }
}

/// A connection to the fleet's Redis, whatever its topology, for stores of sibling crates that
/// share a [`crate::RedisTokenCache`]'s connection ([`crate::RedisTokenCache::call`]). It runs
/// any command and script of the `redis` crate (`ConnectionLike`); on a cluster, each command
/// goes to the node of its keys, so a script's keys must share a hash tag.
#[derive(Clone)]
pub struct RedisConnection(Conn);

#[derive(Clone)]
enum Conn {
    Manager(ConnectionManager),
    Multiplexed(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            Conn::Manager(_) => "RedisConnection::Node",
            Conn::Multiplexed(_) => "RedisConnection::SentinelMaster",
            Conn::Cluster(_) => "RedisConnection::Cluster",
        })
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.0 {
            Conn::Manager(c) => c.req_packed_command(cmd),
            Conn::Multiplexed(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.0 {
            Conn::Manager(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Multiplexed(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.0 {
            Conn::Manager(c) => c.get_db(),
            Conn::Multiplexed(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

impl RedisConnection {
    /// `WAIT replicas timeout` for the writes this connection made to `key`: on a cluster, sent
    /// to the master of `key`'s slot. How many replicas acknowledged.
    pub(crate) async fn wait_for_replicas(
        &mut self,
        key: &str,
        replicas: u32,
        timeout: Duration,
    ) -> RedisResult<i64> {
        let timeout_ms = u64::try_from(timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut wait = redis::cmd("WAIT");
        wait.arg(replicas).arg(timeout_ms);
        match &mut self.0 {
            Conn::Cluster(c) => {
                use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
                let route = Route::with_key(key.as_bytes(), SlotAddr::Master);
                let value = c
                    .route_command(
                        wait,
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
                    )
                    .await?;
                redis::from_redis_value(value).map_err(Into::into)
            }
            other => {
                let mut connection = RedisConnection(other.clone());
                wait.query_async(&mut connection).await
            }
        }
    }
}

/// Makes and keeps the connections of one topology.
pub(crate) struct Connector {
    target: Target,
    timeout: Duration,
    /// The response timeout of the connection of durable writes: `WAIT` answers only when the
    /// replicas have, or after its own timeout.
    durable_timeout: Duration,
    /// The connection of every call.
    main: Held,
    /// The connection of writes followed by `WAIT`.
    durable: Held,
    /// Which node the next subscription tries (cluster: round robin over the seeds).
    next_subscriber: std::sync::atomic::AtomicUsize,
}

// One per connector, made once: the size of its variants does not matter.
#[allow(clippy::large_enum_variant)]
enum Target {
    Node(redis::Client),
    Cluster {
        client: redis::cluster::ClusterClient,
        /// The same, with the response timeout of durable writes.
        durable_client: redis::cluster::ClusterClient,
        /// The seed nodes, for subscriptions.
        nodes: Vec<redis::Client>,
    },
    Sentinel {
        sentinel: tokio::sync::Mutex<redis::sentinel::SentinelClient>,
    },
}

/// A connection made on first use; in Sentinel mode, dropped after a failure and made again.
struct Held {
    connection: std::sync::Mutex<Option<RedisConnection>>,
    /// One connect at a time.
    connecting: tokio::sync::Mutex<()>,
}

impl Held {
    fn new() -> Self {
        Self {
            connection: std::sync::Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
        }
    }

    fn current(&self) -> Option<RedisConnection> {
        self.connection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set(&self, connection: Option<RedisConnection>) {
        *self
            .connection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = connection;
    }
}

fn invalid(what: &str, e: &redis::RedisError) -> CacheError {
    CacheError::new(format!("invalid Redis {what}: {}", e.category()))
}

impl Connector {
    pub(crate) fn new(
        topology: RedisTopology,
        timeout: Duration,
        durable_timeout: Duration,
    ) -> Result<Self, CacheError> {
        let target = match topology.kind {
            Kind::Node(url) => {
                Target::Node(redis::Client::open(url.as_str()).map_err(|e| invalid("URL", &e))?)
            }
            Kind::Cluster(urls) => {
                if urls.is_empty() {
                    return Err(CacheError::new(
                        "a Redis Cluster needs at least one node URL",
                    ));
                }
                let nodes = urls
                    .iter()
                    .map(|u| redis::Client::open(u.as_str()))
                    .collect::<RedisResult<Vec<_>>>()
                    .map_err(|e| invalid("cluster node URL", &e))?;
                let client = |response_timeout| {
                    redis::cluster::ClusterClientBuilder::new(
                        urls.iter().map(String::as_str).collect::<Vec<_>>(),
                    )
                    .connection_timeout(timeout)
                    .response_timeout(response_timeout)
                    .retries(3)
                    .min_retry_wait(20)
                    .max_retry_wait(200)
                    .build()
                    .map_err(|e| invalid("cluster settings", &e))
                };
                Target::Cluster {
                    client: client(timeout)?,
                    durable_client: client(durable_timeout)?,
                    nodes,
                }
            }
            Kind::Sentinel {
                sentinels,
                master,
                master_url,
                master_password,
            } => {
                if sentinels.is_empty() {
                    return Err(CacheError::new("Sentinel needs at least one sentinel URL"));
                }
                if master.is_empty() {
                    return Err(CacheError::new("Sentinel needs the master's name"));
                }
                let mut settings = match master_url {
                    Some(url) => Some(
                        url.as_str()
                            .into_connection_info()
                            .map_err(|e| invalid("master URL", &e))?
                            .redis_settings()
                            .clone(),
                    ),
                    None => None,
                };
                if let Some(password) = master_password {
                    settings = Some(settings.unwrap_or_default().set_password(password));
                }
                let node = settings.map(|settings| {
                    redis::sentinel::SentinelNodeConnectionInfo::default()
                        .set_redis_connection_info(settings)
                });
                let sentinel = redis::sentinel::SentinelClient::build(
                    sentinels.iter().map(String::as_str).collect::<Vec<_>>(),
                    master,
                    node,
                    redis::sentinel::SentinelServerType::Master,
                )
                .map_err(|e| invalid("sentinel URL", &e))?;
                Target::Sentinel {
                    sentinel: tokio::sync::Mutex::new(sentinel),
                }
            }
        };
        Ok(Self {
            target,
            timeout,
            durable_timeout,
            main: Held::new(),
            durable: Held::new(),
            next_subscriber: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// `node`, `cluster` or `sentinel`.
    pub(crate) fn kind(&self) -> &'static str {
        match self.target {
            Target::Node(_) => "node",
            Target::Cluster { .. } => "cluster",
            Target::Sentinel { .. } => "sentinel",
        }
    }

    /// The connection of every call.
    pub(crate) async fn main(&self) -> RedisResult<RedisConnection> {
        self.get(&self.main, false).await
    }

    /// The connection of writes followed by `WAIT`.
    pub(crate) async fn durable(&self) -> RedisResult<RedisConnection> {
        self.get(&self.durable, true).await
    }

    async fn get(&self, held: &Held, durable: bool) -> RedisResult<RedisConnection> {
        if let Some(connection) = held.current() {
            return Ok(connection);
        }
        let _one = held.connecting.lock().await;
        if let Some(connection) = held.current() {
            return Ok(connection);
        }
        let connection = self.connect(durable).await?;
        held.set(Some(connection.clone()));
        Ok(connection)
    }

    async fn connect(&self, durable: bool) -> RedisResult<RedisConnection> {
        let response_timeout = if durable {
            self.durable_timeout
        } else {
            self.timeout
        };
        match &self.target {
            Target::Node(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(response_timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_secs(1));
                ConnectionManager::new_with_config(client.clone(), config)
                    .await
                    .map(|c| RedisConnection(Conn::Manager(c)))
            }
            Target::Cluster {
                client,
                durable_client,
                ..
            } => if durable { durable_client } else { client }
                .get_async_connection()
                .await
                .map(|c| RedisConnection(Conn::Cluster(c))),
            Target::Sentinel { sentinel } => {
                let master = sentinel.lock().await.async_get_client().await?;
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(response_timeout));
                master
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map(|c| RedisConnection(Conn::Multiplexed(c)))
            }
        }
    }

    /// A call failed with `error` (`None`: it timed out). In Sentinel mode, a broken connection,
    /// a timeout or a read-only answer (the master was demoted) drops both connections, so that
    /// the next call asks the sentinels where the master is now.
    pub(crate) fn failed(&self, error: Option<&redis::RedisError>) {
        if !matches!(self.target, Target::Sentinel { .. }) {
            return;
        }
        let reconnect = error.is_none_or(|e| {
            e.is_io_error()
                || e.is_connection_dropped()
                || e.is_connection_refusal()
                || e.is_timeout()
                || matches!(e.code(), Some("READONLY" | "LOADING" | "MASTERDOWN"))
        });
        if reconnect {
            self.main.set(None);
            self.durable.set(None);
        }
    }

    /// A connection for a subscription: one node (cluster: the next seed, round robin, since
    /// every node hears every `PUBLISH`; Sentinel: the master).
    pub(crate) async fn pubsub(&self) -> RedisResult<redis::aio::PubSub> {
        match &self.target {
            Target::Node(client) => client.get_async_pubsub().await,
            Target::Cluster { nodes, .. } => {
                let i = self
                    .next_subscriber
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                nodes[i % nodes.len()].get_async_pubsub().await
            }
            Target::Sentinel { sentinel } => {
                let master = sentinel.lock().await.async_get_client().await?;
                master.get_async_pubsub().await
            }
        }
    }
}
