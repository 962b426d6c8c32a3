//! Compiled steps (`tapegrad::compile`) against the eager tape: every registry sample, traced on
//! its inputs and replayed on *other* inputs, gives the eager loss and gradients at those inputs
//! (bit for bit: the replay runs the same kernels and the same rules in the same order); what the
//! trace fixes (shapes) and refuses (reading values) is refused with a clear error; a detached
//! value follows new inputs; NaN propagates; anomaly checks name the op and line.

use tapegrad::compile::Compiled;
use tapegrad::{ErrorKind, Float, Registry, Tape, Tensor, Var};

/// `Σ c ⊙ out` with a fixed cotangent-like weight, so every output element matters differently.
fn weighted<'t, T: Float>(out: Var<'t, T>) -> Var<'t, T> {
    let c = Tensor::<f64>::rand_uniform(out.shape(), 0.5, 1.5, 7);
    (out * out.tape().constant(c.cast())).sum()
}

/// Both NaN, or the same bits.
fn same(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// `a` (compiled) agrees with `b` (eager) to `tol` relative to `scale` (the largest finite
/// magnitude of the eager tensor it is part of): the recorded backward runs the ops' own kernels
/// (the vectorised `exp`/`ln`) where the eager rule runs their scalar form, and a fused sum may add
/// in another order; NaN must stay NaN and an infinity the same infinity.
fn close(a: f64, b: f64, tol: f64, scale: f64) -> bool {
    if same(a, b) {
        return true;
    }
    if !a.is_finite() || !b.is_finite() {
        return false;
    }
    (a - b).abs() <= tol * (b.abs().max(scale) + f64::MIN_POSITIVE)
}

/// The largest finite magnitude in `x` (0 when none).
fn scale_of<T: Float>(x: &[T]) -> f64 {
    x.iter()
        .map(|v| v.to_f64().abs())
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max)
}

/// New inputs of the same shapes: a different point of each sample's domain (a smooth map
/// keeps signs and keeps values inside (0, 1) where they were).
fn moved(x: &Tensor<f64>) -> Tensor<f64> {
    x.map(|v| v * 0.93 + 0.01 * v.signum())
}

#[test]
fn every_registry_sample_replays_like_the_eager_tape_f64() {
    let reg = Registry::builtin();
    let (mut checked, mut refused) = (0, Vec::new());
    for info in reg.iter() {
        for s in (info.samples)() {
            let refs: Vec<&Tensor<f64>> = s.inputs.iter().collect();
            let f = s.f64;
            let step = Compiled::trace(&refs, &[], |_, p, _| weighted(f(p)));
            let mut step = match step {
                Ok(step) => step,
                Err(e) => {
                    // The only refusal allowed: a sample whose function reads values.
                    assert_eq!(e.kind(), ErrorKind::Invalid, "{} / {}: {e}", info.name, s.label);
                    assert!(
                        e.to_string().contains("read a value"),
                        "{} / {}: {e}",
                        info.name,
                        s.label
                    );
                    refused.push(format!("{} / {}", info.name, s.label));
                    continue;
                }
            };
            for inputs in [s.inputs.clone(), s.inputs.iter().map(moved).collect::<Vec<_>>()] {
                let refs: Vec<&Tensor<f64>> = inputs.iter().collect();
                let out = step
                    .run(&refs, &[])
                    .unwrap_or_else(|e| panic!("{} / {}: {e}", info.name, s.label));
                let tape = Tape::<f64>::new();
                let vars: Vec<Var<'_, f64>> = inputs.iter().map(|x| tape.var(x.clone())).collect();
                let loss = weighted(f(&vars));
                let (lc, le) = (out.loss.item(), loss.item());
                assert!(
                    close(lc, le, 1e-12, le.abs()),
                    "{} / {}: loss {lc} vs {le}",
                    info.name,
                    s.label
                );
                if !loss.requires_grad() {
                    continue;
                }
                let grads = tape.grad(&[loss], &[Tensor::scalar(1.0)], &vars);
                for (k, (a, b)) in out.grads.iter().zip(&grads).enumerate() {
                    assert_eq!(a.shape(), b.shape());
                    let scale = scale_of(b.data());
                    for (e, (x, y)) in a.data().iter().zip(b.data()).enumerate() {
                        assert!(
                            close(*x, *y, 1e-12, scale),
                            "{} / {}: input {k}[{e}] compiled {x} eager {y}",
                            info.name,
                            s.label
                        );
                    }
                }
            }
            checked += 1;
        }
    }
    eprintln!("{checked} samples compiled, refused: {refused:?}");
    assert!(checked > 200, "only {checked} samples compiled");
    // Reading values is what argmax-like samples do; nothing else may be refused.
    assert!(refused.len() <= 4, "refused: {refused:?}");
}

