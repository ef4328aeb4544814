//! BF-17 in the configuration file: `[[frontends]]`, each with its own public URL (host and
//! path prefix), client, cookie, routes and static files; what cannot work is refused, naming
//! the key and its line.
#![cfg(feature = "config")]
#![allow(clippy::unwrap_used)]

use tokenkeeper_bff::config::{BffConfig, ConfigFileError, Validated};

const TWO: &str = r#"
[bff]
listen = "127.0.0.1:0"

[[frontends]]
name = "shop"
public_url = "https://shop.example.com"
static_dir = "."

[frontends.oidc]
issuer = "https://idp.example.com"
client_id = "shop"
client_secret_env = "SHOP_SECRET"

[[frontends.routes]]
path = "/api"
upstream = "https://orders.internal"

[[frontends]]
name = "admin"
public_url = "https://app.example.com/admin"
cookie_name = "adm"

[frontends.oidc]
issuer = "https://idp.example.com"
client_id = "admin"
client_secret = "inline"

[frontends.claims]
include = ["sub", "groups"]

[[frontends.routes]]
path = "/api"
upstream = "https://admin.internal"
require_claims = { groups = "admin" }

[[frontends.routes]]
path = "/reports"
upstream = "https://reports.internal"
"#;

fn env(name: &str) -> Option<String> {
    match name {
        "SHOP_SECRET" => Some("shop-secret".to_owned()),
        "ADMIN_KEY" => Some(EC_KEY.to_owned()),
        _ => None,
    }
}

fn validate(text: &str) -> Result<Validated, ConfigFileError> {
    BffConfig::parse(text)?.validate(text, &env)
}

/// A P-256 key (PKCS#8), for private_key_jwt.
const EC_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgEErLVVP/XAkiBaaI
wWLQS3NVw5tEWd+UZ6tm7QXlOFmhRANCAASSQXMIbfXShb1s7pu8pg1r03kBfdAj
hJxJaA8N36jkXCRBOAwYHeWNux3kEkxFh+DBumIZQHb7KJt5gPfqSFvd
-----END PRIVATE KEY-----";

#[test]
fn bf_17_each_frontend_has_its_url_match_client_cookie_and_routes() {
    let validated = validate(TWO).unwrap();
    let [shop, admin] = &validated.frontends[..] else {
        panic!("two frontends: {validated:?}");
    };
    assert_eq!(shop.name, "shop");
    assert_eq!(shop.hosts, ["shop.example.com"]);
    assert_eq!(shop.prefix, "");
    assert_eq!(shop.client_secret, "shop-secret");
    assert_eq!(shop.redirect_uri, "https://shop.example.com/bff/callback");
    assert_eq!(shop.options.cookie_name, "bff-shop");
    assert_eq!(shop.options.name, "shop");
    assert_eq!(shop.session_namespace.as_deref(), Some("shop"));
    assert_eq!(shop.routes()[0].path(), "/api");

    // A path prefix: the callback, the management endpoints and the routes are under it.
    assert_eq!(admin.hosts, ["app.example.com"]);
    assert_eq!(admin.prefix, "/admin");
    assert_eq!(admin.options.base_path, "/admin/bff");
    assert_eq!(
        admin.redirect_uri,
        "https://app.example.com/admin/bff/callback"
    );
    assert_eq!(admin.options.cookie_name, "adm");
    let paths: Vec<_> = admin.routes().iter().map(|r| r.path()).collect();
    assert_eq!(paths, ["/admin/api", "/admin/reports"]);
    assert_eq!(admin.options.claims.include, ["sub", "groups"]);
    assert!(shop.options.claims.include.is_empty());
    assert_ne!(shop.fingerprint, admin.fingerprint);

    // The one-frontend file of before is one frontend, `default`, as it always was.
    let one = validate(
        "[bff]\nlisten = \"127.0.0.1:0\"\npublic_url = \"https://app.example.com\"\n[oidc]\nissuer = \"https://idp.example.com\"\nclient_id = \"spa\"\nclient_secret = \"s\"\n",
    )
    .unwrap();
    let default = &one.frontends[0];
    assert_eq!(default.name, "default");
    assert!(default.hosts.is_empty(), "any host");
    assert_eq!(default.options.cookie_name, "bff");
    assert_eq!(default.session_namespace, None);
}

