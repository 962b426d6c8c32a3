//! Softmax, composed from primitives versus fused into one op: what each records on the tape
//! (graph pictures) and what each costs forward and backward (profiler tables).
//!
//! Run: `cargo run --release --example profile`
//! Write the graph pictures' DOT sources too: `cargo run --release --example profile -- --dot docs`
//! (`scripts/render-graphs.sh` does that and renders them to SVG with Graphviz).
//!
//! Both are the library's: `Var::softmax_composed` (max detached, exp, sum, div: no custom rule)
//! and the fused `Var::softmax` (one forward pass per row, VJP `y ⊙ (g − Σ g⊙y)`, saving only `y`).
//! The same comparison follows for cross-entropy (`cross_entropy_composed` vs `cross_entropy`).

use tapegrad::graph::{DotOptions, fmt_bytes};
use tapegrad::profile::{Profile, ProfileOptions, profile_fn};
use tapegrad::softmax::{CrossEntropy, Target};
use tapegrad::{Tape, Tensor, Var};

fn softmax_composed<'t>(x: Var<'t, f32>) -> Var<'t, f32> {
    x.softmax_composed(-1)
}

fn fused_softmax<'t>(x: Var<'t, f32>) -> Var<'t, f32> {
    x.softmax(-1)
}

/// (forward, backward, bytes) of the rows other than the leaves and `skip`.
fn part(p: &Profile, skip: &[&str]) -> (f64, f64, usize) {
    p.rows
        .iter()
        .filter(|r| !matches!(r.op, "var" | "constant" | "detach") && !skip.contains(&r.op))
        .fold((0.0, 0.0, 0), |(f, b, k), r| {
            (f + r.forward.as_secs_f64(), b + r.backward.as_secs_f64(), k + r.bytes)
        })
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
                softmax_composed as for<'t> fn(Var<'t, f32>) -> Var<'t, f32>,
            ),
            (
                "softmax_fused",
                "fused softmax (one op, VJP y ⊙ (g − Σ g⊙y) as its own op): loss = Σ softmax(x) ⊙ g",
                fused_softmax,
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
    let (cf, cb, ck) = part(&composed, &["mul", "sum"]);
    let (ff, fb, fk) = part(&fused, &["mul", "sum"]);
    println!(
        "softmax part only: composed / fused = {:.2}× forward, {:.2}× backward, {:.2}× bytes kept\n",
        cf / ff,
        cb / fb,
        ck as f64 / fk as f64
    );

    // Cross-entropy with class targets, mean over the batch.
    let labels: Vec<usize> = (0..b).map(|i| (i * 7919) % c).collect();
    let ce_c = profile_fn(
        |t| {
            t.var(x.clone())
                .cross_entropy_composed(Target::Classes(&labels), CrossEntropy::default())
        },
        &opts,
    );
    let ce_f = profile_fn(|t| t.var(x.clone()).cross_entropy(Target::Classes(&labels)), &opts);
    println!("cross-entropy, composed:\n{ce_c}\n");
    println!("cross-entropy, fused:\n{ce_f}\n");
    println!(
        "cross-entropy: composed / fused = {:.2}× forward, {:.2}× backward; op outputs kept: {} vs {}",
        ce_c.forward_total().as_secs_f64() / ce_f.forward_total().as_secs_f64(),
        ce_c.backward_total().as_secs_f64() / ce_f.backward_total().as_secs_f64(),
        fmt_bytes(ce_c.bytes_saved_by_ops()),
        fmt_bytes(ce_f.bytes_saved_by_ops())
    );
}