#[test]
fn every_registry_sample_replays_like_the_eager_tape_f32() {
    let reg = Registry::builtin();
    for info in reg.iter() {
        for s in (info.samples)() {
            let inputs: Vec<Tensor<f32>> = s.inputs.iter().map(|x| moved(x).cast()).collect();
            let refs: Vec<&Tensor<f32>> = inputs.iter().collect();
            let f = s.f32;
            let Ok(mut step) = Compiled::trace(&refs, &[], |_, p, _| weighted(f(p))) else {
                continue;
            };
            let out = step.run(&refs, &[]).unwrap();
            let tape = Tape::<f32>::new();
            let vars: Vec<Var<'_, f32>> = inputs.iter().map(|x| tape.var(x.clone())).collect();
            let loss = weighted(f(&vars));
            let (lc, le) = (out.loss.item() as f64, loss.item() as f64);
            assert!(
                close(lc, le, 1e-5, le.abs()),
                "{} / {}: {lc} vs {le}",
                info.name,
                s.label
            );
            if loss.requires_grad() {
                let grads = tape.grad(&[loss], &[Tensor::scalar(1.0)], &vars);
                for (a, b) in out.grads.iter().zip(&grads) {
                    let scale = scale_of(b.data());
                    for (x, y) in a.data().iter().zip(b.data()) {
                        let (x, y) = (*x as f64, *y as f64);
                        assert!(close(x, y, 1e-5, scale), "{} / {}: {x} vs {y}", info.name, s.label);
                    }
                }
            }
        }
    }
}

/// The composed stable softmax, with a detached maximum: traced on small logits, replayed on
/// logits near 1000 (where a stale maximum would overflow `exp` to infinity and give NaN).
/// A fused loop sums a product nothing else reads as a dot product of its operands' tiles (no
/// tile of products): the loss and the gradients have the bits of the same loop summing the
/// products (kept there by a second reader of the product, whose sum adds an exact zero).
#[test]
fn a_summed_product_is_a_dot_product_with_the_bits_of_the_summed_products() {
    for (shape, seed) in [
        (vec![3usize, 5], 1u64),
        (vec![64, 1000], 2),
        (vec![2, 9000], 3),
        (vec![5000], 4),
    ] {
        let a = Tensor::<f32>::rand_normal(shape.clone(), 0.0, 1.0, seed);
        let b = Tensor::<f32>::rand_normal(shape.clone(), 0.0, 1.0, seed + 10);
        let mut dot = Compiled::trace(&[&a, &b], &[], |_, p, _| (p[0].tanh() * p[1]).sum()).unwrap();
        let mut plain = Compiled::trace(&[&a, &b], &[], |_, p, _| {
            let prod = p[0].tanh() * p[1];
            prod.sum() + (prod * 0.0).sum()
        })
        .unwrap();
        let (x, y) = (dot.run(&[&a, &b], &[]).unwrap(), plain.run(&[&a, &b], &[]).unwrap());
        assert_eq!(x.loss.item().to_bits(), y.loss.item().to_bits(), "{shape:?}");
        for (g, h) in x.grads.iter().zip(&y.grads) {
            let bits = |t: &Tensor<f32>| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(g), bits(h), "{shape:?}");
        }
        // And the value is the sum of the products (f64 reference, f32 rounding).
        let want: f64 = a
            .data()
            .iter()
            .zip(b.data())
            .map(|(&u, &v)| (u as f64).tanh() * v as f64)
            .sum();
        assert!(
            (x.loss.item() as f64 - want).abs() < 1e-4 * (1.0 + want.abs()),
            "{shape:?}"
        );
    }
}

