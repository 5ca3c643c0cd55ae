//! Memory per admission grant held (a reservation waiting for its event), counted by the
//! allocator itself: deterministic, so a regression fails here. One test only: the counter is
//! process-wide.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use ratewarden::config::Config;
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

const T0: i64 = 1_795_788_000_000;

#[test]
fn a_grant_waiting_for_its_event_costs_a_few_hundred_bytes() {
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
