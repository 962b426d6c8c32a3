//! Gradient checkpointing on two models, f32, one training step (forward + backward) without
//! checkpointing, with √n checkpoints, and with the plan chosen for a budget of a quarter of the
//! plain step's memory:
//!
//! - `mlp32`: a 32-layer MLP (width 512, batch 256, relu, fused cross-entropy);
//! - `transformer8`: a stack of 8 pre-norm [`TransformerBlock`]s (width 64, 4 heads, MLP 256,
//!   batch 16, 64 positions, causal; cross-entropy of every position over the 64 channels).
//!
//! Before timing, it prints the bytes each mode keeps for the backward pass (exact: the outer
//! tape's `retained_bytes` after the forward plus the largest segment a backward replays). The
//! timings are **interleaved** (every timed step of one mode is followed by an untimed step of
//! the plain mode, or of the budget plan for the plain mode), so the ratios see the same load of
//! the shared machine. Each mode is timed twice: on this thread's CPU time (`…_step_cpu`, Linux;
//! the work done, little disturbed by other jobs on the cores) and on the wall clock
//! (`…_step_wall`, what a user waits). Kernels run on one thread (`set_num_threads(1)`), so the
//! thread's CPU time is the step's.
//!
//! `forward_only` times the forward alone (no backward): one replay of every stage costs about
//! that, so `1 + forward_only ÷ plain` is what a plan recomputing every stage should cost.
//!
//! `cargo bench --bench checkpoint`

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::{Duration, Instant};
use tapegrad::nn::checkpoint::{CheckpointPlan, Sequential};
use tapegrad::nn::{Activation, Mlp, ParamStore, TransformerBlock};
use tapegrad::softmax::Target;
use tapegrad::{Tape, Tensor};

/// One model to train: its stages, parameters, a batch and the class of every output row.
struct Setup {
    name: String,
    store: ParamStore<f32>,
    seq: Sequential<f32>,
    x: Tensor<f32>,
    classes: Vec<usize>,
}

impl Setup {
    fn mlp() -> Self {
        const LAYERS: usize = 32;
        const WIDTH: usize = 512;
        const BATCH: usize = 256;
        let mut store = ParamStore::<f32>::new();
        let mlp = Mlp::new(&mut store, "mlp", &[WIDTH; LAYERS + 1], Activation::Relu, 7);
        Setup {
            name: format!("mlp{LAYERS}_w{WIDTH}_b{BATCH}"),
            seq: mlp.sequential(),
            store,
            x: Tensor::rand_normal([BATCH, WIDTH], 0.0, 1.0, 1),
            classes: (0..BATCH).map(|i| (i * 7919) % WIDTH).collect(),
        }
    }

    fn transformer() -> Self {
        const BLOCKS: usize = 8;
        const DIM: usize = 64;
        const BATCH: usize = 16;
        const TIME: usize = 64;
        let mut store = ParamStore::<f32>::new();
        let blocks: Vec<TransformerBlock> = (0..BLOCKS)
            .map(|i| TransformerBlock::new(&mut store, &format!("blocks.{i}"), DIM, 4, 4 * DIM, i as u64))
            .collect();
        Setup {
            name: format!("transformer{BLOCKS}_d{DIM}_b{BATCH}_t{TIME}"),
            seq: TransformerBlock::stack(&blocks, true),
            store,
            x: Tensor::rand_normal([BATCH, TIME, DIM], 0.0, 1.0, 1),
            classes: (0..BATCH * TIME).map(|i| (i * 7919) % DIM).collect(),
        }
    }

    /// The forward pass alone, recorded as for a step; returns the loss.
    fn forward(&self) -> f32 {
        let tape = Tape::<f32>::new();
        let p = self.store.bind(&tape);
        let out = self.seq.forward(&p, tape.constant(self.x.clone()));
        let rows = self.classes.len();
        let logits = out.reshape([rows, out.value().numel() / rows]);
        logits.cross_entropy(Target::Classes(&self.classes)).item()
    }

