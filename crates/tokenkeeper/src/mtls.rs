//! Mutual TLS (RFC 8705): a client certificate that authenticates the client
//! (`tls_client_auth`, `self_signed_tls_client_auth`) and binds its tokens (`cnf.x5t#S256`),
//! which are then presented over the same certificate (DL-07, DL-08).
//!
//! An [`MtlsIdentity`] holds the certificate and key, read from PEM files and read again when
//! either file changes (checked at most once a second, when a client is asked for), and hands
//! out a `reqwest::Client` that presents them. Give the same identity to the token client
//! ([`ClientConfig::mtls`](crate::ClientConfig::mtls)) and to the client that calls the API:
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use tokenkeeper::mtls::MtlsIdentity;
//! use tokenkeeper::{AuthMethod, ClientConfig, ClientCredentialsTokenManager};
//!
//! let identity = Arc::new(MtlsIdentity::from_pem_files("/etc/tls/client.pem", "/etc/tls/client.key")?);
//! let tokens = ClientCredentialsTokenManager::builder()
//!     .client("ledger", ClientConfig::from_issuer("https://idp.example.com", "worker", "")
//!         .mtls(identity.clone(), AuthMethod::TlsClientAuth)) // the mTLS endpoint aliases are used
//!     .build()?;
//! let http = reqwest_middleware::ClientBuilder::new(identity.http_client()) // the same certificate
//!     .with(tokens.middleware("ledger")?)
//!     .build();
//! let entries = http.get("https://ledger.example.com/entries").send().await?;
//! # let _ = entries; Ok(()) }
//! ```
//!
//! A rotated certificate is picked up by the token client at its next request and by
//! [`MtlsIdentity::http_client`] at its next call; a token bound to the old certificate is
//! refused by the API (401), and the middleware then renews it over the new one.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use futures_util::future::BoxFuture;
use sha2::{Digest, Sha256};

use crate::error::{ConfigError, Error, TransportError};
use crate::http::{HttpOptions, HttpRequest, HttpResponse, HttpTransport, ReqwestTransport};

/// How often the files are looked at, at most.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// A client certificate and its key, from PEM files, reloaded when they change. `Debug` shows
/// the paths and the certificate's thumbprint, never the key.
pub struct MtlsIdentity {
    cert_path: PathBuf,
    key_path: PathBuf,
    roots: Vec<reqwest::Certificate>,
    options: HttpOptions,
    loaded: Mutex<Loaded>,
}

#[derive(Clone)]
struct Loaded {
    client: reqwest::Client,
    thumbprint: Arc<str>,
    stamp: Stamp,
    checked: Instant,
}

/// What tells that a file changed: its modification time and length, for both files.
type Stamp = [(Option<SystemTime>, u64); 2];

impl fmt::Debug for MtlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MtlsIdentity")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .field("x5t#S256", &self.thumbprint())
            .finish_non_exhaustive()
    }
}

fn config_error(path: &Path, reason: impl fmt::Display) -> Error {
    ConfigError::new("mtls", format!("{}: {reason}", path.display())).into()
}

fn stamp(path: &Path) -> Result<(Option<SystemTime>, u64), Error> {
    let metadata = std::fs::metadata(path).map_err(|e| config_error(path, e.kind()))?;
    Ok((metadata.modified().ok(), metadata.len()))
}