#[test]
fn bf_17_a_frontend_can_authenticate_with_a_private_key() {
    let text = TWO.replace(
        "client_secret = \"inline\"",
        "private_key_env = \"ADMIN_KEY\"\nprivate_key_kid = \"k1\"",
    );
    let validated = validate(&text).unwrap();
    let admin = &validated.frontends[1];
    assert!(admin.client_secret.is_empty());
    let key = admin.client_key.as_ref().unwrap();
    assert_eq!(key.kid.as_deref(), Some("k1"));
    assert!(!format!("{validated:?}").contains("BEGIN PRIVATE KEY"));

    // Both a secret and a key; a key that is not one; an algorithm that does not fit it.
    let both = text.replace(
        "private_key_env = \"ADMIN_KEY\"",
        "private_key_env = \"ADMIN_KEY\"\nclient_secret = \"x\"",
    );
    assert_eq!(
        validate(&both).unwrap_err().key,
        "frontends[1].oidc.client_secret"
    );
    let file = std::env::temp_dir().join(format!("bf17-key-{}.pem", std::process::id()));
    std::fs::write(
        &file,
        "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let bad = text.replace(
        "private_key_env = \"ADMIN_KEY\"",
        &format!("private_key_file = {:?}", file.display().to_string()),
    );
    let e = validate(&bad).unwrap_err();
    assert_eq!(e.key, "frontends[1].oidc.private_key_file", "{e}");
    assert!(!e.to_string().contains("bm90IGEga2V5"), "{e}");
    let rsa = text.replace(
        "private_key_kid = \"k1\"",
        "private_key_kid = \"k1\"\nprivate_key_alg = \"RS256\"",
    );
    let e = validate(&rsa).unwrap_err();
    assert_eq!(e.key, "frontends[1].oidc.private_key_env", "{e}");
    assert!(!e.to_string().contains("MIGHAgEA"), "{e}");
    let _ = std::fs::remove_file(file);
}

