//! The tape and the backward sweep: accumulation, detach, no-grad, deep chains, errors.

use approx::assert_relative_eq;
use std::panic::{AssertUnwindSafe, catch_unwind};
use tapegrad::check::{CheckMode, GradcheckOptions, gradcheck, jacobian, numeric_jacobian};
use tapegrad::{Cotangents, ErrorKind, Float, Op, Result, Tape, Tensor, Value, Var, VjpCtx, pointwise};

fn t(v: &[f64], s: &[usize]) -> Tensor<f64> {
    Tensor::from_vec(v.to_vec(), s)
}

mod common;
use common::panic_message;

#[test]
fn fan_out_accumulates() {
    let tape = Tape::<f64>::new();
    let x = tape.var(t(&[1.5, -2.0], &[2]));
    let y = (x * x + x).sum(); // d/dx = 2x + 1
    assert_eq!(y.backward()[x].to_vec(), vec![4.0, -3.0]);
}

#[test]
fn diamond_accumulates_through_both_paths() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::scalar(0.3));
    let a = x.exp();
    let (b, c) = (a * 2.0, a * 3.0);
    let y = b * c; // 6 e^{2x}
    let g = y.backward()[x].item();
    assert_relative_eq!(g, 12.0 * (0.6f64).exp(), max_relative = 1e-14);
}

#[test]
fn same_variable_on_both_sides_of_matmul() {
    let tape = Tape::<f64>::new();
    let xv = t(&[1.0, 2.0, 3.0, 4.0], &[2, 2]);
    let x = tape.var(xv.clone());
    let y = x.matmul(x).sum(); // d/dX sum(X X) = 1 Xᵀ + Xᵀ 1
    let g = y.backward()[x].clone();
    // Column sums of X go to rows, row sums to columns: g_ij = Σ_k X_jk + Σ_k X_ki.
    let expect = Tensor::from_fn([2, 2], |f| {
        let (i, j) = (f / 2, f % 2);
        (0..2).map(|k| xv.get(&[j, k]) + xv.get(&[k, i])).sum()
    });
    assert_eq!(g, expect);
}

#[test]
fn detach_stops_the_gradient() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::scalar(3.0));
    let y = x * x.detach();
    assert_eq!(y.backward()[x].item(), 3.0);
    assert!(!x.detach().requires_grad());
    let v = tape.var(t(&[1.0, 2.0], &[2]));
    assert!(v.detach().value().shares_buffer(&v.value()), "detach copies nothing");
}

#[test]
fn no_grad_scope_records_constants() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::scalar(2.0));
    let c = tape.no_grad(|| x * x);
    assert!(!c.requires_grad());
    assert!(tape.grad_enabled());
    let y = c + x;
    assert_eq!(y.backward()[x].item(), 1.0);
    {
        let _g = tape.no_grad_guard();
        assert!(!tape.grad_enabled());
        let _g2 = tape.no_grad_guard();
        assert!(!(x * 2.0).requires_grad());
    }
    assert!(tape.grad_enabled());
}

#[test]
fn unused_input_gets_zeros() {
    let tape = Tape::<f64>::new();
    let x = tape.var(t(&[1.0, 2.0], &[2]));
    let unused = tape.var(Tensor::zeros([2, 3]));
    let y = x.sum();
    let g = y.backward();
    assert_eq!(g[unused], Tensor::zeros([2, 3]));
    let gs = tape.grad(&[y], &[Tensor::scalar(1.0)], &[unused, x]);
    assert_eq!(gs[0], Tensor::zeros([2, 3]));
    assert_eq!(gs[1].to_vec(), vec![1.0, 1.0]);
}

#[test]
fn deep_chain_of_100k_ops_runs_backward_without_overflow() {
    let tape = Tape::<f64>::with_capacity(100_005);
    let x = tape.var(Tensor::scalar(1.0));
    let mut y = x;
    for _ in 0..100_000 {
        y = y + 1e-5;
    }
    let y = y * 2.0;
    assert_eq!(tape.len(), 100_002);
    let g = y.backward();
    assert_eq!(g[x].item(), 2.0);
    assert_eq!(tape.len(), 100_002, "a first-order backward leaves the tape as it was");
}

