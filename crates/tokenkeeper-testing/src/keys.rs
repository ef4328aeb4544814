//! The server's signing key (ES256, generated at start).

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{DecodingKey, EncodingKey};
use serde_json::{json, Value};

/// A P-256 key in PKCS#8, published here on purpose: it signs test tokens only.
const FIXED_PKCS8: &str = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQguZMbhOikEQntoBuehCSDL3l7P0gG1iBzPUGLLSfYTzahRANCAAR6Cd4a68zwiktqDda8sLlRj6zlnqM/lyDjbqT3LPcEGmCFi5DphUKBgHccT3ST/jQJeQ79M3VTWxYC202nYJng";

pub(crate) struct SigningKey {
    pub(crate) kid: String,
    pub(crate) encoding: EncodingKey,
    pub(crate) decoding: DecodingKey,
    pub(crate) jwk: Value,
}

impl SigningKey {
    pub(crate) fn generate(kid: &str) -> Result<Self, String> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|e| format!("key generation failed: {e}"))?;
        Self::from_pkcs8(kid, pkcs8.as_ref())
    }

    /// The same fixed key in every process (for benchmarks: a random key changes the work of
    /// every request by as much as the differences being measured).
    pub(crate) fn fixed(kid: &str) -> Result<Self, String> {
        let der = base64::engine::general_purpose::STANDARD
            .decode(FIXED_PKCS8)
            .map_err(|e| format!("fixed key: {e}"))?;
        Self::from_pkcs8(kid, &der)
    }

    fn from_pkcs8(kid: &str, pkcs8: &[u8]) -> Result<Self, String> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8)
            .map_err(|e| format!("key parse failed: {e}"))?;
        let public = pair.public_key().as_ref();
        // Uncompressed point: 0x04 || x (32) || y (32).
        if public.len() != 65 {
            return Err("unexpected public key length".into());
        }
        let x = URL_SAFE_NO_PAD.encode(&public[1..33]);
        let y = URL_SAFE_NO_PAD.encode(&public[33..65]);
        let decoding =
            DecodingKey::from_ec_components(&x, &y).map_err(|e| format!("decoding key: {e}"))?;
        Ok(Self {
            kid: kid.to_owned(),
            encoding: EncodingKey::from_ec_der(pkcs8),
            decoding,
            jwk: json!({"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "use": "sig", "alg": "ES256"}),
        })
    }
}
