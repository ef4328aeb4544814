//! The provider's userinfo at login (BF-19, with [`crate::UserClaims::userinfo`]): fetched
//! once with the new session's access token (Bearer or DPoP, through the token middleware, so
//! a DPoP-bound token goes with its proof and the provider's nonces), and merged into the
//! session's claims. Its `sub` must be the ID token's (OpenID Connect Core §5.3.2): an answer
//! about someone else refuses the login. The answer is the provider's and hostile until
//! checked: JSON only (a signed userinfo JWT is refused, not guessed at), 1 MiB at most, an
//! object; its claims replace the ID token's of the same name, `sub` excepted.

use http::header;
use serde_json::Value;
use tokenkeeper::{Error, InvalidResponse};

use crate::bff::Bff;
use crate::session::BffSession;

/// The largest userinfo answer read (bytes).
const MAX_BODY: usize = 1024 * 1024;

fn invalid(status: Option<u16>, reason: &str) -> Error {
    Error::InvalidResponse(InvalidResponse::new(status, format!("userinfo: {reason}")))
}

/// Fetches the userinfo of `session` (its tokens already stored) and merges it into its claims.
pub(crate) async fn merge(bff: &Bff, session: &mut BffSession) -> Result<(), Error> {
    let metadata = bff.oidc().provider_metadata().await?;
    let Some(endpoint) = metadata.userinfo_endpoint.clone() else {
        return Err(invalid(None, "the provider has no userinfo_endpoint"));
    };
    let client = reqwest_middleware::ClientBuilder::new(bff.inner.http.clone())
        .with(
            bff.oidc()
                .users()
                .middleware(session.key(), Default::default()),
        )
        .build();
    let mut response = client
        .get(endpoint.as_str())
        .header(header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| match e {
            reqwest_middleware::Error::Middleware(e) => match e.downcast::<Error>() {
                Ok(error) => error,
                Err(other) => invalid(None, &other.to_string()),
            },
            reqwest_middleware::Error::Reqwest(e) => {
                invalid(None, &format!("the request failed: {}", e.without_url()))
            }
        })?;
    let status = response.status().as_u16();
    if status != 200 {
        return Err(invalid(Some(status), "the provider did not answer 200"));
    }
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
        });
    if !json {
        return Err(invalid(
            Some(status),
            "the answer is not application/json (signed userinfo is not supported)",
        ));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|_| invalid(Some(status), "the answer could not be read"))?
    {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(invalid(Some(status), "the answer is larger than 1 MiB"));
        }
        body.extend_from_slice(&chunk);
    }
    let Ok(Value::Object(claims)) = serde_json::from_slice::<Value>(&body) else {
        return Err(invalid(Some(status), "the answer is not a JSON object"));
    };
    if claims.get("sub").and_then(Value::as_str) != Some(session.sub.as_str()) {
        return Err(invalid(
            Some(status),
            "its sub is not the ID token's: the answer is about someone else",
        ));
    }
    for (name, value) in claims {
        if name != "sub" {
            session.claims.insert(name, value);
        }
    }
    Ok(())
}
