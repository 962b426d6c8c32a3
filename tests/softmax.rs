//! Softmax three ways: composed, fused and naive agree with each other, with the analytic Jacobian
//! diag(y) − y yᵀ, and with finite differences; cross-entropy's gradient is softmax − t.

use tapegrad::check::{CheckMode, FusedOptions, GradcheckOptions, fused_vs_composed, gradcheck, jacobian};
use tapegrad::softmax::{CrossEntropy, Reduction, Target, fused_pairs};
use tapegrad::{Cotangents, ErrorKind, Float, Op, Result, Tape, Tensor, Value, Var, VjpCtx, pointwise};

const SHAPES: [[usize; 2]; 5] = [[1, 1], [1, 2], [3, 5], [8, 64], [4, 1000]];

#[derive(Clone, Copy, Debug)]
enum Way {
    Composed,
    Fused,
    Naive,
}

fn softmax<'t, T: Float>(way: Way, x: Var<'t, T>, axis: isize) -> Var<'t, T> {
    match way {
        Way::Composed => x.softmax_composed(axis),
        Way::Fused => x.softmax(axis),
        Way::Naive => x.softmax_naive(axis),
    }
}

/// `Jᵀ g` for softmax along `axis`, from the explicit Jacobian `diag(y) − y yᵀ` of each row
/// (a dense O(n²) matrix-vector product, independent of the closed-form VJP).
fn analytic_vjp(y: &Tensor<f64>, g: &Tensor<f64>, axis: usize) -> Tensor<f64> {
    let (r, c) = (y.shape()[0], y.shape()[1]);
    let mut out = Tensor::zeros([r, c]);
    let (rows, n) = if axis == 1 { (r, c) } else { (c, r) };
    let at = |row: usize, k: usize| if axis == 1 { [row, k] } else { [k, row] };
    for row in 0..rows {
        for j in 0..n {
            let mut s = 0.0;
            for i in 0..n {
                let yi = y.get(&at(row, i));
                let yj = y.get(&at(row, j));
                let jac = if i == j { yi } else { 0.0 } - yi * yj; // ∂y_i/∂x_j
                s += jac * g.get(&at(row, i));
            }
            out.set(&at(row, j), s);
        }
    }
    out
}

fn vjp<T: Float>(way: Way, x: &Tensor<T>, g: &Tensor<T>, axis: isize) -> (Tensor<T>, Tensor<T>) {
    let tape = Tape::<T>::new();
    let xv = tape.var(x.clone());
    let y = softmax(way, xv, axis);
    let gx = tape.grad(&[y], std::slice::from_ref(g), &[xv]).remove(0);
    (y.value(), gx)
}

fn rel_close(a: &Tensor<f64>, b: &Tensor<f64>, rtol: f64, atol: f64) -> std::result::Result<(), String> {
    for (i, (&x, &y)) in a.data().iter().zip(b.data()).enumerate() {
        if (x - y).abs() > atol + rtol * y.abs() {
            return Err(format!("element {i}: {x:e} vs {y:e}"));
        }
    }
    Ok(())
}

#[test]
fn composed_fused_naive_and_analytic_jacobian_agree_in_f64() {
    for (k, s) in SHAPES.iter().enumerate() {
        for axis in [0usize, 1] {
            let x = Tensor::<f64>::rand_normal(s, 0.0, 2.0, 10 + k as u64);
            let g = Tensor::<f64>::rand_normal(s, 0.0, 1.0, 20 + k as u64);
            let (yc, _) = vjp(Way::Composed, &x, &g, axis as isize);
            let expect = analytic_vjp(&yc, &g, axis);
            for way in [Way::Composed, Way::Fused, Way::Naive] {
                let (y, gx) = vjp(way, &x, &g, axis as isize);
                rel_close(&y, &yc, 1e-12, 1e-300).unwrap_or_else(|e| panic!("{way:?} forward {s:?} axis {axis}: {e}"));
                // 1e-12 relative, with an absolute floor far below the gradient's scale (entries
                // that cancel to ~1e-17 cannot be compared relatively).
                rel_close(&gx, &expect, 1e-12, 1e-15).unwrap_or_else(|e| panic!("{way:?} VJP {s:?} axis {axis}: {e}"));
            }
        }
    }
}

