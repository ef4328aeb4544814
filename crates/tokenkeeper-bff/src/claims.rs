//! What `GET {base}/user` shows of the user's claims (BF-19).
//!
//! The session keeps the ID token's claims as the provider sent them; the SPA sees them shaped:
//!
//! 0. with [`UserClaims::userinfo`], the provider's userinfo was merged into them at login;
//! 1. the protocol claims ([`PROTOCOL_CLAIMS`]: `iss`, `aud`, `exp`, `iat`, `nbf`, `nonce`,
//!    `at_hash`, `c_hash`, `s_hash`, `azp`) are dropped, unless
//!    [`UserClaims::keep_protocol_claims`] — they describe the token, not the user, and an SPA
//!    that reads them would be reading the login's mechanics;
//! 2. with an `include` list, only those claims are left; `exclude` removes claims;
//! 3. `rename` gives claims the names the SPA expects (a renamed claim replaces a claim of the
//!    same name);
//! 4. a [`ClaimsHook`] (library use) has the last word: it can add, change and remove claims;
//! 5. the session claims (`bff:logout_url`, `bff:session_expires_in`, `bff:session_state`) are
//!    added; names starting with `bff:` are the BFF's, and any other claim of that form is
//!    dropped before (with a warning, for a hook's).
//!
//! ```
//! use tokenkeeper_bff::{BffOptions, ClaimsHook, UserClaims};
//! let options = BffOptions {
//!     claims: UserClaims {
//!         exclude: vec!["email".into()],
//!         rename: vec![("preferred_username".into(), "username".into())],
//!         hook: Some(ClaimsHook::new(|session, claims| {
//!             claims.insert("tenant".into(), serde_json::json!(session.sub.split('@').nth(1)));
//!         })),
//!         ..UserClaims::default()
//!     },
//!     ..BffOptions::default()
//! };
//! # let _ = options;
//! ```

use std::fmt;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::session::BffSession;

/// The claims that describe the ID token and the login rather than the user; `/user` leaves
/// them out unless told to keep them.
pub const PROTOCOL_CLAIMS: &[&str] = &[
    "iss", "aud", "exp", "iat", "nbf", "nonce", "at_hash", "c_hash", "s_hash", "azp",
];

/// The prefix of the BFF's own session claims.
const SESSION_PREFIX: &str = "bff:";

/// Which of the user's claims `GET {base}/user` shows, and under which names (see the module's
/// documentation for the order). The default drops the protocol claims and shows the rest.
#[derive(Debug, Clone, Default)]
pub struct UserClaims {
    /// Shows the protocol claims ([`PROTOCOL_CLAIMS`]) too.
    pub keep_protocol_claims: bool,
    /// Only these claims (empty: every claim).
    pub include: Vec<String>,
    /// Never these claims.
    pub exclude: Vec<String>,
    /// Claims shown under another name: `(claim, shown as)`.
    pub rename: Vec<(String, String)>,
    /// The host's own claims, computed on each `/user` call.
    pub hook: Option<ClaimsHook>,
    /// At login, the provider's userinfo is fetched and merged into the session's claims (its
    /// `sub` must be the ID token's, or the login is refused).
    pub userinfo: bool,
}

/// A function that shapes the claims `/user` shows, given the session: it runs after the
/// include, exclude and rename lists, and may add, change or remove claims. It runs on every
/// `/user` call: keep it quick (no I/O).
#[derive(Clone)]
pub struct ClaimsHook(Arc<HookFn>);

/// The function inside a [`ClaimsHook`].
type HookFn = dyn Fn(&BffSession, &mut Map<String, Value>) + Send + Sync;

impl ClaimsHook {
    /// A hook running `f`.
    pub fn new(f: impl Fn(&BffSession, &mut Map<String, Value>) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }
}

impl fmt::Debug for ClaimsHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClaimsHook")
    }
}

impl UserClaims {
    /// The claims of `session` as `/user` shows them, before the session claims are added.
    pub(crate) fn shape(&self, session: &BffSession) -> Map<String, Value> {
        let mut shown = Map::new();
        let mut renamed = Vec::new();
        for (name, value) in &session.claims {
            let listed = |list: &[String]| list.iter().any(|n| n == name);
            if (!self.keep_protocol_claims && PROTOCOL_CLAIMS.contains(&name.as_str()))
                || (!self.include.is_empty() && !listed(&self.include))
                || listed(&self.exclude)
                || name.starts_with(SESSION_PREFIX)
            {
                continue;
            }
            match self.rename.iter().find(|(from, _)| from == name) {
                Some((_, to)) => renamed.push((to.clone(), value.clone())),
                None => {
                    shown.insert(name.clone(), value.clone());
                }
            }
        }
        // After the others: a renamed claim replaces one of the same name.
        shown.extend(renamed);
        if let Some(hook) = &self.hook {
            (hook.0)(session, &mut shown);
            let before = shown.len();
            shown.retain(|name, _| !name.starts_with(SESSION_PREFIX));
            if shown.len() != before {
                tracing::warn!(
                    "the claims hook set claims named bff:…, which are the BFF's own; dropped"
                );
            }
        }
        shown
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn session(claims: Value) -> BffSession {
        let mut session = BffSession::new("id", "alice", "s1");
        session.claims = claims.as_object().unwrap().clone();
        session
    }

    #[test]
    fn protocol_claims_go_lists_apply_renames_replace_and_the_hook_has_the_last_word() {
        let s = session(serde_json::json!({
            "sub": "alice", "iss": "https://idp", "aud": "spa", "nonce": "n", "exp": 1,
            "name": "Alice", "email": "a@example.com", "preferred_username": "al",
            "bff:logout_url": "/evil"
        }));
        let shown = UserClaims::default().shape(&s);
        let mut names: Vec<&str> = shown.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["email", "name", "preferred_username", "sub"]);

        let claims = UserClaims {
            include: vec![
                "sub".into(),
                "name".into(),
                "preferred_username".into(),
                "iss".into(),
            ],
            exclude: vec!["name".into()],
            rename: vec![("preferred_username".into(), "sub".into())],
            keep_protocol_claims: true,
            hook: Some(ClaimsHook::new(|session, claims| {
                claims.insert("who".into(), Value::String(session.sub.clone()));
                claims.insert("bff:session_state".into(), Value::Null);
            })),
            userinfo: false,
        };
        let shown = claims.shape(&s);
        assert_eq!(
            Value::Object(shown),
            serde_json::json!({"sub": "al", "iss": "https://idp", "who": "alice"})
        );
    }
}
