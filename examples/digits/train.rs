//! The training loop shared by the digits examples (`examples/digits`, `examples/cnn_digits`):
//! the held-out split, batches, the epochs (cosine learning-rate decay, shuffling, AdamW steps with
//! gradient clipping, the per-epoch report), evaluation and the loss-curve SVG. Each example
//! brings its model as a [`Model`]. A step is recorded on a tape (eager), or — with
//! [`Schedule::compiled`] — replayed by a [`Jit`]: one compiled program per batch shape, traced on
//! first use, the labels passed as one-hot data so the program follows each batch.

use crate::data::Digits;
use crate::plot;
use std::io::Write as _;
use std::time::Instant;
use tapegrad::compile::Jit;
use tapegrad::nn::{ParamGrads, ParamStore, Params, argmax_rows, one_hot};
use tapegrad::optim::{Adam, Optimizer};
use tapegrad::rng::Rng;
use tapegrad::softmax::Target;
use tapegrad::{Tape, Tensor, Var};

/// The value after `name` on the command line, if `name` is there.
pub fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).map(|i| args[i + 1].clone())
}

/// A network trained on the digits.
pub trait Model {
    /// The shape of one image as the network takes it (after the batch axis).
    const IMAGE: &'static [usize];

    /// Logits `[batch, 10]` of the images `x`; `step` is the training step's number (from 1)
    /// while training, `None` when evaluating.
    fn logits<'t>(&self, p: &Params<'t, f32>, x: Var<'t, f32>, step: Option<u64>) -> Var<'t, f32>;

    /// The mean loss of `logits` against `labels` (by default the fused cross-entropy).
    fn loss<'t>(&self, logits: Var<'t, f32>, labels: &[usize]) -> Var<'t, f32> {
        logits.cross_entropy(Target::Classes(labels))
    }

    /// The same loss against one-hot `targets: [batch, 10]` held in a `Var` (what a compiled step
    /// uses: class indices given to an op would be fixed by the trace).
    fn loss_one_hot<'t>(&self, logits: Var<'t, f32>, targets: Var<'t, f32>) -> Var<'t, f32> {
        logits.cross_entropy(Target::Probs(targets))
    }
}

/// Fisher–Yates shuffle of `idx`.
fn shuffle(idx: &mut [usize], rng: &mut Rng) {
    for i in (1..idx.len()).rev() {
        idx.swap(i, rng.below(i + 1));
    }
}

/// The split both examples use: a seeded shuffle of the `n` rows, then the first 20% held out.
/// Returns (held-out test rows, training rows).
pub fn split(n: usize) -> (Vec<usize>, Vec<usize>) {
    let mut rng = Rng::new(2024);
    let mut order: Vec<usize> = (0..n).collect();
    shuffle(&mut order, &mut rng);
    let train = order.split_off(n / 5);
    (order, train)
}

/// Rows `idx` of the data set as images `[len, ..M::IMAGE]` and their labels.
fn batch<M: Model>(d: &Digits, idx: &[usize]) -> (Tensor<f32>, Vec<usize>) {
    let mut x = Vec::with_capacity(idx.len() * 64);
    for &i in idx {
        x.extend_from_slice(&d.pixels[i]);
    }
    let labels = idx.iter().map(|&i| d.labels[i]).collect();
    let mut shape = vec![idx.len()];
    shape.extend_from_slice(M::IMAGE);
    (Tensor::from_vec(x, shape), labels)
}

/// How many rows of `logits` have their largest entry at the label.
fn correct(logits: &Tensor<f32>, labels: &[usize]) -> usize {
    argmax_rows(logits).iter().zip(labels).filter(|(a, b)| a == b).count()
}

