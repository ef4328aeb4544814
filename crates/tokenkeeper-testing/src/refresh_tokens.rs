//! The refresh tokens the server issued: grants (families), rotation, revocation.

use std::collections::{HashMap, HashSet};

/// One refresh token.
#[derive(Debug, Clone)]
pub(crate) struct RefreshRecord {
    pub(crate) client_id: String,
    pub(crate) sub: String,
    pub(crate) scope: Option<String>,
    pub(crate) family: u64,
    pub(crate) consumed: bool,
    pub(crate) revoked: bool,
    /// The DPoP key the token is bound to (RFC 9449 §5: refreshes must prove it).
    pub(crate) jkt: Option<String>,
}

/// Every refresh token issued, and the grants revoked.
#[derive(Debug, Default)]
pub(crate) struct RefreshStore {
    pub(crate) tokens: HashMap<String, RefreshRecord>,
    pub(crate) revoked_families: HashSet<u64>,
    next_family: u64,
}

impl RefreshStore {
    pub(crate) fn issue(
        &mut self,
        client_id: &str,
        sub: &str,
        scope: Option<&str>,
        family: Option<u64>,
    ) -> String {
        let family = family.unwrap_or_else(|| {
            self.next_family += 1;
            self.next_family
        });
        let token = format!("rt-{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        self.tokens.insert(
            token.clone(),
            RefreshRecord {
                client_id: client_id.to_owned(),
                sub: sub.to_owned(),
                scope: scope.map(str::to_owned),
                family,
                consumed: false,
                revoked: false,
                jkt: None,
            },
        );
        token
    }

    pub(crate) fn is_active(&self, token: &str) -> bool {
        self.tokens.get(token).is_some_and(|r| {
            !r.consumed && !r.revoked && !self.revoked_families.contains(&r.family)
        })
    }
}
