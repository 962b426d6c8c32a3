//! A one-block transformer learns to reverse digit strings.
//!
//! Each sequence is `L` random digits, a separator, then the same digits reversed; the model sees
//! the sequence shifted by one (`d₁ … d_L SEP r₁ … r_{L−1}`) and is trained with cross-entropy to
//! predict the reversed digits `r₁ … r_L` at the separator and after it. Model: token embedding +
//! learned positional embedding, one pre-norm [`TransformerBlock`] (causal multi-head attention,
//! layer norms, a ReLU MLP), a final layer norm and an output projection — everything built from
//! the library's primitives and trained with Adam in `f32` on fresh random sequences each step.
//!
//! Held-out sequences (drawn with another seed, none of them ever trained on) are scored two
//! ways: token accuracy with the true previous tokens as input (teacher forcing), and token /
//! whole-sequence accuracy when the model decodes greedily from the digits and the separator
//! alone, feeding its own predictions back (the causal mask makes that one forward per step).
//!
//! Run: `TAPEGRAD_NUM_THREADS=1 cargo run --release --example attention [steps]`

use std::collections::HashSet;
use std::time::Instant;
use tapegrad::nn::{Embedding, Init, LayerNorm, Linear, ParamStore, Params, TransformerBlock};
use tapegrad::optim::{Adam, Optimizer};
use tapegrad::rng::Rng;
use tapegrad::softmax::Target;
use tapegrad::{Indices, Tape, Var};

/// Digits per sequence.
const L: usize = 8;
/// The separator token (digits are 0–9).
const SEP: usize = 10;
/// Tokens: ten digits and the separator.
const VOCAB: usize = 11;
/// Model input length: the digits, the separator and all but the last reversed digit.
const T: usize = 2 * L;
const DIM: usize = 64;
const HEADS: usize = 4;
const HIDDEN: usize = 128;
const BATCH: usize = 64;
const TEST: usize = 1000;

struct Model {
    tok: Embedding,
    pos: Embedding,
    block: TransformerBlock,
    ln_f: LayerNorm,
    head: Linear,
}

impl Model {
    fn new(store: &mut ParamStore<f32>) -> Self {
        Model {
            tok: Embedding::with_init(store, "tok", VOCAB, DIM, Init::Normal(0.3), 1),
            pos: Embedding::with_init(store, "pos", T, DIM, Init::Normal(0.3), 2),
            block: TransformerBlock::new(store, "block", DIM, HEADS, HIDDEN, 3),
            ln_f: LayerNorm::new(store, "ln_f", DIM),
            head: Linear::new(store, "head", DIM, VOCAB, Init::XavierUniform, 4),
        }
    }

    /// Logits `[batch · L, VOCAB]` at the positions that predict the reversed digits (the
    /// separator and after), for inputs `[batch, T]`.
    fn logits<'t>(&self, p: &Params<'t, f32>, inputs: &[usize], batch: usize) -> Var<'t, f32> {
        let x = self.tok.forward(p, Indices::new(inputs.to_vec(), [batch, T]))
            + self.pos.forward(p, Indices::new((0..T).collect(), [T]));
        let h = self.block.forward(p, x, true);
        let h = self.ln_f.forward(p, h).slice(1, L..T).reshape([batch * L, DIM]);
        self.head.forward(p, h)
    }
}

/// A random digit string.
fn digits(rng: &mut Rng) -> [usize; L] {
    std::array::from_fn(|_| (rng.uniform() * 10.0) as usize % 10)
}

/// The model input for `d` (`d SEP reverse(d)` without its last token) and the targets (`reverse(d)`).
fn example(d: &[usize; L]) -> (Vec<usize>, Vec<usize>) {
    let target: Vec<usize> = d.iter().rev().copied().collect();
    let mut input = d.to_vec();
    input.push(SEP);
    input.extend_from_slice(&target[..L - 1]);
    (input, target)
}

fn batch_of(seqs: &[[usize; L]]) -> (Vec<usize>, Vec<usize>) {
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for d in seqs {
        let (i, t) = example(d);
        x.extend(i);
        y.extend(t);
    }
    (x, y)
}

