//! Client authentication at the token endpoint (RFC 6749 §2.3).

use std::sync::Arc;

use base64::Engine as _;
use http::HeaderValue;

use crate::error::Error;
use crate::protocol::client_assertion::{
    client_secret_jwt, AssertionContext, ClientAssertionProvider, JWT_BEARER_ASSERTION,
};
use crate::protocol::types::ClientId;
use crate::secret::ClientSecret;

/// How the client authenticates to the token endpoint.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ClientAuthentication {
    /// `client_secret_basic`: HTTP Basic with the form-urlencoded id and secret (RFC 6749
    /// §2.3.1). The secret never goes in the body.
    ClientSecretBasic {
        /// The client id.
        client_id: ClientId,
        /// The client secret.
        client_secret: ClientSecret,
    },
    /// `client_secret_post`: `client_id` and `client_secret` in the form body.
    ClientSecretPost {
        /// The client id.
        client_id: ClientId,
        /// The client secret.
        client_secret: ClientSecret,
    },
    /// A public client (`none`): only `client_id` in the body.
    None {
        /// The client id.
        client_id: ClientId,
    },
    /// `private_key_jwt` (RFC 7523): a fresh signed assertion from the provider for every
    /// request.
    PrivateKeyJwt {
        /// The client id.
        client_id: ClientId,
        /// Signs the assertions.
        provider: Arc<dyn ClientAssertionProvider>,
    },
    /// `client_secret_jwt`: a fresh HS256 assertion with the secret for every request; the
    /// secret itself is never sent.
    ClientSecretJwt {
        /// The client id.
        client_id: ClientId,
        /// The client secret (the HMAC key).
        client_secret: ClientSecret,
    },
    /// `tls_client_auth` or `self_signed_tls_client_auth` (RFC 8705): the TLS client
    /// certificate authenticates; `client_id` goes in the body.
    Tls {
        /// The client id.
        client_id: ClientId,
        /// Which of the two.
        self_signed: bool,
    },
}

/// The authentication method names of RFC 8414 / OIDC Discovery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum AuthMethod {
    /// `client_secret_basic` (the default).
    #[default]
    ClientSecretBasic,
    /// `client_secret_post`.
    ClientSecretPost,
    /// `none`.
    None,
    /// `private_key_jwt`.
    PrivateKeyJwt,
    /// `client_secret_jwt`.
    ClientSecretJwt,
    /// `tls_client_auth` (RFC 8705 §2.1): a certificate from a CA, through
    /// [`ClientConfig::mtls`](crate::ClientConfig::mtls).
    TlsClientAuth,
    /// `self_signed_tls_client_auth` (RFC 8705 §2.2): a self-signed certificate the server has
    /// registered, through [`ClientConfig::mtls`](crate::ClientConfig::mtls).
    SelfSignedTlsClientAuth,
}

impl AuthMethod {
    /// The registered name of the method.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
            Self::None => "none",
            Self::PrivateKeyJwt => "private_key_jwt",
            Self::ClientSecretJwt => "client_secret_jwt",
            Self::TlsClientAuth => "tls_client_auth",
            Self::SelfSignedTlsClientAuth => "self_signed_tls_client_auth",
        }
    }
}

impl ClientAuthentication {
    /// The client id.
    pub fn client_id(&self) -> &ClientId {
        match self {
            Self::ClientSecretBasic { client_id, .. }
            | Self::ClientSecretPost { client_id, .. }
            | Self::None { client_id }
            | Self::PrivateKeyJwt { client_id, .. }
            | Self::ClientSecretJwt { client_id, .. }
            | Self::Tls { client_id, .. } => client_id,
        }
    }

    /// The method.
    pub fn method(&self) -> AuthMethod {
        match self {
            Self::ClientSecretBasic { .. } => AuthMethod::ClientSecretBasic,
            Self::ClientSecretPost { .. } => AuthMethod::ClientSecretPost,
            Self::None { .. } => AuthMethod::None,
            Self::PrivateKeyJwt { .. } => AuthMethod::PrivateKeyJwt,
            Self::ClientSecretJwt { .. } => AuthMethod::ClientSecretJwt,
            Self::Tls {
                self_signed: false, ..
            } => AuthMethod::TlsClientAuth,
            Self::Tls {
                self_signed: true, ..
            } => AuthMethod::SelfSignedTlsClientAuth,
        }
    }

    /// Authenticates a request to the authorization server at `audience` (its token endpoint
    /// URL): adds to `form` what the method puts in the body, and returns the `Authorization`
    /// header to send, if any. Assertions are made fresh, here, for every request (PK-06,
    /// PK-13).
    pub(crate) async fn authenticate(
        &self,
        form: &mut Vec<(String, String)>,
        audience: &str,
    ) -> Result<Option<HeaderValue>, Error> {
        let assertion = match self {
            Self::ClientSecretBasic {
                client_id,
                client_secret,
            } => {
                return Ok(Some(basic_header(
                    client_id.as_str(),
                    client_secret.secret(),
                )))
            }
            Self::ClientSecretPost {
                client_id,
                client_secret,
            } => {
                form.push(("client_id".into(), client_id.as_str().into()));
                form.push(("client_secret".into(), client_secret.secret().into()));
                return Ok(None);
            }
            Self::None { client_id } | Self::Tls { client_id, .. } => {
                form.push(("client_id".into(), client_id.as_str().into()));
                return Ok(None);
            }
            Self::PrivateKeyJwt {
                client_id,
                provider,
            } => {
                let context = AssertionContext {
                    client_id: client_id.as_str(),
                    audience,
                };
                provider.assertion(&context).await?
            }
            Self::ClientSecretJwt {
                client_id,
                client_secret,
            } => {
                let context = AssertionContext {
                    client_id: client_id.as_str(),
                    audience,
                };
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs();
                client_secret_jwt(client_secret, &context, now)?
            }
        };
        form.push(("client_id".into(), self.client_id().as_str().into()));
        form.push(("client_assertion_type".into(), JWT_BEARER_ASSERTION.into()));
        form.push(("client_assertion".into(), assertion));
        Ok(None)
    }
}

/// `Basic base64(urlencode(id) ":" urlencode(secret))`, as RFC 6749 §2.3.1 requires.
pub(crate) fn basic_header(client_id: &str, client_secret: &str) -> HeaderValue {
    let id: String = url::form_urlencoded::byte_serialize(client_id.as_bytes()).collect();
    let secret: String = url::form_urlencoded::byte_serialize(client_secret.as_bytes()).collect();
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}").as_bytes());
    let mut value = HeaderValue::try_from(format!("Basic {encoded}"))
        .unwrap_or_else(|_| HeaderValue::from_static("Basic"));
    value.set_sensitive(true);
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_form_urlencoded_before_base64() {
        let header = basic_header("my client", "p@ss:w/rd+");
        let b64 = header
            .to_str()
            .unwrap_or_default()
            .trim_start_matches("Basic ");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap_or_default();
        assert_eq!(
            String::from_utf8(decoded).unwrap_or_default(),
            "my+client:p%40ss%3Aw%2Frd%2B"
        );
    }
}
