//! Completing a login: the code exchange, the ID token check and storing the session's tokens,
//! in one call.

use std::sync::Arc;

use crate::dpop::DpopKey;
use crate::error::{ConfigError, Error};
use crate::protocol::id_token::{IdTokenClaims, IdTokenValidator};
use crate::protocol::step_up::AuthenticationRequirements;
use crate::protocol::token_request::{Grant, TokenRequest};
use crate::protocol::token_response::TokenResponse;
use crate::protocol::types::Resource;
use crate::secret::IdToken;

use super::manager::UserTokenManager;
use super::store::SessionKey;

/// What the application kept from the authorization request, to complete the login on the
/// callback (`state` is checked by the caller before this is used). `Debug` shows none of the
/// code, verifier or nonce.
#[derive(Clone)]
pub struct LoginRequest<'a> {
    /// The `code` of the callback.
    pub code: &'a str,
    /// The PKCE verifier of the authorization request.
    pub code_verifier: &'a str,
    /// The redirect URI of the authorization request.
    pub redirect_uri: &'a str,
    /// The `nonce` of the authorization request.
    pub nonce: &'a str,
    /// The resource asked for at login, if any (repeated at the code exchange).
    pub resource: Option<&'a Resource>,
    /// The login's DPoP key ([`UserTokenManager::new_login_dpop`]), whose thumbprint was the
    /// authorization request's `dpop_jkt`: the code exchange proves that key, and the
    /// session's tokens are bound to it. `None` without DPoP.
    pub dpop: Option<&'a LoginDpop>,
    /// What the login asked of the user's authentication (`acr_values`, `max_age`): the ID
    /// token's `acr` and `auth_time` must meet it (PR-04). `None`: nothing asked.
    pub requirements: Option<&'a AuthenticationRequirements>,
}

impl std::fmt::Debug for LoginRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRequest")
            .field("redirect_uri", &self.redirect_uri)
            .field("resource", &self.resource)
            .field("dpop", &self.dpop)
            .finish_non_exhaustive()
    }
}

/// The DPoP key of a login in progress ([`UserTokenManager::new_login_dpop`]): its thumbprint
/// (the authorization request's `dpop_jkt`) and, with per-session keys, the private key itself,
/// which the caller keeps — sealed — until the callback (SEC-13: nothing is stored for a login
/// that is never completed). `Debug` shows the thumbprint only.
#[derive(Clone)]
pub struct LoginDpop {
    pub(crate) jkt: String,
    pub(crate) key: Option<Arc<DpopKey>>,
}

impl std::fmt::Debug for LoginDpop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginDpop")
            .field("jkt", &self.jkt)
            .field("per_session", &self.key.is_some())
            .finish()
    }
}

impl LoginDpop {
    /// The key's RFC 7638 thumbprint: the authorization request's `dpop_jkt`.
    pub fn jkt(&self) -> &str {
        &self.jkt
    }

    /// The login key as bytes, to keep until the callback. With per-session keys this holds
    /// the **private key**: seal it (`tokenkeeper-axum` seals it into the login cookie).
    ///
    /// ```
    /// # fn main() -> Result<(), tokenkeeper::Error> {
    /// use tokenkeeper::user::LoginDpop;
    /// # let manager = tokenkeeper::user::UserTokenManager::builder(
    /// #     tokenkeeper::ClientConfig::new("https://idp.example.com/token", "app", "secret"))
    /// #     .per_session_dpop(tokenkeeper::dpop::DpopAlgorithm::ES256).build()?;
    /// let login = manager.new_login_dpop()?.expect("DPoP is on");
    /// let again = LoginDpop::from_bytes(&login.to_bytes()?)?;
    /// assert_eq!(again.jkt(), login.jkt());
    /// # Ok(()) }
    /// ```
    pub fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        use base64::Engine as _;
        let mut value = serde_json::json!({ "jkt": self.jkt });
        if let Some(key) = &self.key {
            value["alg"] = key.algorithm().as_str().into();
            value["key"] = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(key.to_pkcs8_der()?)
                .into();
        }
        serde_json::to_vec(&value).map_err(|e| Error::Internal(e.to_string()))
    }

    /// Reads [`LoginDpop::to_bytes`] back; a key whose thumbprint is not the recorded one is
    /// refused.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        use base64::Engine as _;
        let bad =
            |reason: &str| Error::ReauthenticationRequired(format!("login DPoP key: {reason}"));
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|_| bad("not readable"))?;
        let jkt = value["jkt"]
            .as_str()
            .filter(|j| !j.is_empty() && j.len() <= 128)
            .ok_or_else(|| bad("no thumbprint"))?
            .to_owned();
        let key = match (value["alg"].as_str(), value["key"].as_str()) {
            (Some(alg), Some(key)) => {
                let alg = crate::dpop::DpopAlgorithm::parse(alg).map_err(|_| bad("algorithm"))?;
                let der = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(key)
                    .map_err(|_| bad("not base64url"))?;
                let key = DpopKey::from_pkcs8_der(&der, alg).map_err(|_| bad("not a key"))?;
                if key.thumbprint() != jkt {
                    return Err(bad("thumbprint mismatch"));
                }
                Some(Arc::new(key))
            }
            (None, None) => None,
            _ => return Err(bad("incomplete")),
        };
        Ok(Self { jkt, key })
    }
}

