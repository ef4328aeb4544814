//! Login profiles (PR-03): the FAPI 2.0 Security Profile's client rules in one switch.
//!
//! [`Profile::Fapi2`] turns on what the profile asks of a client — pushed authorization
//! requests, PKCE S256 (always on), sender-constrained tokens (DPoP or mTLS), `private_key_jwt`
//! or mTLS client authentication with the issuer as the assertions' audience, the RFC 9207
//! `iss` check on every callback, PS256/ES256/EdDSA only (ID tokens, client assertions, DPoP
//! proofs), and no Bearer fallback when the provider ignores a DPoP proof — and refuses, naming
//! the setting, every configuration that contradicts it.

use std::fmt;

use crate::error::ConfigError;
use crate::protocol::client_auth::AuthMethod;

/// The JWS algorithms FAPI 2.0 allows (Security Profile §5.4.1).
pub const FAPI2_ALGORITHMS: [&str; 3] = ["PS256", "ES256", "EdDSA"];

/// A login profile.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Profile {
    /// No profile: the settings as configured (authorization code + PKCE + nonce, `iss`
    /// checked when the provider says it sends it).
    #[default]
    Default,
    /// The FAPI 2.0 Security Profile (its client rules; see the module).
    Fapi2,
}

impl Profile {
    /// Reads `default` or `fapi2`.
    pub fn parse(value: &str) -> Result<Self, ConfigError> {
        match value {
            "default" => Ok(Self::Default),
            "fapi2" => Ok(Self::Fapi2),
            other => Err(ConfigError::new(
                "profile",
                format!(
                    "{:?} is not a profile (default, fapi2)",
                    crate::error::sanitize(other, 40)
                ),
            )),
        }
    }

    /// The name (`default`, `fapi2`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::Fapi2 => "fapi2",
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When authorization requests are pushed (RFC 9126).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum PushedAuthorization {
    /// When the provider requires it of every client (`require_pushed_authorization_requests`
    /// in its metadata) — the default. A provider that requires it of this client only (client
    /// metadata the client cannot read) refuses the unpushed request in the browser: set
    /// [`PushedAuthorization::Always`] for such a client.
    #[default]
    WhenRequired,
    /// Always (the provider must publish a `pushed_authorization_request_endpoint`).
    Always,
}

impl PushedAuthorization {
    /// Reads `when_required` or `always`.
    pub fn parse(value: &str) -> Result<Self, ConfigError> {
        match value {
            "when_required" => Ok(Self::WhenRequired),
            "always" => Ok(Self::Always),
            other => Err(ConfigError::new(
                "pushed_authorization",
                format!(
                    "{:?} is not a choice (when_required, always)",
                    crate::error::sanitize(other, 40)
                ),
            )),
        }
    }
}

/// What the FAPI 2.0 check looks at: the client's settings as configured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientFacts<'a> {
    pub(crate) auth_method: AuthMethod,
    /// The client assertion key's algorithm, when the provider tells.
    pub(crate) assertion_algorithm: Option<&'a str>,
    /// The DPoP algorithm (a client key's or the per-session keys'), when DPoP is on.
    pub(crate) dpop_algorithm: Option<&'a str>,
    /// Whether the client has a TLS certificate (mTLS-bound tokens).
    pub(crate) mtls: bool,
    /// The pushed-authorization choice, when one was made explicitly.
    pub(crate) pushed: Option<PushedAuthorization>,
    /// The request object signer's algorithm, when request objects are on and it tells.
    pub(crate) request_object_algorithm: Option<&'a str>,
}

/// Refuses, naming the setting, a client configuration that contradicts FAPI 2.0.
pub(crate) fn check_fapi2(facts: &ClientFacts<'_>) -> Result<(), ConfigError> {
    let refuse = |key: &'static str, why: String| Err(ConfigError::new(key, why));
    match facts.auth_method {
        AuthMethod::PrivateKeyJwt | AuthMethod::TlsClientAuth | AuthMethod::SelfSignedTlsClientAuth => {}
        other => {
            return refuse(
                "auth_method",
                format!(
                    "is {}, but profile fapi2 allows only private_key_jwt, tls_client_auth or self_signed_tls_client_auth",
                    other.as_str()
                ),
            )
        }
    }
    if let Some(alg) = facts
        .assertion_algorithm
        .filter(|a| !FAPI2_ALGORITHMS.contains(a))
    {
        return refuse(
            "private_key_jwt",
            format!("the client key's algorithm is {alg}, but profile fapi2 allows only PS256, ES256 or EdDSA"),
        );
    }
    if let Some(alg) = facts
        .request_object_algorithm
        .filter(|a| !FAPI2_ALGORITHMS.contains(a))
    {
        return refuse(
            "request_object",
            format!("the request object key's algorithm is {alg}, but profile fapi2 allows only PS256, ES256 or EdDSA"),
        );
    }
    match facts.dpop_algorithm {
        Some(alg) if !FAPI2_ALGORITHMS.contains(&alg) => {
            return refuse(
                "dpop",
                format!("the DPoP algorithm is {alg}, but profile fapi2 allows only PS256, ES256 or EdDSA"),
            )
        }
        Some(_) => {}
        None if facts.mtls => {}
        None => {
            return refuse(
                "dpop",
                "profile fapi2 needs sender-constrained tokens: turn on DPoP, or give the client a TLS certificate (mTLS)".into(),
            )
        }
    }
    if facts.pushed == Some(PushedAuthorization::WhenRequired) {
        return refuse(
            "pushed_authorization",
            "is when_required, but profile fapi2 pushes every authorization request (leave it unset or set always)".into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> ClientFacts<'static> {
        ClientFacts {
            auth_method: AuthMethod::PrivateKeyJwt,
            assertion_algorithm: Some("ES256"),
            dpop_algorithm: Some("ES256"),
            mtls: false,
            pushed: None,
            request_object_algorithm: None,
        }
    }

    #[test]
    fn pr_03_fapi2_refuses_contradicting_settings_naming_the_key() {
        assert!(check_fapi2(&facts()).is_ok());
        assert!(check_fapi2(&ClientFacts {
            auth_method: AuthMethod::TlsClientAuth,
            assertion_algorithm: None,
            dpop_algorithm: None,
            mtls: true,
            ..facts()
        })
        .is_ok());
        let cases: [(ClientFacts<'static>, &str); 6] = [
            (
                ClientFacts {
                    auth_method: AuthMethod::ClientSecretBasic,
                    ..facts()
                },
                "auth_method",
            ),
            (
                ClientFacts {
                    auth_method: AuthMethod::ClientSecretJwt,
                    ..facts()
                },
                "auth_method",
            ),
            (
                ClientFacts {
                    assertion_algorithm: Some("RS256"),
                    ..facts()
                },
                "private_key_jwt",
            ),
            (
                ClientFacts {
                    dpop_algorithm: Some("ES384"),
                    ..facts()
                },
                "dpop",
            ),
            (
                ClientFacts {
                    dpop_algorithm: None,
                    ..facts()
                },
                "dpop",
            ),
            (
                ClientFacts {
                    pushed: Some(PushedAuthorization::WhenRequired),
                    ..facts()
                },
                "pushed_authorization",
            ),
        ];
        for (facts, key) in cases {
            let e = check_fapi2(&facts).expect_err(key);
            assert!(e.to_string().contains(key), "{e}");
        }
        assert!(Profile::parse("fapi1").is_err());
        assert_eq!(Profile::parse("fapi2").ok(), Some(Profile::Fapi2));
    }
}