/// Loss and accuracy of the model on rows `idx`, without recording gradients.
fn evaluate<M: Model>(model: &M, store: &ParamStore<f32>, d: &Digits, idx: &[usize]) -> (f32, f32) {
    let tape = Tape::new();
    let (x, labels) = batch::<M>(d, idx);
    tape.no_grad(|| {
        let p = store.bind(&tape);
        let logits = model.logits(&p, tape.constant(x), None);
        let loss = model.loss(logits, &labels).item();
        (loss, correct(&logits.value(), &labels) as f32 / labels.len() as f32)
    })
}

/// A progress bar on stderr, when stderr is a terminal (no bar in logs).
fn progress(epoch: usize, epochs: usize, done: usize, total: usize, loss: f32) {
    use std::io::IsTerminal as _;
    if !std::io::stderr().is_terminal() {
        return;
    }
    let width = 30;
    let filled = done * width / total.max(1);
    eprint!(
        "\repoch {epoch:>2}/{epochs} [{}{}] {done:>3}/{total} loss {loss:.4}",
        "#".repeat(filled),
        ".".repeat(width - filled)
    );
    let _ = std::io::stderr().flush();
}

/// Clears the progress bar.
fn clear_progress() {
    use std::io::IsTerminal as _;
    if std::io::stderr().is_terminal() {
        eprint!("\r{}\r", " ".repeat(70));
    }
}

/// How to train.
pub struct Schedule {
    /// Epochs.
    pub epochs: usize,
    /// Peak learning rate (decayed by a cosine over the epochs).
    pub lr: f64,
    /// The seed of the per-epoch shuffles.
    pub seed: u64,
    /// Decimals of the elapsed seconds in the per-epoch line.
    pub time_decimals: usize,
    /// Show a progress bar on a terminal.
    pub progress: bool,
    /// Train with compiled steps (a [`Jit`]) instead of recording each step on a tape. Only for
    /// models whose logits do not depend on the step number (the trace fixes it).
    pub compiled: bool,
}

/// What a run produced.
pub struct Run {
    /// Mean training loss per epoch, as (epoch, loss).
    pub train_curve: Vec<(f64, f64)>,
    /// Held-out loss per epoch, as (epoch, loss).
    pub test_curve: Vec<(f64, f64)>,
    /// Held-out accuracy after the last epoch.
    pub final_acc: f32,
    /// Seconds the training took.
    pub secs: f64,
}

