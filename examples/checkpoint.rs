//! Gradient checkpointing on a 32-layer MLP (width 512, batch 256, f32): the bytes kept for the
//! backward pass and the step time (forward + backward), without checkpointing, with √n
//! checkpoints, and with the plan chosen for a budget of a quarter of the plain model's memory.
//!
//! The memory figures are exact (the bytes of the values the tapes hold: `Tape::retained_bytes`
//! of the outer tape after the forward, plus the largest segment replayed by the backward). The
//! times are medians of a few steps, the modes interleaved step by step so that the load of the
//! shared machine hits them alike: read the ratios. Each step is timed on this thread's CPU time
//! (Linux; the kernels are single-threaded, so it is the work done, little disturbed by other jobs
//! on the cores) and on the wall clock.
//!
//! Last, as an independent check of the whole process, each mode runs one step in a fresh child
//! process that reports its peak resident memory (`VmHWM`, Linux): parameters, gradients, the
//! buffer pool and the allocator's slack included.
//!
//! Run: `cargo run --release --example checkpoint [layers width batch reps]`

use std::time::Instant;
use tapegrad::nn::checkpoint::CheckpointPlan;
use tapegrad::nn::{Activation, Mlp, ParamStore};
use tapegrad::softmax::Target;
use tapegrad::{Tape, Tensor};

