//! The configuration file: errors name the key and the line; secrets come from the
//! environment; static files with the SPA fallback.
#![cfg(feature = "config")]
#![allow(clippy::unwrap_used)]

use tokenkeeper_bff::config::BffConfig;

const GOOD: &str = r#"
[bff]
listen = "127.0.0.1:0"
public_url = "https://app.example.com"

[oidc]
issuer = "https://idp.example.com"
client_id = "spa"
client_secret_env = "SPA_SECRET"
dpop = "per-session"

[client]
client_id = "worker"
client_secret = "inline"

[[routes]]
path = "/api"
upstream = "https://api.internal/v1"

[[routes]]
path = "/public"
upstream = "https://public.internal"
token = "user_or_client"
timeout_secs = 5
"#;

fn env(name: &str) -> Option<String> {
    (name == "SPA_SECRET").then(|| "from-env".to_owned())
}

fn error(text: &str) -> tokenkeeper_bff::config::ConfigFileError {
    match BffConfig::parse(text) {
        Err(e) => e,
        Ok(config) => config.validate(text, &env).unwrap_err(),
    }
}

#[test]
fn a_good_file_validates_and_takes_secrets_from_the_environment() {
    let config = BffConfig::parse(GOOD).unwrap();
    let validated = config.validate(GOOD, &env).unwrap();
    assert_eq!(validated.frontends[0].client_secret, "from-env");
    assert_eq!(
        validated.frontends[0].worker.as_ref().map(|w| w.1.as_str()),
        Some("inline")
    );
    assert_eq!(
        validated.frontends[0].redirect_uri,
        "https://app.example.com/bff/callback"
    );
    assert_eq!(validated.frontends[0].routes().len(), 2);
    assert!(validated.frontends[0].dpop_per_session);
}

#[test]
fn errors_name_the_key_and_the_line() {
    for (find, replace, key, line) in [
        (
            "upstream = \"https://public.internal\"",
            "upstream = \"ftp://public.internal\"",
            "routes[1].upstream",
            22,
        ),
        (
            "token = \"user_or_client\"",
            "token = \"admin\"",
            "routes[1].token",
            23,
        ),
        (
            "listen = \"127.0.0.1:0\"",
            "listen = \"nowhere\"",
            "bff.listen",
            3,
        ),
        (
            "dpop = \"per-session\"",
            "dpop = \"always\"",
            "oidc.dpop",
            10,
        ),
        (
            "client_secret_env = \"SPA_SECRET\"",
            "client_secret_env = \"UNSET\"",
            "oidc.client_secret_env",
            9,
        ),
        (
            "public_url = \"https://app.example.com\"",
            "public_url = \"http://app.example.com\"",
            "bff.public_url",
            4,
        ),
        (
            "timeout_secs = 5",
            "timeout_secs = \"five\"",
            "routes[1].timeout_secs",
            24,
        ),
        (
            "timeout_secs = 5",
            "timeout_secs = 5\ncolour = \"blue\"",
            "routes[1].colour",
            25,
        ),
        ("path = \"/api\"", "path = \"api\"", "routes[0].path", 17),
        (
            "listen = \"127.0.0.1:0\"",
            "listen = \"127.0.0.1:0\"\nlog_format = \"xml\"",
            "bff.log_format",
            4,
        ),
    ] {
        let text = GOOD.replace(find, replace);
        assert_ne!(text, GOOD, "{find}");
        let e = error(&text);
        assert_eq!(e.key, key, "{find}: {e}");
        assert_eq!(e.line, Some(line), "{find}: {e}");
        let shown = e.to_string();
        assert!(
            shown.contains(key) && shown.contains(&format!("line {line}")),
            "{shown}"
        );
    }
    let e = error("[bff]\nlisten = \"127.0.0.1:0\"\n");
    assert_eq!(e.key, "bff.public_url", "{e}");
    assert!(e.message.contains("missing"), "{e}");
}