#[test]
fn a_detached_maximum_follows_new_inputs() {
    let x0 = Tensor::<f64>::rand_uniform([3, 5], -1.0, 1.0, 1);
    let g = Tensor::<f64>::rand_uniform([3, 5], -1.0, 1.0, 2);
    let mut step = Compiled::trace(&[&x0], &[&g], |_, p, d| (p[0].softmax_composed(-1) * d[0]).sum()).unwrap();
    let x1 = x0.map(|v| v + 1000.0);
    let out = step.run(&[&x1], &[&g]).unwrap();
    assert!(out.grads[0].all_finite(), "{:?}", out.grads[0]);
    let tape = Tape::<f64>::new();
    let x = tape.var(x1.clone());
    let loss = (x.softmax(-1) * tape.constant(g.clone())).sum();
    let expect = loss.backward()[x].clone();
    assert!(out.grads[0].max_abs_diff(&expect) < 1e-12);
    assert!((out.loss.item() - loss.item()).abs() < 1e-12);
}

#[test]
fn a_two_layer_network_trains_the_same_compiled_and_eager() {
    let mut w1 = Tensor::<f64>::rand_uniform([4, 8], -0.5, 0.5, 3);
    let mut w2 = Tensor::<f64>::rand_uniform([8, 3], -0.5, 0.5, 4);
    let (mut e1, mut e2) = (w1.clone(), w2.clone());
    let x = Tensor::<f64>::rand_uniform([16, 4], -1.0, 1.0, 5);
    let y = Tensor::<f64>::rand_uniform([16, 3], 0.0, 1.0, 6);
    fn net<'t>(p: &[Var<'t, f64>], d: &[Var<'t, f64>]) -> Var<'t, f64> {
        let h = d[0].matmul(p[0]).tanh();
        let o = h.matmul(p[1]).log_softmax_composed(-1);
        -(o * d[1]).sum() / 16.0
    }
    let mut step = Compiled::trace(&[&w1, &w2], &[&x, &y], |_, p, d| net(p, d)).unwrap();
    for _ in 0..20 {
        let out = step.run(&[&w1, &w2], &[&x, &y]).unwrap();
        w1 = &w1 - &(&out.grads[0] * 0.5);
        w2 = &w2 - &(&out.grads[1] * 0.5);
        let tape = Tape::<f64>::new();
        let (a, b) = (tape.var(e1.clone()), tape.var(e2.clone()));
        let (xc, yc) = (tape.constant(x.clone()), tape.constant(y.clone()));
        let loss = net(&[a, b], &[xc, yc]);
        assert_eq!(loss.item().to_bits(), out.loss.item().to_bits());
        let g = loss.backward();
        e1 = &e1 - &(&g[a] * 0.5);
        e2 = &e2 - &(&g[b] * 0.5);
    }
    assert_eq!(w1.to_vec(), e1.to_vec());
    assert_eq!(w2.to_vec(), e2.to_vec());
}

#[test]
fn reading_a_value_while_tracing_is_refused_with_the_line() {
    let x = Tensor::<f64>::from_vec(vec![1.0, 2.0], [2]);
    let e = Compiled::trace(&[&x], &[], |tape, p, _| {
        let m = p[0].value().data()[0]; // a value read: stale on replay
        (p[0] * tape.scalar(m)).sum()
    })
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid);
    assert!(e.to_string().contains("read a value"), "{e}");
    assert_eq!(e.location().unwrap().file(), file!());
    let e = Compiled::trace(&[&x], &[], |_, p, _| {
        let _ = p[0].sum().item();
        p[0].sum()
    })
    .unwrap_err();
    assert!(e.to_string().contains("read a value"), "{e}");
}

#[test]
fn other_shapes_and_counts_are_refused() {
    let x = Tensor::<f64>::from_vec(vec![1.0, 2.0], [2]);
    let mut step = Compiled::trace(&[&x], &[], |_, p, _| (p[0] * p[0]).sum()).unwrap();
    let y = Tensor::<f64>::from_vec(vec![1.0, 2.0, 3.0], [3]);
    let e = step.run(&[&y], &[]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Shape);
    assert!(e.to_string().contains("[3]") && e.to_string().contains("[2]"), "{e}");
    let e = step.run(&[&x, &x], &[]).unwrap_err();
    assert!(e.to_string().contains("2 parameters given"), "{e}");
    // And it still runs afterwards.
    assert_eq!(step.run(&[&x], &[]).unwrap().grads[0].to_vec(), vec![2.0, 4.0]);
}

