//! Trains a small MLP on the UCI handwritten digits (1 797 8×8 images, `data/digits.csv.gz`) with
//! softmax cross-entropy and Adam; reports loss and accuracy per epoch on a held-out split and
//! writes the loss curve as an SVG.
//!
//! Run: `cargo run --release --example digits [-- --svg PATH] [--epochs N] [--compiled]`
//!
//! `--compiled` trains with compiled steps (`tapegrad::compile::Jit`: each batch shape traced
//! once, forward and backward fused and replayed) instead of recording every step on a tape.
//!
//! The loss is the library's fused softmax cross-entropy (gradient `(softmax(x) − t) / batch`);
//! `--loss composed` uses log-softmax composed from primitives instead,
//! `x − max(x).detach() − log Σ exp(x − max)` against one-hot targets, for comparison.

mod data;
mod plot;
mod train;

use std::time::Instant;
use tapegrad::Var;
use tapegrad::nn::{Activation, Mlp, ParamStore, Params, one_hot};
use tapegrad::softmax::Target;
use train::{Model, Schedule, arg};

/// Peak learning rate.
const LR: f64 = 3e-3;

/// Mean cross-entropy of `logits: [B, C]` against one-hot `targets: [B, C]`, from primitives.
fn cross_entropy_composed<'t>(logits: Var<'t, f32>, targets: Var<'t, f32>) -> Var<'t, f32> {
    let shifted = logits - logits.max_axis(1, true).detach();
    let log_p = shifted - shifted.exp().sum_axis(1, true).log();
    let b = logits.shape()[0] as f32;
    (targets * log_p).sum().mul_scalar(-1.0 / b)
}

/// The MLP and the cross-entropy it is trained with.
struct Net {
    mlp: Mlp,
    /// The cross-entropy composed from primitives instead of the fused one.
    composed: bool,
}

impl Model for Net {
    const IMAGE: &'static [usize] = &[64];

    fn logits<'t>(&self, p: &Params<'t, f32>, x: Var<'t, f32>, _step: Option<u64>) -> Var<'t, f32> {
        self.mlp.forward(p, x)
    }

    /// Mean cross-entropy of `logits: [B, C]` against the labels, fused or composed from primitives.
    fn loss<'t>(&self, logits: Var<'t, f32>, labels: &[usize]) -> Var<'t, f32> {
        if self.composed {
            let t = logits.tape().constant(one_hot(labels, 10));
            cross_entropy_composed(logits, t)
        } else {
            logits.cross_entropy(Target::Classes(labels))
        }
    }

    fn loss_one_hot<'t>(&self, logits: Var<'t, f32>, targets: Var<'t, f32>) -> Var<'t, f32> {
        if self.composed {
            cross_entropy_composed(logits, targets)
        } else {
            logits.cross_entropy(Target::Probs(targets))
        }
    }
}

fn main() {
    let svg_path = arg("--svg").unwrap_or_else(|| "target/digits_loss.svg".into());
    let epochs: usize = arg("--epochs").map_or(30, |s| s.parse().expect("--epochs N"));
    let seed: u64 = arg("--seed").map_or(7, |s| s.parse().expect("--seed N"));
    let composed = arg("--loss").is_some_and(|l| l == "composed");
    let hidden: usize = arg("--hidden").map_or(128, |s| s.parse().expect("--hidden N"));
    let compiled = std::env::args().any(|a| a == "--compiled");

    let t_load = Instant::now();
    let d = data::load(&data::default_path()).unwrap_or_else(|e| panic!("loading the digits: {e}"));
    println!(
        "loaded {} images of 8×8 pixels from data/digits.csv.gz in {:.1} ms",
        d.labels.len(),
        t_load.elapsed().as_secs_f64() * 1e3
    );

    // Seeded shuffle, then a stratification-free 80/20 split.
    let (test_idx, train_idx) = train::split(d.labels.len());
    println!("train {} / held-out test {}", train_idx.len(), test_idx.len());

    let mut store = ParamStore::<f32>::new();
    let net = Net {
        mlp: Mlp::new(&mut store, "mlp", &[64, hidden, 10], Activation::Relu, seed),
        composed,
    };
    println!(
        "model: MLP 64 → {hidden} (ReLU) → 10, {} parameters; AdamW lr {LR:e} (cosine decay), wd 1e-4, batch 32; \
         {} cross-entropy; {} steps\n",
        store.numel(),
        if composed { "composed" } else { "fused" },
        if compiled { "compiled" } else { "eager" }
    );
    let schedule = Schedule {
        epochs,
        lr: LR,
        seed,
        time_decimals: 2,
        progress: true,
        compiled,
    };
    let run = train::run(&net, &mut store, &d, &test_idx, &train_idx, &schedule);
    let (final_acc, secs) = (run.final_acc, run.secs);
    // The tape-lifecycle check every training loop can make: no update copied a parameter and no
    // step bound the parameters to a tape that was not cleared.
    println!(
        "tape lifecycle: {} copies on write, {} stale binds (both 0 in a healthy loop)",
        store.copies_on_write(),
        store.stale_binds()
    );
    train::assert_lifecycle(&store);
    println!(
        "\nheld-out accuracy {:.2}% after {epochs} epochs; training took {secs:.2} s on one thread",
        100.0 * final_acc
    );

    let title = format!(
        "digits MLP: cross-entropy per epoch (held-out accuracy {:.1}%)",
        100.0 * final_acc
    );
    train::write_curves(&svg_path, &title, &run);
    if final_acc < 0.97 {
        eprintln!("below the 97% target");
        std::process::exit(1);
    }
}
