//! Token destinations: the origins a client's tokens may be sent to.

// Parts are used by one integration each; with one feature off, they are not all used.
#![cfg_attr(
    not(all(feature = "tower", feature = "reqwest-middleware")),
    allow(dead_code)
)]

use std::fmt;
use std::sync::Arc;

use url::Url;

use crate::error::{ConfigError, Error};

/// The origins (scheme, host, port) a client's tokens may be sent to.
///
/// Set with [`ClientConfig::destination`](crate::ClientConfig::destination). When a client has
/// destinations, the reqwest middleware and the tower layer refuse, with
/// [`Error::DestinationNotAllowed`], to attach its token to a request for any other origin —
/// so a misrouted or attacker-chosen URL never receives the token. Without destinations, every
/// origin is allowed (the default, as before).
///
/// Hosts compare case-insensitively and a default port equals its explicit form
/// (`https://api.example.com` is `https://API.example.com:443`).
///
/// ```
/// use tokenkeeper::Destinations;
/// let allowed = Destinations::parse(["https://api.example.com"]).unwrap();
/// assert!(allowed.allows_url(&"https://api.example.com:443/items?x=1".parse().unwrap()));
/// assert!(!allowed.allows_url(&"https://api.example.com.evil.net/".parse().unwrap()));
/// assert!(!allowed.allows_url(&"http://api.example.com/".parse().unwrap()));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Destinations(Arc<[Origin]>);

#[derive(Clone, PartialEq, Eq)]
struct Origin {
    scheme: Box<str>,
    host: Box<str>,
    port: u16,
}

impl fmt::Debug for Destinations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(
                self.0
                    .iter()
                    .map(|o| format!("{}://{}:{}", o.scheme, o.host, o.port)),
            )
            .finish()
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "https" => Some(443),
        "http" => Some(80),
        _ => None,
    }
}

impl Destinations {
    /// Parses origins such as `https://api.example.com` or `http://127.0.0.1:8080`. A path
    /// other than `/`, a query, a fragment or credentials are refused: a destination is an
    /// origin.
    pub fn parse<I, S>(origins: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut list = Vec::new();
        for raw in origins {
            let raw = raw.as_ref();
            let bad = |why: &str| ConfigError::new("destinations", format!("{raw:?} {why}"));
            let url = Url::parse(raw).map_err(|e| bad(&format!("is not a URL: {e}")))?;
            let port = default_port(url.scheme())
                .map(|default| url.port().unwrap_or(default))
                .ok_or_else(|| bad("is not an http(s) origin"))?;
            let host = url.host_str().ok_or_else(|| bad("has no host"))?;
            if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
                return Err(bad("must be an origin, without path, query or fragment"));
            }
            if !url.username().is_empty() || url.password().is_some() {
                return Err(bad("must not carry credentials"));
            }
            let origin = Origin {
                scheme: url.scheme().into(),
                host: host.to_ascii_lowercase().into(),
                port,
            };
            if !list.contains(&origin) {
                list.push(origin);
            }
        }
        if list.is_empty() {
            return Err(ConfigError::new("destinations", "is an empty list"));
        }
        Ok(Self(list.into()))
    }

    fn allows(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        let Some(port) = port.or_else(|| default_port(scheme)) else {
            return false;
        };
        self.0
            .iter()
            .any(|o| *o.scheme == *scheme && o.port == port && o.host.eq_ignore_ascii_case(host))
    }

    /// Whether a token may be sent to `url`.
    pub fn allows_url(&self, url: &Url) -> bool {
        url.host_str()
            .is_some_and(|host| self.allows(url.scheme(), host, url.port()))
    }

    /// Whether a token may be sent to `uri` (which must be absolute to be allowed).
    pub fn allows_uri(&self, uri: &http::Uri) -> bool {
        match (uri.scheme_str(), uri.host()) {
            (Some(scheme), Some(host)) => {
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let scheme = scheme.to_ascii_lowercase();
                self.allows(&scheme, host, uri.port_u16())
                    || self.allows(&scheme, &format!("[{host}]"), uri.port_u16())
            }
            _ => false,
        }
    }

    /// The error for a request to `scheme://host:port` (no path or query: nothing secret).
    pub(crate) fn refused(scheme: &str, host: &str, port: Option<u16>) -> Error {
        let origin = match port {
            Some(port) => format!("{scheme}://{host}:{port}"),
            None => format!("{scheme}://{host}"),
        };
        Error::DestinationNotAllowed {
            origin: crate::error::sanitize(&origin, 200),
        }
    }

    pub(crate) fn check_url(&self, url: &Url) -> Result<(), Error> {
        if self.allows_url(url) {
            return Ok(());
        }
        Err(Self::refused(
            url.scheme(),
            url.host_str().unwrap_or(""),
            url.port(),
        ))
    }

    pub(crate) fn check_uri(&self, uri: &http::Uri) -> Result<(), Error> {
        if self.allows_uri(uri) {
            return Ok(());
        }
        Err(Self::refused(
            uri.scheme_str().unwrap_or(""),
            uri.host().unwrap_or(""),
            uri.port_u16(),
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn origins_match_exactly_by_scheme_host_and_port() {
        let d = Destinations::parse(["https://API.example.com", "http://127.0.0.1:8080"]).unwrap();
        for ok in [
            "https://api.example.com/x",
            "https://api.example.com:443/",
            "http://127.0.0.1:8080/a?b",
        ] {
            assert!(d.allows_url(&ok.parse().unwrap()), "{ok}");
            assert!(d.allows_uri(&ok.parse().unwrap()), "{ok}");
        }
        for no in [
            "http://api.example.com/",
            "https://api.example.com:8443/",
            "https://evil.example.com/",
            "https://api.example.com.evil.net/",
            "http://127.0.0.1:8081/",
            "http://127.0.0.1/",
        ] {
            assert!(!d.allows_url(&no.parse().unwrap()), "{no}");
            assert!(!d.allows_uri(&no.parse().unwrap()), "{no}");
        }
        assert!(!d.allows_uri(&"/relative".parse().unwrap()));
        let v6 = Destinations::parse(["http://[::1]:9000"]).unwrap();
        assert!(v6.allows_uri(&"http://[::1]:9000/x".parse().unwrap()));
        assert!(v6.allows_url(&"http://[::1]:9000/x".parse().unwrap()));
    }

    #[test]
    fn only_origins_are_accepted() {
        for bad in [
            "https://api.example.com/path",
            "https://api.example.com/?q",
            "https://u:p@api.example.com",
            "ftp://api.example.com",
            "not a url",
        ] {
            assert!(Destinations::parse([bad]).is_err(), "{bad}");
        }
        assert!(Destinations::parse(Vec::<String>::new()).is_err());
    }
}
