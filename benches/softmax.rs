//! Softmax workloads W1–W3 of `benches/workloads.json` (their shapes are read from it), one to one
//! with the PyTorch and JAX references of `benches/peers/`: every timed call builds the graph from
//! scratch and takes the gradient (forward + backward), f32.
//!
//! - W1 `fused`: `loss = sum(softmax(x, -1) * g)`, gradient w.r.t. `x`.
//! - W2 `composed` (max detached, exp, sum, div) and `naive` (`exp(x) / sum(exp(x))`), same loss.
//! - W3 `ce_fused` / `ce_composed`: softmax cross-entropy, mean over the batch, random class targets.
//!
//! Run: `cargo bench --bench softmax` (add `-- W1` to filter).

mod common;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use std::time::Duration;
use tapegrad::compile::Compiled;
use tapegrad::rng::Rng;
use tapegrad::softmax::{CrossEntropy, Target};
use tapegrad::{Tape, Tensor};

fn softmax_loss(c: &mut Criterion) {
    for (w, name) in [("W1", "fused"), ("W2", "composed"), ("W2", "naive")] {
        let mut group = c.benchmark_group(format!("{w}_{name}"));
        group
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2))
            .sample_size(20);
        for (b, n) in common::matrix_shapes(w) {
            let x = Tensor::<f32>::rand_normal([b, n], 0.0, 1.0, 1);
            let g = Tensor::<f32>::rand_normal([b, n], 0.0, 1.0, 2);
            group.bench_with_input(BenchmarkId::from_parameter(format!("{b}x{n}")), &(), |bench, _| {
                bench.iter(|| {
                    let tape = Tape::<f32>::new();
                    let xv = tape.var(x.clone());
                    let y = match name {
                        "fused" => xv.softmax(-1),
                        "composed" => xv.softmax_composed(-1),
                        _ => xv.softmax_naive(-1),
                    };
                    let loss = (y * tape.constant(g.clone())).sum();
                    tape.grad(&[loss], &[Tensor::scalar(1.0)], &[xv])
                })
            });
        }
        group.finish();
    }
}

fn cross_entropy(c: &mut Criterion) {
    for name in ["ce_fused", "ce_composed"] {
        let mut group = c.benchmark_group(format!("W3_{name}"));
        group
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2))
            .sample_size(20);
        for (b, n) in common::matrix_shapes("W3") {
            let x = Tensor::<f32>::rand_normal([b, n], 0.0, 1.0, 3);
            let mut rng = Rng::new(4);
            let targets: Vec<usize> = (0..b).map(|_| rng.below(n)).collect();
            group.bench_with_input(BenchmarkId::from_parameter(format!("{b}x{n}")), &(), |bench, _| {
                bench.iter(|| {
                    let tape = Tape::<f32>::new();
                    let xv = tape.var(x.clone());
                    let loss = if name == "ce_fused" {
                        xv.cross_entropy(Target::Classes(&targets))
                    } else {
                        xv.cross_entropy_composed(Target::Classes(&targets), CrossEntropy::default())
                    };
                    tape.grad(&[loss], &[Tensor::scalar(1.0)], &[xv])
                })
            });
        }
        group.finish();
    }
}

/// The W1/W2/W3 losses as compiled steps (`tapegrad::compile`): traced once per shape, each
/// timed call replays forward + backward on the same inputs.
fn compiled(c: &mut Criterion) {
    for (w, name) in [
        ("W1", "fused"),
        ("W2", "composed"),
        ("W2", "naive"),
        ("W3", "ce_fused"),
        ("W3", "ce_composed"),
    ] {
        let mut group = c.benchmark_group(format!("{w}_{name}_compiled"));
        group
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2))
            .sample_size(20);
        for (b, n) in common::matrix_shapes(w) {
            let (x, g) = if w == "W3" {
                (
                    Tensor::<f32>::rand_normal([b, n], 0.0, 1.0, 3),
                    Tensor::<f32>::zeros([1]),
                )
            } else {
                (
                    Tensor::<f32>::rand_normal([b, n], 0.0, 1.0, 1),
                    Tensor::<f32>::rand_normal([b, n], 0.0, 1.0, 2),
                )
            };
            let mut rng = Rng::new(4);
            let targets: Vec<usize> = (0..b).map(|_| rng.below(n)).collect();
            let mut step = Compiled::trace(&[&x], &[&g], |_, p, d| match name {
                "fused" => (p[0].softmax(-1) * d[0]).sum(),
                "composed" => (p[0].softmax_composed(-1) * d[0]).sum(),
                "naive" => (p[0].softmax_naive(-1) * d[0]).sum(),
                "ce_fused" => p[0].cross_entropy(Target::Classes(&targets)),
                _ => p[0].cross_entropy_composed(Target::Classes(&targets), CrossEntropy::default()),
            })
            .expect("the workload compiles");
            group.bench_with_input(BenchmarkId::from_parameter(format!("{b}x{n}")), &(), |bench, _| {
                bench.iter(|| step.run(&[&x], &[&g]).expect("the step runs"))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, softmax_loss, cross_entropy, compiled);
criterion_main!(benches);
