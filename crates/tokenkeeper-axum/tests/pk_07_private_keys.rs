//! PK-07: private DPoP keys are never stored in plaintext — not in Redis (the key store refuses
//! to run without encryption; a login in progress stores nothing, its key travels sealed in the
//! login cookie; sessions hold the thumbprint only), not in a cookie, not in a URL, not in
//! `Debug` output.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use base64::Engine as _;
use common::*;
use tokenkeeper::dpop::DpopKeyStore;
use tokenkeeper_redis::{
    Encryption, RedisDpopKeyStore, RedisLoginReplayStore, RedisOptions, RedisTokenCache,
};

fn redis(prefix: &str, encrypted: bool) -> RedisTokenCache {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    RedisTokenCache::new(
        &url,
        RedisOptions {
            prefix: prefix.to_owned(),
            encryption: encrypted.then(|| Encryption::new("k1", &[3; 32]).unwrap()),
            plaintext: !encrypted,
            ..RedisOptions::default()
        },
    )
    .unwrap()
}

/// Every value under `prefix` in Redis.
async fn redis_values(prefix: &str) -> Vec<Vec<u8>> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let client = redis::Client::open(url).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut c)
        .await
        .unwrap();
    let mut values = Vec::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut c)
            .await
            .unwrap();
        if kind == "string" {
            let value: Vec<u8> = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut c)
                .await
                .unwrap();
            values.push(value);
        }
    }
    values
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pk_07_private_keys_are_never_stored_in_plaintext() {
    let prefix = format!("tk-pk07-{}", tokenkeeper::random_token(6).unwrap());
    assert!(
        RedisDpopKeyStore::new(&redis(&prefix, false)).is_err(),
        "no key store without encryption"
    );
    let redis = redis(&prefix, true);
    let keys = Arc::new(RedisDpopKeyStore::new(&redis).unwrap());
    let app = app_with(Setup {
        insecure_cookies: true,
        replays: Some(Arc::new(RedisLoginReplayStore::new(&redis))),
        dpop: Some(Dpop::PerSession(keys.clone())),
        ..Setup::default()
    })
    .await;
    let api = app.idp.start_api().await;

    // Log in by hand, keeping every Set-Cookie and URL on the way.
    let browser = browser(false);
    let mut url = format!("{}/auth/login?returnUrl=/me", app.url);
    let mut seen: Vec<String> = Vec::new();
    let mut pending_values = Vec::new();
    for step in 0..10 {
        seen.push(url.clone());
        let response = browser.get(&url).send().await.unwrap();
        for cookie in response.headers().get_all("set-cookie") {
            seen.push(cookie.to_str().unwrap().to_owned());
        }
        if step == 0 {
            // While the login is pending: what Redis holds then.
            pending_values = redis_values(&prefix).await;
        }
        let Some(location) = response.headers().get("location") else {
            break;
        };
        url = reqwest::Url::parse(&url)
            .unwrap()
            .join(location.to_str().unwrap())
            .unwrap()
            .to_string();
    }
    assert_eq!(get_text(&browser, format!("{}/me", app.url)).await, "alice");
    let answer = get_text(&browser, format!("{}/call?url={}", app.url, api.url("/x"))).await;
    assert!(answer.starts_with("200 "), "{answer}");

    // The session's key, read back from the store (it opens, and has the thumbprint asked for).
    let token = get_text(&browser, format!("{}/token", app.url)).await;
    let payload = token.split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    let jkt = claims["cnf"]["jkt"].as_str().unwrap().to_owned();
    let key = keys.get(&jkt).await.unwrap().unwrap();
    let pem = key.to_pkcs8_pem().unwrap();
    let der_b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(&der_b64)
        .unwrap();
    // The private scalar's bytes sit at the end of the PKCS#8 structure: a 16-byte window of
    // the DER is enough to find any copy of it.
    let needles: Vec<Vec<u8>> = vec![
        der_b64.as_bytes()[..32].to_vec(),
        der[der.len() - 40..der.len() - 24].to_vec(),
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(&der[der.len() - 40..])
            .into_bytes()[..20]
            .to_vec(),
    ];
    let after_login = redis_values(&prefix).await;
    assert!(!after_login.is_empty());
    assert!(
        pending_values.is_empty(),
        "a login in progress stores nothing (SEC-13)"
    );
    for value in pending_values.iter().chain(&after_login) {
        for needle in &needles {
            assert!(
                !contains(value, needle),
                "a private key in plaintext in Redis"
            );
        }
    }
    for text in &seen {
        for needle in &needles {
            assert!(
                !contains(text.as_bytes(), needle),
                "a private key in a cookie or URL"
            );
        }
    }
    let debug = format!("{:?} {:?} {:?}", key, keys, app.oidc.users());
    for needle in &needles {
        assert!(
            !contains(debug.as_bytes(), needle),
            "a private key in Debug output"
        );
    }

    // Logout removes the key from Redis.
    let logout_url = get_text(&browser, format!("{}/logout-url", app.url)).await;
    browser
        .get(format!("{}{logout_url}", app.url))
        .send()
        .await
        .unwrap();
    assert!(keys.get(&jkt).await.unwrap().is_none(), "gone at logout");
}