#[test]
fn a_loss_with_several_elements_or_a_failing_op_is_an_error_at_trace() {
    let x = Tensor::<f64>::from_vec(vec![1.0, 2.0], [2]);
    let e = Compiled::trace(&[&x], &[], |_, p, _| p[0] * p[0]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NonScalar);
    let m = Tensor::<f64>::zeros([3, 3]);
    let e = Compiled::trace(&[&x], &[&m], |_, p, d| d[0].matmul(p[0]).sum()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Shape);
    assert!(e.to_string().contains("matmul"), "{e}");
    assert_eq!(e.location().unwrap().file(), file!());
}

#[test]
fn nan_propagates_and_anomaly_mode_names_the_op() {
    let x = Tensor::<f64>::from_vec(vec![1.0, 2.0, 3.0], [3]);
    let mut step = Compiled::trace(&[&x], &[], |_, p, _| (p[0].log() * p[0]).sum()).unwrap();
    let bad = Tensor::<f64>::from_vec(vec![1.0, f64::NAN, 3.0], [3]);
    let out = step.run(&[&bad], &[]).unwrap();
    assert!(out.loss.item().is_nan());
    assert!(out.grads[0].data()[1].is_nan() && out.grads[0].data()[0].is_finite());
    // Anomaly: a NaN input is reported as the input; log(-1) is reported at the log.
    step.set_anomaly(true);
    let e = step.run(&[&bad], &[]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NonFinite);
    assert!(e.to_string().contains("parameter 0"), "{e}");
    let neg = Tensor::<f64>::from_vec(vec![1.0, -1.0, 3.0], [3]);
    let e = step.run(&[&neg], &[]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NonFinite);
    assert!(e.to_string().contains("log"), "{e}");
    assert_eq!(e.location().unwrap().file(), file!());
    step.set_anomaly(false);
    assert!(step.run(&[&x], &[]).unwrap().loss.item().is_finite());
}

#[test]
fn the_summary_the_dot_graph_and_the_profile_list_every_step() {
    let x = Tensor::<f64>::rand_uniform([4, 6], -1.0, 1.0, 9);
    let mut step = Compiled::trace(&[&x], &[], |_, p, _| p[0].softmax_naive(-1).sum()).unwrap();
    let s = step.summary();
    // The forward and the recorded backward fuse into one loop over the rows: the row sums are
    // complete within a tile, so the division, the loss, and the backward's row sums and
    // elementwise ops run in the same pass; only the gradient and the loss are written (and
    // the backward's product by the seed's ones is not computed at all).
    assert!(s.contains("backward recorded"), "{s}");
    assert!(
        s.contains("fused loop of 13 ops [exp sum(axis=-1, keepdim) div sum* "),
        "{s}"
    );
    assert_eq!((step.len(), step.fused_loops()), (1, 1), "{s}");
    assert_eq!(
        s.lines().filter(|l| l.trim_start().starts_with('#')).count(),
        step.len()
    );
    let dot = step.to_dot();
    assert!(
        dot.starts_with("digraph") && dot.matches("shape=box").count() == step.len(),
        "{dot}"
    );
    let (out, times) = step.profile(&[&x], &[]).unwrap();
    assert_eq!(times.len(), step.len());
    assert_eq!(out.grads[0].shape(), &[4, 6]);
    // softmax sums to one per row: the gradient of its sum is zero.
    assert!(out.grads[0].data().iter().all(|g| g.abs() < 1e-12));
}

#[test]
fn a_parameter_the_loss_ignores_gets_zeros() {
    let a = Tensor::<f64>::from_vec(vec![1.0, 2.0], [2]);
    let b = Tensor::<f64>::from_vec(vec![5.0, 6.0, 7.0], [3]);
    let mut step = Compiled::trace(&[&a, &b], &[], |_, p, _| (p[0] * p[0]).sum()).unwrap();
    let out = step.run(&[&a, &b], &[]).unwrap();
    assert_eq!(out.grads[1].to_vec(), vec![0.0; 3]);
    assert_eq!(out.grads[0].to_vec(), vec![2.0, 4.0]);
}

