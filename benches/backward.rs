//! Workloads W4–W6 of `benches/workloads.json` (their sizes are read from it; the PyTorch and JAX
//! references are in `benches/peers/`), and what the backward pass costs relative to the forward
//! (the cheap-gradient principle says a small constant).
//!
//! - W4 `matmul`: `C = A @ B`, `loss = sum(C)`, gradients of A and B; n = 64, 256, 512, 1024.
//! - W5 `chain`: 1000 ops on a 0-d value cycling `x*a`, `x+b`, `tanh`, `exp`, then backward;
//!   and the same forward with gradients off.
//! - W6 `mlp`: MLP 784-256-10, batch 128, ReLU, softmax cross-entropy, forward + backward + SGD.
//! - `*_forward` twins of each: the same graph recorded without the backward, for the ratio.
//!
//! Run: `cargo bench --bench backward`.

mod common;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use std::time::Duration;
use tapegrad::compile::Compiled;
use tapegrad::rng::Rng;
use tapegrad::softmax::Target;
use tapegrad::{Tape, Tensor, Var};

fn quick<'a>(c: &'a mut Criterion, name: &str) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    g
}

fn w4_matmul(c: &mut Criterion) {
    let mut group = quick(c, "W4_matmul");
    for n in common::shapes("W4").into_iter().map(|s| s[0]) {
        let a = Tensor::<f32>::rand_normal([n, n], 0.0, 1.0, 1);
        let b = Tensor::<f32>::rand_normal([n, n], 0.0, 1.0, 2);
        group.throughput(criterion::Throughput::Elements(6 * (n as u64).pow(3)));
        group.bench_with_input(BenchmarkId::new("fwd_bwd", n), &n, |bench, _| {
            bench.iter(|| {
                let tape = Tape::<f32>::new();
                let (av, bv) = (tape.var(a.clone()), tape.var(b.clone()));
                let loss = av.matmul(bv).sum();
                tape.grad(&[loss], &[Tensor::scalar(1.0)], &[av, bv])
            })
        });
        group.throughput(criterion::Throughput::Elements(2 * (n as u64).pow(3)));
        group.bench_with_input(BenchmarkId::new("forward", n), &n, |bench, _| {
            bench.iter(|| {
                let tape = Tape::<f32>::new();
                let (av, bv) = (tape.var(a.clone()), tape.var(b.clone()));
                av.matmul(bv).sum().value()
            })
        });
    }
    group.finish();
}

/// The W5 chain's parameters: the number of ops and the values `x0`, `a`, `b`.
#[derive(Clone, Copy)]
struct Chain {
    ops: usize,
    x0: f32,
    a: f32,
    b: f32,
}

impl Chain {
    fn new() -> Self {
        let p = &common::workload("W5")["params"];
        let f = |k: &str| p[k].as_f64().expect("a number") as f32;
        Chain {
            ops: common::param("W5", "ops"),
            x0: f("x0"),
            a: f("a"),
            b: f("b"),
        }
    }
}

/// Records the W5 chain on `tape`: a variable `x0` (0.5), constants `a`, `b`, then `ops` (1000) ops
/// cycling `x*a`, `x+b`, `tanh`, `exp`. Returns `(x0, x)`.
fn chain(tape: &Tape<f32>, c: Chain) -> (Var<'_, f32>, Var<'_, f32>) {
    let x0 = tape.var(Tensor::scalar(c.x0));
    let (a, b) = (tape.constant(Tensor::scalar(c.a)), tape.constant(Tensor::scalar(c.b)));
    let mut x = x0;
    for i in 0..c.ops {
        x = match i & 3 {
            0 => x * a,
            1 => x + b,
            2 => x.tanh(),
            _ => x.exp(),
        };
    }
    (x0, x)
}

