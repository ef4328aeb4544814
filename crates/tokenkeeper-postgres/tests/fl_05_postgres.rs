//! FL-05: the PostgreSQL store on a real PostgreSQL (Debian's `postgresql`, `initdb` in a
//! temporary directory, its own port, stopped at the end): migrations applied once by instances
//! starting together; 1,000 concurrent callers over three instances make one refresh per cycle
//! with rotating refresh tokens and no `invalid_grant`; a renewal on one instance reaches the
//! others' in-process tiers (LISTEN/NOTIFY); rows are sealed; expired rows are cleaned up in
//! batches; a refresh whose write meets a restarting database keeps the session.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokenkeeper::user::{
    LoginReplayStore as _, SessionKey, UserTokenManager, UserTokenParams, UserTokenStore as _,
    UserTokens,
};
use tokenkeeper::ClientConfig;
use tokenkeeper_postgres::{
    Encryption, PostgresDatabase, PostgresLease, PostgresLoginReplayStore, PostgresOptions,
    PostgresUserTokenStore,
};
use tokenkeeper_testing::postgres_server::OwnPostgres;
use tokenkeeper_testing::{TestClient, TestServer};

fn database(url: &str) -> PostgresDatabase {
    PostgresDatabase::new(
        url,
        PostgresOptions {
            retry_pause: Duration::ZERO,
            ..PostgresOptions::encrypted(Encryption::new("k1", &[8; 32]).unwrap())
        },
    )
    .unwrap()
}

fn instance(
    server: &TestServer,
    db: &PostgresDatabase,
) -> (UserTokenManager, PostgresUserTokenStore) {
    let store = PostgresUserTokenStore::new(db);
    let users = UserTokenManager::builder(ClientConfig::from_issuer(
        server.issuer(),
        "web",
        "web-secret",
    ))
    .store(Arc::new(store.clone()))
    .lease(Arc::new(PostgresLease::new(db)))
    .build()
    .unwrap();
    (users, store)
}

