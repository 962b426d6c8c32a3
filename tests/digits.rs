//! The digits loader (shared with examples/digits) on the real file and on broken input, and a
//! short training run that must learn.

#[path = "../examples/digits/data.rs"]
mod data;

use tapegrad::nn::{Activation, Mlp, ParamStore, argmax_rows, one_hot};
use tapegrad::optim::{Adam, Optimizer};
use tapegrad::{Tape, Tensor};

#[test]
fn loads_the_whole_data_set() {
    let d = data::load(&data::default_path()).unwrap();
    assert_eq!(d.pixels.len(), 1797);
    assert_eq!(d.labels.len(), 1797);
    let mut counts = [0usize; 10];
    for &l in &d.labels {
        counts[l] += 1;
    }
    // UCI test split: between 174 and 183 images per digit
    assert!(counts.iter().all(|&c| (174..=183).contains(&c)), "{counts:?}");
    assert!(d.pixels.iter().flatten().all(|&p| (0.0..=1.0).contains(&p)));
    // the corners of an 8×8 digit are almost always blank; the centre almost never
    let mean = |k: usize| d.pixels.iter().map(|p| p[k]).sum::<f32>() / 1797.0;
    assert!(mean(0) < 0.01 && mean(3 * 8 + 4) > 0.3);
}

#[test]
fn rejects_malformed_rows() {
    let good = format!("{}0\n", "1,".repeat(64));
    assert_eq!(data::parse(good.as_bytes()).unwrap().labels, vec![0]);
    let short = format!("{}3\n", "1,".repeat(10));
    assert!(data::parse(short.as_bytes()).unwrap_err().contains("65"));
    let bad_px = format!("{}x,3\n", "1,".repeat(63));
    assert!(data::parse(bad_px.as_bytes()).unwrap_err().contains("column 64"));
    let big_px = format!("17,{}3\n", "1,".repeat(63));
    assert!(data::parse(big_px.as_bytes()).unwrap_err().contains("outside"));
    let bad_label = format!("{}12\n", "1,".repeat(64));
    assert!(data::parse(bad_label.as_bytes()).unwrap_err().contains("not a digit"));
}

#[test]
fn a_short_run_learns_the_digits() {
    let d = data::load(&data::default_path()).unwrap();
    let (train, test) = (0..1500, 1500..1797);
    let rows = |r: std::ops::Range<usize>| {
        let x: Vec<f32> = r.clone().flat_map(|i| d.pixels[i]).collect();
        (Tensor::from_vec(x, [r.len(), 64]), d.labels[r].to_vec())
    };
    let mut store = ParamStore::<f32>::new();
    let mlp = Mlp::new(&mut store, "m", &[64, 32, 10], Activation::Relu, 1);
    let mut opt = Adam::new(1e-2);
    let mut tape = Tape::new();
    for _ in 0..3 {
        for s in (train.start..train.end).step_by(50) {
            let (x, y) = rows(s..s + 50);
            let g = {
                let p = store.bind(&tape);
                let z = mlp.forward(&p, tape.constant(x));
                let sh = z - z.max_axis(1, true).detach();
                let logp = sh - sh.exp().sum_axis(1, true).log();
                let loss = (tape.constant(one_hot(&y, 10)) * logp).sum().mul_scalar(-1.0 / 50.0);
                p.grads(loss.backward())
            };
            tape.clear();
            opt.step(&mut store, &g);
        }
    }
    let (x, y) = rows(test);
    let p = store.bind(&tape);
    let pred = argmax_rows(&mlp.forward(&p, tape.constant(x)).value());
    let acc = pred.iter().zip(&y).filter(|(a, b)| a == b).count() as f64 / y.len() as f64;
    assert!(acc > 0.85, "held-out accuracy {acc} after 3 epochs");
}

