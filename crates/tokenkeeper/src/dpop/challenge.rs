//! `WWW-Authenticate` challenges (RFC 9110 §11.6.1): several challenges in one header value and
//! across header values, auth-params with token or quoted-string values (escapes included),
//! and token68. Parsing is lenient and bounded: what does not parse ends the value, never
//! panics, and at most 32 challenges of 64 parameters each are read.

/// One challenge: a scheme and its parameters (or a token68).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The auth-scheme, lower-cased (`bearer`, `dpop`).
    pub scheme: String,
    /// The auth-params, names lower-cased, values unquoted, in order.
    pub params: Vec<(String, String)>,
    /// The token68, when the challenge carries one instead of parameters.
    pub token68: Option<String>,
}

impl Challenge {
    /// The value of parameter `name` (case-insensitive).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether this is a `DPoP` challenge with `error="use_dpop_nonce"`.
    pub fn is_use_dpop_nonce(&self) -> bool {
        self.scheme == "dpop" && self.param("error") == Some("use_dpop_nonce")
    }
}

const MAX_CHALLENGES: usize = 32;
const MAX_PARAMS: usize = 64;

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token68_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~+/".contains(&b)
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn skip_spaces(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.at += 1;
        }
    }

    fn skip_spaces_and_commas(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
            self.at += 1;
        }
    }

    fn token(&mut self) -> Option<String> {
        let start = self.at;
        while self.peek().is_some_and(is_tchar) {
            self.at += 1;
        }
        (self.at > start).then(|| String::from_utf8_lossy(&self.bytes[start..self.at]).into())
    }

    fn quoted(&mut self) -> Option<String> {
        if self.peek() != Some(b'"') {
            return None;
        }
        self.at += 1;
        let mut out = Vec::new();
        loop {
            match self.peek()? {
                b'"' => {
                    self.at += 1;
                    return Some(String::from_utf8_lossy(&out).into());
                }
                b'\\' => {
                    self.at += 1;
                    out.push(self.peek()?);
                    self.at += 1;
                }
                b => {
                    out.push(b);
                    self.at += 1;
                }
            }
        }
    }

    /// At a parameter (`token BWS "="` followed by a value, not a token68's padding)?
    fn at_param(&self) -> bool {
        let mut probe = Cursor {
            bytes: self.bytes,
            at: self.at,
        };
        if probe.token().is_none() {
            return false;
        }
        probe.skip_spaces();
        if probe.peek() != Some(b'=') {
            return false;
        }
        probe.at += 1;
        probe.skip_spaces();
        matches!(probe.peek(), Some(b) if b == b'"' || is_tchar(b))
    }

    fn token68(&mut self) -> Option<String> {
        let start = self.at;
        while self.peek().is_some_and(is_token68_char) {
            self.at += 1;
        }
        if self.at == start {
            return None;
        }
        while self.peek() == Some(b'=') {
            self.at += 1;
        }
        Some(String::from_utf8_lossy(&self.bytes[start..self.at]).into())
    }
}

/// The challenges of one `WWW-Authenticate` value.
///
/// ```
/// use tokenkeeper::dpop::challenge::parse;
/// let challenges = parse(r#"Bearer realm="api", DPoP error="use_dpop_nonce", error_description="say \"hi\"", algs="ES256 EdDSA""#);
/// assert_eq!(challenges.len(), 2);
/// assert!(challenges[1].is_use_dpop_nonce());
/// assert_eq!(challenges[1].param("error_description"), Some(r#"say "hi""#));
/// ```
pub fn parse(value: &str) -> Vec<Challenge> {
    let mut cursor = Cursor {
        bytes: value.as_bytes(),
        at: 0,
    };
    let mut challenges = Vec::new();
    while challenges.len() < MAX_CHALLENGES {
        cursor.skip_spaces_and_commas();
        let Some(scheme) = cursor.token() else {
            break;
        };
        let mut challenge = Challenge {
            scheme: scheme.to_ascii_lowercase(),
            params: Vec::new(),
            token68: None,
        };
        cursor.skip_spaces();
        if cursor.peek().is_some_and(|b| b != b',') && !cursor.at_param() {
            challenge.token68 = cursor.token68();
        } else {
            loop {
                cursor.skip_spaces_and_commas();
                if !cursor.at_param() || challenge.params.len() >= MAX_PARAMS {
                    break;
                }
                let Some(name) = cursor.token() else { break };
                cursor.skip_spaces();
                cursor.at += 1; // '='
                cursor.skip_spaces();
                let value = match cursor.peek() {
                    Some(b'"') => cursor.quoted(),
                    _ => cursor.token(),
                };
                let Some(value) = value else { break };
                challenge.params.push((name.to_ascii_lowercase(), value));
            }
        }
        challenges.push(challenge);
        cursor.skip_spaces();
        // Anything else than a separator here does not parse: stop.
        if !matches!(cursor.peek(), None | Some(b',')) && !cursor.peek().is_some_and(is_tchar) {
            break;
        }
    }
    challenges
}

