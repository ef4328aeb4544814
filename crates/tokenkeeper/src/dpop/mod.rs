//! DPoP (RFC 9449): proof-of-possession keys and proofs.
//!
//! - [`DpopKey`]: generated, or loaded from PEM (PKCS#8) or a private JWK; ES256 (default),
//!   ES384, EdDSA, PS256, RS256; its public JWK and RFC 7638 thumbprint.
//! - [`DpopKey::proof`]: a proof for one request (`typ=dpop+jwt`, the public `jwk`, a fresh
//!   `jti`, `htm`, the normalised [`htu`], `iat`, and `ath` and `nonce` when they apply).
//! - [`challenge`]: `WWW-Authenticate` challenges (RFC 9110 §11.6.1), for `use_dpop_nonce`,
//!   and the `DPoP-Nonce` header.
//! - [`DpopKeyStore`]: per-session keys, by thumbprint, never in plaintext where shared.
//! - [`NonceStore`]: the latest nonce per origin, bounded.
//! - [`Presenter`]: how the HTTP integrations present DPoP-bound tokens (a proof per request,
//!   the API nonce retry).

pub mod challenge;
mod key;
mod key_store;
mod nonce;
mod presenter;
mod proof;

pub use key::{DpopAlgorithm, DpopKey};
pub use key_store::{DpopKeyStore, InMemoryDpopKeyStore};
pub use nonce::NonceStore;
pub use presenter::Presenter;
pub(crate) use presenter::{NonceChallenge, API_NONCE_ORIGINS};
pub use proof::{ath, htu, ProofRequest};
