//! Return URLs (SEC-01, SEC-19): where a browser is sent after login or logout, checked the way
//! the browser will read it.

/// The longest return URL accepted, in bytes (a login carries it sealed in its cookie).
pub const MAX_RETURN_URL: usize = 8 * 1024;

/// The local URL (path, query, fragment) that `raw` leads a browser to on `origin`
/// (`https://app.example.com`), serialized as a WHATWG URL parser serializes it; `None` when
/// it is not a local reference that stays on `origin` (SEC-01, SEC-19).
///
/// The candidate is resolved against the origin with a WHATWG-conformant parser (the one
/// browsers implement), so what is checked is what the browser will do — backslashes read as
/// slashes, tabs and newlines dropped, dot segments removed — and the answer is the
/// serialized result, not the text as sent. It is accepted only if:
///
/// - it is a local reference (starts with a single `/`), at most [`MAX_RETURN_URL`] bytes, with
///   no control character, whitespace, backslash or invisible formatting character as sent;
/// - it resolves to `origin`, to a path that does not start with `//` (which a later
///   `location = pathname` would read as another host: `/.//evil.example` resolves to
///   `//evil.example`);
/// - its path, percent-decoded (repeatedly) and resolved again, still does neither, and holds
///   no control or invisible character (`/%2e%2f/evil.example`, `/%2F%2Fevil.example`).
///
/// Queries and fragments may hold any encoded value (`/search?q=a%20b`).
///
/// ```
/// # use tokenkeeper_axum::local_return_url;
/// let app = "https://app.example.com";
/// assert_eq!(local_return_url("/orders?page=2#top", app).as_deref(), Some("/orders?page=2#top"));
/// assert_eq!(local_return_url("/search?q=a%20b", app).as_deref(), Some("/search?q=a%20b"));
/// assert_eq!(local_return_url("/a/../b", app).as_deref(), Some("/b"));
/// for bad in ["//evil.example", "/\\evil.example", "/%2F%2Fevil.example", "/\t/evil.example",
///             "https://evil.example", "evil.example", "/%5Cevil", "/%250a", "/.//evil.example",
///             "/%2e%2f/evil.example", "/%2e/%2fevil.example"] {
///     assert_eq!(local_return_url(bad, app), None, "{bad}");
/// }
/// ```
pub fn local_return_url(raw: &str, origin: &str) -> Option<String> {
    if raw.is_empty() || raw.len() > MAX_RETURN_URL || !raw.starts_with('/') {
        return None;
    }
    if raw.starts_with("//") || raw.chars().any(|c| bad_char(c) || c == '\\') {
        return None;
    }
    let base = url::Url::parse(origin).ok()?;
    let stays = |url: &url::Url| url.origin() == base.origin() && !url.path().starts_with("//");
    let resolved = base.join(raw).ok().filter(stays)?;
    // The path as a server or a script that decodes it would see it: decoded and resolved
    // again until it no longer changes (at most four rounds; a path still changing after
    // that is refused rather than trusted).
    let mut path = resolved.path().to_owned();
    let mut previous = String::new();
    let mut settled = false;
    for _ in 0..4 {
        let decoded = percent_decode(&path);
        if decoded.chars().any(bad_char_decoded) || decoded.starts_with("//") {
            return None;
        }
        // A decoded `?` or `#` is part of the path, not a query.
        let again = base
            .join(&decoded.replace(['?', '#'], "_"))
            .ok()
            .filter(stays)?;
        if decoded == path || decoded == previous {
            settled = true;
            break;
        }
        previous = decoded;
        path = again.path().to_owned();
    }
    if !settled {
        return None;
    }
    let mut local = resolved.path().to_owned();
    if let Some(query) = resolved.query() {
        local.push('?');
        local.push_str(query);
    }
    if let Some(fragment) = resolved.fragment() {
        local.push('#');
        local.push_str(fragment);
    }
    Some(local)
}

/// Characters never accepted as sent.
fn bad_char(c: char) -> bool {
    c.is_control() || c.is_whitespace() || is_invisible(c)
}

/// Characters never accepted in a decoded path (an encoded space is a normal file name).
fn bad_char_decoded(c: char) -> bool {
    c.is_control() || c == '\\' || is_invisible(c) || (c.is_whitespace() && c != ' ')
}

/// Zero-width and bidirectional formatting characters: invisible in an address bar, so never
/// part of a URL we send a browser to.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

/// Decodes `%XX` sequences (invalid UTF-8 becomes U+FFFD, which cannot form `/` or a
/// backslash).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
