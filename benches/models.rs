//! Workloads W7 and W8 of `benches/workloads.json` (their sizes are read from it): training steps
//! of real models, the same computation as the PyTorch and JAX references in `benches/peers/`.
//!
//! - W8 `transformer`: a one-block pre-norm causal transformer language model (token + positional
//!   embedding, layer norm, 4-head causal self-attention, GELU MLP, residuals, a final layer norm
//!   and a linear head), mean cross-entropy over every token, forward + backward + SGD update.
//!   Layer norm and attention are written with the primitives (mean, rsqrt, matmul, softmax with
//!   an additive `-inf` mask), as a user would write them.
//!
//! - W7 `cnn`: conv2d (1 → 16 channels, 3×3, padding 1) → relu → max_pool2d(2) → flatten →
//!   linear → mean cross-entropy on a batch of 128 8×8 images, forward + backward + SGD update.
//!   (Fixed random images and labels of the workload's shapes: the values do not matter for speed.)
//!
//! Each has a `step_sgd_compiled` row: the same step traced once with
//! [`Compiled::trace`](tapegrad::compile::Compiled::trace) and replayed.
//!
//! Run: `cargo bench --bench models` (add `-- W7` or `-- W8` to filter).

use criterion::{Criterion, criterion_group, criterion_main};
use std::time::Duration;
use tapegrad::compile::Compiled;
use tapegrad::ops::conv::ConvOptions;
use tapegrad::rng::Rng;
use tapegrad::softmax::Target;
use tapegrad::{Indices, Tape, Tensor, Var};

mod common;

fn quick<'a>(c: &'a mut Criterion, name: &str) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20);
    g
}

/// A parameter shape `parameters.<name>` of workload `id`.
fn param_shape(id: &str, name: &str) -> Vec<usize> {
    common::workload(id)["parameters"][name]
        .as_array()
        .unwrap_or_else(|| panic!("{id}: parameters.{name}"))
        .iter()
        .map(|n| n.as_u64().expect("a size") as usize)
        .collect()
}

/// Plain SGD, in place: `p -= lr · g`.
fn sgd(params: &mut [Tensor<f32>], grads: &[Tensor<f32>], lr: f32) {
    for (w, g) in params.iter_mut().zip(grads) {
        for (a, &b) in w.data_mut().iter_mut().zip(g.data()) {
            *a -= lr * b;
        }
    }
}

/// W7's model and data.
struct Cnn {
    x: Tensor<f32>,
    t: Vec<usize>,
    padding: usize,
    pool: usize,
    /// conv_w, conv_b, fc_w, fc_b.
    params: Vec<Tensor<f32>>,
}

impl Cnn {
    fn new() -> Self {
        let w = common::workload("W7");
        let p = &w["params"];
        let size = |v: &serde_json::Value| v.as_u64().expect("a size") as usize;
        let (batch, classes) = (size(&p["batch"]), size(&p["classes"]));
        let image = common::param_sizes("W7", "image");
        let std = p["init_std"].as_f64().expect("W7: params.init_std") as f32;
        let mut rng = Rng::new(9);
        let mut shape = vec![batch];
        shape.extend(&image);
        Cnn {
            x: Tensor::rand_uniform(shape, 0.0, 1.0, 10),
            t: (0..batch).map(|_| rng.below(classes)).collect(),
            padding: size(&p["conv"]["padding"]),
            pool: size(&p["pool"]["kernel"]),
            params: ["conv_w", "conv_b", "fc_w", "fc_b"]
                .iter()
                .enumerate()
                .map(|(i, name)| Tensor::rand_normal(param_shape("W7", name), 0.0, std, 200 + i as u64))
                .collect(),
        }
    }

