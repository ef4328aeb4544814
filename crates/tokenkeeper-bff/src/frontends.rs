//! Several frontends in one host (BF-17): each [`Frontend`] is a whole BFF — its own OpenID
//! Connect client, session cookie, API routes and static files — matched by the request's host
//! and/or a path prefix. [`FrontendsHandler`] picks the frontend of each request and serves it
//! with that frontend's [`crate::BffHandler`]; it can be given a new set of frontends while it
//! serves (a reload, BF-18): requests already in flight finish on the set they started with.
//!
//! A session belongs to the frontend that logged it in: each frontend's sessions live under a
//! name of their own in the shared store ([`crate::RedisBffSessionStore::for_frontend`]), so a
//! session cookie copied to another frontend is worth nothing there.
//!
//! ```no_run
//! # fn run(shop: tokenkeeper_bff::Bff, admin: tokenkeeper_bff::Bff) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use tokenkeeper_bff::{Frontend, Frontends, FrontendsHandler};
//! use tokenkeeper_proxy::server::{Bound, ServerOptions};
//! let frontends = Frontends::new(vec![
//!     Frontend::new(shop, axum::Router::new()).hosts(["shop.example.com"]),
//!     Frontend::new(admin, axum::Router::new()).hosts(["admin.example.com"]),
//! ])?;
//! let handler = FrontendsHandler::new(frontends);
//! let options = ServerOptions::default();
//! let server = Bound::bind("0.0.0.0:8080".parse()?, options.workers)?
//!     .serve(Arc::new(handler.clone()), &options)?;
//! # let _ = server; Ok(()) }
//! ```

use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use http::StatusCode;
use tokenkeeper::{ConfigError, Error};
use tokenkeeper_proxy::ops::{AdminApi, Readiness};
use tokenkeeper_proxy::ProxyBody;

use crate::bff::Bff;
use crate::router::BffHandler;

/// One frontend: a BFF, the static files or app routes behind it, and which requests are its.
#[derive(Clone)]
pub struct Frontend {
    bff: Bff,
    handler: BffHandler,
    /// Lower-case host names (no port); empty: any host.
    hosts: Vec<String>,
    /// `""`, or a path prefix without a trailing `/` (`/admin`).
    prefix: String,
}

impl std::fmt::Debug for Frontend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frontend")
            .field("name", &self.bff.name())
            .field("hosts", &self.hosts)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Frontend {
    /// The frontend served by `bff`, with `fallback` (its static files, app routes) for what
    /// is neither an API route nor a management endpoint. It answers every host and path until
    /// [`Frontend::hosts`] or [`Frontend::path_prefix`] narrow it.
    pub fn new(bff: Bff, fallback: Router) -> Self {
        Self {
            handler: bff.handler(fallback),
            bff,
            hosts: Vec::new(),
            prefix: String::new(),
        }
    }

    /// Answers only requests for these host names (`Host`, or the HTTP/2 authority; the port
    /// is not compared, letter case is not either).
    pub fn hosts<I, S>(mut self, hosts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.hosts = hosts
            .into_iter()
            .map(|h| h.as_ref().to_ascii_lowercase())
            .collect();
        self
    }

    /// Answers only paths under `prefix` (`/admin`: `/admin` and `/admin/…`). The BFF's base
    /// path and routes must be under it too (the configuration file does that).
    pub fn path_prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.trim_end_matches('/').to_owned();
        self
    }

    /// The frontend's name.
    pub fn name(&self) -> &str {
        self.bff.name()
    }

    /// Its BFF.
    pub fn bff(&self) -> &Bff {
        &self.bff
    }

    /// The host names it answers (empty: any).
    pub fn host_names(&self) -> &[String] {
        &self.hosts
    }

    /// Its path prefix (`""`: none).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// A host's frontends, and how a request finds its own.
#[derive(Debug, Clone)]
pub struct Frontends {
    list: Vec<Frontend>,
    /// One frontend that answers everything: no matching at all.
    lone: bool,
    /// Every (host, prefix) a frontend answers, longest prefix first: the first entry a
    /// request matches is its frontend.
    entries: Vec<Entry>,
}

/// One host name (or any host: `None`) and path prefix of a frontend.
#[derive(Debug, Clone)]
struct Entry {
    host: Option<Box<[u8]>>,
    prefix: Box<str>,
    frontend: usize,
}