/// Trains the `a_short_run_learns_the_digits` network for 3 epochs, eagerly or with a compiled
/// step (`Jit`, labels as one-hot data; the last batch is shorter, so two programs): the
/// per-step losses and the trained parameters.
fn train_mlp(compiled: bool) -> (Vec<f32>, Vec<Vec<f32>>, f64) {
    use tapegrad::compile::Jit;
    use tapegrad::nn::{ParamGrads, Params};
    let d = data::load(&data::default_path()).unwrap();
    let (train, test) = (0..1480, 1500..1797);
    let rows = |r: std::ops::Range<usize>| {
        let x: Vec<f32> = r.clone().flat_map(|i| d.pixels[i]).collect();
        (Tensor::from_vec(x, [r.len(), 64]), d.labels[r].to_vec())
    };
    let mut store = ParamStore::<f32>::new();
    let mlp = Mlp::new(&mut store, "m", &[64, 32, 10], Activation::Relu, 1);
    let mut opt = Adam::new(1e-2);
    fn loss_of<'t>(z: tapegrad::Var<'t, f32>, t: tapegrad::Var<'t, f32>) -> tapegrad::Var<'t, f32> {
        let sh = z - z.max_axis(1, true).detach();
        let logp = sh - sh.exp().sum_axis(1, true).log();
        (t * logp).sum().mul_scalar(-1.0 / z.shape()[0] as f32)
    }
    let mut jit = Jit::new(|_, p, d| loss_of(mlp.forward(&Params::from_vars(p.to_vec()), d[0]), d[1]));
    let mut losses = Vec::new();
    let mut tape = Tape::new();
    for _ in 0..3 {
        for s in (train.start..train.end).step_by(50) {
            let (x, y) = rows(s..(s + 50).min(train.end));
            let t = one_hot::<f32>(&y, 10);
            let g = if compiled {
                let params: Vec<&Tensor<f32>> = store.iter().map(|(_, _, v)| v).collect();
                let out = jit.run(&params, &[&x, &t]).unwrap();
                losses.push(out.loss.item());
                ParamGrads::from_vec(out.grads)
            } else {
                let p = store.bind(&tape);
                let loss = loss_of(mlp.forward(&p, tape.constant(x)), tape.constant(t));
                losses.push(loss.item());
                let g = p.grads(loss.backward());
                tape.clear();
                g
            };
            opt.step(&mut store, &g);
        }
    }
    if compiled {
        assert_eq!(jit.traces(), 2, "one program for 50 rows, one for the last 30");
    }
    assert_eq!(store.copies_on_write(), 0, "an update had to copy a parameter");
    let (x, y) = rows(test);
    let tape = Tape::new();
    let p = store.bind(&tape);
    let pred = argmax_rows(&mlp.forward(&p, tape.constant(x)).value());
    let acc = pred.iter().zip(&y).filter(|(a, b)| a == b).count() as f64 / y.len() as f64;
    let params = store.iter().map(|(_, _, v)| v.to_vec()).collect();
    (losses, params, acc)
}

#[test]
fn a_compiled_run_learns_the_digits_like_the_eager_one() {
    let (le, pe, acc_e) = train_mlp(false);
    let (lc, pc, acc_c) = train_mlp(true);
    assert!(acc_c > 0.85, "held-out accuracy {acc_c} after 3 compiled epochs");
    // The recorded rules round differently from the eager ones (f32), so the runs drift apart
    // slowly; they must stay close over the 90 steps.
    assert_eq!(le.len(), lc.len());
    let mut worst = 0.0f32;
    for (a, b) in le.iter().zip(&lc) {
        worst = worst.max((a - b).abs() / b.abs().max(1e-3));
    }
    let mut worst_p = 0.0f32;
    for (a, b) in pe.iter().flatten().zip(pc.iter().flatten()) {
        worst_p = worst_p.max((a - b).abs());
    }
    println!("eager acc {acc_e}, compiled acc {acc_c}; worst loss rel diff {worst:e}, worst param diff {worst_p:e}");
    assert!(worst < 1e-3, "losses differ by {worst:e} (relative)");
    assert!(worst_p < 1e-3, "parameters differ by {worst_p:e}");
    assert!((acc_e - acc_c).abs() < 0.02, "{acc_e} vs {acc_c}");
}
