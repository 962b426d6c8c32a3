//! Parameters, layers and optimisers, checked against textbook formulas written out here, finite
//! differences, and pointer identity for in-place updates.

use tapegrad::check::{GradcheckOptions, gradcheck};
use tapegrad::nn::{Activation, Init, Linear, Mlp, ParamGrads, ParamStore, Params, argmax_rows, one_hot};
use tapegrad::optim::{Adam, Optimizer, Sgd};
use tapegrad::{Tape, Tensor};

fn store_with(values: &[Vec<f64>]) -> ParamStore<f64> {
    let mut s = ParamStore::new();
    for (k, v) in values.iter().enumerate() {
        s.insert(format!("p{k}"), Tensor::from_vec(v.clone(), [v.len()]));
    }
    s
}

fn grads(values: &[Vec<f64>]) -> ParamGrads<f64> {
    ParamGrads::from_vec(values.iter().map(|v| Tensor::from_vec(v.clone(), [v.len()])).collect())
}

#[test]
fn param_store_keeps_insertion_order_and_names() {
    let mut s = ParamStore::<f32>::new();
    let b = s.insert("b", Tensor::zeros([2]));
    let a = s.insert("a", Tensor::ones([3]));
    assert_eq!(s.iter().map(|(_, n, _)| n).collect::<Vec<_>>(), ["b", "a"]);
    assert_eq!((s.id("a"), s.id("b"), s.id("c")), (Some(a), Some(b), None));
    assert_eq!(s.name(a), "a");
    assert_eq!(s.numel(), 5);
    assert_eq!(s.by_name("a").unwrap().to_vec(), vec![1.0; 3]);
    let dup = std::panic::catch_unwind(move || {
        let mut s = s;
        s.insert("a", Tensor::zeros([1]));
    });
    assert!(dup.is_err());
}

#[test]
fn sgd_plain_momentum_nesterov_and_weight_decay_follow_the_formulas() {
    let p0 = vec![1.0, -2.0];
    let gs = [vec![0.5, 1.0], vec![-1.0, 0.25], vec![2.0, 2.0]];
    for (mu, wd, nesterov) in [
        (0.0, 0.0, false),
        (0.9, 0.0, false),
        (0.9, 0.1, false),
        (0.8, 0.05, true),
    ] {
        let mut store = store_with(std::slice::from_ref(&p0));
        let mut opt = Sgd::new(0.1).momentum(mu).weight_decay(wd).nesterov(nesterov);
        // reference, element by element
        let (mut p, mut v) = (p0.clone(), vec![0.0; 2]);
        for g in &gs {
            opt.step(&mut store, &grads(std::slice::from_ref(g)));
            for i in 0..2 {
                let d = g[i] + wd * p[i];
                v[i] = mu * v[i] + d;
                let upd = if nesterov { d + mu * v[i] } else { v[i] };
                p[i] -= 0.1 * upd;
            }
        }
        let got = store.by_name("p0").unwrap().to_vec();
        for i in 0..2 {
            assert!((got[i] - p[i]).abs() < 1e-14, "mu={mu} wd={wd}: {got:?} vs {p:?}");
        }
    }
}

/// Adam as written in Kingma & Ba, Algorithm 1 (bias-corrected moments, ε outside the root).
fn adam_reference(p: &mut [f64], gs: &[Vec<f64>], lr: f64, wd: f64, decoupled: bool) {
    let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8);
    let (mut m, mut v) = (vec![0.0; p.len()], vec![0.0; p.len()]);
    for (t, g) in gs.iter().enumerate() {
        let t = t as i32 + 1;
        for i in 0..p.len() {
            if decoupled {
                p[i] -= lr * wd * p[i];
            }
            let gi = if decoupled { g[i] } else { g[i] + wd * p[i] };
            m[i] = b1 * m[i] + (1.0 - b1) * gi;
            v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
            let mh = m[i] / (1.0 - b1.powi(t));
            let vh = v[i] / (1.0 - b2.powi(t));
            p[i] -= lr * mh / (vh.sqrt() + eps);
        }
    }
}

