//! Fault injection.

use std::time::Duration;

/// A fault the token endpoint injects instead of (or before) a normal answer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Answer with `status` and an OAuth error body (`error`, `error_description`).
    OAuthError {
        /// HTTP status.
        status: u16,
        /// `error`.
        error: String,
        /// `error_description`.
        description: Option<String>,
    },
    /// Wait this long, then answer normally.
    Latency(Duration),
    /// Answer with `status` and an HTML page (a proxy's error page).
    HtmlBody {
        /// HTTP status.
        status: u16,
    },
    /// Answer 200 with a body that is not valid JSON.
    MalformedJson,
    /// Answer 200 with a JSON body of this many bytes, streamed without a `Content-Length`.
    OversizedBody {
        /// Body size in bytes.
        bytes: usize,
    },
    /// Send the response head, part of the body, then close the connection.
    CloseConnection,
}

impl Fault {
    /// A `status` answer with OAuth error `error`.
    pub fn oauth(status: u16, error: &str) -> Self {
        Self::OAuthError {
            status,
            error: error.to_owned(),
            description: None,
        }
    }
}

/// How many requests a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Times {
    /// The next `n` token requests.
    Next(u32),
    /// Every token request until cleared.
    Always,
}

#[derive(Debug, Clone)]
pub(crate) struct FaultRule {
    pub(crate) fault: Fault,
    pub(crate) remaining: Option<u32>,
}
