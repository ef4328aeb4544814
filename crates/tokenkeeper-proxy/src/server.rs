//! The server: a worker thread per core, each with its own current-thread tokio runtime, its
//! own listening socket on the shared address (`SO_REUSEPORT`: the kernel spreads connections
//! over the workers) and its own upstream pool. A request is read, handled, forwarded and
//! answered on one thread: no task moves between threads, no wake-up crosses one, no pool lock
//! is shared (BENCHMARKS.md: the measurements that chose this). Each connection is served by
//! the crate's own inline HTTP/1.1 (`connection`), and by hyper from the first request it does not
//! serve itself (upgrades, streamed uploads).
//!
//! `SO_REUSEPORT` lets another process of the same user bind the same address too; run the
//! host as its own user (as any service should) when that matters.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

pub use crate::handler::{Handler, Peer};
pub use crate::worker::default_workers;

/// How a [`Server`] serves.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Worker threads (default: one per core).
    pub workers: usize,
    /// A client must send a request's headers within this (default 30 s; slow-loris).
    pub header_read_timeout: Duration,
    /// At shutdown, in-flight requests get this long to finish (default 30 s).
    pub drain_timeout: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            workers: default_workers(),
            header_read_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// Where a server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A Unix socket's path.
    Unix(std::path::PathBuf),
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(addr) => write!(f, "{addr}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// One worker's listening socket.
#[derive(Debug)]
enum Socket {
    Tcp(std::net::TcpListener),
    #[cfg(unix)]
    Unix(std::os::unix::net::UnixListener),
}

/// Listening sockets, bound and not yet served: one per worker, on one address.
#[derive(Debug)]
pub struct Bound {
    listen: Listen,
    sockets: Vec<Socket>,
}

impl Bound {
    /// Binds `workers` sockets to `addr` (port 0: a free port, the same for all).
    pub fn bind(addr: SocketAddr, workers: usize) -> std::io::Result<Self> {
        let first = reuse_port_socket(addr)?;
        let addr = first.local_addr()?;
        let mut sockets = vec![Socket::Tcp(first)];
        for _ in 1..workers.max(1) {
            sockets.push(Socket::Tcp(reuse_port_socket(addr)?));
        }
        Ok(Self {
            listen: Listen::Tcp(addr),
            sockets,
        })
    }

    /// Binds a Unix socket at `path` (mode 0660: its owner and group may connect), shared by
    /// `workers`. A stale socket file (nobody listening) is replaced; a live one is an error.
    #[cfg(unix)]
    pub fn bind_unix(path: &std::path::Path, workers: usize) -> std::io::Result<Self> {
        use std::os::unix::fs::PermissionsExt as _;
        if path.exists() {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!("{} is in use", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        let listener = std::os::unix::net::UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
        listener.set_nonblocking(true)?;
        let mut sockets = Vec::with_capacity(workers.max(1));
        for _ in 1..workers.max(1) {
            sockets.push(Socket::Unix(listener.try_clone()?));
        }
        sockets.push(Socket::Unix(listener));
        Ok(Self {
            listen: Listen::Unix(path.to_owned()),
            sockets,
        })
    }

    /// Binds to `listen`.
    pub fn bind_to(listen: &Listen, workers: usize) -> std::io::Result<Self> {
        match listen {
            Listen::Tcp(addr) => Self::bind(*addr, workers),
            #[cfg(unix)]
            Listen::Unix(path) => Self::bind_unix(path, workers),
            #[cfg(not(unix))]
            Listen::Unix(_) => Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "Unix sockets need a Unix system",
            )),
        }
    }

    /// The bound TCP address (with the port the OS chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        match &self.listen {
            Listen::Tcp(addr) => *addr,
            Listen::Unix(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        }
    }

    /// Where it listens.
    pub fn listen(&self) -> &Listen {
        &self.listen
    }

    /// Serves `handler` on every worker until [`Server::shutdown`].
    pub fn serve<H: Handler>(
        self,
        handler: Arc<H>,
        options: &ServerOptions,
    ) -> std::io::Result<Server> {
        let (stop, stopped) = watch::channel(false);
        let mut threads = Vec::with_capacity(self.sockets.len());
        for (index, socket) in self.sockets.into_iter().enumerate() {
            let handler = handler.clone();
            let stopped = stopped.clone();
            let options = options.clone();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            threads.push(
                std::thread::Builder::new()
                    .name(format!("tokenkeeper-worker-{index}"))
                    .spawn(move || {
                        crate::worker::enter(index);
                        runtime.block_on(worker(index, socket, handler, stopped, options));
                    })?,
            );
        }
        Ok(Server {
            listen: self.listen,
            stop,
            threads,
        })
    }
}