#[test]
fn deep_chain_in_a_thread_with_a_small_stack() {
    // 64 KiB of stack: a recursive backward would overflow long before 100 000 nodes.
    let h = std::thread::Builder::new()
        .stack_size(64 * 1024)
        .spawn(|| {
            let tape = Tape::<f32>::new();
            let x = tape.var(Tensor::scalar(0.5));
            let mut y = x;
            for _ in 0..100_000 {
                y = y.tanh();
            }
            y.backward()[x].item()
        })
        .unwrap();
    let g = h.join().unwrap();
    assert!(g.is_finite() && g > 0.0);
}

#[test]
fn broadcast_gradient_is_summed_back() {
    let tape = Tape::<f64>::new();
    let b = tape.var(t(&[1.0, 2.0, 3.0], &[3]));
    let x = tape.var(Tensor::ones([4, 3]));
    let y = (x * b).sum();
    let g = y.backward();
    assert_eq!(g[b].to_vec(), vec![4.0; 3]);
    assert_eq!(g[x], Tensor::from_vec([1.0, 2.0, 3.0].repeat(4), [4, 3]));
}

#[test]
fn max_ties_send_the_gradient_to_the_first_maximum() {
    let tape = Tape::<f64>::new();
    let x = tape.var(t(&[1.0, 5.0, 5.0, 2.0, 7.0, 7.0], &[2, 3]));
    let y = x.max_axis(1, false).sum();
    assert_eq!(y.backward()[x].to_vec(), vec![0.0, 1.0, 0.0, 0.0, 1.0, 0.0]);
}

#[test]
fn second_derivative_through_recorded_backward() {
    let tape = Tape::<f64>::new();
    let xv = 0.7;
    let x = tape.var(Tensor::scalar(xv));
    let y = x.tanh();
    let dy = tape.grad_graph(&[y], &[tape.scalar(1.0)], &[x])[0];
    let d2 = tape.grad(&[dy], &[Tensor::scalar(1.0)], &[x])[0].item();
    let th: f64 = xv.tanh();
    assert_relative_eq!(dy.item(), 1.0 - th * th, max_relative = 1e-14);
    assert_relative_eq!(d2, -2.0 * th * (1.0 - th * th), max_relative = 1e-13);
}

#[test]
fn third_derivative_of_a_power() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::scalar(1.3));
    let y = x.powf(4.0);
    let d1 = tape.grad_graph(&[y], &[tape.scalar(1.0)], &[x])[0];
    let d2 = tape.grad_graph(&[d1], &[tape.scalar(1.0)], &[x])[0];
    let d3 = tape.grad(&[d2], &[Tensor::scalar(1.0)], &[x])[0].item();
    assert_relative_eq!(d3, 24.0 * 1.3, max_relative = 1e-12);
}

fn softmax_composed<'t>(x: Var<'t, f64>) -> Var<'t, f64> {
    let m = x.max_axis(-1, true).detach();
    let e = (x - m).exp();
    e / e.sum_axis(-1, true)
}

#[test]
fn softmax_jacobian_from_composition_is_diag_minus_outer() {
    let xv = t(&[0.2, -1.0, 2.5], &[3]);
    let j = jacobian(softmax_composed, &xv);
    let tape = Tape::<f64>::new();
    let y = softmax_composed(tape.constant(xv.clone())).value();
    let expect = Tensor::from_fn([3, 3], |f| {
        let (a, b) = (f / 3, f % 3);
        (if a == b { y.data()[a] } else { 0.0 }) - y.data()[a] * y.data()[b]
    });
    assert_relative_eq!(j, expect, epsilon = 1e-15, max_relative = 1e-13);
    assert_relative_eq!(numeric_jacobian(softmax_composed, &xv), expect, epsilon = 1e-9);
    // The off-diagonal terms are really there.
    assert!(j.get(&[0, 1]).abs() > 1e-3);
}

