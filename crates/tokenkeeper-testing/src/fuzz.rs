//! Seeded, structure-aware mutation of network input, for "no panic on any input" tests.
//!
//! [`Mutator`] turns valid seed documents (a token response, a JWKS, a stored record) into the
//! kinds of input a broken or hostile peer sends: random bytes, flipped bytes, truncations,
//! splices of two seeds, and — for JSON — values replaced by values of another type (huge and
//! negative numbers, floats, empty and very long strings, control characters, deep nesting), keys
//! removed, and deep nesting of the whole document. A [`ScriptedTransport`] answers a client's
//! HTTP requests with whatever the test chooses (for example the next mutated body).
//!
//! Runs are reproducible: the seed comes from `TK_FUZZ_SEED` when set (a failing test prints its
//! seed), and the number of cases from `TK_FUZZ_CASES`.
//!
//! ```
//! use tokenkeeper_testing::fuzz::Mutator;
//!
//! let mut mutator = Mutator::from_env();
//! let seeds = [br#"{"access_token":"abc","token_type":"Bearer","expires_in":60}"#.to_vec()];
//! for _ in 0..100 {
//!     let input = mutator.mutate(&seeds);
//!     // Feed `input` to a parser: it must return an error or a value, never panic.
//!     let _ = serde_json::from_slice::<serde_json::Value>(&input);
//! }
//! ```

use std::fmt;
use std::sync::Mutex;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::Value;
use tokenkeeper::{HttpRequest, HttpResponse, HttpTransport, TransportError};

