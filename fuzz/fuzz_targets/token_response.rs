//! Token endpoint responses: any status and body; a value or a typed error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokenkeeper::HttpResponse;

fuzz_target!(|data: &[u8]| {
    let (status, body) = match data.split_first() {
        Some((first, rest)) => (u16::from(*first) + 100, rest),
        None => (200, data),
    };
    let status = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    for status in [status, http::StatusCode::OK, http::StatusCode::BAD_REQUEST] {
        let response = HttpResponse {
            status,
            headers: http::HeaderMap::new(),
            body: bytes::Bytes::copy_from_slice(body),
        };
        if let Ok(parsed) = tokenkeeper::TokenResponse::from_http(&response) {
            assert!(!parsed.access_token.secret().is_empty());
            let _ = parsed.refresh_expires_in();
        }
    }
});