/// The learner's softmax: the right forward, but the diagonal-only rule h(1 − h).
struct DiagonalOnlySoftmax;
impl<T: Float> Op<T> for DiagonalOnlySoftmax {
    fn name(&self) -> &'static str {
        "softmax_diagonal_only"
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        let m = x[0].data().iter().fold(T::NEG_INFINITY, |a, &b| a.max(b));
        let e = x[0].map(|v| (v - m).exp());
        let s = e.sum_all();
        Ok(e.map(|v| v / s))
    }
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
        let y = cx.output();
        Ok(cx.grads([Some(pointwise!(T; g, y => g * y * (-y + T::ONE)))]))
    }
}

#[test]
fn negative_control_the_diagonal_only_softmax_rule_is_caught() {
    let x = t(&[0.5, -0.3, 1.2, 0.1], &[4]);
    let wrong = gradcheck(
        |v| v[0].tape().apply(DiagonalOnlySoftmax, &[v[0]]),
        std::slice::from_ref(&x),
        &GradcheckOptions::default(),
    );
    assert!(!wrong.passed, "the wrong rule was not caught: {wrong}");
    let w = wrong.worst.as_ref().unwrap();
    assert!((w.analytic - w.numeric).abs() > 1e-2);
    assert!(wrong.to_string().contains("FAILED"));
    let right = gradcheck(
        |v| softmax_composed(v[0]),
        std::slice::from_ref(&x),
        &GradcheckOptions::default(),
    );
    assert!(right.passed, "{right}");
    // The projection mode catches it too.
    let opts = GradcheckOptions {
        mode: CheckMode::Projection(4),
        ..Default::default()
    };
    assert!(!gradcheck(|v| v[0].tape().apply(DiagonalOnlySoftmax, &[v[0]]), &[x], &opts).passed);
}

#[test]
fn projection_mode_on_a_larger_problem() {
    let a = Tensor::<f64>::rand_normal([30, 40], 0.0, 1.0, 3);
    let b = Tensor::<f64>::rand_normal([40, 20], 0.0, 1.0, 4);
    let r = gradcheck(|v| v[0].matmul(v[1]).tanh(), &[a, b], &GradcheckOptions::default());
    assert_eq!(r.mode, CheckMode::Projection(8));
    assert!(r.passed, "{r}");
}

struct NoRule;
impl<T: Float> Op<T> for NoRule {
    fn name(&self) -> &'static str {
        "no_rule_op"
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        Ok(x[0].map(|v| v + v))
    }
}

#[test]
fn an_op_without_a_rule_fails_loudly_when_a_gradient_reaches_it() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::scalar(1.0));
    let line = line!() + 1;
    let y = tape.apply(NoRule, &[x]);
    let e = y.sum().try_backward().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoVjp);
    assert_eq!(e.op(), "no_rule_op");
    let msg = e.to_string();
    assert!(
        msg.contains("no_rule_op") && msg.contains(&format!("engine.rs:{line}")),
        "{msg}"
    );
    // The panicking form says the same.
    let p = panic_message(|| {
        y.backward();
    });
    assert!(p.contains("no_rule_op") && p.contains("vector-Jacobian"), "{p}");
}

#[test]
fn an_op_without_a_rule_is_fine_off_the_gradient_path() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::scalar(2.0));
    let c = tape.apply(NoRule, &[x.detach()]);
    let y = x * c;
    assert_eq!(y.backward()[x].item(), 4.0);
}

#[test]
fn shape_mismatch_names_op_shapes_and_line() {
    let tape = Tape::<f64>::new();
    let a = tape.var(Tensor::zeros([2, 3]));
    let b = tape.var(Tensor::zeros([4]));
    let line = line!() + 1;
    let msg = panic_message(|| a + b);
    assert!(msg.contains("add"), "{msg}");
    assert!(msg.contains("[2, 3]") && msg.contains("[4]"), "{msg}");
    assert!(msg.contains(&format!("engine.rs:{line}")), "{msg}");
}