#[test]
fn products_by_ones_are_not_computed_and_change_no_bit() {
    // `∂ sum(p·d)/∂p` is the seed spread to `d`'s shape times `d`: `d` itself, NaN, infinities
    // and signed zeros included, with no loop that writes it.
    let odd = |k: f64| {
        Tensor::<f64>::from_vec(
            vec![
                -0.0,
                0.0,
                f64::NAN,
                f64::INFINITY,
                -f64::INFINITY,
                1.5 * k,
                -2.0 * k,
                1e-310,
                k,
                -k,
            ],
            [2, 5],
        )
    };
    let p = Tensor::<f64>::rand_normal([2, 5], 0.0, 1.0, 3);
    let (d, d2) = (odd(1.0), odd(3.0));
    let mut step = Compiled::trace(&[&p], &[&d], |_, p, d| (p[0] * d[0]).sum()).unwrap();
    assert!(!step.summary().contains("chain_mul"), "{}", step.summary());
    for dv in [&d, &d2] {
        let out = step.run(&[&p], &[dv]).unwrap();
        let (got, want) = (out.grads[0].to_vec(), dv.to_vec());
        assert!(
            got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()),
            "{got:?} vs {want:?}"
        );
    }
    // A data input of ones while tracing is an input, not a constant: it follows new values.
    let ones = Tensor::<f64>::ones([2, 5]);
    let twos = Tensor::<f64>::full([2, 5], 2.0);
    let mut step = Compiled::trace(&[&p], &[&ones], |_, p, d| (p[0] * d[0]).sum()).unwrap();
    let out = step.run(&[&p], &[&twos]).unwrap();
    assert_eq!(out.grads[0].to_vec(), vec![2.0; 10]);
    assert_eq!(
        out.loss.item().to_bits(),
        (p.to_vec().iter().sum::<f64>() * 2.0).to_bits()
    );
    // Constant ones in the forward (also through a broadcast of a scalar one): the eager bits,
    // `-0`, NaN and infinities of the parameter included.
    let q = odd(1.0);
    fn f<'t>(t: &'t Tape<f64>, x: Var<'t, f64>) -> Var<'t, f64> {
        let y = x * t.constant(Tensor::ones([2, 5]));
        let z = t.constant(Tensor::scalar(1.0)) * y.exp();
        (z * y).sum_axis(1, false).sum()
    }
    let mut step = Compiled::trace(&[&q], &[], |t, p, _| f(t, p[0])).unwrap();
    let out = step.run(&[&q], &[]).unwrap();
    let tape = Tape::<f64>::new();
    let x = tape.var(q.clone());
    let loss = f(&tape, x);
    let g = loss.backward();
    assert!(same(out.loss.item(), loss.value().item()));
    let (got, want) = (out.grads[0].to_vec(), g[x].to_vec());
    assert!(got.iter().zip(&want).all(|(&a, &b)| same(a, b)), "{got:?} vs {want:?}");
}

/// Mean squared error of `x·w` against `y`, eagerly: the loss and `∂/∂w`.
fn mse_eager(w: &Tensor<f64>, x: &Tensor<f64>, y: &Tensor<f64>) -> (f64, Vec<f64>) {
    let tape = Tape::<f64>::new();
    let wv = tape.var(w.clone());
    let r = tape.constant(x.clone()).matmul(wv) - tape.constant(y.clone());
    let loss = (r * r).mean();
    (loss.item(), loss.backward()[wv].to_vec())
}

#[test]
fn a_jit_traces_once_per_shape_and_agrees_with_eager_for_each() {
    use tapegrad::compile::Jit;
    let mut step = Jit::new(|_, p, d| {
        let r = d[0].matmul(p[0]) - d[1];
        (r * r).mean()
    });
    assert!(step.is_empty());
    let w = Tensor::<f64>::rand_uniform([3, 2], -1.0, 1.0, 1);
    for (k, rows) in [5, 5, 2, 5, 2, 7].into_iter().enumerate() {
        let x = Tensor::<f64>::rand_uniform([rows, 3], -1.0, 1.0, 10 + k as u64);
        let y = Tensor::<f64>::rand_uniform([rows, 2], -1.0, 1.0, 20 + k as u64);
        let out = step.run(&[&w], &[&x, &y]).unwrap();
        let (loss, g) = mse_eager(&w, &x, &y);
        assert!(close(out.loss.item(), loss, 1e-12, loss.abs()), "{rows} rows");
        let s = scale_of(&g);
        for (a, b) in out.grads[0].to_vec().into_iter().zip(g) {
            assert!(close(a, b, 1e-12, s), "{rows} rows: {a} vs {b}");
        }
        assert!(step.get(&[&w], &[&x, &y]).is_some());
    }
    assert_eq!((step.traces(), step.len()), (3, 3));
    // The programs say where the Jit was made.
    let x = Tensor::<f64>::zeros([7, 3]);
    let y = Tensor::<f64>::zeros([7, 2]);
    let summary = step.get(&[&w], &[&x, &y]).unwrap().summary();
    assert!(summary.contains(file!()), "{summary}");
    assert!(step.get(&[&w], &[&x]).is_none());
}

