//! Trains a small MLP on the UCI handwritten digits (1 797 8×8 images, `data/digits.csv.gz`) with
//! softmax cross-entropy and Adam; reports loss and accuracy per epoch on a held-out split and
//! writes the loss curve as an SVG.
//!
//! Run: `cargo run --release --example digits [-- --svg PATH] [--epochs N]`
//!
//! The loss is the library's fused softmax cross-entropy (gradient `(softmax(x) − t) / batch`);
//! `--loss composed` uses log-softmax composed from primitives instead,
//! `x − max(x).detach() − log Σ exp(x − max)` against one-hot targets, for comparison.

mod data;
mod plot;

use std::io::Write as _;
use std::time::Instant;
use tapegrad::nn::{Activation, Mlp, ParamStore, argmax_rows, one_hot};
use tapegrad::optim::{Adam, Optimizer};
use tapegrad::rng::Rng;
use tapegrad::softmax::Target;
use tapegrad::{Tape, Tensor, Var};

/// Peak learning rate.
const LR: f64 = 3e-3;

/// Mean cross-entropy of `logits: [B, C]` against the labels, fused or composed from primitives.
fn cross_entropy<'t>(composed: bool, logits: Var<'t, f32>, labels: &[usize]) -> Var<'t, f32> {
    if composed {
        let t = logits.tape().constant(one_hot(labels, 10));
        cross_entropy_composed(logits, t)
    } else {
        logits.cross_entropy(Target::Classes(labels))
    }
}

/// Mean cross-entropy of `logits: [B, C]` against one-hot `targets: [B, C]`, from primitives.
fn cross_entropy_composed<'t>(logits: Var<'t, f32>, targets: Var<'t, f32>) -> Var<'t, f32> {
    let shifted = logits - logits.max_axis(1, true).detach();
    let log_p = shifted - shifted.exp().sum_axis(1, true).log();
    let b = logits.shape()[0] as f32;
    (targets * log_p).sum().mul_scalar(-1.0 / b)
}

/// Rows `idx` of the data set as a `[len, 64]` input and their labels.
fn batch(d: &data::Digits, idx: &[usize]) -> (Tensor<f32>, Vec<usize>) {
    let mut x = Vec::with_capacity(idx.len() * 64);
    let labels: Vec<usize> = idx.iter().map(|&i| d.labels[i]).collect();
    for &i in idx {
        x.extend_from_slice(&d.pixels[i]);
    }
    (Tensor::from_vec(x, [idx.len(), 64]), labels)
}

/// Loss and accuracy of the model on rows `idx`, without recording gradients.
fn evaluate(mlp: &Mlp, store: &ParamStore<f32>, d: &data::Digits, idx: &[usize], composed: bool) -> (f32, f32) {
    let tape = Tape::new();
    let (x, labels) = batch(d, idx);
    tape.no_grad(|| {
        let p = store.bind(&tape);
        let logits = mlp.forward(&p, tape.constant(x));
        let loss = cross_entropy(composed, logits, &labels).item();
        let pred = argmax_rows(&logits.value());
        let correct = pred.iter().zip(&labels).filter(|(a, b)| a == b).count();
        (loss, correct as f32 / labels.len() as f32)
    })
}