#[test]
fn bf_22_the_ops_section_takes_an_address_and_a_long_admin_secret_from_the_environment() {
    let with_ops = |ops: &str| format!("{GOOD}\n[ops]\n{ops}\n");
    let secret = "s".repeat(32);
    let env = |name: &str| match name {
        "SPA_SECRET" => Some("from-env".to_owned()),
        "ADMIN" => Some(secret.clone()),
        "SHORT" => Some("s".repeat(31)),
        _ => None,
    };
    let text = with_ops("listen = \"127.0.0.1:9090\"\nadmin_token_env = \"ADMIN\"");
    let validated = BffConfig::parse(&text)
        .unwrap()
        .validate(&text, &env)
        .unwrap();
    assert_eq!(
        validated.ops_listen,
        Some("127.0.0.1:9090".parse().unwrap())
    );
    assert_eq!(validated.admin_token.as_deref(), Some(&*secret));
    assert!(
        !format!("{validated:?}").contains(&secret),
        "Debug shows the secret"
    );
    assert!(validated.notices.is_empty(), "{:?}", validated.notices);
    // Off loopback, the administration API is reported.
    let text = with_ops("listen = \"0.0.0.0:9090\"\nadmin_token_env = \"ADMIN\"");
    let validated = BffConfig::parse(&text)
        .unwrap()
        .validate(&text, &env)
        .unwrap();
    assert!(
        validated
            .notices
            .iter()
            .any(|n| n.starts_with("ops.listen")),
        "{:?}",
        validated.notices
    );
    // Without `[ops]`, no listener; without the secret, no administration API.
    let validated = BffConfig::parse(GOOD)
        .unwrap()
        .validate(GOOD, &env)
        .unwrap();
    assert_eq!(validated.ops_listen, None);
    let text = with_ops("listen = \"127.0.0.1:9090\"");
    let validated = BffConfig::parse(&text)
        .unwrap()
        .validate(&text, &env)
        .unwrap();
    assert_eq!(validated.admin_token, None);
    for (ops, key) in [
        ("listen = \"nowhere\"", "ops.listen"),
        (
            "listen = \"127.0.0.1:9090\"\nadmin_token_env = \"SHORT\"",
            "ops.admin_token_env",
        ),
        (
            "listen = \"127.0.0.1:9090\"\nadmin_token_env = \"UNSET\"",
            "ops.admin_token_env",
        ),
        (
            "listen = \"127.0.0.1:9090\"\nadmin_token = \"inline\"",
            "ops.admin_token",
        ),
    ] {
        let text = with_ops(ops);
        let e = match BffConfig::parse(&text) {
            Err(e) => e,
            Ok(config) => config.validate(&text, &env).unwrap_err(),
        };
        assert_eq!(e.key, key, "{ops}: {e}");
        assert!(e.line.is_some(), "{ops}: {e}");
    }
}

#[test]
fn bf_19_the_claims_section_shapes_the_user_endpoint_and_refuses_what_could_never_apply() {
    let with = |claims: &str| format!("{GOOD}\n[claims]\n{claims}\n");
    let text = with(
        "include = [\"sub\", \"name\", \"preferred_username\"]\nrename = { preferred_username = \"username\" }\nkeep_protocol_claims = true\nuserinfo = true",
    );
    let validated = BffConfig::parse(&text)
        .unwrap()
        .validate(&text, &env)
        .unwrap();
    let claims = &validated.frontends[0].options.claims;
    assert_eq!(claims.include, ["sub", "name", "preferred_username"]);
    assert_eq!(
        claims.rename,
        [("preferred_username".to_owned(), "username".to_owned())]
    );
    assert!(claims.keep_protocol_claims);
    assert!(claims.userinfo);
    for (claims, key, says) in [
        ("include = [\"\"]", "claims.include", "not a claim name"),
        (
            "exclude = [\"a\\nb\"]",
            "claims.exclude",
            "not a claim name",
        ),
        (
            "include = [\"email\"]\nexclude = [\"email\"]",
            "claims.exclude",
            "also in",
        ),
        (
            "rename = { email = \"bff:x\" }",
            "claims.rename",
            "BFF's own",
        ),
        (
            "exclude = [\"email\"]\nrename = { email = \"mail\" }",
            "claims.rename",
            "never shown",
        ),
        (
            "include = [\"sub\"]\nrename = { email = \"mail\" }",
            "claims.rename",
            "never shown",
        ),
        (
            "rename = { a = \"x\", b = \"x\" }",
            "claims.rename",
            "two claims",
        ),
        ("shown = [\"sub\"]", "claims.shown", "unknown field"),
    ] {
        let text = with(claims);
        let e = match BffConfig::parse(&text) {
            Err(e) => e,
            Ok(config) => config.validate(&text, &env).unwrap_err(),
        };
        assert_eq!(e.key, key, "{claims}: {e}");
        assert!(e.line.is_some(), "{claims}: {e}");
        assert!(e.message.contains(says), "{claims}: {e}");
    }
}

