//! The `tokenkeeper bff` host: the BFF built from a validated configuration file, with its
//! static files (the SPA, with a fallback to `index.html`).

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokenkeeper::user::UserTokenManager;
use tokenkeeper::{ClientConfig, ClientCredentialsTokenManager, Error};
use tokenkeeper_axum::{Oidc, OidcConfig};

use crate::config::{BffConfig, Validated};
use crate::{Bff, BffSessionStore, InMemoryBffSessionStore};

/// Builds the BFF and its router from `config` (already validated into `validated`).
pub fn build(config: &BffConfig, validated: &Validated) -> Result<(Bff, Router), Error> {
    let issuer = config.oidc.issuer.get_ref().clone();
    let client = ClientConfig::from_issuer(
        issuer.clone(),
        config.oidc.client_id.clone(),
        validated.client_secret.clone(),
    )
    .allow_insecure_http(validated.insecure_http_provider)
    .require_dpop(validated.require_dpop);
    let mut users = UserTokenManager::builder(client);
    if validated.dpop_per_session {
        users = users.per_session_dpop(tokenkeeper::dpop::DpopAlgorithm::ES256);
    }
    #[cfg(feature = "redis")]
    let redis = match &config.redis {
        Some(section) => Some(
            tokenkeeper_redis::RedisTokenCache::new(
                section.url.get_ref(),
                tokenkeeper_redis::RedisOptions {
                    prefix: section
                        .prefix
                        .clone()
                        .unwrap_or_else(|| "tokenkeeper-bff".into()),
                    encryption: match validated.redis_key {
                        Some(key) => Some(tokenkeeper::Encryption::new("k1", &key)?),
                        None => None,
                    },
                    // `validate` allows no key only with `plaintext = true`.
                    plaintext: validated.redis_key.is_none(),
                    ..tokenkeeper_redis::RedisOptions::default()
                },
            )
            .map_err(Error::from)?,
        ),
        None => None,
    };
    #[cfg(not(feature = "redis"))]
    if config.redis.is_some() {
        return Err(Error::Config(tokenkeeper::ConfigError::new(
            "redis",
            "this build has no Redis support (feature `redis`)",
        )));
    }
    #[cfg(feature = "redis")]
    if let Some(redis) = &redis {
        users = users
            .store(Arc::new(tokenkeeper_redis::RedisUserTokenStore::new(redis)))
            .lease(Arc::new(tokenkeeper_redis::RedisLease::new(redis)));
        if validated.dpop_per_session {
            users =
                users.dpop_key_store(Arc::new(tokenkeeper_redis::RedisDpopKeyStore::new(redis)?));
        }
    }
    let mut oidc_config = OidcConfig::new(
        issuer.clone(),
        config.oidc.client_id.clone(),
        validated.client_secret.clone(),
        validated.redirect_uri.clone(),
    );
    if let Some(scope) = &config.oidc.scope {
        oidc_config.scope = tokenkeeper::Scope::parse(scope);
    }
    oidc_config.insecure_cookies = validated.options.insecure_cookies;
    #[allow(unused_mut)]
    let mut oidc = Oidc::new(oidc_config, users.build()?)?;
    #[allow(unused_mut)]
    let mut sessions: Arc<dyn BffSessionStore> = Arc::new(InMemoryBffSessionStore::new());
    #[cfg(feature = "redis")]
    if let Some(redis) = &redis {
        oidc = oidc.with_login_replay_store(Arc::new(
            tokenkeeper_redis::RedisLoginReplayStore::new(redis),
        ));
        sessions = Arc::new(crate::RedisBffSessionStore::new(redis));
    }
    let clients = match (&config.client, &validated.worker_secret) {
        (Some(section), Some(secret)) => {
            let mut worker =
                ClientConfig::from_issuer(issuer, section.client_id.clone(), secret.clone())
                    .allow_insecure_http(validated.insecure_http_provider);
            if let Some(scope) = &section.scope {
                worker = worker.scope(scope.as_str());
            }
            Some(
                ClientCredentialsTokenManager::builder()
                    .client("bff", worker)
                    .build()?,
            )
        }
        _ => None,
    };
    let mut options = validated.options.clone();
    options.routes = validated.routes.clone();
    let bff = Bff::with_store(oidc, options, sessions, clients)?;
    let files = match &config.bff.static_dir {
        Some(dir) => spa(PathBuf::from(dir.get_ref())),
        None => Router::new(),
    };
    Ok((bff, files))
}

/// Serves the files of `dir`; a path that names no file and has no extension gets
/// `index.html` (the SPA's own routes), anything else 404.
pub fn spa(dir: PathBuf) -> Router {
    Router::new().fallback(move |uri: Uri| {
        let dir = dir.clone();
        async move { serve(&dir, uri.path()).await }
    })
}

async fn serve(dir: &Path, path: &str) -> Response {
    let decoded: String = url::form_urlencoded::parse(format!("p={path}").as_bytes())
        .next()
        .map(|(_, v)| v.replace(' ', "+"))
        .unwrap_or_default();
    let relative = Path::new(decoded.trim_start_matches('/'));
    // Only plain names: no `..`, no root, no prefix, no hidden files.
    let safe = relative.components().all(|c| match c {
        Component::Normal(name) => !name.to_string_lossy().starts_with('.'),
        _ => false,
    });
    if !safe && !decoded.trim_start_matches('/').is_empty() {
        return StatusCode::NOT_FOUND.into_response();
    }
    let mut file = dir.join(relative);
    if decoded.trim_start_matches('/').is_empty() || file.is_dir() {
        file = file.join("index.html");
    }
    let fallback = relative.extension().is_none();
    let bytes = match tokio::fs::read(&file).await {
        Ok(bytes) => bytes,
        Err(_) if fallback => match tokio::fs::read(dir.join("index.html")).await {
            Ok(bytes) => {
                file = dir.join("index.html");
                bytes
            }
            Err(_) => return StatusCode::NOT_FOUND.into_response(),
        },
        Err(_) => return StatusCode::NOT_FOUND.into_response(),
    };
    let content_type = match file.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        Body::from(bytes),
    )
        .into_response()
}