/// A completed login. `Debug` shows the session key's hash only (SEC-25).
#[derive(Clone)]
#[non_exhaustive]
pub struct Login {
    /// The key of this login's tokens ([`SessionKey::for_login`]): `sub`, `sid` and a login id
    /// of its own.
    pub session: SessionKey,
    /// `sub`.
    pub sub: String,
    /// The provider's `sid`, or — when it sends none — a random one of ours (never the web
    /// session's id, which is a cookie's secret and would end up in logout URLs).
    pub sid: String,
    /// The validated ID token's claims.
    pub claims: IdTokenClaims,
    /// The ID token (for RP-initiated logout's `id_token_hint`).
    pub id_token: IdToken,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

impl UserTokenManager {
    /// Completes a login: exchanges the code (with the PKCE verifier), validates the ID token
    /// (signature against the issuer's JWKS, `iss`, `aud`, `azp`, `exp`, `iat`, `nonce`:
    /// see [`IdTokenValidator`]), and stores the tokens under the session's key. If the ID token
    /// is refused after the code exchange succeeded, the tokens received are revoked (SEC-03)
    /// and the error is returned.
    ///
    /// The manager must be built from the issuer ([`crate::ClientConfig::from_issuer`]): the
    /// JWKS is found by discovery. The caller checks `state` (and RFC 9207 `iss`) on the
    /// callback first; `tokenkeeper-axum` does all of it.
    pub async fn complete_login(&self, request: &LoginRequest<'_>) -> Result<Login, Error> {
        let mut token_request = TokenRequest::new(Grant::AuthorizationCode {
            code: request.code.to_owned(),
            redirect_uri: request.redirect_uri.to_owned(),
            code_verifier: Some(request.code_verifier.to_owned()),
        });
        if let Some(resource) = request.resource {
            token_request = token_request.resource(resource.clone());
        }
        let key = self.login_dpop_key(request.dpop)?;
        let response = self
            .endpoint()
            .request_with(&token_request, key.as_deref())
            .await?;
        // The key the session's tokens are bound to (none when the server issued Bearer tokens).
        let bound = key.filter(|_| response.token_type == crate::protocol::types::TokenType::DPoP);
        let checked = match self
            .check_id_token(&response, request.nonce, request.requirements)
            .await
        {
            Ok(checked) => checked,
            Err(refused) => {
                let revocation = self.revoke_response(&response).await;
                tracing::debug!(
                    revoked = revocation.succeeded(),
                    "the tokens of a refused login were revoked"
                );
                return Err(refused);
            }
        };
        let (claims, id_token) = checked;
        let sid = match claims.sid.clone() {
            Some(sid) => sid,
            None => crate::protocol::authorization::random_token(16)?,
        };
        // One record per login (SEC-14): a second login in the same provider session (same
        // `sid`) gets tokens of its own, and ending one leaves the other alone.
        let session = SessionKey::for_login(&claims.sub, &sid)?;
        if let Some(key) = &bound {
            self.keep_session_key(key).await?;
        }
        let jkt = bound.map(|key| key.thumbprint().to_owned());
        self.store_login_bound(&session, &response, request.resource, jkt)
            .await?;
        Ok(Login {
            session,
            sub: claims.sub.clone(),
            sid,
            claims,
            id_token,
        })
    }

    async fn check_id_token(
        &self,
        response: &TokenResponse,
        nonce: &str,
        requirements: Option<&AuthenticationRequirements>,
    ) -> Result<(IdTokenClaims, IdToken), Error> {
        let id_token = response
            .id_token
            .clone()
            .ok_or_else(|| Error::InvalidIdToken("no id_token in the token response".into()))?;
        let validator = self.id_token_validator().await?;
        let claims = validator.validate(id_token.secret(), Some(nonce)).await?;
        if let Some(requirements) = requirements {
            let now = self.clock().now().as_millis() / 1000;
            requirements.check(&claims.all, now, validator.leeway())?;
        }
        Ok((claims, id_token))
    }

    /// The validator of this client's ID tokens (keys from the issuer's `jwks_uri`).
    pub async fn id_token_validator(&self) -> Result<&Arc<IdTokenValidator>, Error> {
        let discovery = self.endpoint().discovery().cloned().ok_or_else(|| {
            Error::Config(ConfigError::new(
                "client",
                "validating ID tokens needs a manager built from the issuer (ClientConfig::from_issuer)",
            ))
        })?;
        self.validator_cell()
            .get_or_try_init(|| async {
                let metadata = discovery.metadata().await?;
                let jwks_uri = metadata.jwks_uri.clone().ok_or_else(|| Error::Discovery {
                    issuer: discovery.issuer().to_owned(),
                    reason: "no jwks_uri".into(),
                })?;
                let validator = IdTokenValidator::new(
                    discovery.issuer(),
                    self.endpoint().authentication().client_id().as_str(),
                    jwks_uri,
                    self.transport().clone(),
                    self.clock().clone(),
                );
                let validator = if self.profile() == crate::protocol::profile::Profile::Fapi2 {
                    use jsonwebtoken::Algorithm;
                    validator.with_algorithms(&[
                        Algorithm::PS256,
                        Algorithm::ES256,
                        Algorithm::EdDSA,
                    ])
                } else {
                    validator
                };
                Ok::<_, Error>(Arc::new(validator))
            })
            .await
    }
}