impl Frontends {
    /// The frontends, checked: at least one; names unique; no two answer the same host and
    /// path prefix; no two share a session cookie name on a host they both answer.
    pub fn new(list: Vec<Frontend>) -> Result<Self, Error> {
        let error = |reason: String| Error::Config(ConfigError::new("frontends", reason));
        if list.is_empty() {
            return Err(error("there must be at least one".into()));
        }
        for (i, a) in list.iter().enumerate() {
            for b in &list[..i] {
                if a.name() == b.name() {
                    return Err(error(format!("two are named {:?}", a.name())));
                }
                let shared_host = a.hosts.is_empty()
                    || b.hosts.is_empty()
                    || a.hosts.iter().any(|h| b.hosts.contains(h));
                if !shared_host {
                    continue;
                }
                if a.prefix == b.prefix {
                    return Err(error(format!(
                        "{:?} and {:?} answer the same host and path prefix {:?}",
                        b.name(),
                        a.name(),
                        if a.prefix.is_empty() { "/" } else { &a.prefix }
                    )));
                }
                if a.bff.cookie_name() == b.bff.cookie_name() {
                    return Err(error(format!(
                        "{:?} and {:?} share a host and the session cookie name {:?}: give each its own cookie_name",
                        b.name(),
                        a.name(),
                        a.bff.cookie_name()
                    )));
                }
            }
        }
        let lone = list.len() == 1 && list[0].hosts.is_empty() && list[0].prefix.is_empty();
        let mut entries = Vec::new();
        for (index, frontend) in list.iter().enumerate() {
            let prefix: Box<str> = frontend.prefix.as_str().into();
            if frontend.hosts.is_empty() {
                entries.push(Entry {
                    host: None,
                    prefix,
                    frontend: index,
                });
            } else {
                for host in &frontend.hosts {
                    entries.push(Entry {
                        host: Some(host.as_bytes().into()),
                        prefix: prefix.clone(),
                        frontend: index,
                    });
                }
            }
        }
        // Two frontends answering one host never share a prefix (checked above): the longest
        // matching prefix is the first match.
        entries.sort_by_key(|e| std::cmp::Reverse(e.prefix.len()));
        Ok(Self {
            list,
            lone,
            entries,
        })
    }

    /// The frontends, in the order given.
    pub fn iter(&self) -> impl Iterator<Item = &Frontend> {
        self.list.iter()
    }

    /// The frontend named `name`.
    pub fn get(&self, name: &str) -> Option<&Frontend> {
        self.list.iter().find(|f| f.name() == name)
    }

    /// The frontend of a request for `host` (its name, without the port, any case) and
    /// `path`: among those that answer the host, the one with the longest matching prefix.
    pub fn select(&self, host: Option<&str>, path: &str) -> Option<&Frontend> {
        if self.lone {
            return self.list.first();
        }
        self.matching(host.map(str::as_bytes), path)
    }

    /// The frontend of `request` (host: the HTTP/2 authority's or the `Host` header's).
    fn select_for<B>(&self, request: &http::Request<B>) -> Option<&Frontend> {
        if self.lone {
            return self.list.first();
        }
        self.matching(request_authority(request), request.uri().path())
    }

    /// `authority` is a host name with or without its port.
    fn matching(&self, authority: Option<&[u8]>, path: &str) -> Option<&Frontend> {
        for entry in &self.entries {
            if let Some(name) = &entry.host {
                if !authority.is_some_and(|authority| names_host(authority, name)) {
                    continue;
                }
            }
            let under = match path.strip_prefix(&*entry.prefix) {
                Some(rest) => rest.is_empty() || rest.starts_with('/'),
                None => false,
            };
            if under {
                return self.list.get(entry.frontend);
            }
        }
        None
    }
}

/// Whether `authority` (`host` or `host:port`, from a request) is for the configured host
/// `name` (lower case): its host part equals `name`, in any letter case. No scan for the port:
/// the bytes after the name must be nothing or `:…`.
fn names_host(authority: &[u8], name: &[u8]) -> bool {
    let Some(host) = authority.get(..name.len()) else {
        return false;
    };
    matches!(authority.get(name.len()), None | Some(b':'))
        && (host == name || host.eq_ignore_ascii_case(name))
}

/// The authority of a request: the HTTP/2 `:authority`'s host, else the `Host` header (with
/// its port, if any). Not checked further: it is only ever compared with the configured host
/// names (plain names, checked at start), and anything else equals none.
fn request_authority<B>(request: &http::Request<B>) -> Option<&[u8]> {
    match request.uri().host() {
        Some(host) => Some(host.as_bytes()),
        None => Some(request.headers().get(http::header::HOST)?.as_bytes()),
    }
}

/// Serves a host's frontends ([`Frontends`]) on [`tokenkeeper_proxy::server`]; cheap to clone
/// (all clones serve the same, replaceable set).
#[derive(Clone)]
pub struct FrontendsHandler {
    current: Arc<RwLock<Arc<Frontends>>>,
}