#[test]
fn a_full_jit_drops_the_least_recently_used_program() {
    use tapegrad::compile::Jit;
    let mut step = Jit::new(|_, p, _| (p[0] * p[0]).sum()).with_capacity(2);
    let t = |n: usize| Tensor::<f64>::from_vec((0..n).map(|i| i as f64).collect(), [n]);
    let (a, b, c) = (t(2), t(3), t(4));
    for x in [&a, &b, &a, &c] {
        assert_eq!(
            step.run(&[x], &[]).unwrap().grads[0].to_vec(),
            x.to_vec().iter().map(|v| 2.0 * v).collect::<Vec<_>>()
        );
    }
    // a was used after b, so c evicted b.
    assert_eq!((step.traces(), step.len()), (3, 2));
    assert!(step.get(&[&a], &[]).is_some() && step.get(&[&b], &[]).is_none());
    step.run(&[&b], &[]).unwrap();
    assert_eq!(step.traces(), 4);
}

#[test]
fn a_jit_caches_no_failed_trace_and_passes_anomaly_checks_on() {
    use tapegrad::compile::Jit;
    let mut step = Jit::new(|_, p, d| (d[0].matmul(p[0]).log()).sum());
    let w = Tensor::<f64>::from_vec(vec![1.0, 2.0], [2, 1]);
    let bad = Tensor::<f64>::zeros([3, 3]);
    let e = step.run(&[&w], &[&bad]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Shape);
    assert!(e.to_string().contains("matmul"), "{e}");
    assert_eq!(e.location().unwrap().file(), file!());
    assert_eq!((step.traces(), step.len()), (0, 0));
    let x = Tensor::<f64>::from_vec(vec![1.0, 1.0, -3.0, 1.0], [2, 2]);
    // log of a negative number: NaN without anomaly checks, an error naming log with them.
    assert!(step.run(&[&w], &[&x]).unwrap().loss.item().is_nan());
    step.set_anomaly(true);
    let e = step.run(&[&w], &[&x]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NonFinite);
    assert!(e.to_string().contains("log"), "{e}");
    // A program traced after the switch checks too.
    let x3 = Tensor::<f64>::from_vec(vec![1.0, 1.0, -3.0, 1.0, 1.0, 1.0], [3, 2]);
    assert_eq!(step.run(&[&w], &[&x3]).unwrap_err().kind(), ErrorKind::NonFinite);
    assert_eq!(step.traces(), 2);
}

/// A compiled step's backward records each elementwise rule as one op (`d tanh`, …) that runs
/// the first-order rule's arithmetic, so for ops whose forward is computed element by element
/// the compiled gradient is the eager one bit for bit (and the loop shows the rules by name).
#[test]
fn elementwise_rules_compile_whole_with_the_eager_bits() {
    let x = Tensor::<f64>::rand_uniform([37, 53], -3.0, 3.0, 8);
    let c = Tensor::<f64>::rand_uniform([37, 53], 0.5, 1.5, 9);
    fn f<'t>(x: Var<'t, f64>, c: Var<'t, f64>) -> Var<'t, f64> {
        (x.tanh().gelu_tanh().softplus().sigmoid() * c).sum()
    }
    let mut step = Compiled::trace(&[&x], &[&c], |_, p, d| f(p[0], d[0])).unwrap();
    let s = step.summary();
    for rule in ["d tanh", "d gelu_tanh", "d softplus", "d sigmoid"] {
        assert!(s.contains(rule), "{rule} missing from:\n{s}");
    }
    assert_eq!(step.fused_loops(), 1, "{s}");
    let x2 = Tensor::<f64>::rand_uniform([37, 53], -4.0, 4.0, 10);
    let out = step.run(&[&x2], &[&c]).unwrap();
    let tape = Tape::<f64>::new();
    let xv = tape.var(x2.clone());
    let loss = f(xv, tape.constant(c.clone()));
    let g = loss.backward();
    let bits = |t: &Tensor<f64>| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&out.grads[0]), bits(&g[xv]));
}