#[test]
fn bf_21_the_forward_auth_section_takes_header_names_nobody_else_uses() {
    let with = |section: &str| format!("{GOOD}\n[forward_auth]\n{section}\n");
    let text = with("");
    let validated = BffConfig::parse(&text)
        .unwrap()
        .validate(&text, &env)
        .unwrap();
    let forward = validated.frontends[0].options.forward_auth.clone().unwrap();
    assert_eq!(forward.headers.len(), 1);
    assert_eq!(forward.headers[0].0, "sub");
    assert_eq!(forward.headers[0].1.as_str(), "x-auth-request-user");
    assert!(forward.access_token.is_none());
    let no_dpop = |text: String| text.replace("dpop = \"per-session\"\n", "");
    let text = no_dpop(with(
        "headers = { sub = \"X-User\", groups = \"X-Groups\" }\naccess_token_header = \"X-Token\"\nproxy_secret_env = \"PROXY\"",
    ));
    let proxy_secret = "p".repeat(32);
    let with_secret = |name: &str| match name {
        "PROXY" => Some(proxy_secret.clone()),
        other => env(other),
    };
    let validated = BffConfig::parse(&text)
        .unwrap()
        .validate(&text, &with_secret)
        .unwrap();
    assert!(
        !format!("{validated:?}").contains(&proxy_secret),
        "Debug shows the secret"
    );
    let forward = validated.frontends[0].options.forward_auth.clone().unwrap();
    let names: Vec<&str> = forward.names().map(|n| n.as_str()).collect();
    assert_eq!(names, ["x-groups", "x-user", "x-token"]);
    assert_eq!(forward.proxy_secret.as_deref(), Some(&*proxy_secret));
    // The access token needs the proxy's secret, of 32 bytes at least.
    let e = BffConfig::parse(&no_dpop(with("access_token_header = \"x-token\"")))
        .unwrap()
        .validate(&no_dpop(with("access_token_header = \"x-token\"")), &env)
        .unwrap_err();
    assert_eq!(e.key, "forward_auth.access_token_header", "{e}");
    assert!(e.message.contains("proxy_secret_env"), "{e}");
    let short = no_dpop(with("proxy_secret_env = \"SPA_SECRET\""));
    let e = BffConfig::parse(&short)
        .unwrap()
        .validate(&short, &env)
        .unwrap_err();
    assert_eq!(e.key, "forward_auth.proxy_secret_env", "{e}");
    // GOOD's logins are DPoP-bound: no access token for upstreams then.
    for (section, key) in [
        ("headers = { sub = \"cookie\" }", "forward_auth.headers"),
        (
            "headers = { sub = \"x-forwarded-user\" }",
            "forward_auth.headers",
        ),
        ("headers = { sub = \"bad name\" }", "forward_auth.headers"),
        (
            "headers = { sub = \"x-a\", sid = \"X-A\" }",
            "forward_auth.headers",
        ),
        (
            "access_token_header = \"x-token\"",
            "forward_auth.access_token_header",
        ),
        ("header = { sub = \"x-a\" }", "forward_auth.header"),
    ] {
        // Only the access token case keeps GOOD's DPoP-bound logins.
        let text = if section.starts_with("access") {
            with(section)
        } else {
            no_dpop(with(section))
        };
        let e = match BffConfig::parse(&text) {
            Err(e) => e,
            Ok(config) => config.validate(&text, &env).unwrap_err(),
        };
        assert_eq!(e.key, key, "{section}: {e}");
        assert!(e.line.is_some(), "{section}: {e}");
    }
}