    fn loss<'t>(&self, tape: &'t Tape<f32>) -> (Var<'t, f32>, Vec<Var<'t, f32>>) {
        let p: Vec<Var<'t, f32>> = self.params.iter().map(|w| tape.var(w.clone())).collect();
        (self.loss_of(&p, tape.constant(self.x.clone())), p)
    }

    /// The loss of images `x` with parameters `p` (what [`Compiled::trace`] traces).
    fn loss_of<'t>(&self, p: &[Var<'t, f32>], x: Var<'t, f32>) -> Var<'t, f32> {
        let c = x.conv2d(p[0], Some(p[1]), ConvOptions::new().padding(self.padding));
        let pooled = c.relu().max_pool2d(self.pool, self.pool, 0);
        let logits = pooled.flatten(1, -1).matmul(p[2]) + p[3];
        logits.cross_entropy(Target::Classes(&self.t))
    }

    fn step(&mut self, lr: f32) -> f32 {
        let tape = Tape::<f32>::new();
        let (loss, p) = self.loss(&tape);
        let grads = tape.grad(&[loss], &[Tensor::scalar(1.0)], &p);
        let l = loss.item();
        drop(p);
        sgd(&mut self.params, &grads, lr);
        l
    }
}

fn w7_cnn(c: &mut Criterion) {
    let lr = common::workload("W7")["params"]["lr"].as_f64().expect("W7: params.lr") as f32;
    let mut group = quick(c, "W7_cnn");
    let mut model = Cnn::new();
    group.bench_function("step_sgd", |bench| bench.iter(|| model.step(lr)));
    // The same step compiled: traced once (the labels are fixed by the trace, as the batch is).
    let mut model = Cnn::new();
    let mut step = {
        let refs: Vec<&Tensor<f32>> = model.params.iter().collect();
        Compiled::trace(&refs, &[&model.x], |_, p, d| model.loss_of(p, d[0])).expect("the CNN step compiles")
    };
    group.bench_function("step_sgd_compiled", |bench| {
        bench.iter(|| {
            let out = {
                let refs: Vec<&Tensor<f32>> = model.params.iter().collect();
                step.run(&refs, &[&model.x]).expect("the step runs")
            };
            sgd(&mut model.params, &out.grads, lr);
            out.loss.item()
        })
    });
    let model = Cnn::new();
    group.bench_function("forward", |bench| {
        bench.iter(|| {
            let tape = Tape::<f32>::new();
            model.loss(&tape).0.item()
        })
    });
    group.finish();
}

/// Layer norm over the last axis, biased variance, from the primitives.
fn layer_norm<'t>(x: Var<'t, f32>, gain: Var<'t, f32>, bias: Var<'t, f32>, eps: f32) -> Var<'t, f32> {
    let xc = x - x.mean_keepdim(-1);
    let var = (xc * xc).mean_keepdim(-1);
    xc * (var + eps).rsqrt() * gain + bias
}

/// W8's parameters, named as in `workloads.json`.
const PARAMS: [&str; 22] = [
    "tok_emb", "pos_emb", "ln1_gain", "ln1_bias", "wq", "bq", "wk", "bk", "wv", "bv", "wo", "bo", "ln2_gain",
    "ln2_bias", "w1", "b1", "w2", "b2", "lnf_gain", "lnf_bias", "w_head", "b_head",
];

/// W8's model and data.
struct Transformer {
    batch: usize,
    seq: usize,
    width: usize,
    heads: usize,
    eps: f32,
    tokens: Vec<usize>,
    targets: Vec<usize>,
    /// `-inf` above the diagonal, 0 on and below: `[seq, seq]`.
    mask: Tensor<f32>,
    /// In the order of [`PARAMS`].
    params: Vec<Tensor<f32>>,
}