/// The DER of the first `CERTIFICATE` block of `pem`.
fn first_certificate(pem: &str) -> Option<Vec<u8>> {
    let begin = "-----BEGIN CERTIFICATE-----";
    let start = pem.find(begin)? + begin.len();
    let stop = pem[start..].find("-----END CERTIFICATE-----")?;
    let body: String = pem[start..start + stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

/// `x5t#S256` (RFC 8705 §3.1): base64url(SHA-256(the certificate's DER)).
pub fn certificate_thumbprint(der: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(der))
}

impl MtlsIdentity {
    /// Reads the certificate (PEM, the leaf first, then any intermediates) and its private key
    /// (PEM: PKCS #8, SEC1 or PKCS #1). Fails now, naming the file, when either cannot be used.
    pub fn from_pem_files(
        cert_path: impl Into<PathBuf>,
        key_path: impl Into<PathBuf>,
    ) -> Result<Self, Error> {
        let cert_path = cert_path.into();
        let key_path = key_path.into();
        let options = HttpOptions::default();
        let loaded = load(&cert_path, &key_path, &[], &options)?;
        Ok(Self {
            cert_path,
            key_path,
            roots: Vec::new(),
            options,
            loaded: Mutex::new(loaded),
        })
    }

    /// Also trusts the CA certificate(s) in `pem` for the servers' certificates (a private CA).
    pub fn add_root_certificates(mut self, pem: &[u8]) -> Result<Self, Error> {
        let roots = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| ConfigError::new("mtls", format!("root certificates: {e}")))?;
        self.roots.extend(roots);
        self.rebuild()?;
        Ok(self)
    }

    /// Timeouts and the response limit of the token requests made with this identity.
    pub fn http_options(mut self, options: HttpOptions) -> Result<Self, Error> {
        options.validate()?;
        self.options = options;
        self.rebuild()?;
        Ok(self)
    }

    fn rebuild(&self) -> Result<(), Error> {
        let loaded = load(&self.cert_path, &self.key_path, &self.roots, &self.options)?;
        *self.lock() = loaded;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Loaded> {
        self.loaded.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A client presenting the current certificate: the files are looked at (at most once a
    /// second) and read again when they changed. A change that cannot be loaded (a key that
    /// does not match, a half-written file) keeps the previous certificate, with a warning.
    pub fn http_client(&self) -> reqwest::Client {
        self.current().client
    }

    /// The current certificate's `x5t#S256`.
    pub fn thumbprint(&self) -> Arc<str> {
        self.lock().thumbprint.clone()
    }

    fn current(&self) -> Loaded {
        let mut loaded = self.lock();
        if loaded.checked.elapsed() < CHECK_EVERY {
            return loaded.clone();
        }
        loaded.checked = Instant::now();
        let changed = match (stamp(&self.cert_path), stamp(&self.key_path)) {
            (Ok(cert), Ok(key)) => [cert, key] != loaded.stamp,
            _ => false,
        };
        if changed {
            match load(&self.cert_path, &self.key_path, &self.roots, &self.options) {
                Ok(new) => {
                    tracing::info!(x5t = %new.thumbprint, "client certificate reloaded");
                    *loaded = new;
                }
                Err(error) => {
                    tracing::warn!(%error, "client certificate changed but cannot be loaded; keeping the previous one");
                }
            }
        }
        loaded.clone()
    }

    /// Looks at the files now (not waiting for the once-a-second check); whether the
    /// certificate changed.
    pub fn reload(&self) -> Result<bool, Error> {
        let before = self.thumbprint();
        self.lock().checked = Instant::now() - CHECK_EVERY;
        let loaded = self.current();
        Ok(loaded.thumbprint != before)
    }
}

fn load(
    cert_path: &Path,
    key_path: &Path,
    roots: &[reqwest::Certificate],
    options: &HttpOptions,
) -> Result<Loaded, Error> {
    let stamp = [stamp(cert_path)?, stamp(key_path)?];
    let cert = std::fs::read_to_string(cert_path).map_err(|e| config_error(cert_path, e.kind()))?;
    let key = std::fs::read_to_string(key_path).map_err(|e| config_error(key_path, e.kind()))?;
    let der = first_certificate(&cert).ok_or_else(|| config_error(cert_path, "no certificate"))?;
    let mut pem = cert.into_bytes();
    pem.push(b'\n');
    pem.extend_from_slice(key.as_bytes());
    // reqwest checks that the key belongs to the certificate; its error holds no key material.
    let identity = reqwest::Identity::from_pem(&pem)
        .map_err(|e| config_error(key_path, format!("not a usable certificate and key: {e}")))?;
    let mut builder = reqwest::Client::builder()
        .identity(identity)
        .connect_timeout(options.connect_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("tokenkeeper/", env!("CARGO_PKG_VERSION")));
    for root in roots {
        builder = builder.add_root_certificate(root.clone());
    }
    let client = builder
        .build()
        .map_err(|e| ConfigError::new("mtls", format!("cannot build the HTTP client: {e}")))?;
    Ok(Loaded {
        client,
        thumbprint: certificate_thumbprint(&der).into(),
        stamp,
        checked: Instant::now(),
    })
}

/// Token requests over the identity's current certificate.
#[derive(Debug)]
pub(crate) struct MtlsTransport {
    pub(crate) identity: Arc<MtlsIdentity>,
}

impl HttpTransport for MtlsTransport {
    fn send(&self, request: HttpRequest) -> BoxFuture<'_, Result<HttpResponse, TransportError>> {
        let loaded = self.identity.current();
        let transport =
            ReqwestTransport::from_client(loaded.client, self.identity.options.max_response_bytes);
        let timeout = self.identity.options.request_timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, transport.send(request)).await {
                Ok(result) => result,
                Err(_) => Err(TransportError::new(
                    crate::error::TransportErrorKind::Timeout,
                    "the token request timed out",
                )),
            }
        })
    }
}
