//! What recording the user's source location (`#[track_caller]`) costs.
//!
//! A node stores `&'static Location`: one pointer, filled from an implicit argument that every
//! `#[track_caller]` function receives. Three measurements, one run:
//!
//! * `record/*`: recording one node through the public API (`x.add_scalar(c)` on a 0-d value,
//!   the cheapest op; includes the forward, the node push and the location);
//! * `caller/tracked` vs `caller/plain`: a non-inlined call that returns `Location::caller()`
//!   under `#[track_caller]` versus one returning a `'static` location it already knows — the
//!   difference is what passing the location down costs per call;
//! * `push/with_location` vs `push/without_location`: pushing a node-sized record with and without
//!   the extra pointer into a reused `Vec` (the storage side of the cost).

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::panic::Location;
use std::time::{Duration, Instant};
use tapegrad::{Tape, Tensor};

#[track_caller]
#[inline(never)]
fn tracked(x: u64) -> (&'static Location<'static>, u64) {
    (Location::caller(), x.wrapping_mul(3))
}

static HERE: std::sync::OnceLock<&'static Location<'static>> = std::sync::OnceLock::new();

#[inline(never)]
fn plain(x: u64, loc: &'static Location<'static>) -> (&'static Location<'static>, u64) {
    (loc, x.wrapping_mul(3))
}

#[derive(Clone, Copy)]
#[allow(dead_code)]
struct WithLoc {
    a: [usize; 6],
    loc: &'static Location<'static>,
}

#[derive(Clone, Copy)]
#[allow(dead_code)]
struct WithoutLoc {
    a: [usize; 6],
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("record");
    g.bench_function("add_scalar_x1000", |b| {
        let mut tape = Tape::<f64>::with_capacity(1001);
        b.iter(|| {
            tape.clear();
            let x = tape.var(Tensor::scalar(1.0));
            let mut y = x;
            for _ in 0..1000 {
                y = y.add_scalar(black_box(1.0));
            }
            black_box(y.index())
        })
    });
    g.finish();

    let here = *HERE.get_or_init(|| Location::caller());
    // Each pair is interleaved (every timed run of one variant is followed by an untimed run of
    // the other), so both see the same machine load.
    let tracked_run = || {
        let mut s = 0u64;
        for i in 0..1000 {
            let (l, v) = tracked(black_box(i));
            s = s.wrapping_add(v).wrapping_add(l.line() as u64);
        }
        s
    };
    let plain_run = || {
        let mut s = 0u64;
        for i in 0..1000 {
            let (l, v) = plain(black_box(i), black_box(here));
            s = s.wrapping_add(v).wrapping_add(l.line() as u64);
        }
        s
    };
    let mut g = c.benchmark_group("caller");
    g.bench_function("tracked_x1000", |b| {
        b.iter_custom(|n| pair(n, &tracked_run, &plain_run))
    });
    g.bench_function("plain_x1000", |b| b.iter_custom(|n| pair(n, &plain_run, &tracked_run)));
    g.finish();

    let with = std::cell::RefCell::new(Vec::<WithLoc>::with_capacity(1000));
    let without = std::cell::RefCell::new(Vec::<WithoutLoc>::with_capacity(1000));
    let with_run = || {
        let mut v = with.borrow_mut();
        v.clear();
        for i in 0..1000 {
            v.push(WithLoc {
                a: [black_box(i); 6],
                loc: black_box(here),
            });
        }
        v.len()
    };
    let without_run = || {
        let mut v = without.borrow_mut();
        v.clear();
        for i in 0..1000 {
            v.push(WithoutLoc { a: [black_box(i); 6] });
        }
        v.len()
    };
    let mut g = c.benchmark_group("push");
    g.bench_function("with_location_x1000", |b| {
        b.iter_custom(|n| pair(n, &with_run, &without_run))
    });
    g.bench_function("without_location_x1000", |b| {
        b.iter_custom(|n| pair(n, &without_run, &with_run))
    });
    g.finish();
}

/// Times `n` runs of `timed`, each followed by an untimed run of `other`.
fn pair<A, B>(n: u64, timed: &dyn Fn() -> A, other: &dyn Fn() -> B) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..n {
        let t = Instant::now();
        black_box(timed());
        total += t.elapsed();
        black_box(other());
    }
    total
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = bench
}
criterion_main!(benches);
