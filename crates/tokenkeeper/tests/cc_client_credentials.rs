//! Client credentials (CC-01 … CC-13).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures_util::future::BoxFuture;
use tokenkeeper::{
    CacheError, CacheKey, CachedToken, ClientConfig, ClientCredentialsTokenManager, Error,
    LifetimePolicy, Resource, TokenCache, TokenRequestParams,
};
use tokenkeeper_testing::{Fault, Times};

const CC: &str = "client_credentials";

#[tokio::test]
async fn cc_01_first_call_fetches_second_is_cached() {
    let server = server().await;
    let tokens = networked(&server);
    let first = tokens.get_token("api", &default_params()).await.unwrap();
    let second = tokens.get_token("api", &default_params()).await.unwrap();
    assert_eq!(server.token_requests(CC), 1);
    assert!(first.same_token(&second));
    assert!(server
        .verify_access_token(first.access_token().secret())
        .is_ok());
}

#[tokio::test]
async fn cc_02_per_request_parameters_override_and_are_distinct_entries() {
    let server = server().await;
    let tokens = ClientCredentialsTokenManager::builder()
        .client(
            "api",
            config(&server)
                .scope("default.read")
                .resource("https://default.example.com")
                .extra("tenant", "base"),
        )
        .build()
        .unwrap();
    let sets = [
        TokenRequestParams::new(),
        TokenRequestParams::new().scope("orders.read"),
        TokenRequestParams::new().resource(Resource::parse("https://orders.example.com").unwrap()),
        TokenRequestParams::new().extra("tenant", "acme"),
    ];
    let mut seen = Vec::new();
    for params in &sets {
        let token = tokens.get_token("api", params).await.unwrap();
        seen.push(token.access_token().secret().to_owned());
        let request = server.last_token_request().unwrap();
        match () {
            _ if params.is_default() => {
                assert_eq!(request.form_value("scope"), Some("default.read"));
                assert_eq!(request.form_value("tenant"), Some("base"));
            }
            _ => {}
        }
    }
    let recorded = server.recorded_requests();
    assert_eq!(
        recorded[1].form_value("scope"),
        Some("orders.read"),
        "scope replaced"
    );
    assert_eq!(
        recorded[1].form_values("resource"),
        vec!["https://default.example.com"]
    );
    assert_eq!(
        recorded[2].form_values("resource"),
        vec!["https://orders.example.com"],
        "resource replaced"
    );
    assert_eq!(recorded[2].form_value("scope"), Some("default.read"));
    assert_eq!(
        recorded[3].form_value("tenant"),
        Some("acme"),
        "extra merged over the client's"
    );
    assert_eq!(server.token_requests(CC), 4);
    // Each set is its own cache entry: asking again costs nothing.
    for (params, token) in sets.iter().zip(&seen) {
        let again = tokens.get_token("api", params).await.unwrap();
        assert_eq!(again.access_token().secret(), token);
    }
    assert_eq!(server.token_requests(CC), 4);
}