impl Transformer {
    fn new() -> Self {
        let w = common::workload("W8");
        let size = |k: &str| common::param("W8", k);
        let (batch, seq, width, heads, vocab) =
            (size("batch"), size("seq"), size("width"), size("heads"), size("vocab"));
        let std = w["params"]["init_std"].as_f64().expect("W8: params.init_std") as f32;
        let eps = w["params"]["ln_eps"].as_f64().expect("W8: params.ln_eps") as f32;
        let params = PARAMS
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let shape: Vec<usize> = w["parameters"][name]
                    .as_array()
                    .unwrap_or_else(|| panic!("W8: parameters.{name}"))
                    .iter()
                    .map(|n| n.as_u64().expect("a size") as usize)
                    .collect();
                Tensor::rand_normal(shape, 0.0, std, 100 + i as u64)
            })
            .collect();
        let mut rng = Rng::new(8);
        let n = batch * seq;
        Transformer {
            batch,
            seq,
            width,
            heads,
            eps,
            tokens: (0..n).map(|_| rng.below(vocab)).collect(),
            targets: (0..n).map(|_| rng.below(vocab)).collect(),
            mask: Tensor::from_fn([seq, seq], |i| if i % seq > i / seq { f32::NEG_INFINITY } else { 0.0 }),
            params,
        }
    }

    fn loss<'t>(&self, tape: &'t Tape<f32>) -> (Var<'t, f32>, Vec<Var<'t, f32>>) {
        let p: Vec<Var<'t, f32>> = self.params.iter().map(|w| tape.var(w.clone())).collect();
        (self.loss_of(tape, &p), p)
    }

    /// The loss with parameters `p` (what [`Compiled::trace`] traces).
    fn loss_of<'t>(&self, tape: &'t Tape<f32>, p: &[Var<'t, f32>]) -> Var<'t, f32> {
        let [
            tok,
            pos,
            ln1g,
            ln1b,
            wq,
            bq,
            wk,
            bk,
            wv,
            bv,
            wo,
            bo,
            ln2g,
            ln2b,
            w1,
            b1,
            w2,
            b2,
            lnfg,
            lnfb,
            wh,
            bh,
        ] = p[..]
        else {
            panic!("W8 has 22 parameters")
        };
        let (b, s, d, h) = (self.batch, self.seq, self.width, self.heads);
        let hd = d / h;
        let h0 = tok.embedding(Indices::new(self.tokens.clone(), [b, s])) + pos;
        let a = layer_norm(h0, ln1g, ln1b, self.eps);
        let heads = |x: Var<'t, f32>| x.reshape([b, s, h, hd]).permute([0, 2, 1, 3]);
        let (q, k, v) = (
            heads(a.matmul(wq) + bq),
            heads(a.matmul(wk) + bk),
            heads(a.matmul(wv) + bv),
        );
        let scores = q.matmul_nt(k) * (1.0 / (hd as f32).sqrt()) + tape.constant(self.mask.clone());
        let attn = scores.softmax(-1).matmul(v).permute([0, 2, 1, 3]).reshape([b, s, d]);
        let h1 = h0 + (attn.matmul(wo) + bo);
        let u = (layer_norm(h1, ln2g, ln2b, self.eps).matmul(w1) + b1).gelu_tanh();
        let h2 = h1 + (u.matmul(w2) + b2);
        let logits = layer_norm(h2, lnfg, lnfb, self.eps).matmul(wh) + bh;
        let classes = logits.shape()[2];
        logits
            .reshape([b * s, classes])
            .cross_entropy(Target::Classes(&self.targets))
    }

    fn step(&mut self, lr: f32) -> f32 {
        let (grads, loss) = {
            let tape = Tape::<f32>::new();
            let (loss, p) = self.loss(&tape);
            (tape.grad(&[loss], &[Tensor::scalar(1.0)], &p), loss.item())
        };
        sgd(&mut self.params, &grads, lr);
        loss
    }
}

fn w8_transformer(c: &mut Criterion) {
    let lr = common::workload("W8")["params"]["lr"].as_f64().expect("W8: params.lr") as f32;
    let mut group = quick(c, "W8_transformer");
    let mut model = Transformer::new();
    group.bench_function("step_sgd", |bench| bench.iter(|| model.step(lr)));
    // The same step compiled: traced once (tokens and targets are fixed by the trace, as the
    // batch is).
    let mut model = Transformer::new();
    let mut step = {
        let refs: Vec<&Tensor<f32>> = model.params.iter().collect();
        Compiled::trace(&refs, &[], |tape, p, _| model.loss_of(tape, p)).expect("the transformer step compiles")
    };
    group.bench_function("step_sgd_compiled", |bench| {
        bench.iter(|| {
            let out = {
                let refs: Vec<&Tensor<f32>> = model.params.iter().collect();
                step.run(&refs, &[]).expect("the step runs")
            };
            sgd(&mut model.params, &out.grads, lr);
            out.loss.item()
        })
    });
    let model = Transformer::new();
    group.bench_function("forward", |bench| {
        bench.iter(|| {
            let tape = Tape::<f32>::new();
            model.loss(&tape).0.item()
        })
    });
    group.finish();
}

criterion_group!(benches, w7_cnn, w8_transformer);
criterion_main!(benches);