#[test]
fn adam_and_adamw_follow_the_paper() {
    let p0 = vec![0.5, -1.5, 3.0];
    let gs: Vec<Vec<f64>> = (0..7)
        .map(|k| {
            (0..3)
                .map(|i| ((k * 3 + i) as f64 * 0.7).sin() * (1.0 + i as f64))
                .collect()
        })
        .collect();
    for (wd, decoupled) in [(0.0, false), (0.1, false), (0.1, true)] {
        let mut store = store_with(std::slice::from_ref(&p0));
        let mut opt = if decoupled {
            Adam::adamw(0.01, wd)
        } else {
            Adam::new(0.01).weight_decay(wd)
        };
        for g in &gs {
            opt.step(&mut store, &grads(std::slice::from_ref(g)));
        }
        let mut want = p0.clone();
        adam_reference(&mut want, &gs, 0.01, wd, decoupled);
        let got = store.by_name("p0").unwrap().to_vec();
        for i in 0..3 {
            assert!(
                (got[i] - want[i]).abs() < 1e-12,
                "wd={wd} decoupled={decoupled}: {got:?} vs {want:?}"
            );
        }
    }
    // The first Adam step moves each coordinate by about lr, against the gradient's sign.
    let mut store = store_with(&[vec![0.0, 0.0]]);
    Adam::new(0.01).step(&mut store, &grads(&[vec![3.0, -1e-3]]));
    let p = store.by_name("p0").unwrap().to_vec();
    assert!((p[0] + 0.01).abs() < 1e-6 && (p[1] - 0.01).abs() < 1e-4, "{p:?}");
}

#[test]
fn adamw_decays_even_with_zero_gradient_and_adam_l2_differs() {
    let mut store = store_with(&[vec![2.0]]);
    let mut opt = Adam::adamw(0.1, 0.5);
    opt.step(&mut store, &grads(&[vec![0.0]]));
    assert!((store.by_name("p0").unwrap().item() - 2.0 * (1.0 - 0.1 * 0.5)).abs() < 1e-15);
    let mut l2 = store_with(&[vec![2.0]]);
    Adam::new(0.1).weight_decay(0.5).step(&mut l2, &grads(&[vec![0.0]]));
    // L2: the decay enters the gradient and is normalised away: a full lr-sized step
    assert!((l2.by_name("p0").unwrap().item() - (2.0 - 0.1)).abs() < 1e-6);
}

#[test]
fn clip_global_norm_scales_all_gradients_together() {
    let a = vec![1.0, -2.0, 2.0];
    let b = vec![4.0];
    let norm = (1.0f64 + 4.0 + 4.0 + 16.0).sqrt(); // 5
    let mut g = grads(&[a.clone(), b.clone()]);
    assert_eq!(g.clip_global_norm(10.0), norm); // under the limit: unchanged
    assert_eq!(g.get(tapegrad::nn::ParamId(0)).to_vec(), a);
    let r = g.clip_global_norm(2.5);
    assert_eq!(r, norm);
    assert!((g.global_norm() - 2.5).abs() < 1e-12);
    let scaled: Vec<f64> = a.iter().map(|x| x * 0.5).collect();
    assert!(
        g.get(tapegrad::nn::ParamId(0))
            .max_abs_diff(&Tensor::from_vec(scaled, [3]))
            < 1e-15
    );
}

