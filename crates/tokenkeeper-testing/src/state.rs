//! The test server's shared state: registered clients, issued codes and tokens, counters,
//! faults, keys. Every endpoint module reads and writes it; it imports none of them.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;
use serde_json::{Map, Value};
use tokenkeeper::TokioClock;

use crate::dpop::DpopState;
use crate::faults::{Fault, FaultRule};
use crate::keys::SigningKey;
use crate::refresh_tokens::RefreshStore;

/// How a test client authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuthMethod {
    /// `client_secret_basic` only.
    Basic,
    /// `client_secret_post` only.
    Post,
    /// `client_secret_basic` or `client_secret_post`.
    Any,
    /// `private_key_jwt` only, with the client's registered public key
    /// ([`TestClient::private_key_jwt`]).
    PrivateKeyJwt,
    /// `client_secret_jwt` only (HS256 with the client secret).
    ClientSecretJwt,
    /// `tls_client_auth` (RFC 8705 §2.1): a certificate from the test CA naming the client's
    /// DNS name ([`TestClient::tls_client_auth`]), over the mTLS listener.
    TlsClientAuth,
    /// `self_signed_tls_client_auth` (RFC 8705 §2.2): the client's registered certificate
    /// ([`TestClient::self_signed_tls_client_auth`]), over the mTLS listener.
    SelfSignedTlsClientAuth,
    /// `none`: a public client (a CLI, a device) that sends only its `client_id`.
    None,
}

/// A client registered at the test server.
#[derive(Debug, Clone)]
pub struct TestClient {
    /// `client_id`.
    pub client_id: String,
    /// The secret.
    pub client_secret: String,
    /// Accepted authentication.
    pub auth_method: ClientAuthMethod,
    /// Scopes the client may ask for; `None` allows any.
    pub allowed_scopes: Option<Vec<String>>,
    /// Registered redirect URIs (for the authorization code flow).
    pub redirect_uris: Vec<String>,
    /// The public JWK that verifies this client's `private_key_jwt` assertions.
    pub assertion_key: Option<Value>,
    /// Token requests without a DPoP proof are refused.
    pub dpop_required: bool,
    /// `tls_client_auth`: the DNS name the client's certificate must carry.
    pub tls_dns: Option<String>,
    /// `self_signed_tls_client_auth`: the `x5t#S256` of the client's certificate.
    pub tls_thumbprint: Option<String>,
    /// Authorization requests must be pushed (RFC 9126).
    pub require_pushed: bool,
    /// Authorization requests must be signed request objects (RFC 9101).
    pub require_signed_request: bool,
    /// The public JWK that verifies this client's request objects (default: the assertion
    /// key).
    pub request_object_key: Option<Value>,
}

impl TestClient {
    /// A client accepting either basic or post authentication, and any scope.
    pub fn new(client_id: &str, client_secret: &str) -> Self {
        Self {
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            auth_method: ClientAuthMethod::Any,
            allowed_scopes: None,
            redirect_uris: Vec::new(),
            assertion_key: None,
            dpop_required: false,
            tls_dns: None,
            tls_thumbprint: None,
            require_pushed: false,
            require_signed_request: false,
            request_object_key: None,
        }
    }

    /// A public client: no secret, only `client_id` (`token_endpoint_auth_method=none`).
    pub fn public(mut self) -> Self {
        self.auth_method = ClientAuthMethod::None;
        self
    }

    /// Accepts only pushed authorization requests (RFC 9126,
    /// `require_pushed_authorization_requests` of the client).
    pub fn require_pushed_authorization(mut self) -> Self {
        self.require_pushed = true;
        self
    }

    /// Accepts only signed request objects (RFC 9101), verified with the assertion key or
    /// [`TestClient::request_object_key`].
    pub fn require_signed_request_object(mut self) -> Self {
        self.require_signed_request = true;
        self
    }

    /// Verifies this client's request objects with `public_jwk`.
    pub fn request_object_key(mut self, public_jwk: Value) -> Self {
        self.request_object_key = Some(public_jwk);
        self
    }

    /// Authenticates only with `tls_client_auth`: a certificate from the test CA
    /// ([`crate::mtls::certs::CA`]) naming `dns`.
    pub fn tls_client_auth(mut self, dns: &str) -> Self {
        self.auth_method = ClientAuthMethod::TlsClientAuth;
        self.tls_dns = Some(dns.to_owned());
        self
    }

