//! DPoP keys: generated or loaded, their public JWK and RFC 7638 thumbprint.

use std::fmt;

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
    ECDSA_P384_SHA384_FIXED_SIGNING, RSA_PKCS1_SHA256, RSA_PSS_SHA256,
};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde_json::{json, Map, Value};
use sha2::{Digest as _, Sha256};

use crate::error::{ConfigError, Error};

/// The signature algorithms of DPoP proofs (RFC 9449: asymmetric only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum DpopAlgorithm {
    /// ECDSA on P-256 with SHA-256 (the default: small, fast, accepted everywhere).
    #[default]
    ES256,
    /// ECDSA on P-384 with SHA-384.
    ES384,
    /// Ed25519.
    EdDSA,
    /// RSASSA-PSS with SHA-256 (2048-bit keys when generated).
    PS256,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (2048-bit keys when generated).
    RS256,
}

impl DpopAlgorithm {
    /// The JOSE name (`ES256`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ES256 => "ES256",
            Self::ES384 => "ES384",
            Self::EdDSA => "EdDSA",
            Self::PS256 => "PS256",
            Self::RS256 => "RS256",
        }
    }

    /// The algorithm named `name` (case-sensitive, as JOSE names are).
    pub fn parse(name: &str) -> Result<Self, ConfigError> {
        Ok(match name {
            "ES256" => Self::ES256,
            "ES384" => Self::ES384,
            "EdDSA" => Self::EdDSA,
            "PS256" => Self::PS256,
            "RS256" => Self::RS256,
            _ => {
                return Err(ConfigError::new(
                    "dpop_algorithm",
                    format!("{name:?} is not one of ES256, ES384, EdDSA, PS256, RS256"),
                ))
            }
        })
    }
}

enum Pair {
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
    Rsa(RsaKeyPair),
}

/// A DPoP key pair. The private key never leaves it in the clear except through
/// [`DpopKey::to_pkcs8_pem`], which is meant for writing a key file; `Debug` shows the
/// algorithm and the thumbprint only.
///
/// ```
/// use tokenkeeper::dpop::{DpopAlgorithm, DpopKey};
/// let key = DpopKey::generate(DpopAlgorithm::ES256)?;
/// assert_eq!(key.public_jwk()["kty"], "EC");
/// assert_eq!(key.thumbprint().len(), 43); // base64url of a SHA-256
/// let again = DpopKey::from_pem(&key.to_pkcs8_pem()?, DpopAlgorithm::ES256)?;
/// assert_eq!(again.thumbprint(), key.thumbprint());
/// # Ok::<(), tokenkeeper::Error>(())
/// ```
pub struct DpopKey {
    alg: DpopAlgorithm,
    pair: Pair,
    jwk: Map<String, Value>,
    thumbprint: String,
    /// The proofs' JOSE header, base64url: the same for every proof of this key.
    proof_header: String,
}

impl fmt::Debug for DpopKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DpopKey")
            .field("alg", &self.alg)
            .field("thumbprint", &self.thumbprint)
            .finish_non_exhaustive()
    }
}