#[tokio::test]
async fn cc_03_cache_key_covers_scope_set_resources_and_sorted_extras() {
    let server = server().await;
    let tokens = networked(&server);
    let key = |p: TokenRequestParams| tokens.cache_key("api", &p).unwrap();
    let r = |s: &str| Resource::parse(s).unwrap();
    // Normalised: order and duplicates do not matter.
    assert_eq!(
        key(TokenRequestParams::new().scope("a b")),
        key(TokenRequestParams::new().scope("b a a"))
    );
    assert_eq!(
        key(TokenRequestParams::new()
            .resource(r("https://x"))
            .resource(r("https://y"))),
        key(TokenRequestParams::new()
            .resource(r("https://y"))
            .resource(r("https://x")))
    );
    assert_eq!(
        key(TokenRequestParams::new().extra("a", "1").extra("b", "2")),
        key(TokenRequestParams::new().extra("b", "2").extra("a", "1"))
    );
    // Every input separates entries, and values cannot be confused with separators.
    let distinct = [
        key(TokenRequestParams::new()),
        key(TokenRequestParams::new().scope("a")),
        key(TokenRequestParams::new().scope("a b")),
        key(TokenRequestParams::new().resource(r("https://x"))),
        key(TokenRequestParams::new().extra("tenant", "a")),
        key(TokenRequestParams::new().extra("tenant", "b")),
        key(TokenRequestParams::new().extra("tenant", "a&x=b")),
        key(TokenRequestParams::new()
            .extra("tenant", "a")
            .extra("x", "b")),
        key(TokenRequestParams::new().extra("tenant=a", "")),
    ];
    for (i, a) in distinct.iter().enumerate() {
        for b in &distinct[i + 1..] {
            assert_ne!(a, b);
        }
    }
    // Two tenants never share a token.
    let a = tokens
        .get_token("api", &TokenRequestParams::new().extra("tenant", "a"))
        .await
        .unwrap();
    let b = tokens
        .get_token("api", &TokenRequestParams::new().extra("tenant", "b"))
        .await
        .unwrap();
    assert_ne!(a.access_token().secret(), b.access_token().secret());
    let claims = server
        .verify_access_token(b.access_token().secret())
        .unwrap();
    assert_eq!(claims["ext"]["tenant"], "b");
    // Two clients with identical settings never share an entry either.
    let two = ClientCredentialsTokenManager::builder()
        .client("one", config(&server))
        .client("two", config(&server))
        .build()
        .unwrap();
    assert_ne!(
        two.cache_key("one", &default_params()).unwrap(),
        two.cache_key("two", &default_params()).unwrap()
    );
}

#[tokio::test(start_paused = true)]
async fn cc_04_expired_entry_is_fetched_again() {
    let server = server().await;
    server.set_expires_in(Some(120));
    let tokens = in_process(&server)
        .lifetime_policy(no_refresh_ahead())
        .build()
        .unwrap();
    let first = tokens.get_token("api", &default_params()).await.unwrap();
    tokio::time::advance(Duration::from_secs(107)).await;
    let same = tokens.get_token("api", &default_params()).await.unwrap();
    assert!(first.same_token(&same));
    assert_eq!(server.token_requests(CC), 1);
    // 108 s = 120 − 12: under ten times the 30 s skew, the skew is a tenth of the lifetime.
    tokio::time::advance(Duration::from_secs(1)).await;
    let renewed = tokens.get_token("api", &default_params()).await.unwrap();
    assert_eq!(server.token_requests(CC), 2);
    assert_ne!(
        first.access_token().secret(),
        renewed.access_token().secret()
    );
}