#[test]
fn init_is_seeded_and_has_the_right_spread() {
    let (fi, fo) = (300, 200);
    let xu = Init::XavierUniform.tensor::<f64>([fi, fo], fi, fo, 1);
    let a = (6.0 / (fi + fo) as f64).sqrt();
    assert!(xu.data().iter().all(|x| x.abs() <= a));
    let var = |t: &Tensor<f64>| t.data().iter().map(|x| x * x).sum::<f64>() / t.numel() as f64;
    // uniform(−a, a) has variance a²/3 = 2/(fi+fo)
    assert!((var(&xu) / (2.0 / (fi + fo) as f64) - 1.0).abs() < 0.03);
    let he = Init::HeNormal.tensor::<f64>([fi, fo], fi, fo, 2);
    assert!((var(&he) / (2.0 / fi as f64) - 1.0).abs() < 0.03);
    let hu = Init::HeUniform.tensor::<f64>([fi, fo], fi, fo, 3);
    assert!((var(&hu) / (2.0 / fi as f64) - 1.0).abs() < 0.03);
    assert_eq!(
        Init::HeNormal.tensor::<f32>([4, 4], 4, 4, 9),
        Init::HeNormal.tensor::<f32>([4, 4], 4, 4, 9)
    );
    assert_ne!(
        Init::HeNormal.tensor::<f32>([4, 4], 4, 4, 9),
        Init::HeNormal.tensor::<f32>([4, 4], 4, 4, 10)
    );
    assert!(Init::Zeros.tensor::<f32>([3], 3, 3, 0).data().iter().all(|&x| x == 0.0));
}

#[test]
fn linear_computes_xw_plus_b_and_mlp_gradients_pass_gradcheck() {
    let mut store = ParamStore::<f64>::new();
    let lin = Linear::new(&mut store, "fc", 3, 2, Init::XavierNormal, 5);
    let x = Tensor::rand_normal([4, 3], 0.0, 1.0, 6);
    let tape = Tape::new();
    let p = store.bind(&tape);
    let y = lin.forward(&p, tape.constant(x.clone())).value();
    let (w, b) = (store.get(lin.weight), store.get(lin.bias));
    for r in 0..4 {
        for c in 0..2 {
            // x Wᵀ + b, with W stored as [outputs, inputs] (PyTorch's layout)
            let want: f64 = (0..3).map(|k| x.get(&[r, k]) * w.get(&[c, k])).sum::<f64>() + b.get(&[c]);
            assert!((y.get(&[r, c]) - want).abs() < 1e-14);
        }
    }

    let mut store = ParamStore::<f64>::new();
    let mlp = Mlp::new(&mut store, "mlp", &[3, 5, 4, 2], Activation::Tanh, 11);
    assert_eq!(store.len(), 6);
    assert_eq!(store.name(mlp.layers[2].bias), "mlp.2.bias");
    let mut inputs = vec![x.clone()];
    // non-zero biases so the check covers them meaningfully
    inputs.extend(store.iter().map(|(_, _, t)| t.map(|v| v + 0.1)));
    let report = gradcheck(
        |v| {
            let p = Params::from_vars(v[1..].to_vec());
            let out = mlp.forward(&p, v[0]);
            (out * out).sum()
        },
        &inputs,
        &GradcheckOptions::default(),
    );
    assert!(report.passed, "{report}");
}

#[test]
fn optimisers_update_in_place_when_the_tape_is_gone() {
    for adam in [false, true] {
        let mut store = ParamStore::<f32>::new();
        let mlp = Mlp::new(&mut store, "m", &[4, 8, 3], Activation::Relu, 1);
        let ptrs: Vec<*const f32> = store.iter().map(|(_, _, t)| t.data().as_ptr()).collect();
        let x = Tensor::<f32>::rand_normal([6, 4], 0.0, 1.0, 2);
        let t = one_hot::<f32>(&[0, 1, 2, 0, 1, 2], 3);
        let mut opt: Box<dyn Optimizer<f32>> = if adam {
            Box::new(Adam::adamw(1e-2, 1e-2))
        } else {
            Box::new(Sgd::new(0.1).momentum(0.9))
        };
        let mut tape = Tape::new();
        let mut losses = Vec::new();
        for _ in 0..20 {
            let mut g = {
                let p = store.bind(&tape);
                let out = mlp.forward(&p, tape.constant(x.clone()));
                let d = out - tape.constant(t.clone());
                let loss = (d * d).mean();
                losses.push(loss.item());
                p.grads(loss.backward())
            };
            tape.clear();
            g.clip_global_norm(5.0);
            opt.step(&mut store, &g);
        }
        assert!(losses.last().unwrap() < &(losses[0] * 0.5), "{losses:?}");
        let now: Vec<*const f32> = store.iter().map(|(_, _, t)| t.data().as_ptr()).collect();
        assert_eq!(ptrs, now, "a parameter was reallocated");
        assert_eq!(store.copies_on_write(), 0);

        // Negative control: a live tape shares the buffers, so the update must copy.
        let tape2 = Tape::new();
        let p = store.bind(&tape2);
        let g = ParamGrads::from_vec(store.iter().map(|(_, _, t)| Tensor::zeros(t.shape())).collect());
        opt.step(&mut store, &g);
        assert_eq!(store.copies_on_write(), store.len());
        let moved: Vec<*const f32> = store.iter().map(|(_, _, t)| t.data().as_ptr()).collect();
        assert!(moved.iter().zip(&now).all(|(a, b)| a != b));
        drop(p);
    }
}

