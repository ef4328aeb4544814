//! The test server refuses every kind of bad DPoP proof, at the token endpoint, at the code
//! exchange and at the test API, so that a client bug fails a test.
#![allow(clippy::unwrap_used)]

use serde_json::{json, Value};
use tokenkeeper::dpop::{ath, DpopAlgorithm, DpopKey, ProofRequest};
use tokenkeeper::Clock as _;
use tokenkeeper_testing::{TestClient, TestServer};

struct Proof {
    typ: Option<&'static str>,
    alg: jsonwebtoken::Algorithm,
    jwk: Option<Value>,
    claims: Value,
    /// Sign with this key instead of the one in the header.
    signer: Option<DpopKey>,
}

fn now_secs() -> u64 {
    tokenkeeper::TokioClock::new().now().as_millis() / 1000
}

fn good(key: &DpopKey, htm: &str, htu: &str) -> Proof {
    Proof {
        typ: Some("dpop+jwt"),
        alg: jsonwebtoken::Algorithm::ES256,
        jwk: Some(Value::Object(key.public_jwk().clone())),
        claims: json!({
            "jti": format!("j-{}", fastrand_id()),
            "htm": htm,
            "htu": htu,
            "iat": now_secs(),
        }),
        signer: None,
    }
}

fn fastrand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Signs by hand (not through `jsonwebtoken::Header`, which would drop unknown JWK members).
fn sign(key: &DpopKey, proof: &Proof) -> String {
    use base64::Engine as _;
    let b64 = |v: &Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    };
    let mut header = json!({ "alg": format!("{:?}", proof.alg) });
    if let Some(typ) = proof.typ {
        header["typ"] = json!(typ);
    }
    if let Some(jwk) = &proof.jwk {
        header["jwk"] = jwk.clone();
    }
    let signer = proof.signer.as_ref().unwrap_or(key);
    let encoding = match proof.alg {
        jsonwebtoken::Algorithm::HS256 => jsonwebtoken::EncodingKey::from_secret(b"shared"),
        _ => jsonwebtoken::EncodingKey::from_ec_der(&pkcs8_der(signer)),
    };
    let input = format!("{}.{}", b64(&header), b64(&proof.claims));
    let signature = jsonwebtoken::crypto::sign(input.as_bytes(), &encoding, proof.alg).unwrap();
    format!("{input}.{signature}")
}

fn pkcs8_der(key: &DpopKey) -> Vec<u8> {
    use base64::Engine as _;
    let pem = key.to_pkcs8_pem().unwrap();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap()
}

