//! `tokenkeeper dev-idp`: the in-process test authorization server as a standalone development
//! identity provider.

use std::net::SocketAddr;

use anyhow::Context as _;
use tokenkeeper_testing::{TestClient, TestServer};

/// Options of `tokenkeeper dev-idp`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct DevIdpArgs {
    /// The address to listen on (port 0: any free port; the issuer line says which).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub(crate) bind: SocketAddr,
    /// A client, as `ID:SECRET`, `ID:SECRET:REDIRECT_URI`, `ID:jwk=FILE` for a client that
    /// authenticates with private_key_jwt, verified with the key in FILE (a public JWK, or a key
    /// file from `dpop keygen`, whose public half is used), or `ID:public` for a public client
    /// (no secret: a command line's device login); repeatable (default: `client:secret`).
    #[arg(long = "client")]
    pub(crate) clients: Vec<String>,
    /// The user every authorization request logs in as (there is no login page).
    #[arg(long, default_value = "alice")]
    pub(crate) user: String,
    /// The lifetime (`expires_in`) of issued access tokens, in seconds.
    #[arg(long, default_value_t = 3600)]
    pub(crate) token_lifetime: u64,
}

fn parse_client(spec: &str) -> anyhow::Result<TestClient> {
    let mut parts = spec.splitn(3, ':');
    let (Some(id), Some(secret)) = (parts.next(), parts.next()) else {
        anyhow::bail!(
            "--client {spec:?}: expected ID:SECRET, ID:SECRET:REDIRECT_URI, ID:jwk=FILE or ID:public"
        );
    };
    anyhow::ensure!(
        !id.is_empty() && !secret.is_empty(),
        "--client: the id and the secret must not be empty"
    );
    if secret == "public" {
        anyhow::ensure!(
            parts.next().is_none(),
            "--client {id}:public takes no redirect URI"
        );
        return Ok(TestClient::new(id, "").public());
    }
    if let Some(file) = secret.strip_prefix("jwk=") {
        anyhow::ensure!(
            parts.next().is_none(),
            "--client {id}:jwk=FILE takes no redirect URI"
        );
        return Ok(TestClient::new(id, "").private_key_jwt(public_jwk(id, file)?));
    }
    let client = TestClient::new(id, secret);
    Ok(match parts.next() {
        Some(uri) => {
            url::Url::parse(uri).with_context(|| format!("--client {id}: redirect URI"))?;
            client.redirect_uri(uri)
        }
        None => client,
    })
}

/// The public JWK of `--client ID:jwk=FILE`: the file's JWK (its public members only), or the
/// public half of a PEM key file.
fn public_jwk(id: &str, file: &str) -> anyhow::Result<serde_json::Value> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("--client {id}:jwk={file}: cannot read the file"))?;
    if text.trim_start().starts_with('{') {
        let mut jwk: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text)
            .with_context(|| format!("--client {id}:jwk={file}: not a JWK (JSON)"))?;
        // A private JWK would do too: only its public members are kept.
        for private in ["d", "p", "q", "dp", "dq", "qi", "oth", "k"] {
            jwk.remove(private);
        }
        anyhow::ensure!(
            jwk.contains_key("kty"),
            "--client {id}:jwk={file}: the JWK has no kty"
        );
        return Ok(serde_json::Value::Object(jwk));
    }
    use tokenkeeper::dpop::{DpopAlgorithm, DpopKey};
    for alg in [
        DpopAlgorithm::ES256,
        DpopAlgorithm::ES384,
        DpopAlgorithm::EdDSA,
        DpopAlgorithm::PS256,
    ] {
        if let Ok(key) = DpopKey::from_pem(&text, alg) {
            let mut jwk = key.public_jwk().clone();
            jwk.insert("alg".into(), alg.as_str().into());
            return Ok(serde_json::Value::Object(jwk));
        }
    }
    anyhow::bail!(
        "--client {id}:jwk={file}: neither a JWK nor a PEM key (ES256, ES384, EdDSA, PS256)"
    )
}

/// Starts the server and returns it with the banner to print.
pub(crate) async fn start(args: &DevIdpArgs) -> anyhow::Result<(TestServer, String)> {
    let specs = if args.clients.is_empty() {
        vec!["client:secret".to_owned()]
    } else {
        args.clients.clone()
    };
    let mut builder = TestServer::builder()
        .bind(args.bind)
        .expires_in(Some(args.token_lifetime));
    let mut ids = Vec::new();
    for spec in &specs {
        let client = parse_client(spec)?;
        ids.push(spec.split(':').next().unwrap_or_default().to_owned());
        builder = builder.client(client);
    }
    let server = builder.try_start().await?;
    server.set_login(Some(&args.user));
    // Device logins poll every second (a development loop; providers usually say 5 s).
    server.set_device_timing(1, 600);
    let issuer = server.issuer().to_owned();
    let banner = format!(
        "issuer: {issuer}\n\
         discovery: {issuer}/.well-known/openid-configuration\n\
         token endpoint: {}\n\
         clients: {}\n\
         every authorization request logs in as {:?}, without a login page: for development only\n\
         Ctrl-C stops it.",
        server.token_endpoint(),
        ids.join(", "),
        args.user
    );
    Ok((server, banner))
}
