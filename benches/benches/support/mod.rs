//! Helpers shared by the bench targets.

/// The resident set size of this process, in bytes (Linux; 0 where `/proc` is missing).
#[allow(dead_code)] // not every bench target measures memory
pub(crate) fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// A numeric setting from the environment, or `default`.
#[allow(dead_code)] // not every bench target reads settings
pub(crate) fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The median and the interquartile range (first and third quartiles) of `values`.
#[allow(dead_code)] // not every bench target reports ratios
pub(crate) fn median_iqr(values: &[f64]) -> (f64, f64, f64) {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.25), at(0.75))
}