    /// Authenticates only with `self_signed_tls_client_auth`, with the certificate `cert_pem`.
    pub fn self_signed_tls_client_auth(mut self, cert_pem: &str) -> Self {
        self.auth_method = ClientAuthMethod::SelfSignedTlsClientAuth;
        self.tls_thumbprint = Some(crate::mtls::pem_thumbprint(cert_pem));
        self
    }

    /// Refuses token requests without a DPoP proof (`400 invalid_dpop_proof`).
    pub fn require_dpop(mut self) -> Self {
        self.dpop_required = true;
        self
    }

    /// Authenticates only with `private_key_jwt`, verified with this public JWK.
    pub fn private_key_jwt(mut self, public_jwk: Value) -> Self {
        self.auth_method = ClientAuthMethod::PrivateKeyJwt;
        self.assertion_key = Some(public_jwk);
        self
    }

    /// Registers a redirect URI.
    pub fn redirect_uri(mut self, uri: &str) -> Self {
        self.redirect_uris.push(uri.to_owned());
        self
    }

    /// Accepts only this authentication method.
    pub fn auth_method(mut self, method: ClientAuthMethod) -> Self {
        self.auth_method = method;
        self
    }

    /// Accepts only these scopes.
    pub fn allowed_scopes(mut self, scopes: &[&str]) -> Self {
        self.allowed_scopes = Some(scopes.iter().map(|s| (*s).to_owned()).collect());
        self
    }
}

/// A token request as the server received it, for exact-wire assertions.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// The request headers.
    pub headers: HeaderMap,
    /// The form fields, in order.
    pub form: Vec<(String, String)>,
}

impl RecordedRequest {
    /// The values of form field `name`.
    pub fn form_values(&self, name: &str) -> Vec<&str> {
        self.form
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The single value of form field `name`.
    pub fn form_value(&self, name: &str) -> Option<&str> {
        self.form_values(name).first().copied()
    }
}

pub(crate) struct ServerState {
    pub(crate) issuer: String,
    pub(crate) advertised_issuer: Mutex<Option<String>>,
    pub(crate) oidc_discovery: std::sync::atomic::AtomicBool,
    pub(crate) clients: Mutex<HashMap<String, TestClient>>,
    pub(crate) expires_in: Mutex<Option<u64>>,
    pub(crate) latency: Mutex<std::time::Duration>,
    pub(crate) counters: Mutex<HashMap<String, u64>>,
    pub(crate) faults: Mutex<Vec<FaultRule>>,
    pub(crate) recorded: Mutex<Vec<RecordedRequest>>,
    pub(crate) keys: Mutex<Vec<Arc<SigningKey>>>,
    pub(crate) login: Mutex<Option<String>>,
    pub(crate) codes: Mutex<HashMap<String, CodeRecord>>,
    pub(crate) end_sessions: Mutex<u64>,
    pub(crate) clock: TokioClock,
    pub(crate) refresh: Mutex<RefreshStore>,
    pub(crate) rotate_refresh_tokens: std::sync::atomic::AtomicBool,
    pub(crate) return_refresh_token: std::sync::atomic::AtomicBool,
    pub(crate) revocations: Mutex<u64>,
    pub(crate) id_token_overrides: Mutex<Map<String, Value>>,
    /// Claims the userinfo endpoint adds to (or replaces in) its answers.
    pub(crate) userinfo_overrides: Mutex<Map<String, Value>>,
    /// The `jti`s of client assertions already used (each is accepted once).
    pub(crate) assertion_jtis: Mutex<std::collections::HashSet<String>>,
    pub(crate) jwk_parameters: Mutex<Map<String, Value>>,
    pub(crate) jwks_cache_control: Mutex<Option<String>>,
    pub(crate) seq: AtomicU64,
    /// DPoP at the token endpoint.
    pub(crate) dpop: DpopState,
    /// Ignore DPoP proofs and issue Bearer tokens (a server without DPoP support).
    pub(crate) dpop_ignored: std::sync::atomic::AtomicBool,
    /// `/authorize` shows a login page instead of logging the programmed user in.
    pub(crate) login_page: std::sync::atomic::AtomicBool,
    /// Token exchange: what to answer as `issued_token_type` (`None`: the usual).
    pub(crate) exchange_issued_type: Mutex<Option<Option<String>>>,
    /// The mTLS listener's base URL (`https://localhost:PORT`), when there is one.
    pub(crate) mtls_base: Mutex<Option<String>>,
    /// Pushed authorization requests, by `request_uri`.
    pub(crate) pushed: Mutex<HashMap<String, PushedRecord>>,
    /// Every authorization request must be pushed (the server's metadata says so).
    pub(crate) require_pushed: std::sync::atomic::AtomicBool,
    /// The `jti`s of request objects already used.
    pub(crate) request_jtis: Mutex<std::collections::HashSet<String>>,
    /// Device authorizations, by `device_code`.
    pub(crate) devices: Mutex<HashMap<String, DeviceRecord>>,
    /// `interval` and `expires_in` of new device authorizations (seconds).
    pub(crate) device_timing: Mutex<(u64, u64)>,
    /// The user's authentication (step-up).
    pub(crate) authentication: Mutex<Authentication>,
    /// The last authorization request acted on, and how it came.
    pub(crate) last_authorization: Mutex<Option<(String, HashMap<String, String>)>>,
}

impl ServerState {
    pub(crate) fn current_key(&self) -> Arc<SigningKey> {
        let keys = lock(&self.keys);
        keys[keys.len() - 1].clone()
    }

