//! Softmax, composed from primitives versus fused into one op: what each records on the tape
//! (graph pictures) and what each costs forward and backward (profiler tables).
//!
//! Run: `cargo run --release --example profile`
//! Write the graph pictures' DOT sources too: `cargo run --release --example profile -- --dot docs`
//! (`scripts/render-graphs.sh` does that and renders them to SVG with Graphviz).
//!
//! The fused softmax here is a user-defined op (`FusedSoftmax` below): one forward kernel and the
//! closed-form VJP `y ⊙ (g − Σ g⊙y)`, saving only `y`. LEAD HOOK: once the library's fused
//! `Var::softmax(axis)` lands, replace `fused_softmax(x)` with `x.softmax(-1)`.

use tapegrad::graph::DotOptions;
use tapegrad::profile::{ProfileOptions, profile_fn};
use tapegrad::{Cotangents, Float, Op, Result, Tape, Tensor, Var, VjpCtx};

/// Softmax over the last axis from primitives: the gradient comes from their rules alone.
fn softmax_composed<'t, T: Float>(x: Var<'t, T>) -> Var<'t, T> {
    let m = x.max_axis(-1, true).detach(); // shift invariance: exact, and no gradient needed
    let e = (x - m).exp();
    e / e.sum_axis(-1, true)
}

/// Softmax over the last axis as one op.
struct FusedSoftmax;

impl<T: Float> Op<T> for FusedSoftmax {
    fn name(&self) -> &'static str {
        "softmax"
    }
    fn params(&self) -> String {
        "axis=-1".into()
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        let x = x[0];
        let n = *x.shape().last().unwrap_or(&1);
        let mut out = x.to_vec();
        for row in out.chunks_mut(n.max(1)) {
            let m = row.iter().copied().fold(T::NEG_INFINITY, T::max);
            let mut s = T::ZERO;
            for v in row.iter_mut() {
                *v = (*v - m).exp();
                s += *v;
            }
            let inv = T::ONE / s;
            row.iter_mut().for_each(|v| *v *= inv);
        }
        Tensor::try_from_vec(out, x.shape())
    }
    /// `y ⊙ (g − Σ g⊙y)`: needs only the output `y`.
    fn vjp<'t>(&self, cx: &VjpCtx<'_, 't, T>, g: Var<'t, T>) -> Result<Cotangents<'t, T>> {
        let y = cx.output();
        Ok(cx.grads([Some(y * (g - (g * y).sum_axis(-1, true)))]))
    }
}

fn fused_softmax<'t, T: Float>(x: Var<'t, T>) -> Var<'t, T> {
    x.tape().apply(FusedSoftmax, &[x])
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dot_dir = args.iter().position(|a| a == "--dot").map(|i| args[i + 1].clone());

    // Graph pictures: a 2×3 softmax, dotted with a fixed cotangent so the loss is a scalar.
    if let Some(dir) = &dot_dir {
        std::fs::create_dir_all(dir).expect("create the output directory");
        for (name, title, f) in [
            (
                "softmax_composed",
                "softmax composed from primitives: loss = Σ softmax(x) ⊙ g",
                softmax_composed::<f32> as for<'t> fn(Var<'t, f32>) -> Var<'t, f32>,
            ),
            (
                "softmax_fused",
                "fused softmax (one op, VJP y ⊙ (g − Σ g⊙y)): loss = Σ softmax(x) ⊙ g",
                fused_softmax::<f32>,
            ),
        ] {
            let tape = Tape::<f32>::new();
            let x = tape.var(Tensor::rand_normal([2, 3], 0.0, 1.0, 1));
            let g = tape.constant(Tensor::rand_normal([2, 3], 0.0, 1.0, 2));
            let loss = (f(x) * g).sum();
            let path = format!("{dir}/{name}.dot");
            std::fs::write(&path, loss.to_dot(&DotOptions::default().title(title))).expect("write the DOT file");
            println!("wrote {path}");
        }
        println!();
    }

    // Profiler tables on a batch big enough for the kernels to dominate.
    let (b, c) = (256, 1000);
    let x = Tensor::<f32>::rand_normal([b, c], 0.0, 1.0, 3);
    let g = Tensor::<f32>::rand_normal([b, c], 0.0, 1.0, 4);
    let opts = ProfileOptions::rounds(15);
    let composed = profile_fn(
        |t| (softmax_composed(t.var(x.clone())) * t.constant(g.clone())).sum(),
        &opts,
    );
    let fused = profile_fn(
        |t| (fused_softmax(t.var(x.clone())) * t.constant(g.clone())).sum(),
        &opts,
    );
    println!("loss = Σ softmax(x) ⊙ g,  x: [{b}, {c}] f32\n");
    println!("composed softmax:\n{composed}\n");
    println!("fused softmax:\n{fused}\n");
    let sm = |p: &tapegrad::profile::Profile| {
        p.rows
            .iter()
            .filter(|r| !matches!(r.op, "var" | "constant" | "detach" | "mul" | "sum"))
            .fold((0.0, 0.0, 0usize), |(f, b, k), r| {
                (f + r.forward.as_secs_f64(), b + r.backward.as_secs_f64(), k + r.bytes)
            })
    };
    let (cf, cb, ck) = sm(&composed);
    let (ff, fb, fk) = sm(&fused);
    println!(
        "softmax part only: composed / fused = {:.2}× forward, {:.2}× backward, {:.2}× bytes kept",
        cf / ff,
        cb / fb,
        ck as f64 / fk as f64
    );
}
