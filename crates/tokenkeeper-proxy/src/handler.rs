//! [`Handler`]: what a server does with each request, and [`Peer`]: who sent it. The server
//! ([`crate::server`]) runs handlers; its connections ([`crate::connection`]) call them.

use std::future::Future;
use std::net::SocketAddr;

use http::{Request, Response};

use crate::body::{IncomingBody, ProxyBody};

/// Who is on the other end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// A TCP peer.
    Tcp(SocketAddr),
    /// A process on a Unix socket, with its credentials (`SO_PEERCRED`) when the OS gave them.
    Unix {
        /// The peer process's user id.
        uid: Option<u32>,
        /// The peer process's group id.
        gid: Option<u32>,
    },
}

impl Peer {
    /// The TCP peer's address.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self {
            Self::Tcp(addr) => Some(*addr),
            Self::Unix { .. } => None,
        }
    }
}

/// What a [`crate::server::Server`] does with each request.
pub trait Handler: Send + Sync + 'static {
    /// The answer to `request`, which came from `peer`.
    fn handle(
        &self,
        request: Request<IncomingBody>,
        peer: Peer,
    ) -> impl Future<Output = Response<ProxyBody>> + Send;

    /// Called on each worker thread, in its runtime, before it accepts connections (to start
    /// per-worker tasks). By default nothing.
    fn worker_started(&self, worker: usize) {
        let _ = worker;
    }
}
