//! The tokens file of `tokenkeeper login --device` (PR-05): a user's tokens kept for the
//! command line, readable by its owner only, which `tokenkeeper token --tokens-file` reads
//! and refreshes.
//!
//! - Created `0600` (never wider, not even for a moment): written to a temporary file of mode
//!   `0600` beside it, then renamed over it, so a reader sees the old or the new file whole.
//! - Refused when readable or writable by anyone but its owner (as ssh refuses a private key).
//! - Refreshing takes an exclusive lock on `<file>.lock`, so two `token` commands at once make
//!   one refresh: the second finds the first's new token (rotating refresh tokens stay valid).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::{json, Value};

/// The most a tokens file may hold.
const MAX_BYTES: u64 = 1024 * 1024;

/// The tokens of one login.
#[derive(Clone)]
pub(crate) struct Tokens {
    pub(crate) issuer: String,
    pub(crate) client_id: String,
    pub(crate) token_type: String,
    pub(crate) access_token: String,
    /// Seconds since the epoch, when known.
    pub(crate) expires_at: Option<u64>,
    pub(crate) refresh_token: Option<String>,
    pub(crate) scope: Option<String>,
    /// A public client (refreshed without a secret).
    pub(crate) public: bool,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl Tokens {
    /// The tokens of `response`, received at `now` (seconds since the epoch); a response
    /// without a refresh token keeps `previous`'s.
    pub(crate) fn from_response(
        issuer: &str,
        client_id: &str,
        response: &tokenkeeper::TokenResponse,
        now: u64,
        previous: Option<&Tokens>,
    ) -> Self {
        Self {
            issuer: issuer.to_owned(),
            client_id: client_id.to_owned(),
            token_type: response.token_type.to_string(),
            access_token: response.access_token.secret().to_owned(),
            expires_at: response.expires_in.map(|d| now + d.as_secs()),
            refresh_token: response
                .refresh_token
                .as_ref()
                .map(|t| t.secret().to_owned())
                .or_else(|| previous.and_then(|p| p.refresh_token.clone())),
            scope: response
                .scope
                .as_ref()
                .map(ToString::to_string)
                .or_else(|| previous.and_then(|p| p.scope.clone())),
            public: previous.is_none_or(|p| p.public),
        }
    }

    /// Whether the access token is good for `margin` more seconds.
    pub(crate) fn fresh(&self, now: u64, margin: u64) -> bool {
        self.expires_at.is_none_or(|at| at > now + margin)
    }

    fn to_json(&self) -> Value {
        json!({
            "version": 1,
            "issuer": self.issuer,
            "client_id": self.client_id,
            "token_type": self.token_type,
            "access_token": self.access_token,
            "expires_at": self.expires_at,
            "refresh_token": self.refresh_token,
            "scope": self.scope,
            "public": self.public,
        })
    }

    fn from_json(value: &Value) -> anyhow::Result<Self> {
        let text = |name: &str| -> anyhow::Result<String> {
            value
                .get(name)
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
                .with_context(|| format!("the tokens file has no {name}"))
        };
        let optional = |name: &str| value.get(name).and_then(Value::as_str).map(str::to_owned);
        anyhow::ensure!(
            value.get("version").and_then(Value::as_u64) == Some(1),
            "the tokens file is not of a version this tokenkeeper reads"
        );
        Ok(Self {
            issuer: text("issuer")?,
            client_id: text("client_id")?,
            token_type: text("token_type")?,
            access_token: text("access_token")?,
            expires_at: value.get("expires_at").and_then(Value::as_u64),
            refresh_token: optional("refresh_token"),
            scope: optional("scope"),
            public: value.get("public").and_then(Value::as_bool).unwrap_or(true),
        })
    }
}

/// Reads the tokens file at `path`, refusing one that others may read or write.
pub(crate) fn read(path: &Path) -> anyhow::Result<Tokens> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open the tokens file {}", path.display()))?;
    let metadata = file.metadata()?;
    check_private(&metadata, path)?;
    anyhow::ensure!(
        metadata.len() <= MAX_BYTES,
        "the tokens file {} is larger than 1 MiB",
        path.display()
    );
    let value: Value = serde_json::from_reader(std::io::BufReader::new(file))
        .with_context(|| format!("the tokens file {} is not JSON", path.display()))?;
    Tokens::from_json(&value).with_context(|| format!("in {}", path.display()))
}

#[cfg(unix)]
fn check_private(metadata: &std::fs::Metadata, path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = metadata.permissions().mode() & 0o777;
    anyhow::ensure!(
        mode & 0o077 == 0,
        "the tokens file {} is open to others (mode {mode:o}): `chmod 600` it, or log in again",
        path.display()
    );
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_: &std::fs::Metadata, _: &Path) -> anyhow::Result<()> {
    Ok(())
}

/// Writes `tokens` to `path`: a new `0600` file beside it, then renamed over it.
pub(crate) fn write(path: &Path, tokens: &Tokens) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .context("the tokens file needs a file name")?
        .to_string_lossy()
        .into_owned();
    let temporary = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let _ = std::fs::remove_file(&temporary);
    let mut file = options
        .open(&temporary)
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    let written = serde_json::to_vec_pretty(&tokens.to_json())
        .map_err(anyhow::Error::from)
        .and_then(|bytes| {
            file.write_all(&bytes)?;
            file.write_all(b"\n")?;
            file.sync_all()?;
            Ok(())
        });
    if let Err(error) = written.and_then(|()| {
        std::fs::rename(&temporary, path)
            .with_context(|| format!("cannot replace {}", path.display()))
    }) {
        let _ = std::fs::remove_file(&temporary);
        return Err(error);
    }
    Ok(())
}

/// Holds the exclusive lock of `path`'s refreshes (`<path>.lock`) until dropped.
pub(crate) struct RefreshLock(#[allow(dead_code)] std::fs::File);

/// Waits for the refresh lock of `path`.
pub(crate) fn lock(path: &Path) -> anyhow::Result<RefreshLock> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let file = options.open(PathBuf::from(&name)).with_context(|| {
        format!(
            "cannot open the lock file {}",
            PathBuf::from(&name).display()
        )
    })?;
    file.lock()?;
    Ok(RefreshLock(file))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn tokens() -> Tokens {
        Tokens {
            issuer: "https://idp.example".into(),
            client_id: "cli".into(),
            token_type: "Bearer".into(),
            access_token: "at".into(),
            expires_at: Some(100),
            refresh_token: Some("rt".into()),
            scope: None,
            public: true,
        }
    }

    #[test]
    fn pr_05_tokens_file_is_private_and_refused_when_not() {
        let dir = std::env::temp_dir().join(format!("tk-tokens-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokens.json");
        write(&path, &tokens()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            assert_eq!(read(&path).unwrap().access_token, "at");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let e = read(&path).unwrap_err();
            assert!(e.to_string().contains("open to others"), "{e}");
            // Rewriting restores 0600.
            write(&path, &tokens()).unwrap();
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        std::fs::write(dir.join("bad.json"), b"{\"version\":1}").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(dir.join("bad.json"), std::fs::Permissions::from_mode(0o600))
                .unwrap();
        }
        assert!(read(&dir.join("bad.json")).is_err());
        let debug = format!("{:?}", tokens());
        assert!(
            !debug.contains("\"at\"") && !debug.contains("rt"),
            "{debug}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