#[test]
fn full_jacobian_of_each_way_is_diag_minus_outer() {
    for way in [Way::Composed, Way::Fused, Way::Naive] {
        let x = Tensor::from_vec(vec![0.3, -1.2, 2.0, 0.0], [4]);
        let j = jacobian(|v| softmax(way, v, 0), &x);
        let y = vjp(way, &x, &Tensor::ones([4]), 0).0;
        for a in 0..4 {
            for b in 0..4 {
                let expect = if a == b { y.data()[a] } else { 0.0 } - y.data()[a] * y.data()[b];
                assert!((j.get(&[a, b]) - expect).abs() < 1e-15, "{way:?} J[{a},{b}]");
            }
        }
    }
}

#[test]
fn every_way_matches_f64_finite_differences() {
    for (k, s) in SHAPES.iter().enumerate() {
        for axis in [0isize, 1] {
            let x = Tensor::<f64>::rand_normal(s, 0.0, 2.0, 30 + k as u64);
            for way in [Way::Composed, Way::Fused, Way::Naive] {
                let big = x.numel() > 64;
                let opts = GradcheckOptions {
                    atol: 1e-7,
                    rtol: 1e-7,
                    mode: if big { CheckMode::Projection(4) } else { CheckMode::Full },
                    ..Default::default()
                };
                let r = gradcheck(|v| softmax(way, v[0], axis), std::slice::from_ref(&x), &opts);
                assert!(r.passed, "{way:?} {s:?} axis {axis}: {r}");
            }
        }
    }
}

#[test]
fn f32_agrees_with_f64_within_1e_5() {
    for (k, s) in SHAPES.iter().enumerate() {
        for axis in [0isize, 1] {
            let x = Tensor::<f64>::rand_normal(s, 0.0, 2.0, 40 + k as u64);
            let g = Tensor::<f64>::rand_normal(s, 0.0, 1.0, 50 + k as u64);
            for way in [Way::Composed, Way::Fused, Way::Naive] {
                let (y64, g64) = vjp(way, &x, &g, axis);
                let (y32, g32) = vjp(way, &x.cast::<f32>(), &g.cast::<f32>(), axis);
                let dy = y32.cast::<f64>().max_abs_diff(&y64);
                let dg = g32.cast::<f64>().max_abs_diff(&g64);
                assert!(
                    dy < 1e-5 && dg < 1e-5,
                    "{way:?} {s:?} axis {axis}: |Δy| {dy:e}, |Δg| {dg:e}"
                );
            }
        }
    }
}

#[test]
fn logits_near_plus_minus_1000_stay_finite_for_composed_and_fused() {
    let x = Tensor::from_vec(vec![1000.0, 999.0, -1000.0, 998.5, -999.0, -1000.0], [2, 3]);
    let g = Tensor::<f64>::rand_normal([2, 3], 0.0, 1.0, 1);
    for way in [Way::Composed, Way::Fused] {
        let (y, gx) = vjp(way, &x, &g, 1);
        assert!(y.all_finite() && gx.all_finite(), "{way:?}: {y} {gx}");
        assert!((y.get(&[0, 0]) - 1.0 / (1.0 + (-1.0f64).exp())).abs() < 1e-12);
        let (y32, g32) = vjp(way, &x.cast::<f32>(), &g.cast::<f32>(), 1);
        assert!(y32.all_finite() && g32.all_finite(), "{way:?} f32");
    }
    // The naive form overflows, as its documentation says.
    let (y, _) = vjp(Way::Naive, &x, &g, 1);
    assert!(y.get(&[0, 0]).is_nan());
    // log-softmax too stays finite, and agrees with log(softmax) where that is finite.
    let tape = Tape::<f64>::new();
    let xv = tape.var(x.clone());
    let ls = xv.log_softmax(1);
    assert!(ls.value().all_finite());
    assert!(tape.grad(&[ls], std::slice::from_ref(&g), &[xv])[0].all_finite());
    assert!((ls.value().get(&[0, 1]) - xv.softmax(1).log().value().get(&[0, 1])).abs() < 1e-12);
}