fn progress(epoch: usize, epochs: usize, done: usize, total: usize, loss: f32) {
    use std::io::IsTerminal as _;
    if !std::io::stderr().is_terminal() {
        return; // no bar in logs
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

fn clear_progress() {
    use std::io::IsTerminal as _;
    if std::io::stderr().is_terminal() {
        eprint!("\r{}\r", " ".repeat(70));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).map(|i| args[i + 1].clone());
    let svg_path = arg("--svg").unwrap_or_else(|| "target/digits_loss.svg".into());
    let epochs: usize = arg("--epochs").map_or(30, |s| s.parse().expect("--epochs N"));
    let seed: u64 = arg("--seed").map_or(7, |s| s.parse().expect("--seed N"));
    let composed = arg("--loss").is_some_and(|l| l == "composed");
    let hidden: usize = arg("--hidden").map_or(128, |s| s.parse().expect("--hidden N"));

    let t_load = Instant::now();
    let d = data::load(&data::default_path()).unwrap_or_else(|e| panic!("loading the digits: {e}"));
    println!(
        "loaded {} images of 8×8 pixels from data/digits.csv.gz in {:.1} ms",
        d.labels.len(),
        t_load.elapsed().as_secs_f64() * 1e3
    );

    // Seeded shuffle, then a stratification-free 80/20 split.
    let mut rng = Rng::new(2024);
    let mut batch_rng = Rng::new(seed);
    let mut order: Vec<usize> = (0..d.labels.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let n_test = d.labels.len() / 5;
    let (test_idx, train_idx) = order.split_at(n_test);
    let mut train_idx = train_idx.to_vec();
    println!("train {} / held-out test {}", train_idx.len(), test_idx.len());

    let mut store = ParamStore::<f32>::new();
    let mlp = Mlp::new(&mut store, "mlp", &[64, hidden, 10], Activation::Relu, seed);
    println!(
        "model: MLP 64 → {hidden} (ReLU) → 10, {} parameters; AdamW lr {LR:e} (cosine decay), wd 1e-4, batch 32; \
         {} cross-entropy\n",
        store.numel(),
        if composed { "composed" } else { "fused" }
    );
    let mut opt = Adam::adamw(LR, 1e-4);
    let bs = 32;
    let steps = train_idx.len().div_ceil(bs);
    let mut tape = Tape::with_capacity(32);
    let (mut train_curve, mut test_curve) = (Vec::new(), Vec::new());
    let mut final_acc = 0.0;

    let t_train = Instant::now();
    for epoch in 1..=epochs {
        // cosine decay of the learning rate over the run
        let frac = (epoch - 1) as f64 / epochs as f64;
        opt.set_lr(LR * 0.5 * (1.0 + (std::f64::consts::PI * frac).cos()));
        for i in (1..train_idx.len()).rev() {
            train_idx.swap(i, batch_rng.below(i + 1));
        }
        let mut sum_loss = 0.0;
        let mut correct = 0;
        for (s, chunk) in train_idx.chunks(bs).enumerate() {
            let (x, labels) = batch(&d, chunk);
            let mut grads = {
                let p = store.bind(&tape);
                let logits = mlp.forward(&p, tape.constant(x));
                let loss = cross_entropy(composed, logits, &labels);
                sum_loss += loss.item() * chunk.len() as f32;
                correct += argmax_rows(&logits.value())
                    .iter()
                    .zip(&labels)
                    .filter(|(a, b)| a == b)
                    .count();
                p.grads(loss.backward())
            };
            tape.clear(); // the store is the sole owner again: the update is in place
            grads.clip_global_norm(5.0);
            opt.step(&mut store, &grads);
            progress(epoch, epochs, s + 1, steps, sum_loss / ((s * bs + chunk.len()) as f32));
        }
        let train_loss = sum_loss / train_idx.len() as f32;
        let train_acc = correct as f32 / train_idx.len() as f32;
        let (test_loss, test_acc) = evaluate(&mlp, &store, &d, test_idx, composed);
        clear_progress();
        println!(
            "epoch {epoch:>2}  train loss {train_loss:.4} acc {:.2}%  |  test loss {test_loss:.4} acc {:.2}%  [{:.2} s]",
            100.0 * train_acc,
            100.0 * test_acc,
            t_train.elapsed().as_secs_f64()
        );
        train_curve.push((epoch as f64, train_loss as f64));
        test_curve.push((epoch as f64, test_loss as f64));
        final_acc = test_acc;
    }
    let secs = t_train.elapsed().as_secs_f64();
    // The tape-lifecycle check every training loop can make: no update copied a parameter and no
    // step bound the parameters to a tape that was not cleared.
    println!(
        "tape lifecycle: {} copies on write, {} stale binds (both 0 in a healthy loop)",
        store.copies_on_write(),
        store.stale_binds()
    );
    assert_eq!(
        (store.copies_on_write(), store.stale_binds()),
        (0, 0),
        "an optimiser update had to copy a parameter, or the tape was not cleared"
    );
    println!(
        "\nheld-out accuracy {:.2}% after {epochs} epochs; training took {secs:.2} s on one thread",
        100.0 * final_acc
    );

    let svg = plot::line_chart(
        &format!(
            "digits MLP: cross-entropy per epoch (held-out accuracy {:.1}%)",
            100.0 * final_acc
        ),
        "epoch",
        "mean cross-entropy",
        &[
            plot::Series {
                name: "train",
                color: plotters::style::RGBColor(0x1f, 0x77, 0xb4),
                points: train_curve,
            },
            plot::Series {
                name: "held-out test",
                color: plotters::style::RGBColor(0xd6, 0x27, 0x28),
                points: test_curve,
            },
        ],
    );
    if let Some(dir) = std::path::Path::new(&svg_path).parent() {
        std::fs::create_dir_all(dir).ok();
    }
    std::fs::write(&svg_path, svg).unwrap_or_else(|e| panic!("writing {svg_path}: {e}"));
    println!("loss curve written to {svg_path}");
    if final_acc < 0.97 {
        eprintln!("below the 97% target");
        std::process::exit(1);
    }
}
