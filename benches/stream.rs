//! STREAM-style memory bandwidth: the floor under the memory-bound workloads W1–W3.
//!
//! The four kernels of McCalpin's STREAM on f32 arrays of 64 MiB each (far beyond any cache):
//!
//! | kernel | computes        | bytes counted per element |
//! |--------|-----------------|---------------------------|
//! | copy   | `c = a`         | 8 (read a, write c)       |
//! | scale  | `b = s * c`     | 8                         |
//! | add    | `c = a + b`     | 12                        |
//! | triad  | `a = b + s * c` | 12                        |
//!
//! As in STREAM, only the bytes a kernel reads and writes are counted, not the cache-line reads a
//! write may cost (write-allocate). Each runs on 1 thread and on 2 (`std::thread::scope`, the
//! arrays split in halves, the threads spawned per call: tens of µs against milliseconds). This is a
//! measurement tool, not tapegrad: it uses no engine code. Criterion reports GiB/s
//! (`Throughput::Bytes`); `scripts/bench_report.py` reads the medians and states GB/s (10⁹ B/s)
//! and, for W1–W3, the time the bytes of `benches/workloads.json` take at the measured copy
//! bandwidth.
//!
//! Run: `cargo bench --bench stream` (both thread counts), or with `STREAM_THREADS=1` (a comma
//! list) for some; ids `STREAM/<kernel>/<threads>`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Duration;

/// Elements per array: 64 MiB of f32.
const LEN: usize = 64 << 20 >> 2;
const SCALAR: f32 = 3.0;

/// Runs `kernel` on `threads` equal parts of the destination and of the sources (the last part
/// may be shorter), each part on its own thread.
fn split<const N: usize>(threads: usize, dst: &mut [f32], srcs: [&[f32]; N], kernel: fn(&mut [f32], [&[f32]; N])) {
    if threads <= 1 {
        return kernel(dst, srcs);
    }
    let part = dst.len().div_ceil(threads);
    std::thread::scope(|s| {
        for (i, d) in dst.chunks_mut(part).enumerate() {
            let range = i * part..i * part + d.len();
            let srcs = srcs.map(|a| &a[range.clone()]);
            s.spawn(move || kernel(d, srcs));
        }
    });
}

fn copy(c: &mut [f32], [a]: [&[f32]; 1]) {
    for (c, &a) in c.iter_mut().zip(a) {
        *c = a;
    }
}

fn scale(b: &mut [f32], [c]: [&[f32]; 1]) {
    for (b, &c) in b.iter_mut().zip(c) {
        *b = SCALAR * c;
    }
}

fn add(c: &mut [f32], [a, b]: [&[f32]; 2]) {
    for ((c, &a), &b) in c.iter_mut().zip(a).zip(b) {
        *c = a + b;
    }
}

fn triad(a: &mut [f32], [b, c]: [&[f32]; 2]) {
    for ((a, &b), &c) in a.iter_mut().zip(b).zip(c) {
        *a = b + SCALAR * c;
    }
}

/// The thread counts to measure: `STREAM_THREADS` (a comma list), by default 1 and 2.
fn thread_counts() -> Vec<usize> {
    match std::env::var("STREAM_THREADS") {
        Ok(s) => s
            .split(',')
            .map(|t| t.trim().parse().expect("STREAM_THREADS: a comma list of thread counts"))
            .collect(),
        Err(_) => vec![1, 2],
    }
}

fn stream(c: &mut Criterion) {
    // Filled with non-zero values, so that every page is mapped before the clock starts.
    let (mut a, mut b, mut cc) = (vec![1.0f32; LEN], vec![2.0f32; LEN], vec![0.5f32; LEN]);
    let mut group = c.benchmark_group("STREAM");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    let bytes = |arrays: u64| Throughput::Bytes(arrays * (LEN * size_of::<f32>()) as u64);
    for t in thread_counts() {
        group.throughput(bytes(2));
        group.bench_function(BenchmarkId::new("copy", t), |bench| {
            bench.iter(|| split(t, black_box(&mut cc), [&a], copy))
        });
        group.bench_function(BenchmarkId::new("scale", t), |bench| {
            bench.iter(|| split(t, black_box(&mut b), [&cc], scale))
        });
        group.throughput(bytes(3));
        group.bench_function(BenchmarkId::new("add", t), |bench| {
            bench.iter(|| split(t, black_box(&mut cc), [&a, &b], add))
        });
        group.bench_function(BenchmarkId::new("triad", t), |bench| {
            bench.iter(|| split(t, black_box(&mut a), [&b, &cc], triad))
        });
    }
    group.finish();
}

criterion_group!(benches, stream);
criterion_main!(benches);