async fn token_request(server: &TestServer, proofs: &[String]) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(server.token_endpoint())
        .basic_auth("worker", Some("secret"))
        .form(&[("grant_type", "client_credentials")]);
    for proof in proofs {
        request = request.header("DPoP", proof);
    }
    let response = request.send().await.unwrap();
    (
        response.status().as_u16(),
        response.json().await.unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn the_token_endpoint_refuses_each_kind_of_bad_proof() {
    let server = TestServer::builder()
        .client(TestClient::new("worker", "secret"))
        .start()
        .await;
    let key = DpopKey::generate(DpopAlgorithm::ES256).unwrap();
    let htu = server.token_endpoint();
    let good_proof = || good(&key, "POST", &htu);

    // The control: a good proof gets a DPoP-bound token.
    let (status, body) = token_request(&server, &[sign(&key, &good_proof())]).await;
    assert_eq!(
        (status, body["token_type"].as_str()),
        (200, Some("DPoP")),
        "{body}"
    );

    let mut cases: Vec<(&str, Proof)> = Vec::new();
    let mut p = good_proof();
    p.typ = Some("JWT");
    cases.push(("typ", p));
    let mut p = good_proof();
    p.typ = None;
    cases.push(("no typ", p));
    let mut p = good_proof();
    p.alg = jsonwebtoken::Algorithm::HS256;
    cases.push(("symmetric alg", p));
    let mut p = good_proof();
    p.jwk = None;
    cases.push(("no jwk", p));
    let mut p = good_proof();
    p.signer = Some(DpopKey::generate(DpopAlgorithm::ES256).unwrap());
    cases.push(("signature by another key", p));
    let mut p = good_proof();
    p.claims["htm"] = json!("GET");
    cases.push(("htm", p));
    let mut p = good_proof();
    p.claims["htu"] = json!(format!("{}/other", server.issuer()));
    cases.push(("htu", p));
    let mut p = good_proof();
    p.claims["iat"] = json!(now_secs() - 600);
    cases.push(("old iat", p));
    let mut p = good_proof();
    p.claims["iat"] = json!(now_secs() + 600);
    cases.push(("future iat", p));
    let mut p = good_proof();
    p.claims.as_object_mut().unwrap().remove("iat");
    cases.push(("no iat", p));
    let mut p = good_proof();
    p.claims.as_object_mut().unwrap().remove("jti");
    cases.push(("no jti", p));
    for (what, proof) in cases {
        let (status, body) = token_request(&server, &[sign(&key, &proof)]).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_dpop_proof")),
            "{what}: {body}"
        );
    }

    // A private key in the header.
    let mut p = good_proof();
    p.jwk.as_mut().unwrap()["d"] = json!("AAAA");
    let (status, body) = token_request(&server, &[sign(&key, &p)]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_dpop_proof")),
        "private jwk: {body}"
    );

    // A replayed jti.
    let once = sign(&key, &good_proof());
    assert_eq!(
        token_request(&server, std::slice::from_ref(&once)).await.0,
        200
    );
    let (status, body) = token_request(&server, &[once]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_dpop_proof")),
        "replay"
    );

    // Two DPoP headers.
    let two = [sign(&key, &good_proof()), sign(&key, &good_proof())];
    assert_eq!(token_request(&server, &two).await.0, 400, "two proofs");

    // A required nonce: missing → use_dpop_nonce with the nonce; wrong → the same; right → ok.
    server.set_dpop_nonce_required(true);
    let nonce = server.rotate_dpop_nonce();
    let (status, body) = token_request(&server, &[sign(&key, &good_proof())]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("use_dpop_nonce"))
    );
    let mut p = good_proof();
    p.claims["nonce"] = json!("stale");
    assert_eq!(
        token_request(&server, &[sign(&key, &p)]).await.1["error"],
        "use_dpop_nonce"
    );
    let mut p = good_proof();
    p.claims["nonce"] = json!(nonce);
    assert_eq!(token_request(&server, &[sign(&key, &p)]).await.0, 200);
    server.set_dpop_nonce_required(false);

    // A client that must use DPoP cannot get a token without a proof.
    server.register_client(TestClient::new("worker", "secret").require_dpop());
    let (status, body) = token_request(&server, &[]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_dpop_proof"))
    );
}

