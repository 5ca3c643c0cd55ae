//! The tracker's per-event path, and parse + track together, on events shaped like
//! `shared/bench/gen_events.py` output (50 orgs, 5 apps each, jobs, 5 % 429s), and admission
//! asks (each granted and reserved) over the same 50 orgs.
//!
//! `cargo bench --bench tracker`; compare runs as ratios, not absolute times.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ratewarden::config::Config;
use ratewarden::events::{ParseContext, parse_event};
use ratewarden::tracker::Tracker;

const N: usize = 20_000;

/// Deterministic lines resembling the generator's: ts advancing 1-3 ms per line.
fn lines() -> Vec<String> {
    let mut seed: u64 = 42;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let apps = [
        "render-bot",
        "clip-studio",
        "storyboard",
        "ad-maker",
        "promo-gen",
    ];
    let mut ts: i64 = 1_795_788_000_000;
    (0..N)
        .map(|i| {
            ts += 1 + (next() % 3) as i64;
            let org = 1 + (next() % 50);
            let app = apps[(next() % 5) as usize];
            let r = next() % 100;
            let (kind, status) = match r {
                0..=3 => ("job_completed", 200),
                4 => ("job_failed", 200),
                5..=9 => ("request", 429),
                10 => ("request", 500),
                11..=40 => ("request", 202),
                _ => ("request", 200),
            };
            let secs = ts / 1000;
            let stamp = chrono::DateTime::from_timestamp(secs, 0)
                .map(|d| d.format("%Y-%m-%dT%H:%M:%S").to_string())
                .unwrap_or_default();
            format!(
                r#"{{"ts":"{stamp}.{:03}Z","org":"org-{org}","app":"{app}","user":"u-{}","model":"sora-2","kind":"{kind}","status":{status},"retry_after":7,"job_id":"vid_{i:024x}","latency_ms":403}}"#,
                ts % 1000,
                next() % 1000
            )
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let config = Config::default();
    let lines = lines();
    let ctx = ParseContext::default();
    let events: Vec<_> = lines
        .iter()
        .map(|l| {
            parse_event(l.as_bytes(), &ctx)
                .expect("bench lines are valid")
                .event
        })
        .collect();

    let mut g = c.benchmark_group("per_event");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("parse", |b| {
        b.iter(|| {
            for l in &lines {
                black_box(parse_event(black_box(l.as_bytes()), &ctx).ok());
            }
        })
    });
    g.bench_function("track", |b| {
        b.iter_batched(
            || Tracker::new(&config),
            |mut t| {
                let mut out = Vec::new();
                for ev in &events {
                    let now = ev.ts_ms.unwrap_or(0);
                    t.apply(ev, now, &mut out);
                    out.clear();
                }
                t
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.bench_function("parse_and_track", |b| {
        b.iter_batched(
            || Tracker::new(&config),
            |mut t| {
                let mut out = Vec::new();
                for l in &lines {
                    if let Ok(ev) = parse_event(l.as_bytes(), &ctx).map(|p| p.event) {
                        let now = ev.ts_ms.unwrap_or(0);
                        t.apply(&ev, now, &mut out);
                        out.clear();
                    }
                }
                t
            },
            criterion::BatchSize::LargeInput,
        )
    });
    // Admission: a grant weighed against every limit and reserved, per ask, against the
    // per-event path above as the baseline (same orgs, same clock steps).
    let big = Config::parse(
        "[limits]\ndefault_tier = \"big\"\n[tiers.big]\nrpm = 1000000000\ndaily = 1000000000\n",
        "bench.toml",
    )
    .expect("bench config");
    let leases: Vec<String> = (0..N).map(|i| format!("{i:032x}")).collect();
    let orgs: Vec<String> = (0..50).map(|o| format!("org-{o}")).collect();
    g.bench_function("admit", |b| {
        b.iter_batched(
            || Tracker::new(&big),
            |mut t| {
                let mut out = Vec::new();
                for (i, lease) in leases.iter().enumerate() {
                    let ask = ratewarden::tracker::Ask {
                        org: &orgs[i % 50],
                        app: "bot",
                        requests: 1,
                        tokens: 0,
                        job: false,
                        request_id: None,
                        share_bp: None,
                    };
                    black_box(t.admit(&ask, lease, 1_795_788_000_000 + 2 * i as i64, &mut out));
                    out.clear();
                }
                t
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