/// Trains `model` with AdamW (weight decay 1e-4, batch 32, gradients clipped to norm 5) on the
/// rows `train_idx`, printing one line per epoch with the held-out loss and accuracy on
/// `test_idx`.
pub fn run<M: Model>(
    model: &M,
    store: &mut ParamStore<f32>,
    d: &Digits,
    test_idx: &[usize],
    train_idx: &[usize],
    s: &Schedule,
) -> Run {
    let mut train_idx = train_idx.to_vec();
    let mut batch_rng = Rng::new(s.seed);
    let mut step: u64 = 0;
    let mut opt = Adam::adamw(s.lr, 1e-4);
    let bs = 32;
    let steps = train_idx.len().div_ceil(bs);
    let mut tape = Tape::with_capacity(32);
    // The compiled step: parameters in store order, data = (images, one-hot labels).
    let mut jit = s.compiled.then(|| {
        Jit::new(|_tape, p, d| {
            let p = Params::from_vars(p.to_vec());
            model.loss_one_hot(model.logits(&p, d[0], Some(0)), d[1])
        })
    });
    let (mut train_curve, mut test_curve) = (Vec::new(), Vec::new());
    let mut final_acc = 0.0;

    let t_train = Instant::now();
    for epoch in 1..=s.epochs {
        // cosine decay of the learning rate over the run
        let frac = (epoch - 1) as f64 / s.epochs as f64;
        opt.set_lr(s.lr * 0.5 * (1.0 + (std::f64::consts::PI * frac).cos()));
        shuffle(&mut train_idx, &mut batch_rng);
        let (mut sum_loss, mut hits) = (0.0, 0);
        for (k, chunk) in train_idx.chunks(bs).enumerate() {
            let (x, labels) = batch::<M>(d, chunk);
            step += 1;
            let mut grads = if let Some(jit) = jit.as_mut() {
                let t = one_hot::<f32>(&labels, 10);
                let params: Vec<&Tensor<f32>> = store.iter().map(|(_, _, v)| v).collect();
                let out = jit
                    .run(&params, &[&x, &t])
                    .unwrap_or_else(|e| panic!("compiled step: {e}"));
                if step == 1 {
                    let c = jit.get(&params, &[&x, &t]).expect("just traced");
                    println!("{}", c.summary().lines().next().unwrap_or_default());
                }
                sum_loss += out.loss.item() * chunk.len() as f32;
                ParamGrads::from_vec(out.grads)
            } else {
                let p = store.bind(&tape);
                let logits = model.logits(&p, tape.constant(x), Some(step));
                let loss = model.loss(logits, &labels);
                sum_loss += loss.item() * chunk.len() as f32;
                hits += correct(&logits.value(), &labels);
                let grads = p.grads(loss.backward());
                tape.clear(); // the store is the sole owner again: the update is in place
                grads
            };
            grads.clip_global_norm(5.0);
            opt.step(store, &grads);
            if s.progress {
                progress(
                    epoch,
                    s.epochs,
                    k + 1,
                    steps,
                    sum_loss / ((k * bs + chunk.len()) as f32),
                );
            }
        }
        let train_loss = sum_loss / train_idx.len() as f32;
        // (A compiled step returns the loss and gradients only, not the logits.)
        let train_acc = match jit {
            Some(_) => "   —  ".to_string(),
            None => format!("{:.2}%", 100.0 * hits as f32 / train_idx.len() as f32),
        };
        let (test_loss, test_acc) = evaluate(model, store, d, test_idx);
        if s.progress {
            clear_progress();
        }
        println!(
            "epoch {epoch:>2}  train loss {train_loss:.4} acc {train_acc}  |  test loss {test_loss:.4} acc {:.2}%  [{:.*} s]",
            100.0 * test_acc,
            s.time_decimals,
            t_train.elapsed().as_secs_f64()
        );
        train_curve.push((epoch as f64, train_loss as f64));
        test_curve.push((epoch as f64, test_loss as f64));
        final_acc = test_acc;
    }
    let secs = t_train.elapsed().as_secs_f64();
    if let Some(jit) = &jit {
        println!("compiled: {} programs traced (one per batch shape)", jit.traces());
    }
    Run {
        train_curve,
        test_curve,
        final_acc,
        secs,
    }
}

/// Panics unless the run kept the tape lifecycle: no update copied a parameter and no step bound
/// the parameters to a tape that was not cleared.
pub fn assert_lifecycle(store: &ParamStore<f32>) {
    assert_eq!(
        (store.copies_on_write(), store.stale_binds()),
        (0, 0),
        "an optimiser update had to copy a parameter, or the tape was not cleared"
    );
}

/// Writes the run's train and held-out loss curves to `path` as an SVG chart titled `title`.
pub fn write_curves(path: &str, title: &str, run: &Run) {
    let svg = plot::line_chart(
        title,
        "epoch",
        "mean cross-entropy",
        &[
            plot::Series {
                name: "train",
                color: plotters::style::RGBColor(0x1f, 0x77, 0xb4),
                points: run.train_curve.clone(),
            },
            plot::Series {
                name: "held-out test",
                color: plotters::style::RGBColor(0xd6, 0x27, 0x28),
                points: run.test_curve.clone(),
            },
        ],
    );
    if let Some(dir) = std::path::Path::new(path).parent() {
        std::fs::create_dir_all(dir).ok();
    }
    std::fs::write(path, svg).unwrap_or_else(|e| panic!("writing {path}: {e}"));
    println!("loss curve written to {path}");
}