#[tokio::test]
async fn the_test_api_refuses_bad_presentations() {
    let server = TestServer::builder()
        .client(TestClient::new("worker", "secret"))
        .start()
        .await;
    let api = server.start_api().await;
    let key = DpopKey::generate(DpopAlgorithm::ES256).unwrap();
    let proof = sign(&key, &good(&key, "POST", &server.token_endpoint()));
    let body = token_request(&server, &[proof]).await.1;
    let token = body["access_token"].as_str().unwrap().to_owned();
    let url = api.url("/items");
    let client = reqwest::Client::new();
    let send = |scheme: &str, proof: Option<String>| {
        let mut request = client
            .get(&url)
            .header("Authorization", format!("{scheme} {token}"));
        if let Some(proof) = proof {
            request = request.header("DPoP", proof);
        }
        async move { request.send().await.unwrap() }
    };
    let made = |token: Option<&str>, htm: &str, url: &str, key: &DpopKey| {
        key.proof(
            &ProofRequest {
                method: htm,
                url: &url.parse().unwrap(),
                access_token: token,
                nonce: None,
            },
            tokenkeeper::TokioClock::new().now(),
        )
        .unwrap()
    };

    let ok = send("DPoP", Some(made(Some(&token), "GET", &url, &key))).await;
    assert_eq!(ok.status(), 200);
    for (what, response) in [
        (
            "Bearer scheme",
            send("Bearer", Some(made(Some(&token), "GET", &url, &key))).await,
        ),
        ("no proof", send("DPoP", None).await),
        (
            "no ath",
            send("DPoP", Some(made(None, "GET", &url, &key))).await,
        ),
        (
            "ath of another token",
            send("DPoP", Some(made(Some("other"), "GET", &url, &key))).await,
        ),
        (
            "htm",
            send("DPoP", Some(made(Some(&token), "POST", &url, &key))).await,
        ),
        (
            "htu",
            send(
                "DPoP",
                Some(made(Some(&token), "GET", &api.url("/other"), &key)),
            )
            .await,
        ),
        (
            "another key",
            send(
                "DPoP",
                Some(made(
                    Some(&token),
                    "GET",
                    &url,
                    &DpopKey::generate(DpopAlgorithm::ES256).unwrap(),
                )),
            )
            .await,
        ),
    ] {
        assert_eq!(response.status(), 401, "{what}");
        let challenge = response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(challenge.contains("error="), "{what}: {challenge}");
    }
    assert_eq!(ath("x").len(), 43);

    // Its own nonce.
    api.set_nonce_required(true);
    let response = send("DPoP", Some(made(Some(&token), "GET", &url, &key))).await;
    assert_eq!(response.status(), 401);
    assert!(response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("use_dpop_nonce"));
    assert!(response.headers().contains_key("dpop-nonce"));
}

#[tokio::test]
async fn the_code_exchange_must_prove_the_dpop_jkt_key() {
    let server = TestServer::builder()
        .client(TestClient::new("web", "secret").redirect_uri("http://127.0.0.1/cb"))
        .start()
        .await;
    server.set_login(Some("alice"));
    let key = DpopKey::generate(DpopAlgorithm::ES256).unwrap();
    let other = DpopKey::generate(DpopAlgorithm::ES256).unwrap();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let verifier = "v".repeat(43);
    let challenge = tokenkeeper::dpop::ath(&verifier); // base64url(SHA-256), as S256 wants
    let code = || async {
        let response = client
            .get(server.authorization_endpoint())
            .query(&[
                ("response_type", "code"),
                ("client_id", "web"),
                ("redirect_uri", "http://127.0.0.1/cb"),
                ("scope", "openid offline_access"),
                ("state", "s"),
                ("code_challenge", challenge.as_str()),
                ("code_challenge_method", "S256"),
                ("dpop_jkt", key.thumbprint()),
            ])
            .send()
            .await
            .unwrap();
        let location: url::Url = response.headers()["location"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        location
            .query_pairs()
            .find(|(k, _)| k == "code")
            .unwrap()
            .1
            .into_owned()
    };
    let exchange = |code: String, proof_key: Option<&DpopKey>| {
        let mut request = client
            .post(server.token_endpoint())
            .basic_auth("web", Some("secret"))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", "http://127.0.0.1/cb"),
                ("code_verifier", verifier.as_str()),
            ]);
        if let Some(k) = proof_key {
            request = request.header("DPoP", sign(k, &good(k, "POST", &server.token_endpoint())));
        }
        async move {
            let response = request.send().await.unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    };
    let (status, body) = exchange(code().await, None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "no proof"
    );
    let (status, body) = exchange(code().await, Some(&other)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "another key"
    );
    let (status, body) = exchange(code().await, Some(&key)).await;
    assert_eq!(
        (status, body["token_type"].as_str()),
        (200, Some("DPoP")),
        "{body}"
    );

    // The refresh token is bound to the key too.
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();
    let refresh_with = |k: &DpopKey| {
        let request = client
            .post(server.token_endpoint())
            .basic_auth("web", Some("secret"))
            .header("DPoP", sign(k, &good(k, "POST", &server.token_endpoint())))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh.as_str()),
            ]);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(refresh_with(&other).await, 400);
    assert_eq!(refresh_with(&key).await, 200);
}