    /// One step; returns (bytes kept on the tape after the forward, the largest replay, a checksum).
    fn step(&self, plan: &CheckpointPlan) -> (usize, usize, f32) {
        let tape = Tape::<f32>::new();
        let p = self.store.bind(&tape);
        let out = self.seq.forward_planned(&p, tape.constant(self.x.clone()), plan);
        let rows = self.classes.len();
        let logits = out.reshape([rows, out.value().numel() / rows]);
        let loss = logits.cross_entropy(Target::Classes(&self.classes));
        let kept = tape.retained_bytes();
        let g = loss.backward();
        let first = p.vars()[0];
        (kept, tape.checkpoint_stats().largest_segment_bytes, g[first].data()[0])
    }
}

/// The CPU time this thread has used (Linux: `/proc/thread-self/schedstat`, in ns), if known.
fn thread_cpu() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok().map(Duration::from_nanos)
}

/// Which clock a measurement reads.
#[derive(Clone, Copy)]
enum Clock {
    /// Wall time: what a user waits, including the time other processes hold the cores.
    Wall,
    /// This thread's CPU time (the kernels are single-threaded): the work done, much less
    /// disturbed by the other jobs of the shared machine.
    Cpu,
}

/// What a timed iteration runs.
#[derive(Clone, Copy)]
enum Work<'a> {
    /// A training step under a plan.
    Step(&'a CheckpointPlan),
    /// The forward alone (recorded, no backward): what replaying every layer once costs at most.
    Forward,
}

/// Times `iters` runs of `work` on `clock`, each followed by an untimed step of `partner`.
fn interleaved(s: &Setup, iters: u64, work: Work<'_>, partner: &CheckpointPlan, clock: Clock) -> Duration {
    let run = || match work {
        Work::Step(plan) => black_box(s.step(black_box(plan))).2,
        Work::Forward => black_box(s.forward()),
    };
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        match clock {
            Clock::Wall => {
                let t = Instant::now();
                run();
                total += t.elapsed();
            }
            Clock::Cpu => {
                let t = thread_cpu().unwrap_or_default();
                run();
                total += thread_cpu().unwrap_or_default().saturating_sub(t);
            }
        }
        black_box(s.step(black_box(partner)));
    }
    total
}

fn bench_model(c: &mut Criterion, s: &Setup) {
    let n = s.seq.len();
    let costs = s.seq.measure(&s.store, &s.x);
    let none = CheckpointPlan::none(n);
    let sqrt = CheckpointPlan::sqrt(n);
    let budget = none.peak_bytes(&costs) / 4;
    let planned = CheckpointPlan::for_budget(&costs, budget).expect("a plan within a quarter of the memory");
    let mib = |b: usize| b as f64 / (1 << 20) as f64;
    let plain_peak = {
        let (k, r, _) = s.step(&none);
        k + r
    };
    eprintln!("{}, f32: bytes kept for backward", s.name);
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
    let clocks: &[(Clock, &str)] = if thread_cpu().is_some() {
        &[(Clock::Cpu, "cpu"), (Clock::Wall, "wall")]
    } else {
        &[(Clock::Wall, "wall")]
    };
    for &(clock, label) in clocks {
        let mut g = c.benchmark_group(format!("{}_step_{label}", s.name));
        g.sampling_mode(SamplingMode::Flat);
        g.bench_function("plain", |b| {
            b.iter_custom(|n| interleaved(s, n, Work::Step(&none), &planned, clock))
        });
        g.bench_function("sqrt_n", |b| {
            b.iter_custom(|n| interleaved(s, n, Work::Step(&sqrt), &none, clock))
        });
        g.bench_function("budget_plan", |b| {
            b.iter_custom(|n| interleaved(s, n, Work::Step(&planned), &none, clock))
        });
        g.bench_function("forward_only", |b| {
            b.iter_custom(|n| interleaved(s, n, Work::Forward, &none, clock))
        });
        g.finish();
    }
}

fn bench(c: &mut Criterion) {
    tapegrad::set_num_threads(1);
    bench_model(c, &Setup::mlp());
    bench_model(c, &Setup::transformer());
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
