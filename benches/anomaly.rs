//! Anomaly mode's overhead: one training step (forward + backward) with anomaly mode off and on.
//!
//! The machine is shared and noisy, so the two variants are **interleaved**: every timed
//! iteration of `normal` is followed by an untimed run of `anomaly` and vice versa
//! (`iter_custom`), so both medians see the same load and their ratio is meaningful.

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::{Duration, Instant};
use tapegrad::{Tape, Tensor};

/// A two-layer MLP with a composed softmax cross-entropy: `batch × width` activations.
fn step(anomaly: bool, x: &Tensor<f64>, w1: &Tensor<f64>, w2: &Tensor<f64>, t: &Tensor<f64>) -> f64 {
    let tape = Tape::<f64>::new();
    tape.set_anomaly(anomaly);
    let (x, w1, w2, t) = (
        tape.constant(x.clone()),
        tape.var(w1.clone()),
        tape.var(w2.clone()),
        tape.constant(t.clone()),
    );
    let h = x.matmul(w1).tanh();
    let z = h.matmul(w2);
    let m = z.max_axis(1, true).detach();
    let e = (z - m).exp();
    let p = e / e.sum_axis(1, true);
    let loss = -(p.log() * t).sum_axis(1, false).mean();
    let g = loss.backward();
    g[w1].data()[0] + g[w2].data()[0]
}

/// A scalar chain: per-op overhead dominates (tiny tensors).
fn scalar_chain(anomaly: bool, n: usize) -> f64 {
    let tape = Tape::<f64>::new();
    tape.set_anomaly(anomaly);
    let x = tape.var(Tensor::scalar(0.5));
    let mut y = x;
    for _ in 0..n {
        y = (y * x).tanh() + x;
    }
    y.backward()[x].item()
}

/// Times `f(mode)` for `iters` iterations, running `f(!mode)` untimed after each one.
fn interleaved(iters: u64, mode: bool, f: impl Fn(bool) -> f64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let t = Instant::now();
        black_box(f(black_box(mode)));
        total += t.elapsed();
        black_box(f(black_box(!mode)));
    }
    total
}

fn bench(c: &mut Criterion) {
    for &(batch, width) in &[(8usize, 16usize), (64, 128)] {
        let x = Tensor::rand_normal([batch, width], 0.0, 1.0, 1);
        let w1 = Tensor::rand_normal([width, width], 0.0, 0.1, 2);
        let w2 = Tensor::rand_normal([width, 10], 0.0, 0.1, 3);
        let t = Tensor::from_fn([batch, 10], |i| if i % 10 == (i / 10) % 10 { 1.0 } else { 0.0 });
        let f = |mode| step(mode, &x, &w1, &w2, &t);
        let mut g = c.benchmark_group(format!("mlp_step_{batch}x{width}"));
        g.bench_function("normal", |b| b.iter_custom(|n| interleaved(n, false, f)));
        g.bench_function("anomaly", |b| b.iter_custom(|n| interleaved(n, true, f)));
        g.finish();
    }
    let f = |mode| scalar_chain(mode, 200);
    let mut g = c.benchmark_group("scalar_chain_200");
    g.bench_function("normal", |b| b.iter_custom(|n| interleaved(n, false, f)));
    g.bench_function("anomaly", |b| b.iter_custom(|n| interleaved(n, true, f)));
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    targets = bench
}
criterion_main!(benches);