#[tokio::test(start_paused = true)]
async fn cc_05_refresh_ahead_returns_current_token_and_starts_one_refresh() {
    let server = server().await;
    server.set_expires_in(Some(1000)); // usable 970 s, refresh window = last 20 %
    server.set_latency(Duration::from_millis(50));
    let tokens = in_process(&server).build().unwrap();
    let first = tokens.get_token("api", &default_params()).await.unwrap();
    assert_eq!(
        first
            .refresh_at()
            .saturating_duration_since(first.issued_at()),
        Duration::from_secs(776)
    );
    tokio::time::advance(Duration::from_secs(800)).await;
    let mut hits = Vec::new();
    for _ in 0..200 {
        hits.push(tokens.get_token("api", &default_params()).await.unwrap());
    }
    assert!(
        hits.iter().all(|t| t.same_token(&first)),
        "hits in the window return the current token"
    );
    let server2 = server.clone();
    until(|| server2.token_requests(CC) == 2).await;
    tokio::time::advance(Duration::from_millis(60)).await;
    let tokens2 = tokens.clone();
    let mut renewed = None;
    for _ in 0..100 {
        let t = tokens2.get_token("api", &default_params()).await.unwrap();
        if !t.same_token(&first) {
            renewed = Some(t);
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(
        renewed.is_some(),
        "the background refresh replaced the token"
    );
    assert_eq!(
        server.token_requests(CC),
        2,
        "exactly one background refresh"
    );
}

#[tokio::test(start_paused = true)]
async fn cc_06_lifetime_shorter_than_skew_does_not_storm() {
    let server = server().await;
    server.set_expires_in(Some(10)); // skew is 30 s
    let tokens = in_process(&server).build().unwrap();
    for _ in 0..1000 {
        tokens.get_token("api", &default_params()).await.unwrap();
        tokio::time::advance(Duration::from_millis(10)).await; // 10 s in total
    }
    let requests = server.token_requests(CC);
    assert!(
        (2..=4).contains(&requests),
        "{requests} token requests for 1000 calls over 10 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cc_07_concurrent_callers_share_one_request() {
    let server = server().await;
    server.set_latency(Duration::from_millis(20));
    let tokens = networked(&server);
    let barrier = Arc::new(tokio::sync::Barrier::new(10_000));
    let mut tasks = Vec::with_capacity(10_000);
    for _ in 0..10_000 {
        let tokens = tokens.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            tokens
                .get_token("api", &TokenRequestParams::default())
                .await
        }));
    }
    let mut values = std::collections::HashSet::new();
    for task in tasks {
        let token = task.await.unwrap().unwrap();
        values.insert(token.access_token().secret().to_owned());
    }
    assert_eq!(server.token_requests(CC), 1);
    assert_eq!(values.len(), 1, "every caller got the same token");
}

