//! The learner's softmax story, then what each way costs.
//!
//! 1. For a small input: `y`, the full 3×3 Jacobian from the primitives' rules next to the closed
//!    form `diag(y) − y yᵀ`, the composed and fused gradients and their largest difference, the
//!    gradcheck verdict, and the learner's diagonal-only gradient `h(1 − h)` with how far it is off.
//! 2. The learner's rule written as a user op inside a small network: `gradcheck` of the loss says
//!    only *that* it is wrong; `check::localize` names the node, its shapes and its line, while
//!    every other node of the network passes.
//! 3. Composed against fused, forward+backward, at a few sizes, eager and as compiled steps
//!    (`tapegrad::compile`, where the composed softmax and its backward fuse into one loop): a
//!    ratio table.
//!
//! Run: `cargo run --release --example softmax`

use std::time::Instant;
use tapegrad::check::{
    FusedOptions, GradcheckOptions, LocalizeOptions, fused_vs_composed, gradcheck, jacobian, localize,
};
use tapegrad::compile::Compiled;
use tapegrad::{Cotangents, Float, Math, Op, Result, Tape, Tensor, Value, Var, VjpCtx, pointwise};

/// The learner's softmax as a user op: the right forward, and the rule they derived,
/// `∂h_j/∂z_j = h_j(1 − h_j)` with nothing off the diagonal, i.e. `g ⊙ h ⊙ (1 − h)`.
struct LearnerSoftmax;
impl<T: Float> Op<T> for LearnerSoftmax {
    fn name(&self) -> &'static str {
        "learner_softmax"
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        Ok(Tape::<T>::new().constant(x[0].clone()).softmax(-1).value())
    }
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
        let h = cx.output();
        Ok(cx.grads([Some(pointwise!(T; g, h => g * h * (-h + T::ONE)))]))
    }
}

/// A user activation with a correct hand-written rule: swish `x·σ(x)`, `d = σ + x σ (1 − σ)`.
struct Swish;
impl<T: Float> Op<T> for Swish {
    fn name(&self) -> &'static str {
        "swish"
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        Ok(x[0].map(|v| v / (T::ONE + (-v).exp())))
    }
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
        let x = cx.input(0);
        Ok(cx.grads([Some(pointwise!(T; g, x => {
            let s = x.sigmoid();
            g * (s + x * s * (-s + T::ONE))
        }))]))
    }
}

/// A two-layer classifier ending in the learner's softmax and a cross-entropy written out:
/// `v = [x, W1, b1, W2, b2]`, targets one-hot `t`.
fn network<'t>(v: &[Var<'t, f64>], t: &Tensor<f64>) -> Var<'t, f64> {
    let tape = v[0].tape();
    let hidden = tape.apply(Swish, &[v[0].matmul(v[1]) + v[2]]);
    let logits = hidden.matmul(v[3]) + v[4];
    let probs = tape.apply(LearnerSoftmax, &[logits]);
    -(probs.log() * tape.constant(t.clone())).sum() / 8.0
}

/// Part 2: the learner's rule in a network, found by `localize`.
fn localize_the_learner() {
    println!("== a network with the learner's rule inside: which node is wrong?");
    let inputs = vec![
        Tensor::rand_normal([8, 4], 0.0, 1.0, 1),
        Tensor::rand_normal([4, 16], 0.0, 0.5, 2),
        Tensor::rand_normal([16], 0.0, 0.1, 3),
        Tensor::rand_normal([16, 5], 0.0, 0.5, 4),
        Tensor::rand_normal([5], 0.0, 0.1, 5),
    ];
    let t = tapegrad::nn::one_hot(&[0, 3, 1, 4, 2, 2, 0, 1], 5);
    let whole = gradcheck(|v| network(v, &t), &inputs, &GradcheckOptions::default());
    println!("gradcheck of the whole loss: {whole}");
    println!("  (that it is wrong, and the worst parameter entry; not where)\n");

    let tape = Tape::<f64>::new();
    let vars: Vec<Var<'_, f64>> = inputs.iter().map(|x| tape.var(x.clone())).collect();
    let loss = network(&vars, &t);
    let opts = LocalizeOptions::default()
        .include_library_ops() // check every node, not only the user ops, to show the rest passes
        .twin("softmax_composed", |_: &LearnerSoftmax, v| v[0].softmax_composed(-1));
    let report = localize(loss, &opts);
    println!("{report}\n");
    for c in &report.checks {
        println!(
            "  {} #{:<3} {:<16} {:>8}  built at {}:{}",
            if c.passed() { "pass" } else { "FAIL" },
            c.node,
            c.op,
            format!("{:?}", c.output.as_slice()),
            c.location.file(),
            c.location.line()
        );
    }
    let quick = localize(loss, &LocalizeOptions::default());
    println!(
        "with the default options (the library's ops skipped): {} nodes checked ({} failing: {}), {:.2?}",
        quick.checked,
        quick.failures().count(),
        quick.first_failure().map_or("none", |c| c.op),
        quick.elapsed
    );
    println!();
}

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

    localize_the_learner();

    println!("== what it costs: forward+backward of sum(softmax(x) * g), f32, median of repeated runs");
    println!("   (compiled: the same loss as a compiled step, traced once per shape; its composed softmax");
    println!("    and backward run as one fused loop, see tapegrad::compile)");
    println!(
        "{:>12} {:>12} {:>12} {:>12} {:>14} {:>14} {:>10} {:>10}",
        "shape", "composed", "fused", "naive", "comp. compiled", "fused compiled", "comp/fused", "compiled"
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
        let compiled = |fused: bool| {
            let mut step = Compiled::trace(&[&x], &[&g], |_, p, d| {
                let y = if fused {
                    p[0].softmax(1)
                } else {
                    p[0].softmax_composed(1)
                };
                (y * d[0]).sum()
            })
            .expect("the loss compiles");
            let mut samples = Vec::with_capacity(reps);
            for _ in 0..reps {
                let t0 = Instant::now();
                std::hint::black_box(step.run(&[&x], &[&g]).expect("the step runs"));
                samples.push(t0.elapsed().as_secs_f64());
            }
            samples.sort_by(f64::total_cmp);
            samples[samples.len() / 2]
        };
        let (cc, cf) = (compiled(false), compiled(true));
        println!(
            "{:>12} {:>12} {:>12} {:>12} {:>14} {:>14} {:>9.2}x {:>9.2}x",
            format!("{b}x{c}"),
            fmt_time(tc),
            fmt_time(tf),
            fmt_time(tn),
            fmt_time(cc),
            fmt_time(cf),
            tc / tf,
            cc / cf
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