    pub(crate) fn key_by_kid(&self, kid: &str) -> Option<Arc<SigningKey>> {
        lock(&self.keys).iter().find(|k| k.kid == kid).cloned()
    }

    pub(crate) fn counter(&self, name: &str) -> u64 {
        lock(&self.counters).get(name).copied().unwrap_or(0)
    }

    pub(crate) fn count(&self, what: &str) {
        *lock(&self.counters).entry(what.to_owned()).or_default() += 1;
    }

    pub(crate) fn next_fault(&self) -> Option<Fault> {
        let mut faults = lock(&self.faults);
        let rule = faults.first_mut()?;
        let fault = rule.fault.clone();
        if let Some(remaining) = rule.remaining.as_mut() {
            *remaining = remaining.saturating_sub(1);
            if *remaining == 0 {
                faults.remove(0);
            }
        }
        Some(fault)
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An authorization request pushed to `/par` (RFC 9126), until `/authorize` takes it.
#[derive(Debug, Clone)]
pub(crate) struct PushedRecord {
    pub(crate) client_id: String,
    pub(crate) params: HashMap<String, String>,
    /// Seconds since the epoch.
    pub(crate) expires_at: u64,
}

/// Where a device authorization stands (RFC 8628).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DeviceStatus {
    Pending,
    Approved(String),
    Denied,
    /// Its tokens were issued.
    Done,
}

/// A device authorization, until its tokens are issued.
#[derive(Debug, Clone)]
pub(crate) struct DeviceRecord {
    pub(crate) client_id: String,
    pub(crate) scope: String,
    pub(crate) user_code: String,
    pub(crate) status: DeviceStatus,
    /// Seconds since the epoch.
    pub(crate) expires_at: u64,
    /// The interval the client must keep between polls (raised by `slow_down`).
    pub(crate) interval: u64,
    /// When the client last polled (ms since the epoch).
    pub(crate) last_poll_ms: Option<u64>,
}

/// The user's authentication at the provider, for step-up (PR-04): the `acr` a login gets,
/// the one a login asking for it steps up to, and when the user last authenticated.
#[derive(Debug, Clone, Default)]
pub(crate) struct Authentication {
    pub(crate) acr: Option<String>,
    pub(crate) step_up_acr: Option<String>,
    /// Seconds since the epoch.
    pub(crate) auth_time: Option<u64>,
}

/// A code the authorization endpoint issued, until its exchange.
#[derive(Debug, Clone)]
pub(crate) struct CodeRecord {
    pub(crate) client_id: String,
    pub(crate) redirect_uri: String,
    pub(crate) sub: String,
    pub(crate) sid: String,
    pub(crate) scope: String,
    pub(crate) nonce: Option<String>,
    pub(crate) challenge: String,
    pub(crate) resource: Option<String>,
    pub(crate) used: bool,
    pub(crate) refresh_token: Option<String>,
    /// `dpop_jkt` of the authorization request: the code exchange must prove this key.
    pub(crate) dpop_jkt: Option<String>,
    /// The `acr` of the login.
    pub(crate) acr: Option<String>,
    /// When the user authenticated (seconds since the epoch).
    pub(crate) auth_time: u64,
}