#[tokio::test(start_paused = true)]
async fn cc_08_different_keys_fetch_in_parallel() {
    let server = server().await;
    server.set_latency(Duration::from_millis(300));
    let tokens = in_process(&server).build().unwrap();
    let started = tokio::time::Instant::now();
    let params: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|s| TokenRequestParams::new().scope(*s))
        .collect();
    let mut tasks = Vec::new();
    for p in params.iter().cycle().take(30) {
        let tokens = tokens.clone();
        let p = p.clone();
        tasks.push(tokio::spawn(
            async move { tokens.get_token("api", &p).await },
        ));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(server.token_requests(CC), 3, "one request per key");
    assert!(
        started.elapsed() < Duration::from_millis(600),
        "the three fetches overlapped: {:?}",
        started.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn cc_09_failure_reaches_all_waiters_then_backs_off() {
    let server = server().await;
    server.set_latency(Duration::from_millis(100));
    server.inject_fault(Fault::oauth(503, "temporarily_unavailable"), Times::Next(1));
    let tokens = in_process(&server).build().unwrap();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let tokens = tokens.clone();
        tasks.push(tokio::spawn(async move {
            tokens
                .get_token("api", &TokenRequestParams::default())
                .await
        }));
    }
    for t in tasks {
        let err = t.await.unwrap().unwrap_err();
        assert_eq!(err.oauth_error(), Some("temporarily_unavailable"));
    }
    assert_eq!(server.token_requests(CC), 1);
    // Inside the backoff the error comes back at once, without a request.
    let started = tokio::time::Instant::now();
    let err = tokens
        .get_token("api", &default_params())
        .await
        .unwrap_err();
    assert_eq!(err.oauth_error(), Some("temporarily_unavailable"));
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(server.token_requests(CC), 1);
    // After the backoff (≤ 1 s for the first failure) the next call fetches.
    tokio::time::advance(Duration::from_millis(1001)).await;
    tokens.get_token("api", &default_params()).await.unwrap();
    assert_eq!(server.token_requests(CC), 2);
}

#[tokio::test(start_paused = true)]
async fn cc_09_backoff_is_jittered_and_grows() {
    let policy = tokenkeeper::BackoffPolicy::default();
    assert_eq!(policy.delay(1), Duration::from_secs(1));
    assert_eq!(policy.delay(3), Duration::from_secs(4));
    assert_eq!(policy.delay(30), Duration::from_secs(30));
    // Jitter: different managers back off for different times after the same failure.
    let server = server().await;
    server.inject_fault(Fault::oauth(500, "server_error"), Times::Always);
    let mut first_retry = std::collections::BTreeSet::new();
    for _ in 0..8 {
        let tokens = in_process(&server).build().unwrap();
        let _ = tokens.get_token("api", &default_params()).await;
        let before = server.token_requests(CC);
        let start = tokio::time::Instant::now();
        while server.token_requests(CC) == before {
            tokio::time::advance(Duration::from_millis(10)).await;
            let _ = tokens.get_token("api", &default_params()).await;
        }
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(490) && waited <= Duration::from_millis(1020),
            "{waited:?}"
        );
        first_retry.insert(waited.as_millis() / 10);
    }
    assert!(
        first_retry.len() > 1,
        "retries are jittered: {first_retry:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn cc_09_cancelling_a_waiter_does_not_cancel_the_fetch() {
    let server = server().await;
    server.set_latency(Duration::from_millis(100));
    let tokens = in_process(&server).build().unwrap();
    let cancelled = {
        let tokens = tokens.clone();
        tokio::spawn(async move {
            tokens
                .get_token("api", &TokenRequestParams::default())
                .await
        })
    };
    let waiter = {
        let tokens = tokens.clone();
        tokio::spawn(async move {
            tokens
                .get_token("api", &TokenRequestParams::default())
                .await
        })
    };
    tokio::task::yield_now().await;
    cancelled.abort();
    assert!(waiter.await.unwrap().is_ok());
    // A lone caller that gives up (timeout) still leaves the token cached for the next one.
    let lone = in_process(&server).build().unwrap();
    let before = server.token_requests(CC);
    let gave_up = tokio::time::timeout(
        Duration::from_millis(10),
        lone.get_token("api", &default_params()),
    )
    .await;
    assert!(gave_up.is_err());
    tokio::time::advance(Duration::from_millis(200)).await;
    lone.get_token("api", &default_params()).await.unwrap();
    assert_eq!(server.token_requests(CC), before + 1);
}

#[tokio::test(start_paused = true)]
async fn cc_10_valid_token_served_while_endpoint_fails() {
    let server = server().await;
    server.set_expires_in(Some(1000)); // usable 970 s, refresh from 776 s
    let tokens = in_process(&server).build().unwrap();
    let token = tokens.get_token("api", &default_params()).await.unwrap();
    server.inject_fault(Fault::HtmlBody { status: 502 }, Times::Always);
    tokio::time::advance(Duration::from_secs(870)).await;
    for _ in 0..19 {
        tokio::time::advance(Duration::from_secs(5)).await; // up to 965 s
        let served = tokens.get_token("api", &default_params()).await.unwrap();
        assert!(served.same_token(&token));
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }
    assert!(server.token_requests(CC) > 1, "refreshes were attempted");
    tokio::time::advance(Duration::from_secs(6)).await; // past 970 s
    let err = tokens
        .get_token("api", &default_params())
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(502));
}