fn bad_key(reason: impl Into<String>) -> Error {
    Error::Config(ConfigError::new("dpop_key", reason))
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

impl DpopKey {
    /// A new random key for `alg`.
    pub fn generate(alg: DpopAlgorithm) -> Result<Self, Error> {
        let rng = SystemRandom::new();
        let pkcs8 = match alg {
            DpopAlgorithm::ES256 => {
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map(|d| d.as_ref().to_vec())
            }
            DpopAlgorithm::ES384 => {
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng)
                    .map(|d| d.as_ref().to_vec())
            }
            DpopAlgorithm::EdDSA => {
                Ed25519KeyPair::generate_pkcs8(&rng).map(|d| d.as_ref().to_vec())
            }
            DpopAlgorithm::PS256 | DpopAlgorithm::RS256 => {
                RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                    .and_then(|pair| pair.as_der())
                    .map(|der| der.as_ref().to_vec())
            }
        }
        .map_err(|_| bad_key("key generation failed"))?;
        Self::from_pkcs8_der(&pkcs8, alg)
    }

    /// A key from PKCS#8 DER, for `alg` (which must fit the key's type).
    pub fn from_pkcs8_der(der: &[u8], alg: DpopAlgorithm) -> Result<Self, Error> {
        let rejected = |e: aws_lc_rs::error::KeyRejected| {
            bad_key(format!("not a PKCS#8 {} key: {e}", alg.as_str()))
        };
        let pair = match alg {
            DpopAlgorithm::ES256 => Pair::Ecdsa(
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
                    .map_err(rejected)?,
            ),
            DpopAlgorithm::ES384 => Pair::Ecdsa(
                EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, der)
                    .map_err(rejected)?,
            ),
            DpopAlgorithm::EdDSA => {
                Pair::Ed25519(Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(rejected)?)
            }
            DpopAlgorithm::PS256 | DpopAlgorithm::RS256 => {
                let pair = RsaKeyPair::from_pkcs8(der).map_err(rejected)?;
                if pair.public_modulus_len() < 256 {
                    return Err(bad_key("an RSA key must have at least 2048 bits"));
                }
                Pair::Rsa(pair)
            }
        };
        Self::from_pair(pair, alg)
    }

    /// A key from a PEM `PRIVATE KEY` (PKCS#8) block, for `alg`.
    pub fn from_pem(pem: &str, alg: DpopAlgorithm) -> Result<Self, Error> {
        const BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
        const END: &str = "-----END PRIVATE KEY-----";
        let body = pem
            .split_once(BEGIN)
            .and_then(|(_, rest)| rest.split_once(END))
            .map(|(body, _)| body)
            .ok_or_else(|| bad_key("no PEM `PRIVATE KEY` (PKCS#8) block"))?;
        let base64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
        let der = STANDARD
            .decode(base64)
            .map_err(|_| bad_key("the PEM block is not base64"))?;
        Self::from_pkcs8_der(&der, alg)
    }

    /// A key from a private JWK (`EC` P-256/P-384 or `OKP` Ed25519, with `d`); the algorithm
    /// follows the curve.
    pub fn from_jwk(jwk: &str) -> Result<Self, Error> {
        let jwk: Map<String, Value> =
            serde_json::from_str(jwk).map_err(|_| bad_key("not a JSON object"))?;
        let field = |name: &str| -> Result<Vec<u8>, Error> {
            let text = jwk
                .get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| bad_key(format!("the JWK has no `{name}`")))?;
            URL_SAFE_NO_PAD
                .decode(text)
                .map_err(|_| bad_key(format!("the JWK's `{name}` is not base64url")))
        };
        let kty = jwk.get("kty").and_then(Value::as_str).unwrap_or_default();
        let crv = jwk.get("crv").and_then(Value::as_str).unwrap_or_default();
        let (pair, alg) = match (kty, crv) {
            ("EC", "P-256" | "P-384") => {
                let (alg, signing) = if crv == "P-256" {
                    (DpopAlgorithm::ES256, &ECDSA_P256_SHA256_FIXED_SIGNING)
                } else {
                    (DpopAlgorithm::ES384, &ECDSA_P384_SHA384_FIXED_SIGNING)
                };
                let public = [vec![4u8], field("x")?, field("y")?].concat();
                let pair =
                    EcdsaKeyPair::from_private_key_and_public_key(signing, &field("d")?, &public)
                        .map_err(|e| bad_key(format!("the EC key does not hold together: {e}")))?;
                (Pair::Ecdsa(pair), alg)
            }
            ("OKP", "Ed25519") => {
                let pair = Ed25519KeyPair::from_seed_and_public_key(&field("d")?, &field("x")?)
                    .map_err(|e| bad_key(format!("the Ed25519 key does not hold together: {e}")))?;
                (Pair::Ed25519(pair), DpopAlgorithm::EdDSA)
            }
            _ => {
                return Err(bad_key(
                    "a JWK must be EC (P-256, P-384) or OKP (Ed25519); load RSA keys from PEM",
                ))
            }
        };
        Self::from_pair(pair, alg)
    }

    fn from_pair(pair: Pair, alg: DpopAlgorithm) -> Result<Self, Error> {
        // The RFC 7638 members of each key type, in lexicographic order.
        let jwk = match &pair {
            Pair::Ecdsa(pair) => {
                let public = pair.public_key().as_ref();
                let half = (public.len() - 1) / 2;
                let crv = if alg == DpopAlgorithm::ES384 {
                    "P-384"
                } else {
                    "P-256"
                };
                json!({
                    "crv": crv,
                    "kty": "EC",
                    "x": b64(&public[1..=half]),
                    "y": b64(&public[1 + half..]),
                })
            }
            Pair::Ed25519(pair) => json!({
                "crv": "Ed25519",
                "kty": "OKP",
                "x": b64(pair.public_key().as_ref()),
            }),
            Pair::Rsa(pair) => {
                let public = pair.public_key();
                json!({
                    "e": b64(public.exponent().big_endian_without_leading_zero()),
                    "kty": "RSA",
                    "n": b64(public.modulus().big_endian_without_leading_zero()),
                })
            }
        };
        let Value::Object(jwk) = jwk else {
            return Err(bad_key("internal: the JWK is not an object"));
        };
        // serde_json's map keeps keys sorted (no `preserve_order`): this is RFC 7638's
        // canonical form, without whitespace.
        let canonical = serde_json::to_vec(&jwk).map_err(|_| bad_key("unencodable JWK"))?;
        let thumbprint = b64(&Sha256::digest(&canonical));
        let header = json!({
            "typ": "dpop+jwt",
            "alg": alg.as_str(),
            "jwk": Value::Object(jwk.clone()),
        });
        let proof_header =
            b64(&serde_json::to_vec(&header).map_err(|_| bad_key("unencodable JWK"))?);
        Ok(Self {
            alg,
            pair,
            jwk,
            thumbprint,
            proof_header,
        })
    }

    /// The algorithm proofs are signed with.
    pub fn algorithm(&self) -> DpopAlgorithm {
        self.alg
    }

    /// The public key as a JWK (the RFC 7638 members only).
    pub fn public_jwk(&self) -> &Map<String, Value> {
        &self.jwk
    }

    /// The RFC 7638 SHA-256 thumbprint of the public key, base64url: the `jkt` a server binds
    /// tokens to (`cnf.jkt`, `dpop_jkt`).
    pub fn thumbprint(&self) -> &str {
        &self.thumbprint
    }

    /// The private key as PKCS#8 DER (read back with [`DpopKey::from_pkcs8_der`]). It is the
    /// private key: seal it before it goes anywhere shared.
    pub fn to_pkcs8_der(&self) -> Result<Vec<u8>, Error> {
        match &self.pair {
            Pair::Ecdsa(pair) => pair.to_pkcs8v1().map(|d| d.as_ref().to_vec()),
            Pair::Ed25519(pair) => pair.to_pkcs8v1().map(|d| d.as_ref().to_vec()),
            Pair::Rsa(pair) => pair.as_der().map(|d| d.as_ref().to_vec()),
        }
        .map_err(|_| bad_key("the key cannot be encoded"))
    }

    /// The private key as a PEM `PRIVATE KEY` (PKCS#8) block, to write a key file.
    pub fn to_pkcs8_pem(&self) -> Result<String, Error> {
        let der = self.to_pkcs8_der()?;
        let body = STANDARD.encode(der);
        let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
        for line in body.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        Ok(pem)
    }

    /// The base64url JOSE header of this key's proofs.
    pub(crate) fn proof_header(&self) -> &str {
        &self.proof_header
    }

    /// Signs `message` (a JWS signing input) with the key's algorithm.
    pub(crate) fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        let rng = SystemRandom::new();
        let failed = |_| Error::Internal("signing failed".into());
        Ok(match (&self.pair, self.alg) {
            (Pair::Ecdsa(pair), _) => pair.sign(&rng, message).map_err(failed)?.as_ref().to_vec(),
            (Pair::Ed25519(pair), _) => pair.sign(message).as_ref().to_vec(),
            (Pair::Rsa(pair), alg) => {
                let mut signature = vec![0; pair.public_modulus_len()];
                let padding: &'static dyn aws_lc_rs::signature::RsaEncoding =
                    if alg == DpopAlgorithm::PS256 {
                        &RSA_PSS_SHA256
                    } else {
                        &RSA_PKCS1_SHA256
                    };
                pair.sign(padding, &rng, message, &mut signature)
                    .map_err(failed)?;
                signature
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// RFC 7638 §3.1's example key and thumbprint.
    #[test]
    fn thumbprint_of_the_rfc_7638_example() {
        let jwk = json!({
            "e": "AQAB",
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        });
        let canonical = serde_json::to_vec(&jwk).unwrap();
        assert_eq!(
            b64(&Sha256::digest(&canonical)),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn keys_of_every_algorithm_round_trip_through_pem() {
        for alg in [
            DpopAlgorithm::ES256,
            DpopAlgorithm::ES384,
            DpopAlgorithm::EdDSA,
            DpopAlgorithm::PS256,
            DpopAlgorithm::RS256,
        ] {
            let key = DpopKey::generate(alg).unwrap();
            let pem = key.to_pkcs8_pem().unwrap();
            let back = DpopKey::from_pem(&pem, alg).unwrap();
            assert_eq!(back.thumbprint(), key.thumbprint(), "{alg:?}");
            assert!(
                !format!("{key:?}").contains(&pem[30..60]),
                "no private key in Debug"
            );
        }
        let ec = DpopKey::generate(DpopAlgorithm::ES256).unwrap();
        assert!(DpopKey::from_pem(&ec.to_pkcs8_pem().unwrap(), DpopAlgorithm::EdDSA).is_err());
        assert!(DpopKey::from_pem("not a key", DpopAlgorithm::ES256).is_err());
    }

    #[test]
    fn private_jwks_load_and_keep_their_thumbprint() {
        let d = "870MB6gfuTJ4HtUnUvYMyJpr5eUZNP4Bk43bVdj3eAE";
        let x = "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4";
        let y = "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM";
        let jwk = format!(r#"{{"kty":"EC","crv":"P-256","x":"{x}","y":"{y}","d":"{d}"}}"#);
        let key = DpopKey::from_jwk(&jwk).unwrap();
        assert_eq!(key.algorithm(), DpopAlgorithm::ES256);
        assert_eq!(key.public_jwk()["x"], x);
        for bad in [
            r#"{"kty":"EC","crv":"P-256"}"#,
            r#"{"kty":"RSA"}"#,
            "[]",
            r#"{"kty":"EC","crv":"P-256","x":"!!","y":"!!","d":"!!"}"#,
        ] {
            assert!(DpopKey::from_jwk(bad).is_err(), "{bad}");
        }
    }
}
