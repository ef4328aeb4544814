//! DPoP keys and proofs (PK-01, PK-11).
#![allow(clippy::unwrap_used)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use tokenkeeper::dpop::{htu, DpopAlgorithm, DpopKey, ProofRequest};
use tokenkeeper::Timestamp;

fn part(jws: &str, i: usize) -> Value {
    let segment = jws.split('.').nth(i).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).unwrap()).unwrap()
}

#[test]
fn pk_01_proofs_of_every_algorithm_verify_and_carry_the_claims() {
    let url = "HTTPS://Resource.Example.org:443/protected/%7Ea?x=1#frag"
        .parse()
        .unwrap();
    let now = Timestamp::from_millis(1_767_000_000_123);
    for (alg, jose) in [
        (DpopAlgorithm::ES256, jsonwebtoken::Algorithm::ES256),
        (DpopAlgorithm::ES384, jsonwebtoken::Algorithm::ES384),
        (DpopAlgorithm::EdDSA, jsonwebtoken::Algorithm::EdDSA),
        (DpopAlgorithm::PS256, jsonwebtoken::Algorithm::PS256),
        (DpopAlgorithm::RS256, jsonwebtoken::Algorithm::RS256),
    ] {
        let key = DpopKey::generate(alg).unwrap();
        let request = ProofRequest {
            method: "GET",
            url: &url,
            access_token: Some("the-access-token"),
            nonce: Some("server-nonce"),
        };
        let proof = key.proof(&request, now).unwrap();
        let second = key.proof(&request, now).unwrap();

        let header = part(&proof, 0);
        assert_eq!(header["typ"], "dpop+jwt");
        assert_eq!(header["alg"], alg.as_str());
        let jwk = header["jwk"].as_object().unwrap();
        assert_eq!(jwk, key.public_jwk(), "{alg:?}");
        assert!(
            !jwk.contains_key("d") && !jwk.contains_key("p"),
            "public key only"
        );

        // The signature verifies with the public key in the header.
        let decoding: jsonwebtoken::jwk::Jwk =
            serde_json::from_value(header["jwk"].clone()).unwrap();
        let decoding = jsonwebtoken::DecodingKey::from_jwk(&decoding).unwrap();
        let mut validation = jsonwebtoken::Validation::new(jose);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        let verified = jsonwebtoken::decode::<Value>(&proof, &decoding, &validation);
        assert!(verified.is_ok(), "{alg:?}: {verified:?}");

        let claims = part(&proof, 1);
        assert_eq!(claims["htm"], "GET");
        assert_eq!(claims["htu"], "https://resource.example.org/protected/%7Ea");
        assert_eq!(claims["iat"], 1_767_000_000);
        assert_eq!(claims["nonce"], "server-nonce");
        assert_eq!(
            claims["ath"],
            URL_SAFE_NO_PAD.encode(Sha256::digest(b"the-access-token"))
        );
        assert!(claims["jti"].as_str().unwrap().len() >= 16);
        assert_ne!(
            claims["jti"],
            part(&second, 1)["jti"],
            "a fresh jti per proof"
        );

        // No token, no ath; no nonce, no nonce.
        let bare = key
            .proof(
                &ProofRequest {
                    method: "POST",
                    url: &url,
                    access_token: None,
                    nonce: None,
                },
                now,
            )
            .unwrap();
        let claims = part(&bare, 1);
        assert!(claims.get("ath").is_none() && claims.get("nonce").is_none());
    }
}

#[test]
fn pk_11_htu_is_normalised() {
    for (url, expected) in [
        ("https://API.EXAMPLE.com/a/b", "https://api.example.com/a/b"),
        ("HTTPS://api.example.com:443/x", "https://api.example.com/x"),
        ("http://api.example.com:80/x", "http://api.example.com/x"),
        (
            "https://api.example.com:8443/x",
            "https://api.example.com:8443/x",
        ),
        ("https://api.example.com", "https://api.example.com/"),
        (
            "https://api.example.com/p?q=1&r=2",
            "https://api.example.com/p",
        ),
        (
            "https://api.example.com/p#frag",
            "https://api.example.com/p",
        ),
        (
            "https://api.example.com/A%2Fb/C",
            "https://api.example.com/A%2Fb/C",
        ),
        ("http://[::1]:8080/x", "http://[::1]:8080/x"),
        (
            "https://user:pw@api.example.com/x",
            "https://api.example.com/x",
        ),
    ] {
        assert_eq!(htu(&url.parse().unwrap()), expected, "{url}");
    }
}