#[tokio::test]
async fn cc_11_force_renewal_bypasses_cache_and_stores() {
    let server = server().await;
    let tokens = networked(&server);
    let first = tokens.get_token("api", &default_params()).await.unwrap();
    let forced = tokens
        .get_token("api", &TokenRequestParams::new().force_renewal(true))
        .await
        .unwrap();
    assert_ne!(
        first.access_token().secret(),
        forced.access_token().secret()
    );
    let after = tokens.get_token("api", &default_params()).await.unwrap();
    assert!(after.same_token(&forced));
    assert_eq!(server.token_requests(CC), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cc_12_invalidate_removes_only_the_rejected_token() {
    let server = server().await;
    server.set_latency(Duration::from_millis(20));
    let tokens = networked(&server);
    let rejected = tokens.get_token("api", &default_params()).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let tokens = tokens.clone();
        let rejected = rejected.clone();
        tasks.push(tokio::spawn(async move {
            tokens
                .invalidate("api", &TokenRequestParams::default(), &rejected)
                .await
                .unwrap();
            tokens
                .get_token("api", &TokenRequestParams::default())
                .await
                .unwrap()
        }));
    }
    let mut fresh = std::collections::HashSet::new();
    for t in tasks {
        fresh.insert(t.await.unwrap().access_token().secret().to_owned());
    }
    assert_eq!(
        server.token_requests(CC),
        2,
        "50 concurrent rejections → one re-acquisition"
    );
    assert_eq!(fresh.len(), 1);
    // A late rejection of the old token leaves the new one in place.
    assert!(!tokens
        .invalidate("api", &default_params(), &rejected)
        .await
        .unwrap());
    let current = tokens.get_token("api", &default_params()).await.unwrap();
    assert!(fresh.contains(current.access_token().secret()));
    assert_eq!(server.token_requests(CC), 2);
}

#[derive(Debug)]
struct BrokenCache;

impl TokenCache for BrokenCache {
    fn get<'a>(
        &'a self,
        _: &'a CacheKey,
    ) -> BoxFuture<'a, Result<Option<Arc<CachedToken>>, CacheError>> {
        Box::pin(async { Err(CacheError::new("backend down")) })
    }
    fn put<'a>(
        &'a self,
        _: &'a CacheKey,
        _: Arc<CachedToken>,
    ) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(async { Err(CacheError::new("backend down")) })
    }
    fn remove_if<'a>(
        &'a self,
        _: &'a CacheKey,
        _: &'a tokenkeeper::AccessToken,
    ) -> BoxFuture<'a, Result<bool, CacheError>> {
        Box::pin(async { Err(CacheError::new("backend down")) })
    }
}

#[tokio::test]
async fn cc_13_cache_errors_degrade_to_fetching() {
    let server = server().await;
    let tokens = ClientCredentialsTokenManager::builder()
        .client("api", config(&server))
        .cache(Arc::new(BrokenCache))
        .build()
        .unwrap();
    let token = tokens.get_token("api", &default_params()).await.unwrap();
    assert!(server
        .verify_access_token(token.access_token().secret())
        .is_ok());
    assert!(!tokens
        .invalidate("api", &default_params(), &token)
        .await
        .unwrap());
    tokens.get_token("api", &default_params()).await.unwrap();
    assert_eq!(
        server.token_requests(CC),
        2,
        "without a cache every call fetches, and succeeds"
    );
}

#[test]
fn lifetime_policy_times() {
    let policy = LifetimePolicy::default();
    let now = tokenkeeper::Timestamp::from_millis(1_000_000);
    let (refresh, expiry) = policy.times(now, Some(Duration::from_secs(3600)));
    assert_eq!(
        expiry.saturating_duration_since(now),
        Duration::from_secs(3570)
    );
    assert_eq!(
        refresh.saturating_duration_since(now),
        Duration::from_secs(2856)
    );
    // Under ten times the skew, the skew is a tenth of the lifetime, and the refresh ahead
    // starts no earlier than three quarters of it (CC-15).
    let (refresh, short) = policy.times(now, Some(Duration::from_secs(10)));
    assert_eq!(short.saturating_duration_since(now), Duration::from_secs(9));
    assert_eq!(
        refresh.saturating_duration_since(now),
        Duration::from_millis(7500)
    );
    let _ = ClientConfig::new("https://x/token", "a", "b");
    let _ = Error::Internal(String::new());
}

