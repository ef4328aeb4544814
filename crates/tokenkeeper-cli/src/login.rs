//! `tokenkeeper login --device` (PR-05): a user logs a command line in with the device
//! authorization grant (RFC 8628) — the command prints where to go and the code to enter, polls
//! as the provider says, and writes the tokens to a file only its owner can read, which
//! `tokenkeeper token --tokens-file` refreshes.

use std::path::PathBuf;

use anyhow::Context as _;
use tokenkeeper::user::UserTokenManager;
use tokenkeeper::{AuthMethod, ClientConfig, Grant, Scope, TokenRequest};

use crate::tokens_file::{self, Tokens};

/// Options of `tokenkeeper login`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct LoginArgs {
    /// Log in with the device authorization grant (RFC 8628): the only login of the command
    /// line (it needs no browser on this machine).
    #[arg(long, required = true)]
    pub(crate) device: bool,
    /// The issuer (its endpoints are found by discovery).
    #[arg(long)]
    pub(crate) issuer: String,
    /// The client id (a public client, unless the secret's environment variable is set).
    #[arg(long)]
    pub(crate) client_id: String,
    /// For a confidential client: the environment variable that holds its secret (which must
    /// then be set). Without it the client is public (`none`).
    #[arg(long)]
    pub(crate) client_secret_env: Option<String>,
    /// The scope to ask for.
    #[arg(long, default_value = "openid offline_access")]
    pub(crate) scope: String,
    /// Where to write the tokens (created `0600`; replaced whole).
    #[arg(long)]
    pub(crate) tokens_file: PathBuf,
}

/// A user token manager for `client_id` at `issuer`: confidential when `secret` is given.
pub(crate) fn client(
    issuer: &str,
    client_id: &str,
    secret: Option<String>,
) -> anyhow::Result<UserTokenManager> {
    let config = match secret {
        Some(secret) => ClientConfig::from_issuer(issuer, client_id, secret),
        None => ClientConfig::from_issuer(issuer, client_id, "").auth_method(AuthMethod::None),
    };
    Ok(UserTokenManager::builder(config).build()?)
}

/// The secret from `env`, when set and not empty.
pub(crate) fn secret(env: &str) -> Option<String> {
    std::env::var(env).ok().filter(|s| !s.is_empty())
}

fn now() -> u64 {
    tokenkeeper::Timestamp::system_now().as_millis() / 1000
}

/// Runs the device login; what it prints goes to stderr (stdout stays empty).
pub(crate) async fn run(args: LoginArgs) -> anyhow::Result<()> {
    let secret = match &args.client_secret_env {
        Some(env) => Some(secret(env).with_context(|| {
            format!(
                "the client secret is read from the environment variable {env}, which is not set"
            )
        })?),
        None => None,
    };
    let public = secret.is_none();
    let users = client(&args.issuer, &args.client_id, secret)?;
    let endpoint = users.endpoint();
    let device = endpoint
        .start_device_authorization(&Scope::parse(&args.scope), &[])
        .await
        .context("the provider refused the device authorization")?;
    eprintln!(
        "To sign in, open {} and enter the code {}",
        device.verification_uri, device.user_code
    );
    if let Some(complete) = &device.verification_uri_complete {
        eprintln!("(or open {complete})");
    }
    eprintln!(
        "Waiting for you to sign in (the code is valid for {} s)...",
        device.expires_in.as_secs()
    );
    let response = endpoint
        .poll_device_authorization(&device)
        .await
        .context("the sign-in did not complete")?;
    let mut tokens = Tokens::from_response(&args.issuer, &args.client_id, &response, now(), None);
    tokens.public = public;
    tokens_file::write(&args.tokens_file, &tokens)?;
    eprintln!(
        "Signed in. Tokens written to {}{}",
        args.tokens_file.display(),
        if tokens.refresh_token.is_some() {
            " (`tokenkeeper token --tokens-file` refreshes them)."
        } else {
            " (no refresh token: log in again when the access token expires)."
        }
    );
    Ok(())
}

/// The access token of the tokens file at `path`, refreshed first (and the file rewritten)
/// when it expires within a minute. One refresh at a time per file.
pub(crate) async fn token_from_file(
    path: &std::path::Path,
    secret_env: &str,
) -> anyhow::Result<Tokens> {
    let _lock = tokens_file::lock(path)?;
    let tokens = tokens_file::read(path)?;
    if tokens.fresh(now(), 60) {
        return Ok(tokens);
    }
    let Some(refresh_token) = tokens.refresh_token.clone() else {
        anyhow::bail!(
            "the access token in {} has expired and there is no refresh token: run `tokenkeeper login --device` again",
            path.display()
        );
    };
    let secret = if tokens.public {
        None
    } else {
        Some(secret(secret_env).with_context(|| {
            format!("refreshing needs the client secret, from the environment variable {secret_env} (see --client-secret-env)")
        })?)
    };
    let users = client(&tokens.issuer, &tokens.client_id, secret)?;
    let response = users
        .endpoint()
        .request(&TokenRequest::new(Grant::RefreshToken {
            refresh_token: refresh_token.into(),
        }))
        .await
        .context("refreshing the tokens failed (`tokenkeeper login --device` logs in again)")?;
    let mut fresh = Tokens::from_response(
        &tokens.issuer,
        &tokens.client_id,
        &response,
        now(),
        Some(&tokens),
    );
    fresh.public = tokens.public;
    tokens_file::write(path, &fresh)?;
    Ok(fresh)
}
