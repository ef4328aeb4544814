//! `tokenkeeper dpop`: DPoP keys and proofs for the command line.

use anyhow::Context as _;
use tokenkeeper::dpop::{DpopAlgorithm, DpopKey, ProofRequest};
use tokenkeeper::Clock as _;

/// `tokenkeeper dpop …`.
#[derive(clap::Subcommand)]
pub(crate) enum DpopCommand {
    /// Write a new private key (PKCS#8 PEM, readable by its owner only); print its public JWK
    /// and RFC 7638 thumbprint.
    Keygen {
        /// The algorithm: ES256, ES384, EdDSA, PS256 or RS256.
        #[arg(long, default_value = "ES256")]
        alg: String,
        /// Where to write the key (an existing file is not overwritten).
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Print a DPoP proof for one request, e.g. for
    /// `curl -H "DPoP: $(tokenkeeper dpop proof ...)"`.
    Proof {
        /// The key file (from `dpop keygen`).
        #[arg(long)]
        key: std::path::PathBuf,
        /// The key's algorithm.
        #[arg(long, default_value = "ES256")]
        alg: String,
        /// The HTTP method.
        #[arg(long)]
        htm: String,
        /// The request URL (its query and fragment are left out of `htu`).
        #[arg(long)]
        htu: String,
        /// The access token the request presents (adds `ath`).
        #[arg(long)]
        token: Option<String>,
        /// The server's nonce.
        #[arg(long)]
        nonce: Option<String>,
    },
}

impl std::fmt::Debug for DpopCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `proof --token` is an access token (SEC-25): the subcommand's name only.
        f.write_str(match self {
            Self::Keygen { .. } => "DpopCommand::Keygen",
            Self::Proof { .. } => "DpopCommand::Proof",
        })
    }
}

/// Reads a key file.
pub(crate) fn read_key(path: &std::path::Path, alg: &str) -> anyhow::Result<DpopKey> {
    let pem = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the key file {}", path.display()))?;
    Ok(DpopKey::from_pem(&pem, DpopAlgorithm::parse(alg)?)?)
}

/// Runs the command; returns what to print.
pub(crate) fn run(command: DpopCommand) -> anyhow::Result<String> {
    match command {
        DpopCommand::Keygen { alg, out } => {
            let key = DpopKey::generate(DpopAlgorithm::parse(&alg)?)?;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt as _;
                options.mode(0o600);
            }
            let mut file = options
                .open(&out)
                .with_context(|| format!("cannot create {} (it must not exist)", out.display()))?;
            use std::io::Write as _;
            file.write_all(key.to_pkcs8_pem()?.as_bytes())?;
            Ok(serde_json::to_string_pretty(&serde_json::json!({
                "alg": key.algorithm().as_str(),
                "jwk": key.public_jwk(),
                "jkt": key.thumbprint(),
            }))?)
        }
        DpopCommand::Proof {
            key,
            alg,
            htm,
            htu,
            token,
            nonce,
        } => {
            let key = read_key(&key, &alg)?;
            let url: url::Url = htu
                .parse()
                .with_context(|| format!("{htu:?} is not a URL"))?;
            let now = tokenkeeper::TokioClock::new().now();
            Ok(key.proof(
                &ProofRequest {
                    method: &htm.to_ascii_uppercase(),
                    url: &url,
                    access_token: token.as_deref(),
                    nonce: nonce.as_deref(),
                },
                now,
            )?)
        }
    }
}
