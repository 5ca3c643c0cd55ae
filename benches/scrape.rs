//! `GET /metrics` at scale: the exposition of 10 000 orgs with 3 apps each (the scale
//! scenario of `bench/perf.py scale`), encoded from the live state as a scrape does.
//!
//! `cargo bench --bench scrape`; compare runs as ratios, not absolute times. Set
//! `SCRAPE_ONCE=1` to encode once and exit (for `valgrind --tool=callgrind`).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use ratewarden::clock::ManualClock;
use ratewarden::config::Config;
use ratewarden::events::{ParseContext, parse_event};
use ratewarden::live::Live;
use ratewarden::metrics::Metrics;
use ratewarden::tracker::Tracker;

const NOW: i64 = 1_795_806_000_000;
const ORGS: usize = 10_000;

/// A day of traffic: each org and app one request every 10 minutes.
fn metrics() -> Metrics {
    let config = Config::default();
    let live = Live::in_memory(Tracker::new(&config), Arc::new(ManualClock::new(NOW)));
    let ctx = ParseContext::default();
    for step in (1..=144).rev() {
        let base = NOW - step * 600_000;
        let lines: Vec<String> = (0..ORGS * 3)
            .map(|i| {
                let ts = base + (i as i64 * 7919) % 600 * 1000;
                format!(
                    r#"{{"ts":{ts},"org":"org-{:05}","app":"app-{}","status":200}}"#,
                    i / 3,
                    i % 3
                )
            })
            .collect();
        let mut events: Vec<_> = lines
            .iter()
            .filter_map(|l| parse_event(l.as_bytes(), &ctx).ok().map(|p| p.event))
            .collect();
        live.apply(&mut events, base + 600_000, None);
    }
    Metrics::new(Arc::new(live), &config)
}

fn bench(c: &mut Criterion) {
    let m = metrics();
    if std::env::var_os("SCRAPE_ONCE").is_some() {
        let text = m.encode(false).unwrap_or_default();
        println!("{} bytes", text.len());
        return;
    }
    let mut g = c.benchmark_group("scrape");
    g.sample_size(20);
    g.bench_function("openmetrics_10k_orgs", |b| {
        b.iter(|| black_box(m.encode(false).map(|t| t.len())))
    });
    g.bench_function("classic_10k_orgs", |b| {
        b.iter(|| black_box(m.encode(true).map(|t| t.len())))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