fn w5_chain(c: &mut Criterion) {
    let p = Chain::new();
    let mut group = quick(c, "W5_chain1000");
    group.bench_function("fwd_bwd", |bench| {
        bench.iter(|| {
            let tape = Tape::<f32>::new();
            let (x0, x) = chain(&tape, p);
            tape.grad(&[x], &[Tensor::scalar(1.0)], &[x0])
        })
    });
    // The same chain as a compiled step: traced once, replayed (forward + backward).
    let x0 = Tensor::scalar(p.x0);
    let mut step = Compiled::trace(&[&x0], &[], |tape, v, _| {
        let (a, b) = (tape.constant(Tensor::scalar(p.a)), tape.constant(Tensor::scalar(p.b)));
        let mut x = v[0];
        for i in 0..p.ops {
            x = match i & 3 {
                0 => x * a,
                1 => x + b,
                2 => x.tanh(),
                _ => x.exp(),
            };
        }
        x
    })
    .expect("the chain compiles");
    group.bench_function("compiled_fwd_bwd", |bench| {
        bench.iter(|| step.run(&[&x0], &[]).expect("the step runs"))
    });
    group.bench_function("forward_nograd", |bench| {
        bench.iter(|| {
            let tape = Tape::<f32>::new();
            tape.no_grad(|| chain(&tape, p).1.item())
        })
    });
    group.bench_function("forward", |bench| {
        bench.iter(|| {
            let tape = Tape::<f32>::new();
            chain(&tape, p).1.item()
        })
    });
    group.finish();
}

struct Mlp {
    x: Tensor<f32>,
    t: Vec<usize>,
    params: Vec<Tensor<f32>>,
}

impl Mlp {
    fn new() -> Self {
        let bsz = common::param("W6", "batch");
        let [d, h, k] = common::param_sizes("W6", "dims")[..] else {
            panic!("W6: dims must be [in, hidden, classes]")
        };
        let mut rng = Rng::new(5);
        Mlp {
            x: Tensor::rand_normal([bsz, d], 0.0, 1.0, 6),
            t: (0..bsz).map(|_| rng.below(k)).collect(),
            params: vec![
                Tensor::rand_normal([d, h], 0.0, (2.0 / d as f32).sqrt(), 7),
                Tensor::zeros([h]),
                Tensor::rand_normal([h, k], 0.0, (2.0 / h as f32).sqrt(), 8),
                Tensor::zeros([k]),
            ],
        }
    }

    fn loss<'t>(&self, tape: &'t Tape<f32>) -> (Var<'t, f32>, Vec<Var<'t, f32>>) {
        let p: Vec<Var<'t, f32>> = self.params.iter().map(|w| tape.var(w.clone())).collect();
        let x = tape.constant(self.x.clone());
        let h = (x.matmul(p[0]) + p[1]).relu();
        let logits = h.matmul(p[2]) + p[3];
        (logits.cross_entropy(Target::Classes(&self.t)), p)
    }

    fn step(&mut self, lr: f32) -> f32 {
        let grads = {
            let tape = Tape::<f32>::new();
            let (loss, p) = self.loss(&tape);
            let g = tape.grad(&[loss], &[Tensor::scalar(1.0)], &p);
            (g, loss.item())
        };
        for (w, g) in self.params.iter_mut().zip(&grads.0) {
            for (a, &b) in w.data_mut().iter_mut().zip(g.data()) {
                *a -= lr * b;
            }
        }
        grads.1
    }
}

fn w6_mlp(c: &mut Criterion) {
    let mut group = quick(c, "W6_mlp");
    let lr = common::workload("W6")["params"]["lr"].as_f64().expect("W6: params.lr") as f32;
    let mut mlp = Mlp::new();
    group.bench_function("step_sgd", |bench| bench.iter(|| mlp.step(lr)));
    // The step compiled: traced once, each call replays forward + backward, then the same update.
    let mut mlp = Mlp::new();
    let (x, t) = (mlp.x.clone(), mlp.t.clone());
    let refs: Vec<&Tensor<f32>> = mlp.params.iter().collect();
    let mut step = Compiled::trace(&refs, &[&x], |_, p, d| {
        let h = (d[0].matmul(p[0]) + p[1]).relu();
        (h.matmul(p[2]) + p[3]).cross_entropy(Target::Classes(&t))
    })
    .expect("the MLP step compiles");
    group.bench_function("step_sgd_compiled", |bench| {
        bench.iter(|| {
            let out = {
                let refs: Vec<&Tensor<f32>> = mlp.params.iter().collect();
                step.run(&refs, &[&x]).expect("the step runs")
            };
            for (w, g) in mlp.params.iter_mut().zip(&out.grads) {
                for (a, &b) in w.data_mut().iter_mut().zip(g.data()) {
                    *a -= lr * b;
                }
            }
            out.loss.item()
        })
    });
    let mlp = Mlp::new();
    group.bench_function("forward", |bench| {
        bench.iter(|| {
            let tape = Tape::<f32>::new();
            mlp.loss(&tape).0.item()
        })
    });
    group.finish();
}

criterion_group!(benches, w4_matmul, w5_chain, w6_mlp);
criterion_main!(benches);
