//! `tokenkeeper token`: fetch a client-credentials token and print it.

use anyhow::Context as _;
use tokenkeeper::{AuthMethod, ClientConfig, ClientCredentialsTokenManager, TokenRequestParams};

/// How the client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum Auth {
    /// `client_secret_basic`: HTTP Basic.
    Basic,
    /// `client_secret_post`: the secret in the form body.
    Post,
}

/// Options of `tokenkeeper token`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct TokenArgs {
    /// The issuer: the token endpoint is found by discovery.
    #[arg(
        long,
        required_unless_present_any = ["token_endpoint", "tokens_file"],
        conflicts_with = "token_endpoint"
    )]
    pub(crate) issuer: Option<String>,
    /// The token endpoint URL (instead of --issuer).
    #[arg(long)]
    pub(crate) token_endpoint: Option<String>,
    /// The client id.
    #[arg(long, required_unless_present = "tokens_file")]
    pub(crate) client_id: Option<String>,
    /// Print the access token of a user's login (`tokenkeeper login --device`) from this file
    /// instead, refreshing it first (and rewriting the file) when it expires within a minute.
    #[arg(long, conflicts_with_all = ["issuer", "token_endpoint", "client_id", "scope", "resources", "client_key", "dpop_key"])]
    pub(crate) tokens_file: Option<std::path::PathBuf>,
    /// The environment variable that holds the client secret. The secret is not taken on the
    /// command line, where shell history and `ps` would keep it.
    #[arg(long, default_value = "TOKENKEEPER_CLIENT_SECRET")]
    pub(crate) client_secret_env: String,
    /// The scope to ask for (space-separated).
    #[arg(long)]
    pub(crate) scope: Option<String>,
    /// A resource indicator (RFC 8707); repeatable.
    #[arg(long = "resource")]
    pub(crate) resources: Vec<String>,
    /// Client authentication.
    #[arg(long, value_enum, default_value = "basic")]
    pub(crate) auth: Auth,
    /// Print JSON (`access_token`, `token_type`, `scope`, `expires_in`, and `expires_at`: the
    /// token's real expiry in seconds since the epoch, `null` when the server did not say)
    /// instead of the bare token.
    #[arg(long)]
    pub(crate) json: bool,
    /// Authenticate with private_key_jwt, signing with this key file (from `dpop keygen`); no
    /// secret is needed then.
    #[arg(long)]
    pub(crate) client_key: Option<std::path::PathBuf>,
    /// The algorithm of --client-key.
    #[arg(long, default_value = "ES256")]
    pub(crate) client_key_alg: String,
    /// Ask for a DPoP-bound token (RFC 9449), proving possession of this key file (from
    /// `dpop keygen`); the server must bind the token (a Bearer answer is an error). Present it
    /// with `tokenkeeper dpop proof --token ...`.
    #[arg(long)]
    pub(crate) dpop_key: Option<std::path::PathBuf>,
    /// The algorithm of --dpop-key.
    #[arg(long, default_value = "ES256")]
    pub(crate) dpop_key_alg: String,
    /// Print the token's claims (a JWT's payload, not verified) instead of the token.
    #[arg(long, conflicts_with = "json")]
    pub(crate) decode: bool,
}

/// Fetches the token; returns what to print.
pub(crate) async fn run(args: TokenArgs) -> anyhow::Result<String> {
    if let Some(path) = &args.tokens_file {
        let tokens = crate::login::token_from_file(path, &args.client_secret_env).await?;
        return print(
            &args,
            &tokens.access_token,
            &tokens.token_type,
            tokens.scope.clone(),
            tokens.expires_at.map(|at| {
                at.saturating_sub(tokenkeeper::Timestamp::system_now().as_millis() / 1000)
            }),
            tokens.expires_at,
        );
    }
    let client_id = args.client_id.clone().unwrap_or_default();
    let secret = match &args.client_key {
        Some(_) => String::new(),
        None => std::env::var(&args.client_secret_env).with_context(|| {
            format!(
                "the client secret is read from the environment variable {} (see --client-secret-env)",
                args.client_secret_env
            )
        })?,
    };
    let mut config = match (&args.issuer, &args.token_endpoint) {
        (Some(issuer), _) => ClientConfig::from_issuer(issuer.as_str(), &client_id, secret),
        (None, Some(endpoint)) => ClientConfig::new(endpoint.as_str(), &client_id, secret),
        (None, None) => anyhow::bail!("give --issuer or --token-endpoint"),
    };
    config = match &args.client_key {
        Some(path) => {
            let key = crate::dpop::read_key(path, &args.client_key_alg)?;
            config.private_key_jwt(std::sync::Arc::new(tokenkeeper::PrivateKeyJwt::new(key)))
        }
        None => config.auth_method(match args.auth {
            Auth::Basic => AuthMethod::ClientSecretBasic,
            Auth::Post => AuthMethod::ClientSecretPost,
        }),
    };
    if let Some(path) = &args.dpop_key {
        let key = crate::dpop::read_key(path, &args.dpop_key_alg)?;
        config = config.dpop(std::sync::Arc::new(key)).require_dpop(true);
    }
    if let Some(scope) = &args.scope {
        config = config.scope(scope.as_str());
    }
    for resource in &args.resources {
        config = config.resource(resource.as_str());
    }
    let tokens = ClientCredentialsTokenManager::builder()
        .client("cli", config)
        .build()?;
    // One request, its response as the server sent it: `expires_at` is the token's real
    // expiry (issued now + `expires_in`), not the time a cache would refresh it (UX-04).
    let issued = tokenkeeper::Timestamp::system_now();
    let response = tokens
        .request_token("cli", &TokenRequestParams::default())
        .await?;
    print(
        &args,
        response.access_token.secret(),
        &response.token_type.to_string(),
        response.scope.as_ref().map(ToString::to_string),
        response.expires_in.map(|d| d.as_secs()),
        response
            .expires_in
            .map(|d| issued.saturating_add(d).as_millis() / 1000),
    )
}

/// What `token` prints: the bare token, its claims (`--decode`) or JSON (`--json`).
fn print(
    args: &TokenArgs,
    access_token: &str,
    token_type: &str,
    scope: Option<String>,
    expires_in: Option<u64>,
    expires_at: Option<u64>,
) -> anyhow::Result<String> {
    if args.decode {
        let payload = access_token
            .split('.')
            .nth(1)
            .context("the token is not a JWT: nothing to decode")?;
        use base64::Engine as _;
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .context("the token's payload is not base64url")?;
        let claims: serde_json::Value =
            serde_json::from_slice(&json).context("the token's payload is not JSON")?;
        return Ok(serde_json::to_string_pretty(&claims)?);
    }
    if !args.json {
        return Ok(access_token.to_owned());
    }
    let json = serde_json::json!({
        "access_token": access_token,
        "token_type": token_type,
        "scope": scope,
        "expires_in": expires_in,
        "expires_at": expires_at,
    });
    Ok(serde_json::to_string_pretty(&json)?)
}