#[test]
fn bf_20_routes_take_required_claims_scopes_and_exchange_audiences() {
    let text = GOOD.replace(
        "timeout_secs = 5",
        "timeout_secs = 5\nrequire_claims = { groups = \"admin\" }\nrequire_scopes = [\"orders.read\"]",
    );
    assert!(BffConfig::parse(&text)
        .unwrap()
        .validate(&text, &env)
        .is_ok());
    let text = GOOD.replace(
        "token = \"user_or_client\"",
        "token = \"exchange\"\naudience = \"https://orders.internal\"",
    );
    assert!(BffConfig::parse(&text)
        .unwrap()
        .validate(&text, &env)
        .is_ok());
    let no_client = text.replace(
        "[client]\nclient_id = \"worker\"\nclient_secret = \"inline\"\n",
        "",
    );
    assert_ne!(no_client, text);
    let e = BffConfig::parse(&no_client)
        .unwrap()
        .validate(&no_client, &env)
        .unwrap_err();
    assert_eq!(e.key, "routes[1].token", "{e}");
    for (find, replace, key) in [
        (
            "timeout_secs = 5",
            "timeout_secs = 5\nrequire_claims = { groups = \"\" }",
            "routes[1].require_claims",
        ),
        (
            "timeout_secs = 5",
            "timeout_secs = 5\nrequire_scopes = [\"a b\"]",
            "routes[1].require_scopes",
        ),
        (
            "token = \"user_or_client\"",
            "token = \"client\"\nrequire_scopes = [\"a\"]",
            "routes[1].require_scopes",
        ),
        (
            "token = \"user_or_client\"",
            "token = \"user\"\naudience = \"orders\"",
            "routes[1].audience",
        ),
    ] {
        let text = GOOD.replace(find, replace);
        let e = match BffConfig::parse(&text) {
            Err(e) => e,
            Ok(config) => config.validate(&text, &env).unwrap_err(),
        };
        assert_eq!(e.key, key, "{replace}: {e}");
        assert!(e.line.is_some(), "{replace}: {e}");
    }
}

/// The README's `bff.toml` is a file that validates, with its secrets in the environment.
#[test]
fn the_readmes_bff_toml_validates() {
    let readme = include_str!("../../../README.md");
    let start = readme.find("# bff.toml").expect("the README's bff.toml");
    let text = &readme[start..];
    let text = &text[..text.find("```").unwrap()];
    let env = |name: &str| match name {
        "BFF_CLIENT_SECRET" => Some("secret".to_owned()),
        "BFF_REDIS_KEY" => Some("YmZmLWhvc3QtdGVzdC1rZXktMzItYnl0ZXMtbG9uZyE=".to_owned()),
        "BFF_ADMIN_TOKEN" => Some("a".repeat(40)),
        _ => None,
    };
    // Its SPA's directory, here a temporary one.
    let dist = std::env::temp_dir().join(format!("tk-readme-dist-{}", std::process::id()));
    std::fs::create_dir_all(&dist).unwrap();
    let text = text.replace("\"dist\"", &format!("{:?}", dist.display().to_string()));
    let config = BffConfig::parse(&text).unwrap();
    let validated = config.validate(&text, &env).unwrap();
    let _ = std::fs::remove_dir(&dist);
    assert!(validated.ops_listen.is_some());
    assert!(validated.admin_token.is_some());
}