#[test]
fn fused_ops_match_their_composed_definitions() {
    for pair in fused_pairs() {
        for inputs in (pair.inputs)() {
            let r = fused_vs_composed(pair.fused, pair.composed, &inputs, &FusedOptions::default());
            assert!(r.passed, "{} on {:?}: {r}", pair.name, inputs[0].shape());
        }
    }
}

#[test]
fn cross_entropy_gradient_is_softmax_minus_target_over_batch() {
    let x = Tensor::<f64>::rand_normal([5, 7], 0.0, 2.0, 3);
    let classes = [3usize, 0, 6, 2, 2];
    for way in 0..2 {
        let tape = Tape::<f64>::new();
        let xv = tape.var(x.clone());
        let loss = if way == 0 {
            xv.cross_entropy(Target::Classes(&classes))
        } else {
            xv.cross_entropy_composed(Target::Classes(&classes), CrossEntropy::default())
        };
        let g = loss.backward()[xv].clone();
        let y = xv.softmax(1).value();
        let mut expect_loss = 0.0;
        for (r, &class) in classes.iter().enumerate() {
            expect_loss -= y.get(&[r, class]).ln() / 5.0;
            for c in 0..7 {
                let t = if c == class { 1.0 } else { 0.0 };
                assert!(
                    (g.get(&[r, c]) - (y.get(&[r, c]) - t) / 5.0).abs() < 1e-15,
                    "way {way} [{r},{c}]"
                );
            }
        }
        assert!((loss.item() - expect_loss).abs() < 1e-13);
    }
}

#[test]
fn cross_entropy_with_probability_targets_sum_reduction_and_other_axis() {
    let x = Tensor::<f64>::rand_normal([4, 3], 0.0, 1.0, 5);
    let t = Tensor::<f64>::rand_uniform([4, 3], 0.0, 1.0, 6);
    let t = t.zip_map(
        &Tensor::from_vec(vec![1.0 / t.data()[..4].iter().sum::<f64>(); 1], [1]),
        |a, b| a * b,
    );
    let opts = CrossEntropy {
        axis: 0,
        reduction: Reduction::Sum,
        ..Default::default()
    };
    let r = fused_vs_composed(
        |v| v[0].cross_entropy_with(Target::Probs(v[1]), opts.clone()),
        |v| v[0].cross_entropy_composed(Target::Probs(v[1]), opts.clone()),
        &[x.clone(), t],
        &FusedOptions::default(),
    );
    assert!(r.passed, "{r}");
    // Normalised probability targets: the gradient is (softmax − t) for a sum.
    let tape = Tape::<f64>::new();
    let xv = tape.var(x.clone());
    let y = xv.softmax(0).value();
    let tp = tape.constant(y.map(|v| v * 0.5).zip_map(&Tensor::full([4, 3], 0.125), |a, b| a + b));
    let g = xv.cross_entropy_with(Target::Probs(tp), opts).backward()[xv].clone();
    let expect = y.zip_map(&tp.value(), |a, b| a - b);
    assert!(g.max_abs_diff(&expect) < 1e-15);
}

#[test]
fn cross_entropy_rejects_bad_targets() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::zeros([2, 3]));
    let e = tape.try_apply(Probe, &[x]).map(|_| ()).err();
    assert!(e.is_none());
    let msg = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        x.cross_entropy(Target::Classes(&[0, 3]))
    }))
    .err()
    .and_then(|e| e.downcast_ref::<String>().cloned())
    .unwrap();
    assert!(
        msg.contains("cross_entropy") && msg.contains("class 3") && msg.contains("3 classes"),
        "{msg}"
    );
    let msg = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| x.cross_entropy(Target::Classes(&[0]))))
        .err()
        .and_then(|e| e.downcast_ref::<String>().cloned())
        .unwrap();
    assert!(msg.contains("1 class targets") && msg.contains("[2, 3]"), "{msg}");
}

