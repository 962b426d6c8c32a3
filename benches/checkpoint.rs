//! Gradient checkpointing on a 32-layer MLP (width 512, batch 256, f32, relu, fused
//! cross-entropy): one training step (forward + backward) without checkpointing, with √n
//! checkpoints, and with the plan chosen for a budget of a quarter of the plain step's memory.
//!
//! Before timing, it prints the bytes each mode keeps for the backward pass (exact: the outer
//! tape's `retained_bytes` after the forward plus the largest segment a backward replays). The
//! timings are **interleaved** (every timed step of one mode is followed by an untimed step of
//! the plain mode, or of the budget plan for the plain mode), so the ratios see the same load of
//! the shared machine.
//!
//! `cargo bench --bench checkpoint`

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::{Duration, Instant};
use tapegrad::nn::checkpoint::CheckpointPlan;
use tapegrad::nn::{Activation, Mlp, ParamStore};
use tapegrad::softmax::Target;
use tapegrad::{Tape, Tensor};

const LAYERS: usize = 32;
const WIDTH: usize = 512;
const BATCH: usize = 256;

struct Setup {
    store: ParamStore<f32>,
    mlp: Mlp,
    x: Tensor<f32>,
    classes: Vec<usize>,
}

impl Setup {
    fn new() -> Self {
        let mut store = ParamStore::<f32>::new();
        let mlp = Mlp::new(&mut store, "mlp", &[WIDTH; LAYERS + 1], Activation::Relu, 7);
        Setup {
            store,
            mlp,
            x: Tensor::rand_normal([BATCH, WIDTH], 0.0, 1.0, 1),
            classes: (0..BATCH).map(|i| (i * 7919) % WIDTH).collect(),
        }
    }

    /// One step; returns (bytes kept on the tape after the forward, the largest replay, a checksum).
    fn step(&self, plan: &CheckpointPlan) -> (usize, usize, f32) {
        let tape = Tape::<f32>::new();
        let p = self.store.bind(&tape);
        let logits = self.mlp.forward_checkpointed(&p, tape.constant(self.x.clone()), plan);
        let loss = logits.cross_entropy(Target::Classes(&self.classes));
        let kept = tape.retained_bytes();
        let g = loss.backward();
        let w = self.mlp.layers[0].weight;
        (kept, tape.checkpoint_stats().largest_segment_bytes, g[p[w]].data()[0])
    }
}

/// Times `iters` steps of `plan`, each followed by an untimed step of `partner`.
fn interleaved(s: &Setup, iters: u64, plan: &CheckpointPlan, partner: &CheckpointPlan) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let t = Instant::now();
        black_box(s.step(black_box(plan)));
        total += t.elapsed();
        black_box(s.step(black_box(partner)));
    }
    total
}

fn bench(c: &mut Criterion) {
    let s = Setup::new();
    let seq = s.mlp.sequential::<f32>();
    let costs = seq.measure(&s.store, &s.x);
    let none = CheckpointPlan::none(LAYERS);
    let sqrt = CheckpointPlan::sqrt(LAYERS);
    let budget = none.peak_bytes(&costs) / 4;
    let planned = CheckpointPlan::for_budget(&costs, budget).expect("a plan within a quarter of the memory");
    let mib = |b: usize| b as f64 / (1 << 20) as f64;
    let plain_peak = {
        let (k, r, _) = s.step(&none);
        k + r
    };
    eprintln!("{LAYERS}-layer MLP, width {WIDTH}, batch {BATCH}, f32: bytes kept for backward");
    eprintln!("budget plan for {:.2} MiB: {planned}", mib(budget));
    for (name, plan) in [("plain", &none), ("sqrt_n", &sqrt), ("budget_plan", &planned)] {
        let (kept, replay, _) = s.step(plan);
        eprintln!(
            "  {name:<12} on tape {:>6.2} MiB + largest replay {:>5.2} MiB = {:>6.2} MiB ({:.2}x less than plain)",
            mib(kept),
            mib(replay),
            mib(kept + replay),
            plain_peak as f64 / (kept + replay) as f64
        );
    }
    let mut g = c.benchmark_group(format!("mlp{LAYERS}_w{WIDTH}_b{BATCH}_step"));
    g.sampling_mode(SamplingMode::Flat);
    g.bench_function("plain", |b| b.iter_custom(|n| interleaved(&s, n, &none, &planned)));
    g.bench_function("sqrt_n", |b| b.iter_custom(|n| interleaved(&s, n, &sqrt, &none)));
    g.bench_function("budget_plan", |b| {
        b.iter_custom(|n| interleaved(&s, n, &planned, &none))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(4))
        .sample_size(10);
    targets = bench
}
criterion_main!(benches);