/// CC-03 as a property: over random parameter sets drawn from separator-heavy alphabets, two
/// sets get the same cache key exactly when they mean the same request (same scope set, same
/// resource set, same final extras) — order, duplicates and whitespace never split a key, and no
/// value can smuggle a separator to make two different requests share one.
#[test]
fn cc_03_cache_key_is_canonical_and_injective_for_random_parameters() {
    use std::collections::{BTreeMap, BTreeSet};
    use tokenkeeper_testing::fuzz::{cases, Mutator};

    const SCOPE_CHARS: &[char] = &['a', 'b', ':', '&', '=', '%', '+', '|', '/', ',', ';', '!'];
    const TEXT_CHARS: &[char] = &[
        'a', 'b', '&', '=', '%', '+', ' ', '\n', '|', ';', 'é', '\u{0}',
    ];
    const RESOURCES: [&str; 4] = [
        "https://api.example",
        "https://api.example/v2",
        "urn:example:a&b=c",
        "https://api.example/?a=b&c=d",
    ];
    type Model = (BTreeSet<String>, BTreeSet<String>, BTreeMap<String, String>);
    let tokens = ClientCredentialsTokenManager::builder()
        .client(
            "api",
            ClientConfig::new("https://idp.example/token", "id", "secret"),
        )
        .build()
        .unwrap();
    let mut mutator = Mutator::from_env();
    let text = |rng: &mut Mutator, chars: &[char], max: usize| -> String {
        let len = rng.rng().usize(..=max);
        (0..len)
            .map(|_| chars[rng.rng().usize(..chars.len())])
            .collect()
    };
    let draw = |rng: &mut Mutator| -> (TokenRequestParams, Model) {
        let mut params = TokenRequestParams::new();
        let mut model: Model = Default::default();
        let scope_tokens: Vec<String> = (0..rng.rng().usize(..4))
            .map(|_| {
                let t = text(rng, SCOPE_CHARS, 3);
                if t.is_empty() {
                    "a".to_owned()
                } else {
                    t
                }
            })
            .collect();
        if !scope_tokens.is_empty() {
            // Random order, a duplicate, and extra whitespace: all normalised away.
            let mut written = scope_tokens.clone();
            written.push(scope_tokens[0].clone());
            rng.rng().shuffle(&mut written);
            params = params.scope(written.join(if rng.rng().bool() { " " } else { "  \t" }));
            model.0 = scope_tokens.into_iter().collect();
        }
        for _ in 0..rng.rng().usize(..3) {
            let resource = RESOURCES[rng.rng().usize(..RESOURCES.len())];
            params = params.resource(Resource::parse(resource).unwrap());
            model.1.insert(resource.to_owned());
        }
        for _ in 0..rng.rng().usize(..4) {
            // Names are never empty (an empty name is a configuration error).
            let name = format!("n{}", text(rng, TEXT_CHARS, 3));
            let value = text(rng, TEXT_CHARS, 4);
            // A repeated name is a configuration error: draw each name once.
            if let std::collections::btree_map::Entry::Vacant(entry) = model.2.entry(name) {
                params = params.extra(entry.key().clone(), value.clone());
                entry.insert(value);
            }
        }
        (params, model)
    };
    let mut seen: std::collections::HashMap<String, Model> = Default::default();
    let mut met_again = 0;
    for case in 0..cases(20_000) {
        let (params, model) = draw(&mut mutator);
        let key = tokens
            .cache_key("api", &params)
            .unwrap()
            .as_str()
            .to_owned();
        if let Some(earlier) = seen.insert(key.clone(), model.clone()) {
            met_again += usize::from(!model.0.is_empty() || !model.2.is_empty());
            assert_eq!(
                earlier,
                model,
                "case {case} (TK_FUZZ_SEED={}): two different requests share the key {key:?}",
                mutator.seed()
            );
        }
    }
    // Equal meanings did meet (the alphabets are small), so canonicalisation was exercised: every
    // model maps to exactly one key.
    assert!(
        met_again > 100,
        "too few repeated requests to test canonicalisation"
    );
    let mut keys_per_model: std::collections::HashMap<Model, BTreeSet<String>> = Default::default();
    for (key, model) in seen {
        keys_per_model.entry(model).or_default().insert(key);
    }
    for (model, keys) in &keys_per_model {
        assert_eq!(
            keys.len(),
            1,
            "one request, several keys: {model:?} → {keys:?}"
        );
    }

    // Smuggling, aimed: a value spelling out the key's own separators never yields the key of
    // the request it spells.
    let key = |p: &TokenRequestParams| tokens.cache_key("api", p).unwrap();
    for _ in 0..cases(20_000) / 10 {
        let (v1, v2, v3) = (
            text(&mut mutator, TEXT_CHARS, 3),
            text(&mut mutator, TEXT_CHARS, 3),
            text(&mut mutator, SCOPE_CHARS, 3),
        );
        let resource = RESOURCES[mutator.rng().usize(..RESOURCES.len())];
        let pairs = [
            (
                TokenRequestParams::new().extra("n1", format!("{v1}&x=n2&v={v2}")),
                TokenRequestParams::new()
                    .extra("n1", v1.clone())
                    .extra("n2", v2.clone()),
            ),
            (
                TokenRequestParams::new().extra("n1", format!("{v1}&resource={resource}")),
                TokenRequestParams::new()
                    .extra("n1", v1.clone())
                    .resource(Resource::parse(resource).unwrap()),
            ),
            (
                TokenRequestParams::new().scope(format!("a{v3}&x=n1&v={v3}")),
                TokenRequestParams::new()
                    .scope(format!("a{v3}"))
                    .extra("n1", v3.clone()),
            ),
        ];
        for (smuggled, spelled) in pairs {
            assert_ne!(
                key(&smuggled),
                key(&spelled),
                "{smuggled:?} and {spelled:?}"
            );
        }
    }
}

