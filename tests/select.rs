//! `select` (where) and comparisons: NaN-safe gradients of the branch not taken, masks carry no
//! gradient, second order through select.

use tapegrad::check::{GradcheckOptions, gradcheck};
use tapegrad::{Tape, Tensor, Var};

fn t(v: &[f64], s: &[usize]) -> Tensor<f64> {
    Tensor::from_vec(v.to_vec(), s)
}

#[test]
fn where_sqrt_at_zero_and_negative_has_finite_gradient() {
    let tape = Tape::<f64>::new();
    let xs = [4.0, 0.0, -1.0, 0.25, -1e-300];
    let x = tape.var(t(&xs, &[5]));
    let zero = tape.scalar(0.0);
    let y = x.gt(zero).select(x.sqrt(), zero);
    // The untaken branch really is non-finite / has a non-finite derivative there.
    assert!(x.sqrt().value().data()[2].is_nan());
    let g = y.sum().backward()[x].clone();
    for (i, &xi) in xs.iter().enumerate() {
        // Independent expectation: d/dx √x = 1/(2√x) where x > 0, else 0.
        let expect = if xi > 0.0 { 0.5 / xi.sqrt() } else { 0.0 };
        assert_eq!(g.data()[i], expect, "x = {xi}");
    }
}

#[test]
fn where_log_and_reciprocal_and_overflowing_exp_do_not_leak_nan() {
    let tape = Tape::<f64>::new();
    let x = tape.var(t(&[0.0, -3.0, 2.0, 1000.0], &[4]));
    let zero = tape.scalar(0.0);
    let big = tape.scalar(500.0);
    let c = x.gt(zero) * x.lt(big); // 0 < x < 500
    let y = c.select(x.log() * x.log() + 1.0 / x + x.exp() + x.powf(0.5) / x, zero);
    let g = y.sum().backward()[x].clone();
    let x2: f64 = 2.0;
    let expect2 = 2.0 * x2.ln() / x2 - 1.0 / (x2 * x2) + x2.exp() - 0.5 * x2.powf(-1.5);
    assert_eq!(g.data()[0], 0.0);
    assert_eq!(g.data()[1], 0.0);
    assert!((g.data()[2] - expect2).abs() < 1e-12, "{} vs {expect2}", g.data()[2]);
    assert_eq!(g.data()[3], 0.0);
}

#[test]
fn the_other_branch_gets_the_gradient_where_not_taken() {
    let tape = Tape::<f64>::new();
    let x = tape.var(t(&[-2.0, 0.0, 3.0], &[3]));
    let zero = tape.scalar(0.0);
    // on_false = log(-x) is NaN where x > 0 and -inf where x = 0: the on_true branch is taken there.
    let y = x.ge(zero).select(x * 2.0, (-x).log());
    let g = y.sum().backward()[x].clone();
    assert_eq!(g.to_vec(), vec![-1.0 / 2.0, 2.0, 2.0]);
}

#[test]
fn comparisons_are_constants_and_broadcast() {
    let tape = Tape::<f64>::new();
    let a = tape.var(t(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]));
    let b = tape.var(t(&[2.0, 5.0], &[2, 1]));
    for (m, expect) in [
        (a.gt(b), [0.0, 0.0, 1.0, 0.0, 0.0, 1.0]),
        (a.lt(b), [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]),
        (a.ge(b), [0.0, 1.0, 1.0, 0.0, 1.0, 1.0]),
        (a.le(b), [1.0, 1.0, 0.0, 1.0, 1.0, 0.0]),
        (a.eq(b), [0.0, 1.0, 0.0, 0.0, 1.0, 0.0]),
    ] {
        assert_eq!(m.shape().as_slice(), &[2, 3]);
        assert_eq!(m.value().to_vec(), expect.to_vec(), "{}", m.op_name());
        assert!(!m.requires_grad(), "{} must not track gradients", m.op_name());
    }
    // A mask times a variable: gradient only through the variable, never through the mask.
    let y = (a.gt(b) * a).sum();
    let g = y.backward();
    assert_eq!(g[a].to_vec(), vec![0.0, 0.0, 1.0, 0.0, 0.0, 1.0]);
    assert_eq!(g[b].to_vec(), vec![0.0, 0.0]);
}

#[test]
fn nan_compares_false_and_nan_condition_counts_as_true() {
    let tape = Tape::<f64>::new();
    let x = tape.constant(t(&[f64::NAN, 1.0], &[2]));
    let z = tape.scalar(0.0);
    assert_eq!(x.gt(z).value().to_vec(), vec![0.0, 1.0]);
    assert_eq!(x.le(z).value().to_vec(), vec![0.0, 0.0]);
    let a = tape.constant(t(&[10.0, 10.0], &[2]));
    let b = tape.constant(t(&[20.0, 20.0], &[2]));
    assert_eq!(x.select(a, b).value().to_vec(), vec![10.0, 10.0]);
}

#[test]
fn select_gradient_matches_finite_differences_and_second_order() {
    let x = Tensor::<f64>::rand_normal([3, 4], 0.0, 1.0, 7);
    fn f<'t>(v: &[Var<'t, f64>]) -> Var<'t, f64> {
        let z = v[0].tape().scalar(0.0);
        let sq = v[0] * v[0];
        v[0].gt(z).select(v[0].exp(), sq.tanh() + sq)
    }
    let r = gradcheck(f, std::slice::from_ref(&x), &GradcheckOptions::default());
    assert!(r.passed, "{r}");
    // Second order: d²/dx² of sum(select(x>0, x³, -x²)) is 6x or -2 elementwise.
    let tape = Tape::<f64>::new();
    let xv = tape.var(x.clone());
    let z = tape.scalar(0.0);
    let y = xv.gt(z).select(xv * xv * xv, -(xv * xv)).sum();
    let dy = tape.grad_graph(&[y], &[tape.scalar(1.0)], &[xv])[0];
    let d2 = tape.grad(&[dy.sum()], &[Tensor::scalar(1.0)], &[xv])[0].clone();
    for (i, &xi) in x.data().iter().enumerate() {
        let e = if xi > 0.0 { 6.0 * xi } else { -2.0 };
        assert!((d2.data()[i] - e).abs() < 1e-12);
    }
}

#[test]
fn select_with_mismatched_shapes_names_all_three() {
    let tape = Tape::<f64>::new();
    let c = tape.constant(Tensor::ones([2]));
    let a = tape.var(Tensor::ones([3]));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.select(a, a)));
    let e = r.unwrap_err().downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(e.contains("select") && e.contains("[2]") && e.contains("[3]"), "{e}");
    assert!(e.contains(file!()), "{e}");
}