#[test]
fn matmul_inner_size_mismatch() {
    let tape = Tape::<f64>::new();
    let a = tape.var(Tensor::zeros([2, 3]));
    let b = tape.var(Tensor::zeros([4, 5]));
    let msg = panic_message(|| a.matmul(b));
    assert!(
        msg.contains("matmul")
            && msg.contains("inner sizes differ")
            && msg.contains("[2, 3]")
            && msg.contains("[4, 5]"),
        "{msg}"
    );
    let v = tape.var(Tensor::zeros([3]));
    assert!(panic_message(|| a.matmul(v)).contains("at least 2-D"));
}

#[test]
fn reshape_to_the_wrong_size() {
    let tape = Tape::<f64>::new();
    let a = tape.var(Tensor::zeros([2, 3]));
    let msg = panic_message(|| a.reshape([4, 2]));
    assert!(
        msg.contains("reshape") && msg.contains("[2, 3]") && msg.contains("[4, 2]"),
        "{msg}"
    );
}

#[test]
fn bad_axis_is_reported() {
    let tape = Tape::<f64>::new();
    let a = tape.var(Tensor::zeros([2, 3]));
    let msg = panic_message(|| a.sum_axis(2, false));
    assert!(msg.contains("sum") && msg.contains("axis 2"), "{msg}");
    assert!(panic_message(|| a.permute([0, 0])).contains("permute"));
}

#[test]
fn a_failed_op_leaves_the_tape_unchanged() {
    let tape = Tape::<f64>::new();
    let a = tape.var(Tensor::zeros([2, 3]));
    let b = tape.var(Tensor::zeros([3, 2]));
    let n = tape.len();
    let e = tape.try_apply(NoRule, &[a]).map(|_| ());
    assert!(e.is_ok());
    let n1 = tape.len();
    assert_eq!(n1, n + 1);
    assert!(catch_unwind(AssertUnwindSafe(|| a + b)).is_err());
    assert_eq!(tape.len(), n1);
}

#[test]
fn a_var_from_another_tape_is_rejected() {
    let t1 = Tape::<f64>::new();
    let t2 = Tape::<f64>::new();
    let a = t1.var(Tensor::scalar(1.0));
    let b = t2.var(Tensor::scalar(2.0));
    let msg = panic_message(|| a * b);
    assert!(msg.contains("another tape") || msg.contains("from tape"), "{msg}");
    assert!(msg.contains("mul"), "{msg}");
    let e = t1.try_grad(&[a], &[Tensor::scalar(1.0)], &[b]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ForeignVar);
    let g = a.backward();
    assert!(g.get(b).is_none());
}

#[test]
fn backward_from_a_non_scalar_needs_a_cotangent() {
    let tape = Tape::<f64>::new();
    let x = tape.var(t(&[1.0, 2.0], &[2]));
    let y = x * 3.0;
    let line = line!() + 1;
    let e = y.try_backward().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NonScalar);
    assert!(
        e.to_string().contains("2 elements") && e.to_string().contains(&format!("engine.rs:{line}")),
        "{e}"
    );
    let g = y.backward_with(t(&[1.0, -1.0], &[2]));
    assert_eq!(g[x].to_vec(), vec![3.0, -3.0]);
    let e = tape.try_grad(&[y], &[Tensor::zeros([3])], &[x]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Shape);
}

#[test]
fn indexing_grads_by_an_intermediate_says_why() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::scalar(1.0));
    let h = x.exp();
    let g = h.sum().backward();
    let msg = panic_message(|| g[h].clone());
    assert!(msg.contains("not a variable leaf"), "{msg}");
    // tape.grad reaches intermediates.
    let y = h * 2.0;
    assert_eq!(tape.grad(&[y], &[Tensor::scalar(1.0)], &[h])[0].item(), 2.0);
}