impl std::fmt::Debug for FrontendsHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrontendsHandler")
            .field("frontends", &self.current().list)
            .finish()
    }
}

impl FrontendsHandler {
    /// Serves `frontends`.
    pub fn new(frontends: Frontends) -> Self {
        Self {
            current: Arc::new(RwLock::new(Arc::new(frontends))),
        }
    }

    /// The frontends served now.
    pub fn current(&self) -> Arc<Frontends> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Serves `next` from now on, and returns the set it replaces. Requests in flight finish
    /// on the set they began with.
    pub fn replace(&self, next: Frontends) -> Arc<Frontends> {
        std::mem::replace(
            &mut *self
                .current
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            Arc::new(next),
        )
    }

    /// The readiness checks of every frontend served at the time of the check (see
    /// [`Bff::readiness`]): `discovery` per frontend (`discovery:<name>` when there are
    /// several), and `session_store` once (the store is shared).
    pub fn readiness(&self) -> Readiness {
        let handler = self.clone();
        crate::ops::readiness_of(Arc::new(move || {
            handler.current().iter().map(|f| f.bff.clone()).collect()
        }))
    }

    /// The administration API over every frontend's sessions (see [`Bff::admin_api`]); each
    /// listed session names its frontend.
    pub fn admin_api(&self) -> AdminApi {
        let handler = self.clone();
        crate::ops::admin_of(Arc::new(move || {
            handler.current().iter().map(|f| f.bff.clone()).collect()
        }))
    }

    /// Closes every open WebSocket relay of every frontend with 1001 (BF-24).
    pub fn close_websockets(&self) {
        for frontend in self.current().iter() {
            frontend.bff.close_websockets();
        }
    }

    /// Runs each frontend's [`Bff::cleanup_expired`] every `every`, over the frontends served
    /// at each round, until the returned task is aborted.
    pub fn spawn_cleanup(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let handler = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let frontends = handler.current();
                for frontend in frontends.iter() {
                    if let Err(error) = frontend.bff.cleanup_expired().await {
                        tracing::warn!(frontend = frontend.name(), %error, "session cleanup failed; trying again later");
                    }
                }
            }
        })
    }
}

impl tokenkeeper_proxy::server::Handler for FrontendsHandler {
    async fn handle(
        &self,
        request: http::Request<tokenkeeper_proxy::IncomingBody>,
        peer: tokenkeeper_proxy::server::Peer,
    ) -> http::Response<ProxyBody> {
        let frontends = self.current();
        let Some(frontend) = frontends.select_for(&request) else {
            return tokenkeeper_proxy::plain_text(StatusCode::NOT_FOUND, "Not found.");
        };
        // `BffHandler::handle`'s steps, here rather than called: a future inside a future
        // costs a copy of the pipeline's state per request.
        let bff = frontend.handler.bff();
        let engine = &bff.inner.engine;
        let peer = peer.socket_addr();
        if let Some(index) = engine.route_for(request.uri().path()) {
            return engine.forward(bff, index, request, peer).await;
        }
        frontend.handler.rest(request, peer).await
    }
}

#[cfg(test)]
mod tests {
    use super::{names_host, request_authority};

    #[test]
    fn a_request_names_a_host_with_or_without_its_port_in_any_case() {
        assert!(names_host(b"app.example.com", b"app.example.com"));
        assert!(names_host(b"App.Example.com:8443", b"app.example.com"));
        assert!(names_host(b"127.0.0.2:80", b"127.0.0.2"));
        assert!(names_host(b"[::1]:80", b"[::1]"));
        assert!(!names_host(b"127.0.0.20", b"127.0.0.2"));
        assert!(!names_host(b"app.example.com.evil", b"app.example.com"));
        assert!(!names_host(b"app", b"app.example.com"));
        assert!(!names_host(b"", b"app.example.com"));
        assert!(!names_host(b"a\x7fp:1", b"a\x01p"));
        let huge = vec![b'a'; 2 * 1024 * 1024];
        assert!(!names_host(&huge, b"a"));
    }

    #[test]
    fn the_authority_is_the_http2_authority_or_the_host_header() {
        let h1 = http::Request::builder()
            .uri("/x")
            .header("host", "Shop.example.com:8443")
            .body(())
            .unwrap_or_default();
        assert_eq!(request_authority(&h1), Some(&b"Shop.example.com:8443"[..]));
        let h2 = http::Request::builder()
            .uri("https://shop.example.com/x")
            .body(())
            .unwrap_or_default();
        assert_eq!(request_authority(&h2), Some(&b"shop.example.com"[..]));
        let none = http::Request::builder()
            .uri("/x")
            .body(())
            .unwrap_or_default();
        assert_eq!(request_authority(&none), None);
    }
}
