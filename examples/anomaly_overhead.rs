//! Anomaly mode's overhead as a robust ratio on a noisy machine: the two modes alternate every
//! iteration and the medians are compared (criterion's `benches/anomaly.rs` measures the same
//! workloads; this is the cross-check). Run with `cargo run --release --example anomaly_overhead`.

use std::hint::black_box;
use std::time::Instant;
use tapegrad::{Tape, Tensor};

fn mlp(anomaly: bool, x: &Tensor<f64>, w1: &Tensor<f64>, w2: &Tensor<f64>, t: &Tensor<f64>) -> f64 {
    let tape = Tape::<f64>::new();
    tape.set_anomaly(anomaly);
    let (x, w1, w2, t) = (
        tape.constant(x.clone()),
        tape.var(w1.clone()),
        tape.var(w2.clone()),
        tape.constant(t.clone()),
    );
    let z = x.matmul(w1).tanh().matmul(w2);
    let e = (z - z.max_axis(1, true).detach()).exp();
    let p = e / e.sum_axis(1, true);
    let loss = -(p.log() * t).sum_axis(1, false).mean();
    let g = loss.backward();
    g[w1].data()[0] + g[w2].data()[0]
}

fn chain(anomaly: bool) -> f64 {
    let tape = Tape::<f64>::new();
    tape.set_anomaly(anomaly);
    let x = tape.var(Tensor::scalar(0.5));
    let mut y = x;
    for _ in 0..200 {
        y = (y * x).tanh() + x;
    }
    y.backward()[x].item()
}

fn medians(iters: usize, f: impl Fn(bool) -> f64) -> (f64, f64) {
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for i in 0..2 * iters {
        let mode = i % 2 == 1;
        let t = Instant::now();
        black_box(f(black_box(mode)));
        let d = t.elapsed().as_secs_f64() * 1e6;
        if mode { on.push(d) } else { off.push(d) }
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    (med(&mut off), med(&mut on))
}

fn main() {
    for &(batch, width, iters) in &[(8usize, 16usize, 4000usize), (64, 128, 400)] {
        let x = Tensor::rand_normal([batch, width], 0.0, 1.0, 1);
        let w1 = Tensor::rand_normal([width, width], 0.0, 0.1, 2);
        let w2 = Tensor::rand_normal([width, 10], 0.0, 0.1, 3);
        let t = Tensor::from_fn([batch, 10], |i| if i % 10 == (i / 10) % 10 { 1.0 } else { 0.0 });
        let (n, a) = medians(iters, |m| mlp(m, &x, &w1, &w2, &t));
        println!(
            "mlp_step_{batch}x{width}: normal {n:.1} µs, anomaly {a:.1} µs, ratio {:.3}",
            a / n
        );
    }
    let (n, a) = medians(2000, chain);
    println!(
        "scalar_chain_200: normal {n:.1} µs, anomaly {a:.1} µs, ratio {:.3}",
        a / n
    );
}
