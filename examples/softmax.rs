//! The learner's softmax story, then what each way costs.
//!
//! 1. For a small input: `y`, the full 3×3 Jacobian from the primitives' rules next to the closed
//!    form `diag(y) − y yᵀ`, the composed and fused gradients and their largest difference, the
//!    gradcheck verdict, and the learner's diagonal-only gradient `h(1 − h)` with how far it is off.
//! 2. Composed against fused, forward+backward, at a few sizes: a ratio table.
//!
//! Run: `cargo run --release --example softmax`

use std::time::Instant;
use tapegrad::check::{FusedOptions, GradcheckOptions, fused_vs_composed, gradcheck, jacobian};
use tapegrad::{Tape, Tensor};

fn main() {
    let x = Tensor::from_vec(vec![1.0, 2.0, 0.5], [3]);
    let g = Tensor::from_vec(vec![1.0, -0.5, 0.25], [3]);
    let tape = Tape::<f64>::new();
    let y = tape.constant(x.clone()).softmax(0).value();
    println!("== softmax of a small input");
    println!("x = {x}\ny = softmax(x) = {y:.6}\n");

    let j = jacobian(|v| v.softmax_composed(0), &x);
    let analytic = Tensor::from_fn([3, 3], |f| {
        let (a, b) = (f / 3, f % 3);
        (if a == b { y.data()[a] } else { 0.0 }) - y.data()[a] * y.data()[b]
    });
    println!("Jacobian that falls out of the primitives' rules (max, sub, exp, sum, div):");
    println!("{j:.6}\n");
    println!("closed form diag(y) - y yT:\n{analytic:.6}");
    println!("largest difference: {:.3e}\n", j.max_abs_diff(&analytic));

    // Gradients of L = <g, softmax(x)> both ways.
    let grad_of = |fused: bool| {
        let tape = Tape::<f64>::new();
        let xv = tape.var(x.clone());
        let y = if fused { xv.softmax(0) } else { xv.softmax_composed(0) };
        (y * tape.constant(g.clone())).sum().backward()[xv].clone()
    };
    let (gc, gf) = (grad_of(false), grad_of(true));
    println!("gradient of <g, y> with g = {g}");
    println!("  composed: {gc:.9}");
    println!("  fused:    {gf:.9}   (closed-form VJP y * (g - <g, y>))");
    println!("  largest difference: {:.3e}", gc.max_abs_diff(&gf));
    let check = gradcheck(
        |v| v[0].softmax_composed(0),
        std::slice::from_ref(&x),
        &GradcheckOptions::default(),
    );
    println!("  {check}");
    let fc = fused_vs_composed(
        |v| v[0].softmax(0),
        |v| v[0].softmax_composed(0),
        std::slice::from_ref(&x),
        &FusedOptions::default(),
    );
    println!("  {fc}\n");

    // The learner's rule: dh_j/dz_j = h_j (1 - h_j), nothing off the diagonal.
    let learner = Tensor::from_fn([3], |i| y.data()[i] * (1.0 - y.data()[i]) * g.data()[i]);
    println!("the learner's diagonal-only gradient g * h(1-h): {learner:.9}");
    println!(
        "  off by up to {:.3e} from the true gradient: the cross terms -h_j h_k are missing\n",
        learner.max_abs_diff(&gc)
    );

    println!("== what it costs: forward+backward of sum(softmax(x) * g), f32, median of repeated runs");
    println!(
        "{:>12} {:>14} {:>14} {:>14} {:>16}",
        "shape", "composed", "fused", "naive", "composed/fused"
    );
    for &(b, c) in &[(64usize, 10usize), (256, 1000), (1024, 4096), (32, 32768)] {
        let x = Tensor::<f32>::rand_normal([b, c], 0.0, 1.0, 1);
        let g = Tensor::<f32>::rand_normal([b, c], 0.0, 1.0, 2);
        let reps = (10_000_000 / (b * c)).clamp(3, 2000);
        let time = |way: u8| {
            let mut samples = Vec::with_capacity(reps);
            for _ in 0..reps {
                let t0 = Instant::now();
                let tape = Tape::<f32>::new();
                let xv = tape.var(x.clone());
                let y = match way {
                    0 => xv.softmax_composed(1),
                    1 => xv.softmax(1),
                    _ => xv.softmax_naive(1),
                };
                let loss = (y * tape.constant(g.clone())).sum();
                let gx = tape.grad(&[loss], &[Tensor::scalar(1.0)], &[xv]);
                std::hint::black_box(gx);
                samples.push(t0.elapsed().as_secs_f64());
            }
            samples.sort_by(f64::total_cmp);
            samples[samples.len() / 2]
        };
        let (tc, tf, tn) = (time(0), time(1), time(2));
        println!(
            "{:>12} {:>14} {:>14} {:>14} {:>15.2}x",
            format!("{b}x{c}"),
            fmt_time(tc),
            fmt_time(tf),
            fmt_time(tn),
            tc / tf
        );
    }
    println!("\n(criterion figures: cargo bench --bench softmax)");
}

fn fmt_time(s: f64) -> String {
    if s < 1e-3 {
        format!("{:.1} us", s * 1e6)
    } else {
        format!("{:.2} ms", s * 1e3)
    }
}
