//! `WWW-Authenticate` parsing: any bytes, as one or several header values.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        for challenge in tokenkeeper::dpop::challenge::parse(text) {
            let _ = challenge.is_use_dpop_nonce();
            let _ = challenge.param("error");
        }
    }
    let mut headers = http::HeaderMap::new();
    for part in data.split(|b| *b == b'\n') {
        if let Ok(value) = http::HeaderValue::from_bytes(part) {
            headers.append(http::header::WWW_AUTHENTICATE, value);
        }
    }
    let _ = tokenkeeper::dpop::challenge::parse_headers(&headers);
});
