//! `DPoP-Nonce` header checking and the per-origin nonce store.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut headers = http::HeaderMap::new();
    if let Ok(value) = http::HeaderValue::from_bytes(data) {
        headers.insert("dpop-nonce", value);
    }
    if let Some(nonce) = tokenkeeper::dpop::challenge::dpop_nonce(&headers) {
        assert!(!nonce.is_empty() && nonce.len() <= 512);
        assert!(nonce.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\'));
    }
    let store = tokenkeeper::dpop::NonceStore::new(4);
    if let Ok(url) = url_of(data) {
        let _ = store.update(&url, &headers);
        let _ = store.get(&url);
    }
});

fn url_of(data: &[u8]) -> Result<url::Url, ()> {
    let text = std::str::from_utf8(data).map_err(|_| ())?;
    url::Url::parse(&format!("https://{}/", text.split('/').next().unwrap_or(""))).map_err(|_| ())
}