/// A no-op op used to check that a failing call leaves nothing behind.
struct Probe;
impl<T: Float> Op<T> for Probe {
    fn name(&self) -> &'static str {
        "probe"
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        Ok(x[0].clone())
    }
}

/// The learner's rule: softmax forward, diagonal-only VJP g ⊙ y ⊙ (1 − y).
struct LearnerSoftmax;
impl<T: Float> Op<T> for LearnerSoftmax {
    fn name(&self) -> &'static str {
        "learner_softmax"
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        let tape = Tape::<T>::new();
        Ok(tape.constant(x[0].clone()).softmax(-1).value())
    }
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
        let y = cx.output();
        Ok(cx.grads([Some(pointwise!(T; g, y => g * y * (-y + T::ONE)))]))
    }
}

#[test]
fn the_learners_diagonal_only_rule_fails_every_check() {
    let x = Tensor::<f64>::rand_normal([3, 5], 0.0, 1.0, 9);
    let r = gradcheck(
        |v| v[0].tape().apply(LearnerSoftmax, &[v[0]]),
        std::slice::from_ref(&x),
        &Default::default(),
    );
    assert!(!r.passed);
    let f = fused_vs_composed(
        |v| v[0].tape().apply(LearnerSoftmax, &[v[0]]),
        |v| v[0].softmax_composed(-1),
        &[x],
        &FusedOptions::default(),
    );
    assert!(!f.passed && f.forward_max_abs < 1e-15, "{f}");
    assert!(f.worst.unwrap().0.starts_with("vjp"));
}

#[test]
fn second_derivatives_through_fused_and_composed_agree() {
    // Hessian-vector product of L = Σ w ⊙ softmax(x) along v, both ways.
    let x = Tensor::<f64>::rand_normal([3, 4], 0.0, 1.0, 11);
    let w = Tensor::<f64>::rand_normal([3, 4], 0.0, 1.0, 12);
    let v = Tensor::<f64>::rand_normal([3, 4], 0.0, 1.0, 13);
    let hvp = |fused: bool| {
        let tape = Tape::<f64>::new();
        let xv = tape.var(x.clone());
        let y = if fused { xv.softmax(1) } else { xv.softmax_composed(1) };
        let l = (y * tape.constant(w.clone())).sum();
        let g = tape.grad_graph(&[l], &[tape.scalar(1.0)], &[xv])[0];
        tape.grad(&[g], std::slice::from_ref(&v), &[xv]).remove(0)
    };
    let (a, b) = (hvp(true), hvp(false));
    assert!(a.max_abs_diff(&b) < 1e-13, "{a} vs {b}");
    assert!(a.data().iter().any(|h| h.abs() > 1e-3));
}

#[test]
fn zero_d_input_is_rejected_with_the_op_name() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::scalar(1.0));
    let e = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| x.softmax(0)))
        .err()
        .unwrap();
    let msg = e.downcast_ref::<String>().unwrap();
    assert!(msg.contains("softmax") && msg.contains("0-d"), "{msg}");
    let _ = ErrorKind::Shape;
}

#[test]
fn a_nan_logit_poisons_only_its_own_row() {
    let x = Tensor::from_vec(vec![1.0, f64::NAN, 0.5, 0.2, -0.3, 0.9], [2, 3]);
    for way in [Way::Composed, Way::Fused] {
        let (y, _) = vjp(way, &x, &Tensor::ones([2, 3]), 1);
        assert!(y.data()[..3].iter().all(|v| v.is_nan()), "{way:?}: {y}");
        assert!(y.data()[3..].iter().all(|v| v.is_finite()), "{way:?}: {y}");
    }
    let tape = Tape::<f64>::new();
    let ls = tape.constant(x).log_softmax(1).value();
    assert!(ls.data()[..3].iter().all(|v| v.is_nan()) && ls.data()[3..].iter().all(|v| v.is_finite()));
}