#[test]
fn f32_and_f64_agree_on_an_expression() {
    fn run<T: Float>() -> (T, Vec<T>) {
        let tape = Tape::<T>::new();
        let x = tape.var(Tensor::<f64>::rand_normal([3, 4], 0.0, 1.0, 9).cast());
        let w = tape.var(Tensor::<f64>::rand_normal([4, 2], 0.0, 1.0, 10).cast());
        let y = x.matmul(w).sigmoid().log().mean();
        let g = y.backward();
        (y.item(), g[w].to_vec())
    }
    let (l32, g32) = run::<f32>();
    let (l64, g64) = run::<f64>();
    assert!((l32 as f64 - l64).abs() < 1e-6);
    for (a, b) in g32.iter().zip(&g64) {
        assert!((*a as f64 - b).abs() < 1e-6);
    }
}

#[test]
fn a_cleared_tape_is_reused_without_reallocating() {
    let mut tape = Tape::<f64>::with_capacity(16);
    for step in 0..3 {
        let x = tape.var(Tensor::scalar(step as f64));
        let y = (x * x).sum();
        assert_eq!(y.backward()[x].item(), 2.0 * step as f64);
        assert_eq!(tape.len(), 3);
        tape.clear();
        assert!(tape.is_empty());
    }
}

#[test]
fn stable_sigmoid_and_log_edge_values() {
    let tape = Tape::<f64>::new();
    let x = tape.var(t(&[-1000.0, 0.0, 1000.0], &[3]));
    let s = x.sigmoid();
    assert_eq!(s.value().to_vec(), vec![0.0, 0.5, 1.0]);
    let g = s.sum().backward()[x].clone();
    assert!(g.all_finite());
    assert_eq!(g.to_vec()[1], 0.25);
    let z = tape.constant(t(&[0.0, -1.0], &[2])).log().value();
    assert_eq!(z.data()[0], f64::NEG_INFINITY);
    assert!(z.data()[1].is_nan());
}

#[test]
fn scalar_operators_on_both_sides() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::scalar(2.0));
    let y = 1.0 - x + 3.0 * x - x / 4.0 + 8.0 / x + (x - 1.0) * 2.0;
    // y = 1 - x + 3x - x/4 + 8/x + 2x - 2; dy/dx = -1 + 3 - 1/4 - 8/x² + 2 = 1.75
    assert_relative_eq!(y.item(), 1.0 - 2.0 + 6.0 - 0.5 + 4.0 + 2.0);
    assert_relative_eq!(y.backward()[x].item(), 1.75);
}

#[test]
fn user_op_with_rule_matches_finite_differences() {
    struct Cube;
    impl<T: Float> Op<T> for Cube {
        fn name(&self) -> &'static str {
            "cube"
        }
        fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
            Ok(x[0].map(|v| v * v * v))
        }
        fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
            let x = cx.input(0);
            Ok(cx.grads([Some(pointwise!(T; g, x => g * x * x * T::from_f64(3.0)))]))
        }
    }
    let x = Tensor::<f64>::rand_normal([5], 0.0, 1.0, 1);
    let r = gradcheck(|v| v[0].tape().apply(Cube, &[v[0]]), &[x], &GradcheckOptions::default());
    assert!(r.passed, "{r}");
}

#[test]
fn a_rule_returning_the_wrong_shape_is_reported() {
    struct BadShape;
    impl<T: Float> Op<T> for BadShape {
        fn name(&self) -> &'static str {
            "bad_shape"
        }
        fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
            Ok(x[0].clone())
        }
        fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
            Ok(cx.grads([Some(g.sum_to(&[]))]))
        }
    }
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::zeros([2, 2]));
    let e = tape.apply(BadShape, &[x]).sum().try_backward().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Shape);
    assert!(
        e.to_string().contains("bad_shape") && e.to_string().contains("[2, 2]"),
        "{e}"
    );
}
