//! Signed request objects (RFC 9101, PR-02): the authorization request's parameters as the
//! claims of a JWT signed with the client's key, sent by value (`request`) — in the browser's
//! URL or pushed (RFC 9126). The provider then knows the request came from the client and
//! was not changed on the way.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::error::Error;
use crate::protocol::client_assertion::ClientAssertionProvider;

/// The `typ` of a request object (RFC 9101 §10.8).
pub const REQUEST_OBJECT_TYPE: &str = "oauth-authz-req+jwt";

/// How long a request object is valid: FAPI 2.0 allows at most 60 minutes between `nbf` and
/// `exp`; a login needs much less.
pub const REQUEST_OBJECT_LIFETIME: Duration = Duration::from_secs(300);

/// The request object's claims: every parameter (repeated ones — `resource` — as an array,
/// `max_age` as a number), then `iss` (the client), `aud` (the issuer), `client_id`, `iat`,
/// `nbf`, `exp` and a fresh `jti`.
pub fn claims(
    client_id: &str,
    issuer: &str,
    params: &[(String, String)],
    now_secs: u64,
) -> Result<Value, Error> {
    let mut claims = Map::new();
    for (name, value) in params {
        let value = match name.as_str() {
            "max_age" => value
                .parse::<u64>()
                .map(Value::from)
                .unwrap_or_else(|_| Value::from(value.clone())),
            _ => Value::from(value.clone()),
        };
        match claims.get_mut(name) {
            Some(Value::Array(values)) => values.push(value),
            Some(first) => {
                let first = first.take();
                claims.insert(name.clone(), Value::Array(vec![first, value]));
            }
            None => {
                claims.insert(name.clone(), value);
            }
        }
    }
    claims.insert("client_id".into(), client_id.into());
    claims.insert("iss".into(), client_id.into());
    claims.insert("aud".into(), issuer.into());
    claims.insert("iat".into(), now_secs.into());
    claims.insert("nbf".into(), now_secs.into());
    claims.insert(
        "exp".into(),
        (now_secs + REQUEST_OBJECT_LIFETIME.as_secs()).into(),
    );
    claims.insert(
        "jti".into(),
        crate::protocol::authorization::random_token(18)?.into(),
    );
    Ok(Value::Object(claims))
}

/// Signs `params` into a request object with `signer` (the client's key).
pub async fn sign(
    signer: &dyn ClientAssertionProvider,
    client_id: &str,
    issuer: &str,
    params: &[(String, String)],
    now_secs: u64,
) -> Result<String, Error> {
    let claims = claims(client_id, issuer, params, now_secs)?;
    signer.sign_jwt(REQUEST_OBJECT_TYPE, &claims).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pr_02_claims_carry_every_parameter_and_the_jwt_claims() {
        let params: Vec<(String, String)> = [
            ("response_type", "code"),
            ("resource", "https://a.example"),
            ("resource", "https://b.example"),
            ("max_age", "60"),
            ("state", "s"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let claims =
            claims("web", "https://idp.example", &params, 1000).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            claims["resource"],
            serde_json::json!(["https://a.example", "https://b.example"])
        );
        assert_eq!(claims["max_age"], 60);
        assert_eq!(claims["iss"], "web");
        assert_eq!(claims["aud"], "https://idp.example");
        assert_eq!(
            claims["exp"].as_u64().unwrap_or_default() - claims["nbf"].as_u64().unwrap_or_default(),
            300
        );
        assert!(claims["jti"].as_str().is_some_and(|j| j.len() >= 24));
    }
}
