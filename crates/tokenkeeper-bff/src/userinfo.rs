//! The provider's userinfo at login (BF-19, with [`crate::UserClaims::userinfo`]): fetched
//! once with the new session's access token by the user token manager
//! ([`tokenkeeper::user::UserTokenManager::userinfo`]: Bearer or DPoP with its proof, `sub`
//! must be the ID token's, JSON only) and merged into the session's claims — its claims
//! replace the ID token's of the same name, `sub` excepted.

use tokenkeeper::Error;

use crate::bff::Bff;
use crate::session::BffSession;

/// Fetches the userinfo of `session` (its tokens already stored) and merges it into its claims.
pub(crate) async fn merge(bff: &Bff, session: &mut BffSession) -> Result<(), Error> {
    let claims = bff
        .oidc()
        .users()
        .userinfo(&session.key(), &session.sub)
        .await?;
    for (name, value) in claims {
        if name != "sub" {
            session.claims.insert(name, value);
        }
    }
    Ok(())
}