fn reuse_port_socket(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    listen: Listen,
    stop: watch::Sender<bool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Server {
    /// The TCP address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        match &self.listen {
            Listen::Tcp(addr) => *addr,
            Listen::Unix(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        }
    }

    /// Where it listens.
    pub fn listen(&self) -> &Listen {
        &self.listen
    }

    /// Stops accepting connections; in-flight requests finish (up to the drain timeout),
    /// idle keep-alive connections close.
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }

    /// Waits (on a blocking thread) until every worker has drained and stopped.
    pub async fn stopped(self) {
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }
}

/// A worker's listener, in its runtime.
enum Listener {
    Tcp(tokio::net::TcpListener),
    #[cfg(unix)]
    Unix(tokio::net::UnixListener),
}

impl Listener {
    fn new(socket: Socket) -> std::io::Result<Self> {
        Ok(match socket {
            Socket::Tcp(s) => Self::Tcp(tokio::net::TcpListener::from_std(s)?),
            #[cfg(unix)]
            Socket::Unix(s) => Self::Unix(tokio::net::UnixListener::from_std(s)?),
        })
    }

    async fn accept(&self) -> std::io::Result<(Connection, Peer)> {
        match self {
            Self::Tcp(listener) => {
                let (stream, peer) = listener.accept().await?;
                let _ = stream.set_nodelay(true);
                Ok((Connection::Tcp(stream), Peer::Tcp(peer)))
            }
            #[cfg(unix)]
            Self::Unix(listener) => {
                let (stream, _) = listener.accept().await?;
                let cred = stream.peer_cred().ok();
                let peer = Peer::Unix {
                    uid: cred.map(|c| c.uid()),
                    gid: cred.map(|c| c.gid()),
                };
                Ok((Connection::Unix(stream), peer))
            }
        }
    }
}

/// An accepted connection.
enum Connection {
    Tcp(tokio::net::TcpStream),
    #[cfg(unix)]
    Unix(tokio::net::UnixStream),
}

async fn worker<H: Handler>(
    index: usize,
    socket: Socket,
    handler: Arc<H>,
    stopped: watch::Receiver<bool>,
    options: ServerOptions,
) {
    let listener = match Listener::new(socket) {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(%error, worker = index, "cannot listen");
            return;
        }
    };
    handler.worker_started(index);
    tokio::spawn(crate::timeouts::sweep());
    // Each connection holds a sender: when all are gone, the worker has drained.
    let (open, mut drained) = tokio::sync::mpsc::channel::<()>(1);
    let mut stop = stopped.clone();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, most likely: wait, do not spin.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.wait_for(|stop| *stop) => break,
        };
        match stream {
            Connection::Tcp(stream) => serve(stream, peer, &handler, &stopped, &open, &options),
            #[cfg(unix)]
            Connection::Unix(stream) => serve(stream, peer, &handler, &stopped, &open, &options),
        }
    }
    drop(listener);
    crate::timeouts::stop();
    drop(open);
    let _ = tokio::time::timeout(options.drain_timeout, drained.recv()).await;
}

/// Serves one connection on this worker (its own task) until it closes, or drains it at
/// shutdown.
fn serve<H, S>(
    stream: S,
    peer: Peer,
    handler: &Arc<H>,
    stopped: &watch::Receiver<bool>,
    open: &tokio::sync::mpsc::Sender<()>,
    options: &ServerOptions,
) where
    H: Handler,
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let handler = handler.clone();
    let stopped = stopped.clone();
    let open = open.clone();
    let options = options.clone();
    tokio::spawn(async move {
        let _open = open;
        crate::connection::serve(stream, peer, handler, stopped, options.header_read_timeout).await;
    });
}