fn main() {
    let child_mode = std::env::var("CHECKPOINT_EXAMPLE_MODE").ok();
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let arg = |i: usize, d: usize| args.get(i).copied().unwrap_or(d);
    let (layers, width, batch, reps) = (arg(0, 32), arg(1, 512), arg(2, 256), arg(3, 5));

    let mut store = ParamStore::<f32>::new();
    let mlp = Mlp::new(&mut store, "mlp", &vec![width; layers + 1], Activation::Relu, 7);
    let x = Tensor::<f32>::rand_normal([batch, width], 0.0, 1.0, 1);
    let classes: Vec<usize> = (0..batch).map(|i| (i * 7919) % width).collect();
    let seq = mlp.sequential::<f32>();
    let costs = seq.measure(&store, &x);
    let none = CheckpointPlan::none(layers);
    let plain_peak = none.peak_bytes(&costs);
    let sqrt = CheckpointPlan::sqrt(layers);
    let budget = plain_peak / 4;
    // (small models cannot get under a quarter: then the plan that keeps least)
    let planned = CheckpointPlan::for_budget(&costs, budget).unwrap_or_else(|_| CheckpointPlan::least_memory(&costs));

    let plans = [
        ("no checkpointing", &none),
        ("sqrt(n) checkpoints", &sqrt),
        ("budget plan", &planned),
    ];
    // One step: forward + backward, returning (bytes kept on the tape, largest replay, a gradient norm).
    let step = |plan: &CheckpointPlan| {
        let tape = Tape::<f32>::new();
        let p = store.bind(&tape);
        let logits = mlp.forward_checkpointed(&p, tape.constant(x.clone()), plan);
        let loss = logits.cross_entropy(Target::Classes(&classes));
        let kept = tape.retained_bytes();
        let g = loss.backward();
        let norm: f64 = p
            .vars()
            .iter()
            .map(|&v| g[v].data().iter().map(|&a| (a as f64).powi(2)).sum::<f64>())
            .sum();
        (kept, tape.checkpoint_stats().largest_segment_bytes, norm.sqrt())
    };
    // The forward alone (recorded, no backward): what one replay of every layer costs at most.
    let forward = || {
        let tape = Tape::<f32>::new();
        let p = store.bind(&tape);
        let logits = mlp.forward(&p, tape.constant(x.clone()));
        logits.cross_entropy(Target::Classes(&classes)).item()
    };
    if let Some(mode) = child_mode {
        // A child: one step of one mode, then the process's peak resident memory.
        let k: usize = mode.parse().expect("a mode number");
        let _ = step(plans[k].1);
        let hwm = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(|l| l.to_string()))
            .unwrap_or_default();
        println!("{hwm}");
        return;
    }
    println!("{layers}-layer MLP, width {width}, batch {batch}, f32, relu, fused cross-entropy loss");
    println!(
        "parameters: {:.1} MiB (the store's, the same in every mode)",
        mib(store.numel() * 4)
    );
    println!("budget plan (budget {:.2} MiB): {planned}", mib(budget));
    println!();
    let mut wall = vec![Vec::new(); plans.len()];
    let mut cpu = vec![Vec::new(); plans.len()];
    let mut mem = vec![(0, 0, 0.0); plans.len()];
    let (mut fwd_wall, mut fwd_cpu) = (Vec::new(), Vec::new());
    for r in 0..=reps {
        for (k, (_, plan)) in plans.iter().enumerate() {
            let (t0, c0) = (Instant::now(), thread_cpu());
            mem[k] = step(plan);
            if r > 0 {
                // (the first round warms up)
                wall[k].push(t0.elapsed().as_secs_f64());
                if let (Some(c0), Some(c1)) = (c0, thread_cpu()) {
                    cpu[k].push(c1 - c0);
                }
            }
        }
        let (t0, c0) = (Instant::now(), thread_cpu());
        std::hint::black_box(forward());
        if r > 0 {
            fwd_wall.push(t0.elapsed().as_secs_f64());
            if let (Some(c0), Some(c1)) = (c0, thread_cpu()) {
                fwd_cpu.push(c1 - c0);
            }
        }
    }
    let med = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let (base_wall, base_cpu) = (med(&wall[0]), med(&cpu[0]));
    let base_m = mem[0].0 + mem[0].1;
    println!(
        "| mode | segments | recomputed layers | kept on tape | largest replay | peak kept for backward | ÷ plain \
         | step, CPU time | × plain | step, wall time | × plain |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (k, (name, plan)) in plans.iter().enumerate() {
        let (kept, replay, _) = mem[k];
        let (w, c) = (med(&wall[k]), med(&cpu[k]));
        println!(
            "| {name} | {} | {} | {:.2} MiB | {:.2} MiB | {:.2} MiB (model: {:.2}) | {:.2}× less | {:.0} ms | {:.2}× \
             | {:.0} ms | {:.2}× |",
            plan.segments().len(),
            plan.recomputed_stages(),
            mib(kept),
            mib(replay),
            mib(kept + replay),
            mib(plan.peak_bytes(&costs)),
            base_m as f64 / (kept + replay) as f64,
            c * 1e3,
            c / base_cpu,
            w * 1e3,
            w / base_wall
        );
    }
    let (fc, fw) = (med(&fwd_cpu), med(&fwd_wall));
    println!(
        "\nthe forward alone (no backward): {:.0} ms CPU ({:.2} of the plain step), {:.0} ms wall ({:.2}): \
         replaying every layer once costs at most about 1 + that",
        fc * 1e3,
        fc / base_cpu,
        fw * 1e3,
        fw / base_wall
    );
    let norms: Vec<f64> = mem.iter().map(|m| m.2).collect();
    println!("\ngradient norms (equal in every mode): {norms:?}");

    println!("\nwhole process, one step in a fresh process per mode (peak resident memory, VmHWM):");
    for (k, (name, _)) in plans.iter().enumerate() {
        let out = std::env::current_exe().ok().and_then(|exe| {
            std::process::Command::new(exe)
                .args(std::env::args().skip(1))
                .env("CHECKPOINT_EXAMPLE_MODE", k.to_string())
                .output()
                .ok()
        });
        let kb = out.and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).to_string();
            text.split_whitespace().nth(1).and_then(|k| k.parse::<f64>().ok())
        });
        let line = kb.map(|kb| format!("{:.1} MiB", kb / 1024.0));
        println!(
            "  {name:<20} {}",
            line.filter(|l| !l.is_empty())
                .unwrap_or_else(|| "(not available)".into())
        );
    }
}

/// The CPU time this thread has used, in seconds (Linux: `/proc/thread-self/schedstat`), if known.
fn thread_cpu() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse::<f64>().ok().map(|ns| ns * 1e-9)
}

fn mib(b: usize) -> f64 {
    b as f64 / (1 << 20) as f64
}