#[test]
fn bf_17_what_cannot_work_is_refused_with_the_key_and_line() {
    let line_of =
        |text: &str, needle: &str| text[..text.find(needle).unwrap()].matches('\n').count() + 1;
    for (find, replace, key, needle) in [
        // Top-level sections belong in the frontends.
        (
            "[bff]\nlisten = \"127.0.0.1:0\"\n",
            "[bff]\nlisten = \"127.0.0.1:0\"\n[oidc]\nissuer = \"https://idp.example.com\"\nclient_id = \"x\"\n",
            "oidc",
            "issuer = \"https://idp.example.com\"\nclient_id = \"x\"",
        ),
        (
            "listen = \"127.0.0.1:0\"\n",
            "listen = \"127.0.0.1:0\"\npublic_url = \"https://x.example.com\"\n",
            "bff.public_url",
            "public_url = \"https://x.example.com\"",
        ),
        // Two frontends of one name; answering the same host and prefix; one cookie name.
        ("name = \"admin\"", "name = \"shop\"", "frontends[1].name", "name = \"shop\"\npublic_url = \"https://app"),
        (
            "public_url = \"https://app.example.com/admin\"",
            "public_url = \"https://shop.example.com\"",
            "frontends[1].public_url",
            "public_url = \"https://shop.example.com\"\ncookie_name",
        ),
        (
            "public_url = \"https://app.example.com/admin\"\ncookie_name = \"adm\"",
            "public_url = \"https://shop.example.com/admin\"\ncookie_name = \"bff-shop\"",
            "frontends[1].cookie_name",
            "cookie_name = \"bff-shop\"",
        ),
        // A name, a host, a prefix that cannot be.
        ("name = \"admin\"", "name = \"ad min\"", "frontends[1].name", "name = \"ad min\""),
        (
            "static_dir = \".\"",
            "static_dir = \".\"\nhosts = [\"shop.example.com:443\"]",
            "frontends[0].hosts",
            "hosts = [",
        ),
        (
            "static_dir = \".\"",
            "static_dir = \".\"\nhosts = [\"*\", \"a.example.com\"]",
            "frontends[0].hosts",
            "hosts = [",
        ),
        (
            "https://app.example.com/admin",
            "https://app.example.com/a%2Fb",
            "frontends[1].public_url",
            "public_url = \"https://app.example.com/a%2Fb\"",
        ),
        (
            "https://app.example.com/admin",
            "https://app.example.com/admin?x=1",
            "frontends[1].public_url",
            "public_url = \"https://app.example.com/admin?x=1\"",
        ),
        // Keys inside a frontend's sub-tables name the frontend and the element.
        (
            "upstream = \"https://reports.internal\"",
            "upstream = \"reports\"",
            "frontends[1].routes[1].upstream",
            "upstream = \"reports\"",
        ),
        (
            "upstream = \"https://reports.internal\"",
            "upstream = \"https://reports.internal\"\ncolour = \"blue\"",
            "frontends[1].routes[1].colour",
            "colour = \"blue\"",
        ),
        (
            "client_id = \"admin\"",
            "client_id = \"admin\"\ndpop = \"sometimes\"",
            "frontends[1].oidc.dpop",
            "dpop = \"sometimes\"",
        ),
    ] {
        let text = TWO.replace(find, replace);
        assert_ne!(text, TWO, "{find}");
        let e = validate(&text).unwrap_err();
        assert_eq!(e.key, key, "{find}: {e}");
        assert_eq!(e.line, Some(line_of(&text, needle)), "{find}: {e}");
    }
    // Per-session DPoP keys in a Redis that stores in the clear: refused before building.
    let text = TWO
        .replace(
            "listen = \"127.0.0.1:0\"\n",
            "listen = \"127.0.0.1:0\"\n[redis]\nurl = \"redis://127.0.0.1\"\nplaintext = true\n",
        )
        .replace(
            "client_id = \"admin\"\n",
            "client_id = \"admin\"\ndpop = \"per-session\"\n",
        );
    let e = validate(&text).unwrap_err();
    assert_eq!(e.key, "frontends[1].oidc.dpop", "{e}");
    assert_eq!(
        e.line,
        Some(line_of(&text, "dpop = \"per-session\"")),
        "{e}"
    );
    // Control characters and a 2 MiB name never panic, and are refused.
    for name in ["a\u{1}b".to_owned(), "n".repeat(2 * 1024 * 1024)] {
        let text = TWO.replace("name = \"admin\"", &format!("name = {name:?}"));
        assert!(validate(&text).is_err());
    }
}

/// The README's production `bff.toml` (two frontends, Redis, the operations listener) is a file
/// that validates, with its secrets in the environment.
#[test]
fn bf_17_the_readmes_production_bff_toml_validates() {
    let readme = include_str!("../../../README.md");
    let start = readme
        .find("# bff-production.toml")
        .expect("the README's production bff.toml");
    let text = &readme[start..];
    let text = &text[..text.find("```").unwrap()];
    let dist = std::env::temp_dir().join(format!("tk-readme-prod-{}", std::process::id()));
    for app in ["shop", "admin"] {
        std::fs::create_dir_all(dist.join(app).join("dist")).unwrap();
    }
    let text = text
        .replace(
            "\"shop/dist\"",
            &format!("{:?}", dist.join("shop/dist").display().to_string()),
        )
        .replace(
            "\"admin/dist\"",
            &format!("{:?}", dist.join("admin/dist").display().to_string()),
        );
    let env = |name: &str| match name {
        "SHOP_CLIENT_SECRET" => Some("secret".to_owned()),
        "ADMIN_CLIENT_KEY" => Some(EC_KEY.to_owned()),
        "BFF_REDIS_KEY" => Some("YmZmLWhvc3QtdGVzdC1rZXktMzItYnl0ZXMtbG9uZyE=".to_owned()),
        "BFF_ADMIN_TOKEN" => Some("a".repeat(40)),
        _ => None,
    };
    let validated = BffConfig::parse(&text)
        .unwrap()
        .validate(&text, &env)
        .unwrap();
    let _ = std::fs::remove_dir_all(&dist);
    let names: Vec<_> = validated
        .frontends
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(names, ["shop", "admin"]);
    assert_eq!(validated.frontends[1].prefix, "/admin");
    assert_eq!(validated.frontends[1].routes()[0].path(), "/admin/api");
    assert!(validated.redis.is_some() && validated.admin_token.is_some());
}
