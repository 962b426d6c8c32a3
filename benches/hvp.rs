//! The cost of a Hessian-vector product relative to a gradient (both including the forward
//! pass), on two losses: softmax regression and a two-layer tanh MLP. Reverse-over-reverse theory
//! says the ratio is a small constant independent of the size; `hvp_at` is the marginal cost of
//! one more product at a point already recorded (what Newton–CG pays per CG iteration).
//!
//! Run: `cargo bench --bench hvp`

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Duration;
use tapegrad::functional::{hvp, hvp_n, value_and_grad, vjp_n, with_hessian, with_hessian_n};
use tapegrad::{Tensor, Var};

struct Data {
    x: Tensor<f64>,
    t: Tensor<f64>,
}

fn data(n: usize, d: usize, c: usize) -> Data {
    Data {
        x: Tensor::rand_normal([n, d], 0.0, 1.0, 1),
        t: Tensor::from_fn([n, c], |i| if i % c == (i / c) % c { 1.0 } else { 0.0 }),
    }
}

fn cross_entropy<'t>(z: Var<'t, f64>, t: Var<'t, f64>) -> Var<'t, f64> {
    let m = z.max_axis(1, true).detach();
    let lse = (z - m).exp().sum_axis(1, true).log() + m;
    ((lse - z) * t).sum_axis(1, false).mean()
}

/// Softmax regression: W is [d, c].
fn logreg<'t>(w: Var<'t, f64>, d: &Data) -> Var<'t, f64> {
    let tape = w.tape();
    let z = tape.constant(d.x.clone()).matmul(w);
    cross_entropy(z, tape.constant(d.t.clone())) + (w * w).sum().mul_scalar(1e-3)
}

/// Two-layer MLP, parameters `[W1 [d, h], W2 [h, c]]`.
fn mlp<'t>(p: &[Var<'t, f64>], d: &Data) -> Var<'t, f64> {
    let tape = p[0].tape();
    let h = tape.constant(d.x.clone()).matmul(p[0]).tanh();
    cross_entropy(h.matmul(p[1]), tape.constant(d.t.clone()))
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("hvp_vs_grad");
    g.sample_size(20)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));

    let d = data(256, 32, 10);
    let w = Tensor::rand_normal([32, 10], 0.0, 0.1, 2);
    let v = Tensor::rand_normal([32, 10], 0.0, 1.0, 3);
    g.bench_function("logreg/grad", |b| {
        b.iter(|| value_and_grad(|w| logreg(w, &d), black_box(&w)))
    });
    g.bench_function("logreg/hvp", |b| {
        b.iter(|| hvp(|w| logreg(w, &d), black_box(&w), black_box(&v)))
    });
    with_hessian(
        |w| logreg(w, &d),
        &w,
        |h| {
            g.bench_function("logreg/hvp_at", |b| b.iter(|| h.hvp(black_box(&v))));
        },
    );

    let (din, hidden, cls) = (16, 32, 10);
    let d = data(128, din, cls);
    let p = [
        Tensor::rand_normal([din, hidden], 0.0, 0.3, 4),
        Tensor::rand_normal([hidden, cls], 0.0, 0.3, 5),
    ];
    let v = [
        Tensor::rand_normal([din, hidden], 0.0, 1.0, 6),
        Tensor::rand_normal([hidden, cls], 0.0, 1.0, 7),
    ];
    let one = Tensor::scalar(1.0);
    g.bench_function("mlp/grad", |b| b.iter(|| vjp_n(|p| mlp(p, &d), black_box(&p), &one)));
    g.bench_function("mlp/hvp", |b| {
        b.iter(|| hvp_n(|p| mlp(p, &d), black_box(&p), black_box(&v)))
    });
    with_hessian_n(
        |p| mlp(p, &d),
        &p,
        |h| {
            g.bench_function("mlp/hvp_at", |b| b.iter(|| h.hvp_n(black_box(&v))));
        },
    );
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