/// The challenges of every `WWW-Authenticate` header of a response, in order.
pub fn parse_headers(headers: &http::HeaderMap) -> Vec<Challenge> {
    headers
        .get_all(http::header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(parse)
        .take(MAX_CHALLENGES)
        .collect()
}

/// The `DPoP-Nonce` of a response (header name matched case-insensitively, as `http` does), if
/// it is a valid nonce: 1 to 512 characters of `NQCHAR` (RFC 9449 §8.1: printable ASCII without
/// `"` or `\`).
pub fn dpop_nonce(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get("dpop-nonce")?.to_str().ok()?;
    let ok = !value.is_empty()
        && value.len() <= 512
        && value
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\');
    ok.then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(c: &Challenge) -> Vec<(&str, &str)> {
        c.params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    #[test]
    fn several_challenges_params_quoted_strings_and_token68() {
        let all = parse(
            r#"Newauth realm="apps", type=1, title="Login to \"apps\"", Basic realm="simple", Negotiate abc/DEF+g==, DPoP algs="ES256", error=use_dpop_nonce"#,
        );
        assert_eq!(all.len(), 4, "{all:?}");
        assert_eq!(all[0].scheme, "newauth");
        assert_eq!(
            params(&all[0]),
            [
                ("realm", "apps"),
                ("type", "1"),
                ("title", r#"Login to "apps""#)
            ]
        );
        assert_eq!(params(&all[1]), [("realm", "simple")]);
        assert_eq!(all[2].token68.as_deref(), Some("abc/DEF+g=="));
        assert!(all[3].is_use_dpop_nonce());
        assert_eq!(all[3].param("ALGS"), Some("ES256"));
    }

    #[test]
    fn across_headers_and_bare_schemes() {
        let mut headers = http::HeaderMap::new();
        headers.append(
            http::header::WWW_AUTHENTICATE,
            "Bearer".parse().unwrap_or_else(|_| unreachable!()),
        );
        headers.append(
            http::header::WWW_AUTHENTICATE,
            r#"dpop error="use_dpop_nonce" , bearer error="invalid_token""#
                .parse()
                .unwrap_or_else(|_| unreachable!()),
        );
        let all = parse_headers(&headers);
        assert_eq!(all.len(), 3, "{all:?}");
        assert!(all[0].params.is_empty());
        assert!(all[1].is_use_dpop_nonce());
        assert_eq!(all[2].param("error"), Some("invalid_token"));
    }

    #[test]
    fn garbage_ends_the_value_without_panicking() {
        for value in [
            "",
            ",,, ,",
            "\"",
            r#"DPoP error="unterminated"#,
            "DPoP error=",
            "DPoP =x",
            "= = =",
            "DPoP error=\"a\\",
            "\u{7f}\u{0}",
        ] {
            let _ = parse(value);
        }
        assert_eq!(parse(&"a, ".repeat(1000)).len(), MAX_CHALLENGES);
    }

    #[test]
    fn dpop_nonces_are_checked() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "DPoP-Nonce",
            "eyJ7S_zG.9-_~".parse().unwrap_or_else(|_| unreachable!()),
        );
        assert_eq!(dpop_nonce(&headers), Some("eyJ7S_zG.9-_~"));
        headers.insert(
            "dpop-nonce",
            "has space".parse().unwrap_or_else(|_| unreachable!()),
        );
        assert_eq!(dpop_nonce(&headers), None);
    }
}
