//! Memory per tracked org, counted by the allocator itself: the tracker after 24 h of sparse
//! traffic (one request per org and app every 10 minutes, 3 apps per org), as in the scale
//! scenario of `bench/perf.py`. Bytes live, not time: deterministic, so a regression fails here.
//! The counter is process-wide: each test holds [`ALONE`] while it counts. Also the memory
//! of an admission grant held until its event arrives.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use ratewarden::config::Config;
use ratewarden::events::{ParseContext, parse_event};
use ratewarden::tracker::{Ask, Tracker, Verdict};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only sizes are counted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Held by each test while it counts, so no other test allocates meanwhile.
static ALONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn alone() -> std::sync::MutexGuard<'static, ()> {
    ALONE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

const T0: i64 = 1_795_788_000_000;

#[test]
fn a_day_of_sparse_traffic_costs_a_few_kilobytes_per_org() {
    let _alone = alone();
    const ORGS: usize = 2_000;
    let config = Config::parse(
        "[limits]\nmax_orgs = 20000\nmax_new_orgs_per_second = 100000\n",
        "t",
    )
    .unwrap();
    let mut t = Tracker::new(&config);
    let before = LIVE.load(Ordering::Relaxed);
    let ctx = ParseContext::default();
    let mut out = Vec::new();
    for slot in 0..144i64 {
        for o in 0..ORGS {
            for a in 0..3 {
                let i = o * 3 + a;
                let ts = T0 + slot * 600_000 + (i as i64 * 7919) % 600 * 1000;
                let line =
                    format!(r#"{{"org":"org-{o:05}","app":"app-{a}","ts":{ts},"status":200}}"#);
                let ev = parse_event(line.as_bytes(), &ctx).unwrap().event;
                t.apply(&ev, ts, &mut out);
                out.clear();
            }
        }
    }
    let per_org = (LIVE.load(Ordering::Relaxed) - before) / ORGS as isize;
    let snapshot = t.encode().unwrap().len() / ORGS;
    eprintln!(
        "{per_org} bytes per org (3 apps, 432 requests over 24 h); snapshot {snapshot} bytes per org"
    );
    // Windows of every bucket cost 7.2 KB per org or app (28.9 KB here); what is kept now
    // follows the requests.
    // 4.3 KB with the parts an org without jobs never uses left unallocated (4.9 KB before).
    assert!(per_org < 4_700, "{per_org} bytes per org");
}

#[test]
fn a_grant_waiting_for_its_event_costs_a_few_hundred_bytes() {
    let _alone = alone();
    const GRANTS: usize = 100_000;
    let config = Config::parse(
        "[limits]\ndefault_tier = \"big\"\n[tiers.big]\nrpm = 1000000000\n",
        "t.toml",
    )
    .unwrap();
    let mut t = Tracker::new(&config);
    let orgs: Vec<String> = (0..100).map(|o| format!("org-{o}")).collect();
    let leases: Vec<String> = (0..GRANTS).map(|i| format!("{i:032x}")).collect();
    let mut out = Vec::new();
    // The orgs and their windows first, so what follows is the grants alone.
    for (i, org) in orgs.iter().enumerate() {
        let ask = Ask {
            org,
            app: "bot",
            requests: 1,
            tokens: 0,
            job: false,
            request_id: None,
            share_bp: None,
        };
        t.admit(&ask, &format!("warm-{i}"), T0, &mut out);
    }
    let before = LIVE.load(Ordering::Relaxed);
    for (i, lease) in leases.iter().enumerate() {
        let ask = Ask {
            org: &orgs[i % 100],
            app: "bot",
            requests: 1,
            tokens: 0,
            job: false,
            request_id: None,
            share_bp: None,
        };
        let v = t.admit(&ask, lease, T0 + 1_000 + (i as i64 % 50_000), &mut out);
        assert!(matches!(v, Verdict::Granted { .. }), "{v:?}");
    }
    let per = (LIVE.load(Ordering::Relaxed) - before) as f64 / GRANTS as f64;
    eprintln!(
        "{per:.0} bytes live per grant held ({} held)",
        t.reservations().len()
    );
    assert_eq!(t.reservations().len(), GRANTS + orgs.len());
    assert!(per < 400.0, "{per:.0} bytes per grant held");
}