/// An API that rejects every token: 20 callers through the tower layer for 3 s (paused time).
/// Renewals driven by 401s go through the renewal backoff, so the token requests stay a
/// handful instead of one per call (57 before the fix).
#[tokio::test(start_paused = true)]
async fn cc_14_an_api_that_rejects_every_token_cannot_drive_a_token_storm() {
    use tower::{Service as _, ServiceExt as _};
    let server = server().await;
    let tokens = in_process(&server).build().unwrap();
    let api_calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let calls = api_calls.clone();
    let api = tower::service_fn(move |_request: http::Request<String>| {
        calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        async move {
            Ok::<_, std::convert::Infallible>(
                http::Response::builder().status(401).body(()).unwrap(),
            )
        }
    });
    let layer = tokens.layer("api").unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let mut service = tower::Layer::layer(&layer, api.clone());
        tasks.push(tokio::spawn(async move {
            let mut unauthorized = 0;
            while tokio::time::Instant::now() < deadline {
                let request = http::Request::get("http://api.example/items")
                    .body(String::new())
                    .unwrap();
                let response = service.ready().await.unwrap().call(request).await.unwrap();
                assert_eq!(response.status(), 401, "the caller gets the API's 401");
                unauthorized += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            unauthorized
        }));
    }
    let mut answered = 0;
    for task in tasks {
        answered += task.await.unwrap();
    }
    let requests = server.token_requests(CC);
    eprintln!("CC-14: {requests} token requests for {answered} rejected calls");
    assert!(answered > 1000, "{answered} calls made");
    // One token, then renewals after 0, ~0.5–1 s and ~1.5–3 s (backoff 1 s, doubling, jitter).
    assert!(
        (2..=4).contains(&requests),
        "{requests} token requests for {answered} rejected calls"
    );
}