#[tokio::test]
async fn static_files_with_the_spa_fallback_and_no_traversal() {
    let dir = std::env::temp_dir().join(format!("tk-spa-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("assets")).unwrap();
    std::fs::write(dir.join("index.html"), "<h1>spa</h1>").unwrap();
    std::fs::write(dir.join("assets/app.js"), "console.log(1)").unwrap();
    std::fs::write(dir.join(".env"), "SECRET=1").unwrap();
    let app = tokenkeeper_bff::host::spa(dir.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let get = |path: &str| {
        let url = format!("{url}{path}");
        async move {
            let response = reqwest::get(url).await.unwrap();
            let status = response.status().as_u16();
            let kind = response
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            (status, kind, response.text().await.unwrap())
        }
    };
    assert_eq!(get("/").await.2, "<h1>spa</h1>");
    let (status, kind, body) = get("/assets/app.js").await;
    assert_eq!((status, body.as_str()), (200, "console.log(1)"));
    assert!(kind.starts_with("text/javascript"));
    assert_eq!(
        get("/orders/7").await.2,
        "<h1>spa</h1>",
        "the SPA's own route"
    );
    assert_eq!(get("/missing.js").await.0, 404);
    for bad in [
        "/.env",
        "/..%2F..%2Fetc%2Fpasswd",
        "/assets/..%2F.env",
        "/%2e%2e/%2e%2e/etc/passwd",
    ] {
        let (status, _, body) = get(bad).await;
        assert!(!body.contains("SECRET") && !body.contains("root:"), "{bad}");
        assert!(status == 404 || body == "<h1>spa</h1>", "{bad}: {status}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn fl_01_fl_02_the_redis_section_takes_one_node_a_cluster_or_sentinels() {
    use tokenkeeper_bff::config::RedisAddress;
    let file = |redis: &str| {
        format!(
            r#"
[bff]
listen = "127.0.0.1:0"
public_url = "https://app.example.com"

[oidc]
issuer = "https://idp.example.com"
client_id = "spa"
client_secret_env = "SPA_SECRET"

[redis]
plaintext = true
{redis}

[[routes]]
path = "/api"
upstream = "https://api.internal/v1"
"#
        )
    };
    let env = |name: &str| match name {
        "SPA_SECRET" => Some("from-env".to_owned()),
        "MASTER_PASSWORD" => Some("s3cret".to_owned()),
        _ => None,
    };
    let validate = |redis: &str| {
        let text = file(redis);
        BffConfig::parse(&text)
            .unwrap()
            .validate(&text, &env)
            .map(|v| v.redis.unwrap())
    };
    // One node: no replica to wait for by default.
    let node = validate(r#"url = "redis://127.0.0.1:6379""#).unwrap();
    assert!(matches!(node.address, RedisAddress::Node(_)));
    assert_eq!(node.replica_ack, None);
    // A cluster: one replica acknowledges each rotation, 100 ms at most, by default.
    let cluster =
        validate(r#"cluster = ["redis://10.0.0.1:6379", "redis://10.0.0.2:6379"]"#).unwrap();
    assert!(matches!(&cluster.address, RedisAddress::Cluster(n) if n.len() == 2));
    assert_eq!(
        cluster.replica_ack,
        Some((1, std::time::Duration::from_millis(100)))
    );
    // Sentinels, the master's password from the environment (never in Debug output).
    let sentinel = validate(
        r#"sentinels = ["redis://10.0.0.1:26379"]
sentinel_master = "mymaster"
sentinel_master_password_env = "MASTER_PASSWORD"
replica_ack = 2
replica_ack_timeout_ms = 250"#,
    )
    .unwrap();
    assert!(matches!(
        &sentinel.address,
        RedisAddress::Sentinel { master, password: Some(p), .. } if master == "mymaster" && p == "s3cret"
    ));
    assert_eq!(
        sentinel.replica_ack,
        Some((2, std::time::Duration::from_millis(250)))
    );
    assert!(!format!("{sentinel:?}").contains("s3cret"));
    assert!(!format!("{sentinel:?}").contains("10.0.0.1"));
    // Mistakes name their key.
    for (redis, key, says) in [
        ("", "redis.url", "give url (one node), cluster or sentinels"),
        (
            "url = \"redis://a:1\"\ncluster = [\"redis://b:1\"]",
            "redis",
            "one of",
        ),
        ("cluster = []", "redis.cluster", "empty"),
        (
            "cluster = [\"redis://a:1\", \"http://b:1\"]",
            "redis.cluster[1]",
            "redis://",
        ),
        ("sentinels = [\"redis://a:1\"]", "redis.sentinel_master", "missing"),
        (
            "url = \"redis://a:1\"\nsentinel_master = \"m\"",
            "redis.sentinel_master",
            "sentinels only",
        ),
        (
            "sentinels = [\"redis://a:1\"]\nsentinel_master = \"m\"\nsentinel_master_password_env = \"NOPE\"",
            "redis.sentinel_master_password_env",
            "not set",
        ),
        (
            "url = \"redis://a:1\"\nreplica_ack_timeout_ms = 0",
            "redis.replica_ack_timeout_ms",
            "between",
        ),
    ] {
        let e = validate(redis).unwrap_err();
        assert_eq!(e.key, key, "{redis}");
        assert!(e.message.contains(says), "{redis}: {}", e.message);
    }
}

/// PR-03 and PR-04 in the file: `profile = "fapi2"` takes a private key and per-session DPoP,
/// and every key that contradicts it is refused, named, with its line; `acr_values` and
/// `max_age_secs` are read and checked.
#[test]
fn pr_03_fapi2_profile_refuses_every_contradicting_key() {
    let pem_of = |alg| {
        use base64::Engine as _;
        let der = tokenkeeper::dpop::DpopKey::generate(alg)
            .unwrap()
            .to_pkcs8_der()
            .unwrap();
        let body = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            lines.join("\n")
        )
    };
    let pem = pem_of(tokenkeeper::dpop::DpopAlgorithm::ES256);
    let rsa = pem_of(tokenkeeper::dpop::DpopAlgorithm::RS256);
    let env = |name: &str| match name {
        "KEY" => Some(pem.clone()),
        "RSA" => Some(rsa.clone()),
        "SPA_SECRET" => Some("from-env".to_owned()),
        _ => None,
    };
    let file = |oidc_extra: &str| {
        format!(
            "[bff]\nlisten = \"127.0.0.1:0\"\npublic_url = \"https://app.example.com\"\n\n[oidc]\nissuer = \"https://idp.example.com\"\nclient_id = \"bank\"\n{oidc_extra}\n"
        )
    };
    let good = file(
        "private_key_env = \"KEY\"\ndpop = \"per-session\"\nprofile = \"fapi2\"\nrequest_object = true\nacr_values = \"urn:mfa urn:hwk\"\nmax_age_secs = 600",
    );
    let validated = BffConfig::parse(&good)
        .unwrap()
        .validate(&good, &env)
        .unwrap();
    let frontend = &validated.frontends[0];
    assert_eq!(
        frontend.profile,
        tokenkeeper::protocol::profile::Profile::Fapi2
    );
    assert!(frontend.require_dpop, "no Bearer fallback under fapi2");
    assert!(frontend.request_object);
    assert_eq!(frontend.requirements.acr_values(), ["urn:mfa", "urn:hwk"]);
    assert_eq!(
        frontend.requirements.max_age(),
        Some(std::time::Duration::from_secs(600))
    );
    let cases = [
        ("client_secret_env = \"SPA_SECRET\"\ndpop = \"per-session\"\nprofile = \"fapi2\"", "oidc.client_secret_env", 8),
        ("private_key_env = \"KEY\"\nprofile = \"fapi2\"", "oidc.dpop", 0),
        ("private_key_env = \"KEY\"\ndpop = \"none\"\nprofile = \"fapi2\"", "oidc.dpop", 9),
        ("private_key_env = \"RSA\"\nprivate_key_alg = \"RS256\"\ndpop = \"per-session\"\nprofile = \"fapi2\"", "oidc.private_key_alg", 9),
        ("private_key_env = \"KEY\"\ndpop = \"per-session\"\nrequire_dpop = false\nprofile = \"fapi2\"", "oidc.require_dpop", 10),
        ("private_key_env = \"KEY\"\ndpop = \"per-session\"\npushed_authorization = \"when_required\"\nprofile = \"fapi2\"", "oidc.pushed_authorization", 10),
        ("private_key_env = \"KEY\"\ndpop = \"per-session\"\nallow_insecure_http_provider = true\nprofile = \"fapi2\"", "oidc.allow_insecure_http_provider", 10),
        ("private_key_env = \"KEY\"\nprofile = \"fapi3\"", "oidc.profile", 9),
        ("client_secret_env = \"SPA_SECRET\"\nrequest_object = true", "oidc.request_object", 9),
        ("client_secret_env = \"SPA_SECRET\"\nacr_values = \"urn:\\\"quoted\"", "oidc.acr_values", 9),
        ("client_secret_env = \"SPA_SECRET\"\npushed_authorization = \"sometimes\"", "oidc.pushed_authorization", 9),
    ];
    for (extra, key, line) in cases {
        let text = file(extra);
        let e = match BffConfig::parse(&text) {
            Err(e) => e,
            Ok(config) => config.validate(&text, &env).unwrap_err(),
        };
        assert_eq!(e.key, key, "{extra}: {e}");
        if line > 0 {
            assert_eq!(e.line, Some(line), "{extra}: {e}");
        }
    }
}

/// PR-03 with mutual TLS: `tls_client_cert_file` and `tls_client_key_file` (and `tls_ca_file`
/// for a provider on a private CA) make a FAPI 2.0 client without DPoP (`tls_client_auth`,
/// certificate-bound tokens); a half-given pair, an unreadable file, or a secret beside it under
/// fapi2 are refused by key.
#[test]
fn pr_03_fapi2_with_a_client_certificate() {
    use tokenkeeper_testing::mtls::certs;
    let dir = std::env::temp_dir().join(format!("tk-bff-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let (cert, key, ca) = (
        write("worker.pem", certs::WORKER_CERT),
        write("worker.key", certs::WORKER_KEY),
        write("ca.pem", certs::CA),
    );
    let env = |name: &str| (name == "SECRET").then(|| "s".to_owned());
    let file = |extra: &str| {
        format!(
            "[bff]\nlisten = \"127.0.0.1:0\"\npublic_url = \"https://app.example.com\"\n\n[oidc]\nissuer = \"https://idp.example.com\"\nclient_id = \"bank\"\nprofile = \"fapi2\"\n{extra}\n"
        )
    };
    let good = file(&format!(
        "tls_client_cert_file = {cert:?}\ntls_client_key_file = {key:?}\ntls_ca_file = {ca:?}"
    ));
    let validated = BffConfig::parse(&good)
        .unwrap()
        .validate(&good, &env)
        .unwrap();
    let frontend = &validated.frontends[0];
    assert!(frontend.client_tls.is_some());
    assert!(!frontend.dpop_per_session && !frontend.require_dpop);
    assert!(
        frontend.client_secret.is_empty(),
        "tls_client_auth: no secret"
    );
    tokenkeeper_bff::host::build(&validated).unwrap();
    let cases = [
        (format!("tls_client_cert_file = {cert:?}"), "oidc.tls_client_key_file"),
        (format!("tls_client_key_file = {key:?}"), "oidc.tls_client_cert_file"),
        (
            format!("tls_client_cert_file = {cert:?}\ntls_client_key_file = \"/nonexistent\""),
            "oidc.tls_client_cert_file",
        ),
        (
            format!("tls_client_cert_file = {cert:?}\ntls_client_key_file = {key:?}\nclient_secret_env = \"SECRET\""),
            "oidc.client_secret_env",
        ),
        (format!("client_secret_env = \"SECRET\"\ntls_ca_file = {ca:?}"), "oidc.tls_ca_file"),
    ];
    for (extra, expected) in cases {
        let text = file(&extra);
        let e = match BffConfig::parse(&text) {
            Err(e) => e,
            Ok(config) => config.validate(&text, &env).unwrap_err(),
        };
        assert_eq!(e.key, expected, "{extra}: {e}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
