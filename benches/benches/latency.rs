//! Latency at a fixed request rate, open loop: each connection sends on its own schedule and a
//! request's latency counts from when it was due (a slow answer delays the next request, and
//! that delay is counted too: no coordinated omission). For `benches/nginx.sh`, which compares
//! nginx, the BFF and the sidecar in front of one upstream.
//!
//! `TK_TARGETS='name url [header: value]…' …` (one target per line), `TK_RATE` (requests per
//! second, default 1000), `TK_SECONDS` (per round, default 5), `TK_ROUNDS` (default 4: targets
//! alternate), `TK_CONNECTIONS` (default 8). Prints per target the median of the rounds' p50,
//! p90 and p99 in milliseconds: `latency <name> p50 <ms> p90 <ms> p99 <ms>`.
#![allow(missing_docs, clippy::unwrap_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use http_body_util::BodyExt as _;

struct Target {
    name: String,
    url: http::Uri,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

fn parse_targets(text: &str) -> Vec<Target> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|line| {
            let mut parts = line.splitn(3, ' ');
            let name = parts.next().unwrap().to_owned();
            let url = parts.next().unwrap().parse().unwrap();
            let headers = parts
                .next()
                .unwrap_or_default()
                .split('|')
                .filter_map(|h| h.split_once(':'))
                .map(|(k, v)| (k.trim().parse().unwrap(), v.trim().parse().unwrap()))
                .collect();
            Target { name, url, headers }
        })
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

async fn round(target: &Target, rate: f64, seconds: f64, connections: usize) -> Vec<Duration> {
    let authority = target.url.authority().unwrap().clone();
    let interval = Duration::from_secs_f64(connections as f64 / rate);
    let count = (rate * seconds / connections as f64) as usize;
    let start = Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::new();
    for c in 0..connections {
        let stream = tokio::net::TcpStream::connect(authority.as_str())
            .await
            .unwrap();
        stream.set_nodelay(true).unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(connection);
        let url = target.url.clone();
        let headers = target.headers.clone();
        let host = http::HeaderValue::from_str(authority.as_str()).unwrap();
        // Spread the connections' schedules over one interval.
        let offset = interval.mul_f64(c as f64 / connections as f64);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(count);
            let mut previous_done = start;
            for i in 0..count {
                let due = start + offset + interval * i as u32;
                tokio::time::sleep_until(due.into()).await;
                // Late because the previous answer was slow: counted from when it was due (no
                // coordinated omission). Late because of the timer's millisecond ticks: counted
                // from when it was sent (the target is not to blame).
                let from = if previous_done > due {
                    due
                } else {
                    Instant::now()
                };
                let mut request = http::Request::new(http_body_util::Empty::<bytes::Bytes>::new());
                *request.uri_mut() = url.path_and_query().unwrap().as_str().parse().unwrap();
                request
                    .headers_mut()
                    .insert(http::header::HOST, host.clone());
                for (k, v) in &headers {
                    request.headers_mut().insert(k.clone(), v.clone());
                }
                sender.ready().await.unwrap();
                let response = sender.send_request(request).await.unwrap();
                assert!(response.status().is_success(), "{}", response.status());
                let _ = response.into_body().collect().await.unwrap();
                previous_done = Instant::now();
                latencies.push(previous_done - from);
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort();
    all
}

fn main() {
    let targets = parse_targets(&std::env::var("TK_TARGETS").unwrap_or_default());
    if targets.is_empty() {
        println!("latency: set TK_TARGETS (see the file's header)");
        return;
    }
    let env = |name: &str, default: f64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let rate = env("TK_RATE", 1000.0);
    let seconds = env("TK_SECONDS", 5.0);
    let rounds = env("TK_ROUNDS", 4.0) as usize;
    let connections = env("TK_CONNECTIONS", 8.0) as usize;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut results: Vec<Vec<[f64; 3]>> = vec![Vec::new(); targets.len()];
        for r in 0..rounds {
            // Alternate the order, so that neither target always runs first.
            let order: Vec<usize> = if r % 2 == 0 {
                (0..targets.len()).collect()
            } else {
                (0..targets.len()).rev().collect()
            };
            for i in order {
                let latencies = round(&targets[i], rate, seconds, connections).await;
                results[i].push([
                    percentile(&latencies, 0.5),
                    percentile(&latencies, 0.9),
                    percentile(&latencies, 0.99),
                ]);
            }
        }
        for (target, rounds) in targets.iter().zip(&results) {
            let median = |k: usize| {
                let mut v: Vec<f64> = rounds.iter().map(|r| r[k]).collect();
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            println!(
                "latency {} p50 {:.3} p90 {:.3} p99 {:.3}",
                target.name,
                median(0),
                median(1),
                median(2)
            );
        }
    });
}
