//! Trains a small convolutional network on the UCI handwritten digits (1 797 8×8 images,
//! `data/digits.csv.gz`): two `conv2d → relu → max_pool2d` stages and a linear layer, with the
//! fused softmax cross-entropy and AdamW; reports loss and accuracy per epoch on the same
//! held-out split as `examples/digits` and writes the loss curve as an SVG.
//!
//! Run: `cargo run --release --example cnn_digits [-- --svg PATH] [--epochs N] [--seed N]
//! [--dropout P]`
//!
//! The flattened features go through the seeded `dropout` while training (p = 0.25 by default,
//! a new seed every step; `--dropout 0` turns it off).
//!
//! ```text
//! [batch, 1, 8, 8] → conv 3×3, 16 ch, pad 1 → relu → max-pool 2 → [batch, 16, 4, 4]
//!                  → conv 3×3, 32 ch, pad 1 → relu → max-pool 2 → [batch, 32, 2, 2]
//!                  → flatten 128 → dropout → linear 10
//! ```

#[path = "digits/data.rs"]
mod data;
#[path = "digits/plot.rs"]
mod plot;
#[path = "digits/train.rs"]
mod train;

use tapegrad::Var;
use tapegrad::nn::{Conv2d, Init, Linear, MaxPool2d, ParamStore, Params};
use tapegrad::ops::conv::ConvOptions;
use train::{Model, Schedule, arg};

/// Peak learning rate.
const LR: f64 = 3e-3;

/// The network's layers, and the dropout it trains with.
struct Cnn {
    conv1: Conv2d,
    conv2: Conv2d,
    pool: MaxPool2d,
    fc: Linear,
    /// The dropout rate of the flattened features while training (0: none).
    rate: f64,
    /// The seed the dropout seeds are drawn from (a new one every step).
    seed: u64,
}

impl Cnn {
    fn new(store: &mut ParamStore<f32>, seed: u64, rate: f64) -> Self {
        let same = ConvOptions::new().padding(1);
        Cnn {
            conv1: Conv2d::new(store, "conv1", 1, 16, 3, same, Init::HeUniform, seed),
            conv2: Conv2d::new(store, "conv2", 16, 32, 3, same, Init::HeUniform, seed + 1),
            pool: MaxPool2d::new(2),
            fc: Linear::new(store, "fc", 128, 10, Init::XavierUniform, seed + 2),
            rate,
            seed,
        }
    }

    /// Logits `[batch, 10]` of images `[batch, 1, 8, 8]`; `dropout` is `(p, seed)` for the
    /// flattened features while training (`None` when evaluating).
    fn forward<'t>(&self, p: &Params<'t, f32>, x: Var<'t, f32>, dropout: Option<(f64, u64)>) -> Var<'t, f32> {
        let b = x.shape()[0];
        let h = self.pool.forward(self.conv1.forward(p, x).relu());
        let h = self.pool.forward(self.conv2.forward(p, h).relu());
        let mut h = h.reshape([b, 128]);
        if let Some((rate, seed)) = dropout {
            h = h.dropout(rate, seed);
        }
        self.fc.forward(p, h)
    }
}

impl Model for Cnn {
    const IMAGE: &'static [usize] = &[1, 8, 8];

    fn logits<'t>(&self, p: &Params<'t, f32>, x: Var<'t, f32>, step: Option<u64>) -> Var<'t, f32> {
        let drop = step
            .filter(|_| self.rate > 0.0)
            .map(|step| (self.rate, self.seed.wrapping_mul(1_000_003).wrapping_add(step)));
        self.forward(p, x, drop)
    }
}

fn main() {
    let svg_path = arg("--svg").unwrap_or_else(|| "target/cnn_digits_loss.svg".into());
    let epochs: usize = arg("--epochs").map_or(30, |s| s.parse().expect("--epochs N"));
    let seed: u64 = arg("--seed").map_or(7, |s| s.parse().expect("--seed N"));
    let rate: f64 = arg("--dropout").map_or(0.25, |s| s.parse().expect("--dropout P"));

    let d = data::load(&data::default_path()).unwrap_or_else(|e| panic!("loading the digits: {e}"));
    // The split of examples/digits: a seeded shuffle, then 20% held out.
    let (test_idx, train_idx) = train::split(d.labels.len());
    println!(
        "{} images of 8×8 pixels: train {} / held-out test {}",
        d.labels.len(),
        train_idx.len(),
        test_idx.len()
    );

    let mut store = ParamStore::<f32>::new();
    let cnn = Cnn::new(&mut store, seed, rate);
    println!(
        "model: conv 3×3 ×16 → relu → pool 2 → conv 3×3 ×32 → relu → pool 2 → linear 128 → 10, {} parameters; \
         AdamW lr {LR:e} (cosine decay), wd 1e-4, batch 32; dropout {rate} before the linear layer\n",
        store.numel()
    );
    let schedule = Schedule {
        epochs,
        lr: LR,
        seed,
        time_decimals: 1,
        progress: false,
        compiled: false,
    };
    let run = train::run(&cnn, &mut store, &d, &test_idx, &train_idx, &schedule);
    let (final_acc, secs) = (run.final_acc, run.secs);
    train::assert_lifecycle(&store);
    let errors = ((1.0 - final_acc) * test_idx.len() as f32).round();
    println!(
        "\nheld-out accuracy {:.2}% ({errors} of {} wrong) after {epochs} epochs; training took {secs:.1} s \
         on {} thread(s)",
        100.0 * final_acc,
        test_idx.len(),
        tapegrad::num_threads()
    );

    train::write_curves(&svg_path, "CNN on UCI digits: cross-entropy per epoch", &run);
    if final_acc < 0.985 {
        eprintln!("below the 98.5% target");
        std::process::exit(1);
    }
}
