//! Workloads W7 and W8 of `benches/workloads.json` (their sizes are read from it): training steps
//! of real models, the same computation as the PyTorch and JAX references in `benches/peers/`.
//!
//! - W8 `transformer`: a one-block pre-norm causal transformer language model (token + positional
//!   embedding, layer norm, 4-head causal self-attention, GELU MLP, residuals, a final layer norm
//!   and a linear head), mean cross-entropy over every token, forward + backward + SGD update.
//!   Layer norm and attention are written with the primitives (mean, rsqrt, matmul, softmax with
//!   an additive `-inf` mask), as a user would write them.
//!
//! W7 (the CNN) joins when `conv2d` and `max_pool2d` land.
//!
//! Run: `cargo bench --bench models` (add `-- W8` to filter).

use criterion::{Criterion, criterion_group, criterion_main};
use std::time::Duration;
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
        (
            logits
                .reshape([b * s, classes])
                .cross_entropy(Target::Classes(&self.targets)),
            p,
        )
    }

    fn step(&mut self, lr: f32) -> f32 {
        let (grads, loss) = {
            let tape = Tape::<f32>::new();
            let (loss, p) = self.loss(&tape);
            (tape.grad(&[loss], &[Tensor::scalar(1.0)], &p), loss.item())
        };
        for (w, g) in self.params.iter_mut().zip(&grads) {
            for (a, &b) in w.data_mut().iter_mut().zip(g.data()) {
                *a -= lr * b;
            }
        }
        loss
    }
}

fn w8_transformer(c: &mut Criterion) {
    let lr = common::workload("W8")["params"]["lr"].as_f64().expect("W8: params.lr") as f32;
    let mut group = quick(c, "W8_transformer");
    let mut model = Transformer::new();
    group.bench_function("step_sgd", |bench| bench.iter(|| model.step(lr)));
    let model = Transformer::new();
    group.bench_function("forward", |bench| {
        bench.iter(|| {
            let tape = Tape::<f32>::new();
            model.loss(&tape).0.item()
        })
    });
    group.finish();
}

criterion_group!(benches, w8_transformer);
criterion_main!(benches);
