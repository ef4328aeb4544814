//! Who may use a route (BF-20): claims the session must have (a value, or a member of an
//! array claim such as `groups`) and scopes the user's access token must have been granted.
//! A request that does not meet them gets 403 and nothing is forwarded; one without a session
//! gets 401. Checked for API calls and WebSocket upgrades alike ([`crate::access`]).

use serde_json::Value;

use crate::session::BffSession;

/// A route's requirements. Empty (the default): anyone the route's token type lets through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutePolicy {
    /// `(claim, value)`: the claim is `value`, or an array with `value` in it. All must hold.
    pub claims: Vec<(String, String)>,
    /// Scopes the user's access token must have been granted. All must be.
    pub scopes: Vec<String>,
}

impl RoutePolicy {
    /// Whether there is nothing to check.
    pub fn is_empty(&self) -> bool {
        self.claims.is_empty() && self.scopes.is_empty()
    }

    /// Whether `session` has every required claim.
    pub(crate) fn claims_met(&self, session: &BffSession) -> bool {
        self.claims.iter().all(|(name, wanted)| {
            let is = |value: &Value| match value {
                Value::String(s) => s == wanted,
                Value::Number(_) | Value::Bool(_) => wanted.as_str() == value.to_string().as_str(),
                _ => false,
            };
            match (name.as_str(), session.claims.get(name)) {
                ("sub", _) => session.sub == *wanted,
                (_, Some(Value::Array(values))) => values.iter().any(is),
                (_, Some(value)) => is(value),
                (_, None) => false,
            }
        })
    }

    /// Whether `granted` (a space-separated scope) has every required scope.
    pub(crate) fn scopes_met(&self, granted: &str) -> bool {
        self.scopes
            .iter()
            .all(|wanted| granted.split(' ').any(|g| g == wanted))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn claims_are_values_or_members_and_scopes_all_granted() {
        let mut session = BffSession::new("id", "alice", "s1");
        session.claims =
            serde_json::json!({"groups": ["dev", "admin"], "tenant": "acme", "level": 3})
                .as_object()
                .unwrap()
                .clone();
        let policy = |claims: &[(&str, &str)]| RoutePolicy {
            claims: claims
                .iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                .collect(),
            scopes: Vec::new(),
        };
        assert!(
            policy(&[("groups", "admin"), ("tenant", "acme"), ("level", "3")]).claims_met(&session)
        );
        assert!(policy(&[("sub", "alice")]).claims_met(&session));
        for missed in [
            ("groups", "ops"),
            ("tenant", "acm"),
            ("missing", "x"),
            ("sub", "bob"),
        ] {
            assert!(!policy(&[missed]).claims_met(&session), "{missed:?}");
        }
        let scopes = RoutePolicy {
            claims: Vec::new(),
            scopes: vec!["orders.read".into(), "api".into()],
        };
        assert!(scopes.scopes_met("api openid orders.read"));
        assert!(!scopes.scopes_met("api orders.readx"));
    }
}