async fn raw(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fl_05_the_postgresql_store_shares_sessions_across_instances() {
    let mut postgres = OwnPostgres::start().await;
    let url = postgres.url();
    let server = Arc::new(
        TestServer::builder()
            .client(TestClient::new("web", "web-secret"))
            .start()
            .await,
    );
    server.set_rotate_refresh_tokens(true);
    server.set_latency(Duration::from_millis(50));

    // Three instances starting together apply the migrations once.
    let dbs: Vec<PostgresDatabase> = (0..3).map(|_| database(&url)).collect();
    let (a, b, c) = tokio::join!(dbs[0].migrate(), dbs[1].migrate(), dbs[2].migrate());
    a.unwrap();
    b.unwrap();
    c.unwrap();
    let applied = raw(&url)
        .await
        .query("SELECT version FROM tokenkeeper_migrations", &[])
        .await
        .unwrap();
    assert_eq!(
        applied.len(),
        tokenkeeper_postgres::MIGRATIONS.len(),
        "each migration once"
    );
    let instances: Vec<_> = dbs.iter().map(|db| instance(&server, db)).collect();

    // A session; 1,000 concurrent callers over the three instances: one refresh, one token.
    let session = SessionKey::from_sub_sid("alice", "s-1");
    let first = server.issue_refresh_token("web", "alice", Some("openid"));
    instances[0]
        .0
        .replace(
            &session,
            UserTokens {
                refresh_token: Some(first.as_str().into()),
                ..UserTokens::default()
            },
        )
        .await
        .unwrap();
    for cycle in 1..=3u64 {
        let barrier = Arc::new(tokio::sync::Barrier::new(1000));
        let mut tasks = Vec::new();
        for i in 0..1000 {
            let (users, session, barrier) =
                (instances[i % 3].0.clone(), session.clone(), barrier.clone());
            let force = cycle > 1;
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let params = if force && i == 0 {
                    // One caller forces the next cycle; the others join it or take the result.
                    UserTokenParams::default().force_renewal(true)
                } else {
                    UserTokenParams::default()
                };
                users.get_access_token(&session, &params).await
            }));
        }
        let mut tokens = HashSet::new();
        for task in tasks {
            tokens.insert(
                task.await
                    .unwrap()
                    .unwrap()
                    .access_token()
                    .secret()
                    .to_owned(),
            );
        }
        assert_eq!(
            server.token_requests("refresh_token"),
            cycle,
            "one refresh per cycle across three instances (cycle {cycle})"
        );
        assert!(tokens.len() <= 2, "cycle {cycle}: {} tokens", tokens.len());
    }
    assert_eq!(server.refused_refreshes(), 0, "no invalid_grant");

    // Every instance holds the session in memory; a renewal on one reaches the others.
    for (users, _) in &instances {
        users
            .get_access_token(&session, &UserTokenParams::default())
            .await
            .unwrap();
    }
    eventually("every listener connected", || {
        instances.iter().all(|(_, s)| s.listening())
    })
    .await;
    let held = instances[0].1.get_local(&session).unwrap().version;
    let renewed = instances[2]
        .0
        .get_access_token(&session, &UserTokenParams::default().force_renewal(true))
        .await
        .unwrap();
    eventually("the others dropped the replaced version", || {
        instances[..2]
            .iter()
            .all(|(_, s)| s.get_local(&session).is_none_or(|v| v.version > held))
    })
    .await;
    let seen = instances[0]
        .0
        .get_access_token(&session, &UserTokenParams::default())
        .await
        .unwrap();
    assert!(seen.same_token(&renewed));

    // Sealed at rest: no token in the row; a tampered row is refused and deleted.
    let client = raw(&url).await;
    let rows = client
        .query("SELECT key, value FROM tokenkeeper_user_tokens", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let (key, value): (String, Vec<u8>) = (rows[0].get(0), rows[0].get(1));
    assert!(!key.contains("alice"));
    let stored = instances[0].1.get(&session).await.unwrap().unwrap().value;
    let rt = stored.refresh_token.clone().unwrap();
    assert!(!String::from_utf8_lossy(&value).contains(rt.secret()));
    let mut tampered = value.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    client
        .execute(
            "UPDATE tokenkeeper_user_tokens SET value = $2 WHERE key = $1",
            &[&key, &tampered],
        )
        .await
        .unwrap();
    let (fresh, fresh_store) = instance(&server, &database(&url));
    assert!(fresh_store.get(&session).await.unwrap().is_none());
    assert!(client
        .query_opt(
            "SELECT 1 FROM tokenkeeper_user_tokens WHERE key = $1",
            &[&key]
        )
        .await
        .unwrap()
        .is_none());
    drop(fresh);

    // Each login callback is taken once.
    let replays = PostgresLoginReplayStore::new(&dbs[0]);
    assert!(replays
        .claim("state-1", Duration::from_secs(60))
        .await
        .unwrap());
    assert!(!PostgresLoginReplayStore::new(&dbs[1])
        .claim("state-1", Duration::from_secs(60))
        .await
        .unwrap());

    // Expired rows go in batches.
    client
        .execute(
            "INSERT INTO tokenkeeper_user_tokens (key, version, value, expires_at) \
             SELECT 'old-' || n, 1, '\\x00', tokenkeeper_now_ms() - 1000 FROM generate_series(1, 2500) n",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(dbs[1].cleanup_expired(1000).await.unwrap(), 2500);

    // A refresh whose write meets a stopped database: handed out, kept, written again.
    let second = SessionKey::from_sub_sid("bob", "s-2");
    let rt = server.issue_refresh_token("web", "bob", Some("openid"));
    instances[0]
        .0
        .replace(
            &second,
            UserTokens {
                refresh_token: Some(rt.as_str().into()),
                ..UserTokens::default()
            },
        )
        .await
        .unwrap();
    let before = instances[0]
        .0
        .get_access_token(&second, &UserTokenParams::default())
        .await
        .unwrap();
    drop(client);
    // The database stops while the provider answers the refresh: its write fails.
    server.set_latency(Duration::from_millis(500));
    let refreshes = server.token_requests("refresh_token");
    let renewal = {
        let users = instances[0].0.clone();
        let second = second.clone();
        tokio::spawn(async move {
            users
                .get_access_token(&second, &UserTokenParams::default().force_renewal(true))
                .await
        })
    };
    eventually("the refresh reached the provider", || {
        server.token_requests("refresh_token") > refreshes
    })
    .await;
    postgres.stop();
    let during = renewal
        .await
        .unwrap()
        .expect("the new token is handed out though its write failed");
    assert!(!during.same_token(&before));
    postgres.restart().await;
    let (other, _) = instance(&server, &database(&url));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match other
            .get_access_token(&second, &UserTokenParams::default())
            .await
        {
            Ok(token) if token.same_token(&during) => break,
            _ => {}
        }
        assert!(Instant::now() < deadline, "the kept write never landed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        server.refused_refreshes(),
        0,
        "no spent refresh token presented"
    );
}