/// How many cases a fuzz test runs: `TK_FUZZ_CASES`, else `default`.
pub fn cases(default: usize) -> usize {
    std::env::var("TK_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A seeded generator of mutated inputs. See the [module docs](self).
#[derive(Debug)]
pub struct Mutator {
    rng: fastrand::Rng,
    seed: u64,
}

impl Mutator {
    /// A mutator with this seed.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: fastrand::Rng::with_seed(seed),
            seed,
        }
    }

    /// A mutator seeded from `TK_FUZZ_SEED`, or with a fixed seed when that is not set (so that
    /// CI runs are repeatable).
    pub fn from_env() -> Self {
        Self::new(
            std::env::var("TK_FUZZ_SEED")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0x7c0e_4b2f),
        )
    }

    /// The seed, to print when a case fails.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The random number generator, for choices of the test's own.
    pub fn rng(&mut self) -> &mut fastrand::Rng {
        &mut self.rng
    }

    /// One input derived from `seeds` (or random bytes when `seeds` is empty).
    pub fn mutate(&mut self, seeds: &[Vec<u8>]) -> Vec<u8> {
        if seeds.is_empty() {
            return self.random_bytes(300);
        }
        let seed = &seeds[self.rng.usize(..seeds.len())];
        match self.rng.u8(..10) {
            0 => self.random_bytes(300),
            1 => seed.clone(),
            2 => self.flip_bytes(seed),
            3 => seed[..self.rng.usize(..=seed.len())].to_vec(),
            4 => {
                let other = &seeds[self.rng.usize(..seeds.len())];
                let mut out = seed[..self.rng.usize(..=seed.len())].to_vec();
                out.extend_from_slice(&other[self.rng.usize(..=other.len())..]);
                out
            }
            5 => {
                let depth = self.rng.usize(100..5000);
                let mut out = "[".repeat(depth).into_bytes();
                out.extend_from_slice(seed);
                out.extend_from_slice("]".repeat(depth).as_bytes());
                out
            }
            _ => match serde_json::from_slice::<Value>(seed) {
                Ok(mut value) => {
                    for _ in 0..self.rng.usize(1..4) {
                        self.mutate_json(&mut value);
                    }
                    serde_json::to_vec(&value).unwrap_or_default()
                }
                Err(_) => self.flip_bytes(seed),
            },
        }
    }

    /// One input as a string (lossy where the bytes are not UTF-8), for text inputs such as
    /// compact JWS or cookie values.
    pub fn mutate_text(&mut self, seeds: &[String]) -> String {
        let seeds: Vec<Vec<u8>> = seeds.iter().map(|s| s.clone().into_bytes()).collect();
        let out = self.mutate(&seeds);
        String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }

    /// A status code: mostly the ones protocols use, sometimes any.
    pub fn status(&mut self) -> StatusCode {
        const COMMON: [u16; 9] = [200, 200, 200, 201, 204, 302, 400, 401, 500];
        let code = if self.rng.bool() {
            COMMON[self.rng.usize(..COMMON.len())]
        } else {
            self.rng.u16(100..600)
        };
        StatusCode::from_u16(code).unwrap_or(StatusCode::OK)
    }

    /// Response headers: a JSON content type most of the time, sometimes another or none.
    pub fn headers(&mut self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let content_type = match self.rng.u8(..6) {
            0 => None,
            1 => Some("text/html"),
            2 => Some("application/json; charset=utf-8"),
            3 => Some("application/jwk-set+json"),
            4 => Some("x/\u{7f}"),
            _ => Some("application/json"),
        };
        if let Some(value) = content_type.and_then(|v| HeaderValue::from_str(v).ok()) {
            headers.insert(http::header::CONTENT_TYPE, value);
        }
        headers
    }

    /// A whole response: [`Mutator::status`], [`Mutator::headers`] and a body mutated from
    /// `seeds`.
    pub fn response(&mut self, seeds: &[Vec<u8>]) -> HttpResponse {
        HttpResponse {
            status: self.status(),
            headers: self.headers(),
            body: Bytes::from(self.mutate(seeds)),
        }
    }

    fn random_bytes(&mut self, max: usize) -> Vec<u8> {
        let len = self.rng.usize(..max);
        (0..len).map(|_| self.rng.u8(..)).collect()
    }

    fn flip_bytes(&mut self, seed: &[u8]) -> Vec<u8> {
        let mut out = seed.to_vec();
        if out.is_empty() {
            return out;
        }
        for _ in 0..self.rng.usize(1..8) {
            let at = self.rng.usize(..out.len());
            out[at] = self.rng.u8(..);
        }
        out
    }

    fn mutate_json(&mut self, value: &mut Value) {
        match value {
            Value::Object(map) if !map.is_empty() && self.rng.u8(..4) != 0 => {
                let keys: Vec<String> = map.keys().cloned().collect();
                let key = &keys[self.rng.usize(..keys.len())];
                if self.rng.u8(..8) == 0 {
                    map.remove(key);
                } else if let Some(child) = map.get_mut(key) {
                    self.mutate_json(child);
                }
            }
            Value::Array(items) if !items.is_empty() && self.rng.u8(..4) != 0 => {
                let at = self.rng.usize(..items.len());
                self.mutate_json(&mut items[at]);
            }
            _ => *value = self.random_json(),
        }
    }

    fn random_json(&mut self) -> Value {
        match self.rng.u8(..14) {
            0 => Value::Null,
            1 => Value::Bool(self.rng.bool()),
            2 => Value::from(u64::MAX),
            3 => Value::from(i64::MIN),
            4 => Value::from(-1),
            5 => Value::from(0),
            6 => serde_json::Number::from_f64(1e300).map_or(Value::Null, Value::Number),
            7 => Value::from(0.5),
            8 => Value::from(""),
            9 => Value::from("x".repeat(self.rng.usize(1000..100_000))),
            10 => Value::from("\u{0}\r\n\t\u{7f}é\u{202e}\u{1F600}"),
            11 => Value::from(self.rng.u64(..)),
            12 => Value::Array(vec![Value::from("a"), Value::Null, Value::from(1)]),
            _ => {
                let mut nested = Value::from(1);
                for _ in 0..self.rng.usize(1..64) {
                    nested = Value::Array(vec![nested]);
                }
                nested
            }
        }
    }
}

type Responder = Box<dyn FnMut(&HttpRequest) -> Result<HttpResponse, TransportError> + Send>;

/// An [`HttpTransport`] whose answers a closure decides, for feeding a client arbitrary
/// responses.
///
/// ```
/// use tokenkeeper_testing::fuzz::ScriptedTransport;
/// use tokenkeeper::HttpResponse;
///
/// let transport = ScriptedTransport::new(|_request| {
///     Ok(HttpResponse {
///         status: http::StatusCode::OK,
///         headers: Default::default(),
///         body: bytes::Bytes::from_static(b"not json"),
///     })
/// });
/// # let _ = transport;
/// ```
pub struct ScriptedTransport {
    responder: Mutex<Responder>,
}

impl ScriptedTransport {
    /// A transport answering every request with `responder`'s result.
    pub fn new(
        responder: impl FnMut(&HttpRequest) -> Result<HttpResponse, TransportError> + Send + 'static,
    ) -> Self {
        Self {
            responder: Mutex::new(Box::new(responder)),
        }
    }
}

impl fmt::Debug for ScriptedTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScriptedTransport").finish_non_exhaustive()
    }
}

impl HttpTransport for ScriptedTransport {
    fn send(&self, request: HttpRequest) -> BoxFuture<'_, Result<HttpResponse, TransportError>> {
        let result = (self.responder.lock().unwrap_or_else(|e| e.into_inner()))(&request);
        Box::pin(async move { result })
    }
}