#[test]
fn one_hot_and_argmax_are_inverse() {
    let labels = [3, 0, 9, 9, 1];
    let oh = one_hot::<f64>(&labels, 10);
    assert_eq!(oh.shape(), &[5, 10]);
    assert_eq!(oh.sum_all(), 5.0);
    assert_eq!(argmax_rows(&oh), labels);
}

/// The tape-lifecycle trap (issue 15): a loop that forgets `tape.clear()` grows the tape and makes
/// every update copy; the store counts both, and `grad_step` makes the right way the easy way.
#[test]
fn a_loop_that_forgets_to_clear_the_tape_is_counted_and_grad_step_avoids_it() {
    use tapegrad::nn::{Activation, Mlp, ParamStore};
    use tapegrad::optim::{Optimizer, Sgd};
    let x = Tensor::<f64>::rand_normal([8, 3], 0.0, 1.0, 1);
    let y = Tensor::<f64>::rand_normal([8, 1], 0.0, 1.0, 2);
    // The wrong way: one tape, never cleared.
    let mut store = ParamStore::<f64>::new();
    let mlp = Mlp::new(&mut store, "mlp", &[3, 4, 1], Activation::Tanh, 3);
    let mut opt = Sgd::new(0.1);
    let tape = Tape::new();
    for _ in 0..10 {
        let grads = {
            let p = store.bind(&tape);
            let e = mlp.forward(&p, tape.constant(x.clone())) - tape.constant(y.clone());
            p.grads((e * e).mean().backward())
        };
        opt.step(&mut store, &grads);
    }
    assert_eq!(
        store.stale_binds(),
        9,
        "every bind after the first found the tape not cleared"
    );
    // every update of a shared buffer copied it (the one-element bias lives inline: never shared)
    assert_eq!(store.copies_on_write(), 10 * (store.len() - 1));
    assert!(tape.len() > 100, "the tape grew: {} nodes", tape.len());
    // The easy way: grad_step owns the tape per step.
    let mut store = ParamStore::<f64>::new();
    let mlp = Mlp::new(&mut store, "mlp", &[3, 4, 1], Activation::Tanh, 3);
    let mut first = None;
    let mut last = 0.0;
    for _ in 0..10 {
        let (loss, grads) = store.grad_step(|t, p| {
            let e = mlp.forward(p, t.constant(x.clone())) - t.constant(y.clone());
            (e * e).mean()
        });
        first.get_or_insert(loss);
        last = loss;
        opt.step(&mut store, &grads);
    }
    assert_eq!((store.stale_binds(), store.copies_on_write()), (0, 0));
    assert!(last < first.unwrap(), "it still trains: {first:?} -> {last}");
    // and a failing loss is an Err from try_grad_step
    let e = store
        .try_grad_step(|t, p| tapegrad::attempt(|| (mlp.forward(p, t.constant(Tensor::zeros([8, 5]))) * 1.0).mean()))
        .unwrap_err();
    assert!(e.to_string().contains("matmul"), "{e}");
}