fn argmax_rows(logits: &tapegrad::Tensor<f32>) -> Vec<usize> {
    tapegrad::nn::argmax_rows(logits)
}

/// Teacher-forced token accuracy on `seqs`.
fn teacher_forced(model: &Model, store: &ParamStore<f32>, seqs: &[[usize; L]]) -> f64 {
    let (x, y) = batch_of(seqs);
    let tape = Tape::new();
    let p = store.bind(&tape);
    let pred = argmax_rows(&model.logits(&p, &x, seqs.len()).value());
    pred.iter().zip(&y).filter(|(a, b)| a == b).count() as f64 / y.len() as f64
}

/// Greedy decoding from the digits and the separator: token accuracy and sequence accuracy.
fn greedy(model: &Model, store: &ParamStore<f32>, seqs: &[[usize; L]]) -> (f64, f64) {
    let n = seqs.len();
    let (mut x, y) = batch_of(seqs);
    // Blank the reversed digits out of the input: the model must produce them itself.
    for r in 0..n {
        x[r * T + L + 1..(r + 1) * T].iter_mut().for_each(|v| *v = 0);
    }
    let mut pred = vec![0; n * L];
    for k in 0..L {
        let tape = Tape::new();
        let p = store.bind(&tape);
        let out = argmax_rows(&model.logits(&p, &x, n).value());
        for r in 0..n {
            pred[r * L + k] = out[r * L + k];
            if L + 1 + k < T {
                x[r * T + L + 1 + k] = out[r * L + k];
            }
        }
    }
    let tokens = pred.iter().zip(&y).filter(|(a, b)| a == b).count() as f64 / y.len() as f64;
    let whole = (0..n)
        .filter(|&r| pred[r * L..(r + 1) * L] == y[r * L..(r + 1) * L])
        .count() as f64
        / n as f64;
    (tokens, whole)
}

fn main() {
    let steps: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1500);
    let mut store = ParamStore::<f32>::new();
    let model = Model::new(&mut store);
    println!(
        "reversing {L}-digit strings: one block, dim {DIM}, {HEADS} heads, MLP {HIDDEN}, {} parameters, {} threads",
        store.numel(),
        tapegrad::num_threads()
    );

    let mut test_rng = Rng::new(0x7e57);
    let test: Vec<[usize; L]> = (0..TEST).map(|_| digits(&mut test_rng)).collect();
    let held_out: HashSet<[usize; L]> = test.iter().copied().collect();

    let mut rng = Rng::new(0x7a1e);
    let base_lr = 3e-3;
    let mut opt = Adam::new(base_lr);
    let start = Instant::now();
    for step in 1..=steps {
        let mut seqs = Vec::with_capacity(BATCH);
        while seqs.len() < BATCH {
            let d = digits(&mut rng);
            if !held_out.contains(&d) {
                seqs.push(d);
            }
        }
        let (x, y) = batch_of(&seqs);
        let (loss, mut grads) = store.grad_step(|_, p| model.logits(p, &x, BATCH).cross_entropy(Target::Classes(&y)));
        grads.clip_global_norm(1.0);
        // Linear warm-up over 100 steps, then cosine decay to a tenth.
        let warm = (step as f64 / 100.0).min(1.0);
        let cos = 0.55 + 0.45 * (std::f64::consts::PI * step as f64 / steps as f64).cos();
        opt.set_lr(base_lr * warm * cos);
        opt.step(&mut store, &grads);
        if step % 250 == 0 || step == steps {
            println!(
                "step {step:5}  loss {loss:.4}  held-out token accuracy (teacher forced) {:.2}%  [{:.1} s]",
                100.0 * teacher_forced(&model, &store, &test),
                start.elapsed().as_secs_f64()
            );
        }
    }
    let train_time = start.elapsed().as_secs_f64();
    let tf = teacher_forced(&model, &store, &test);
    let (tokens, whole) = greedy(&model, &store, &test);
    println!("trained {steps} steps of {BATCH} sequences in {train_time:.1} s");
    println!(
        "held-out ({TEST} sequences): token accuracy {:.2}% teacher forced, {:.2}% greedy; whole sequences {:.2}% greedy",
        100.0 * tf,
        100.0 * tokens,
        100.0 * whole
    );
}