/// A program of 0-d values: its fused loops run member by member on values, not on one-element
/// tiles. Every elementwise function of the table (and the binary, ternary, scalar-parameter and
/// one-value reduction ops) gives the eager tape's loss and gradients, and the same gradient bits
/// as the same program on three equal elements (the tile loop, checked against eager above).
#[test]
fn a_program_of_scalars_runs_like_the_eager_tape_and_like_its_tiles() {
    fn program<'t>(p: &[Var<'t, f64>]) -> Var<'t, f64> {
        let (x, y) = (p[0], p[1]); // x in (0, 1), y > 1
        let terms = [
            x.exp(),
            y.log(),
            y.sqrt(),
            x.tanh(),
            x.sigmoid(),
            (x - y).relu(),
            (x - y).abs(),
            x.sin(),
            x.cos(),
            x.tan(),
            x.asin(),
            x.acos(),
            x.atan(),
            x.sinh(),
            x.cosh(),
            x.asinh(),
            y.acosh(),
            x.atanh(),
            x.log1p(),
            x.expm1(),
            y.log2(),
            y.log10(),
            x.exp2(),
            y.reciprocal(),
            y.rsqrt(),
            x.square(),
            x.softplus(),
            x.erf(),
            x.erfc(),
            x.gelu(),
            x.gelu_tanh(),
            x.silu(),
            (x - y).leaky_relu(0.1),
            (x - y).elu(1.0),
            x.clamp(0.1, 0.3),
            x.add_scalar(2.0),
            x.mul_scalar(3.0),
            x.rdiv_scalar(2.0),
            x.powf(2.5),
            -x,
            x * y,
            x / y,
            x - y,
            x.pow(y),
            x.maximum(y),
            x.minimum(y),
            x.lt(y).select(x * x, y),
            // (the maximum's rule reads values, which would keep the backward unfused)
            x.unsqueeze(-1).max_axis(-1, false).detach() * x,
            x.sum(),
            x.mean(),
        ];
        let mut s = terms[0];
        for (k, t) in terms[1..].iter().enumerate() {
            // Different weights, so a wrong term cannot hide behind another.
            s = s + t.mul_scalar(1.0 + k as f64 / 7.0).sum();
        }
        s.exp().tanh() * y
    }
    for (x, y) in [(0.4, 1.7), (0.05, 3.0), (f64::NAN, 2.0)] {
        let scalars = [Tensor::scalar(x), Tensor::scalar(y)];
        let rows = [Tensor::full([3], x), Tensor::full([3], y)];
        let mut step = Compiled::trace(&[&scalars[0], &scalars[1]], &[], |_, p, _| program(p)).unwrap();
        // Fused loops forward and backward: their members run on values.
        assert!(!step.summary().contains("not fused"), "{}", step.summary());
        let one = step.run(&[&scalars[0], &scalars[1]], &[]).unwrap();
        let three = Compiled::trace(&[&rows[0], &rows[1]], &[], |_, p, _| program(p).sum())
            .unwrap()
            .run(&[&rows[0], &rows[1]], &[])
            .unwrap();
        let tape = Tape::<f64>::new();
        let vars: Vec<Var<'_, f64>> = scalars.iter().map(|t| tape.var(t.clone())).collect();
        let loss = program(&vars);
        let grads = tape.grad(&[loss], &[Tensor::scalar(1.0)], &vars);
        assert!(close(one.loss.item(), loss.item(), 1e-12, 0.0), "({x}, {y}): loss");
        for (k, (g, tiles)) in grads.iter().zip(&three.grads).enumerate() {
            let (c, e) = (one.grads[k].item(), g.item());
            assert!(close(c, e, 1e-12, 0.0), "({x}, {y}): input {k}: compiled {c} eager {e}");
            for &t in tiles.data() {
                assert!(same(c, t), "({x}, {y}): input {k}: 0-d {c}, tiles {t}");
            }
        }
        if x.is_nan() {
            assert!(one.loss.item().is_nan() && one.grads[0].item().is_nan());
        }
    }
}
