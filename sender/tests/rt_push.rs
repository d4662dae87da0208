//! `AudioInput::push` is real-time safe: after the engine has started it never allocates (or
//! frees), whatever it is given, including when the ring is full.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::UdpSocket;

use wavesync_common::format::StreamFormat;
use wavesync_engine::{Engine, EngineConfig};
use wavesync_net::clock::monotonic_ns;

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; only counts calls on the current thread.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        System.realloc(p, l, n)
    }
}

#[global_allocator]
static A: Counting = Counting;

#[test]
fn push_never_allocates() {
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut cfg = EngineConfig::new(StreamFormat::DEFAULT, vec![rx.local_addr().unwrap()]);
    cfg.control_port = 0;
    cfg.ring_ns = 20_000_000;
    let (engine, mut input) = Engine::start(cfg).unwrap();
    let block = vec![0.25f32; 2 * 256];
    let huge = vec![0.25f32; 2 * 48_000];
    let t0 = monotonic_ns();
    let before = ALLOCS.with(|c| c.get());
    let mut accepted = 0;
    let mut refused = 0;
    for i in 0..2_000i64 {
        if input.push(t0 + i * 5_333_333, &block) {
            accepted += 1;
        } else {
            refused += 1;
        }
        // Odd sizes, an empty push and one that can never fit.
        input.push(t0, &block[..3]);
        input.push(t0, &[]);
        assert!(!input.push(t0, &huge));
    }
    let after = ALLOCS.with(|c| c.get());
    assert_eq!(after - before, 0, "allocations in push");
    assert!(accepted > 0, "{accepted} accepted, {refused} refused");
    let s = engine.stop().unwrap();
    assert!(s.input_refused >= 2_000);
}
