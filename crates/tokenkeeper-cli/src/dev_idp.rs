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
    /// A client, as `ID:SECRET` or `ID:SECRET:REDIRECT_URI`; repeatable (default: `client:secret`).
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
        anyhow::bail!("--client {spec:?}: expected ID:SECRET or ID:SECRET:REDIRECT_URI");
    };
    anyhow::ensure!(
        !id.is_empty() && !secret.is_empty(),
        "--client: the id and the secret must not be empty"
    );
    let client = TestClient::new(id, secret);
    Ok(match parts.next() {
        Some(uri) => {
            url::Url::parse(uri).with_context(|| format!("--client {id}: redirect URI"))?;
            client.redirect_uri(uri)
        }
        None => client,
    })
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