/// CC-14 through the reqwest middleware: at most one renewal per rejected token (with a long
/// backoff, exactly one), and a 401 from where a redirect led renews nothing.
#[tokio::test]
async fn cc_14_middleware_renews_once_per_token_and_ignores_redirected_401s() {
    let server = server().await;
    let api = Api::start(server.clone()).await;
    let tokens = ClientCredentialsTokenManager::builder()
        .client("api", config(&server))
        .backoff_policy(tokenkeeper::BackoffPolicy {
            base: Duration::from_secs(3600),
            max: Duration::from_secs(3600),
        })
        .build()
        .unwrap();
    let http = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(tokens.middleware("api").unwrap())
        .build();
    api.always_reject(true);
    let mut calls = Vec::new();
    for _ in 0..20 {
        let http = http.clone();
        let url = api.url.clone();
        calls.push(tokio::spawn(async move {
            for _ in 0..5 {
                let response = http.get(&url).send().await.unwrap();
                assert_eq!(response.status(), 401);
            }
        }));
    }
    for call in calls {
        call.await.unwrap();
    }
    assert_eq!(
        server.token_requests(CC),
        2,
        "the first token and one renewal, for 100 rejected calls"
    );

    // A redirect to a URL that answers 401: nothing is renewed there, and no retry is sent.
    let redirecting = Api::start(server.clone()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let target = redirecting.url.clone();
    let app = axum::Router::new().route(
        "/moved",
        axum::routing::get(move || async move { axum::response::Redirect::temporary(&target) }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    redirecting.always_reject(true);
    let fresh = ClientCredentialsTokenManager::builder()
        .client("api", config(&server))
        .build()
        .unwrap();
    let http = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(fresh.middleware("api").unwrap())
        .build();
    let before = server.token_requests(CC);
    let first = fresh.get_token("api", &default_params()).await.unwrap();
    let response = http.get(format!("{base}/moved")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        redirecting.seen().len(),
        1,
        "no retry to where the redirect led"
    );
    let still = fresh.get_token("api", &default_params()).await.unwrap();
    assert!(still.same_token(&first), "nothing was invalidated");
    assert_eq!(server.token_requests(CC), before + 1);
}

/// CC-15: a 5 s token, 300 callers over 30 s. Each token is used for at least 3.75 s, replaced
/// in the background before it expires, and never handed out in its last tenth; a lifetime
/// below the skew logs one warning per client.
#[tokio::test(start_paused = true)]
async fn cc_15_short_lived_tokens_are_used_for_most_of_their_life() {
    let logs = tokenkeeper_testing::LogBuffer::default();
    let _guard = logs.install(tracing::Level::TRACE);
    let server = server().await;
    server.set_expires_in(Some(5));
    let clock = Arc::new(tokenkeeper::TokioClock::new());
    let tokens = in_process(&server).clock(clock.clone()).build().unwrap();
    let lifetime = Duration::from_secs(5);
    let mut seen: Vec<Arc<tokenkeeper::CachedToken>> = Vec::new();
    let start = tokio::time::Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        let mut calls = Vec::new();
        for _ in 0..300 {
            let tokens = tokens.clone();
            calls.push(tokio::spawn(async move {
                tokens.get_token("api", &default_params()).await.unwrap()
            }));
        }
        let now = tokenkeeper::Clock::now(&*clock);
        for call in calls {
            let token = call.await.unwrap();
            let age = now.saturating_duration_since(token.issued_at());
            assert!(
                age < lifetime.mul_f64(0.9),
                "handed out at {age:?}, in the last tenth of its life"
            );
            if !seen.iter().any(|t| t.same_token(&token)) {
                seen.push(token);
            }
        }
        tokio::time::advance(Duration::from_millis(100)).await;
    }
    for pair in seen.windows(2) {
        let used = pair[1]
            .issued_at()
            .saturating_duration_since(pair[0].issued_at());
        assert!(
            used >= lifetime.mul_f64(0.75),
            "a token was replaced after {used:?}"
        );
        assert!(
            pair[1].issued_at() < pair[0].expires_at(),
            "replaced in the background before it expired"
        );
    }
    let requests = server.token_requests(CC);
    eprintln!("CC-15: {requests} token requests in 30 s for a 5 s token");
    assert!(
        (7..=9).contains(&requests),
        "{requests} token requests in 30 s"
    );
    let warnings = logs
        .text()
        .matches("shorter than the configured skew")
        .count();
    assert_eq!(warnings, 1, "one warning per client:\n{}", logs.text());
}
