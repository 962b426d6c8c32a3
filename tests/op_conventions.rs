//! What the registry cannot see: the documented values at boundaries, kinks and ties of the
//! elementwise ops, closed forms, and their parameter errors. (Gradients, second order, NaN
//! propagation and the two backward paths are checked for every op by `tests/registry.rs`.)

use std::f64::consts::{FRAC_2_SQRT_PI, LN_2};
use tapegrad::{ErrorKind, Tape, Tensor, Var, attempt};

fn t(v: &[f64]) -> Tensor<f64> {
    Tensor::from_vec(v.to_vec(), [v.len()])
}

/// The value and the gradient of `Σ f(x)` at `x`.
fn value_and_grad(x: &[f64], f: impl for<'t> Fn(Var<'t, f64>) -> Var<'t, f64>) -> (Vec<f64>, Vec<f64>) {
    let tape = Tape::<f64>::new();
    let v = tape.var(t(x));
    let y = f(v);
    (y.value().to_vec(), y.sum().backward()[v].to_vec())
}

/// The gradient of `Σ c ⊙ f(x)` for a given cotangent `c`.
fn grad_with(x: &[f64], c: &[f64], f: impl for<'t> Fn(Var<'t, f64>) -> Var<'t, f64>) -> Vec<f64> {
    let tape = Tape::<f64>::new();
    let v = tape.var(t(x));
    f(v).backward_with(t(c))[v].to_vec()
}

#[test]
fn softplus_is_stable_on_both_tails_and_its_gradient_is_exactly_a_half_at_0() {
    let (y, g) = value_and_grad(&[0.0, 1000.0, -1000.0, 30.0], |x| x.softplus());
    assert_eq!(y[0], LN_2);
    assert_eq!(y[1], 1000.0); // no overflow of e^1000
    assert_eq!(y[2], 0.0); // e^-1000 underflows, no NaN
    assert_eq!(y[3], 30.0 + (-30.0f64).exp().ln_1p());
    assert_eq!(g, vec![0.5, 1.0, 0.0, 1.0 / (1.0 + (-30.0f64).exp())]);
    assert!(value_and_grad(&[f64::NAN], |x| x.softplus()).0[0].is_nan());
}

#[test]
fn erf_gelu_and_silu_closed_forms() {
    let (y, g) = value_and_grad(&[0.0], |x| x.erf());
    assert_eq!((y[0], g[0]), (0.0, FRAC_2_SQRT_PI));
    let (y, g) = value_and_grad(&[0.0], |x| x.erfc());
    assert_eq!((y[0], g[0]), (1.0, -FRAC_2_SQRT_PI));
    for f in [
        (|x: Var<'_, f64>| x.gelu()) as fn(Var<'_, f64>) -> Var<'_, f64>,
        |x| x.gelu_tanh(),
        |x| x.silu(),
    ] {
        let (y, g) = value_and_grad(&[0.0], f);
        assert_eq!((y[0], g[0]), (0.0, 0.5));
    }
    // gelu(−10) = −10 Φ(−10): the erfc form keeps the tail (1 + erf(−10/√2) would be 0).
    let (y, _) = value_and_grad(&[-10.0], |x| x.gelu());
    let want = -10.0 * 7.619_853_024_160_527e-24;
    assert!((y[0] - want).abs() <= 1e-14 * want.abs(), "{}", y[0]);
    // The tanh approximation stays within 1e-3 of the exact GELU.
    let grid: Vec<f64> = (-40..=40).map(|k| k as f64 / 8.0).collect();
    let (exact, _) = value_and_grad(&grid, |x| x.gelu());
    let (approx, _) = value_and_grad(&grid, |x| x.gelu_tanh());
    for (a, b) in exact.iter().zip(&approx) {
        assert!((a - b).abs() < 1e-3, "{a} vs {b}");
    }
}

#[test]
fn gelu_tanh_has_exact_gradients_in_its_far_tails() {
    // `1 − t²` is exactly 0 there and multiplies a factor growing like x³: the strong zero keeps
    // the gradient 1 on the right and 0 on the left (no ∞ · 0).
    let (y, g) = value_and_grad(&[1e30, -1e30, 50.0], |x| x.gelu_tanh());
    assert_eq!(y[0], 1e30);
    assert_eq!(y[1], 0.0);
    assert_eq!(g, vec![1.0, 0.0, 1.0]);
}

#[test]
fn functions_with_a_pole_give_zero_gradient_where_a_select_does_not_take_them() {
    // where(x inside the domain, f(x), 0) at a point on the domain's edge: f's infinite local
    // derivative meets a zero cotangent (strong zero), so the gradient is 0, not NaN.
    type F = fn(Var<'_, f64>) -> Var<'_, f64>;
    let cases: [(&str, f64, f64, F); 6] = [
        ("asin", 1.0, 0.5, |x| x.asin()),
        ("acos", -1.0, 0.5, |x| x.acos()),
        ("atanh", 1.0, 0.5, |x| x.atanh()),
        ("acosh", 1.0, 2.0, |x| x.acosh()),
        ("log1p", -1.0, 0.5, |x| x.log1p()),
        ("rsqrt", 0.0, 0.5, |x| x.rsqrt()),
    ];
    for (name, edge, inside, f) in cases {
        let tape = Tape::<f64>::new();
        let x = tape.var(t(&[edge, inside]));
        let mask = tape.constant(t(&[0.0, 1.0]));
        let zero = tape.scalar(0.0);
        let y = mask.select(f(x), zero).sum();
        let g = y.backward()[x].to_vec();
        assert_eq!(g[0], 0.0, "{name}: {g:?}");
        assert!(g[1].is_finite(), "{name}: {g:?}");
    }
    let (y, _) = value_and_grad(&[0.0, -0.0], |x| x.reciprocal());
    assert_eq!(y, vec![f64::INFINITY, f64::NEG_INFINITY]);
}

#[test]
fn square_is_one_op() {
    let tape = Tape::<f64>::new();
    let x = tape.var(t(&[3.0, -0.5]));
    let before = tape.len();
    let y = x.square();
    assert_eq!((tape.len() - before, y.op_name()), (1, "square"));
    assert_eq!(y.value().to_vec(), vec![9.0, 0.25]);
    assert_eq!(y.sum().backward()[x].to_vec(), vec![6.0, -1.0]);
}

#[test]
fn leaky_relu_and_elu_take_the_left_side_at_0() {
    let (y, g) = value_and_grad(&[-2.0, 0.0, 2.0], |x| x.leaky_relu(0.25));
    assert_eq!((y, g), (vec![-0.5, 0.0, 2.0], vec![0.25, 0.25, 1.0]));
    let (y, g) = value_and_grad(&[-1.0, 0.0, 2.0], |x| x.elu(0.5));
    assert_eq!(y, vec![0.5 * (-1.0f64).exp_m1(), 0.0, 2.0]);
    assert_eq!(g, vec![0.5 * (-1.0f64).exp(), 0.5, 1.0]);
    // With a zero slope (α) they are relu, also against an infinite cotangent: 0, not ∞ · 0.
    let inf = f64::INFINITY;
    assert_eq!(
        grad_with(&[-1.0, 1.0], &[inf, 1.0], |x| x.leaky_relu(0.0)),
        vec![0.0, 1.0]
    );
    assert_eq!(grad_with(&[-1.0, 1.0], &[inf, 1.0], |x| x.elu(0.0)), vec![0.0, 1.0]);
    for f in [
        (|x: Var<'_, f64>| x.leaky_relu(0.1)) as fn(Var<'_, f64>) -> Var<'_, f64>,
        |x| x.elu(1.0),
        |x| x.clamp(-1.0, 1.0),
    ] {
        assert!(value_and_grad(&[f64::NAN], f).0[0].is_nan());
    }
}

#[test]
fn clamp_passes_the_gradient_at_its_bounds_and_nothing_outside() {
    let (y, g) = value_and_grad(&[-3.0, -1.0, 0.25, 1.0, 3.0], |x| x.clamp(-1.0, 1.0));
    assert_eq!(y, vec![-1.0, -1.0, 0.25, 1.0, 1.0]);
    assert_eq!(g, vec![0.0, 1.0, 1.0, 1.0, 0.0]);
    // Selected, not masked: an infinite cotangent outside gives 0.
    let inf = f64::INFINITY;
    assert_eq!(
        grad_with(&[-3.0, 0.0, 3.0], &[inf, 2.0, -inf], |x| x.clamp(-1.0, 1.0)),
        vec![0.0, 2.0, 0.0]
    );
    // One-sided bounds.
    let (y, g) = value_and_grad(&[-3.0, 3.0], |x| x.clamp(0.0, f64::INFINITY));
    assert_eq!((y, g), (vec![0.0, 3.0], vec![0.0, 1.0]));
    let (y, _) = value_and_grad(&[-3.0, 3.0], |x| x.clamp(f64::NEG_INFINITY, 1.0));
    assert_eq!(y, vec![-3.0, 1.0]);
    // A plain tensor clamps the same way.
    assert_eq!(t(&[-3.0, 0.5]).clamp(-1.0, 1.0).to_vec(), vec![-1.0, 0.5]);
}

#[test]
fn clamp_with_bad_bounds_is_an_error_naming_clamp_and_the_line() {
    let tape = Tape::<f64>::new();
    let x = tape.var(t(&[0.0, 1.0]));
    let before = tape.len();
    for (lo, hi) in [(1.0, -1.0), (f64::NAN, 1.0), (0.0, f64::NAN)] {
        let line = line!() + 1;
        let e = attempt(|| x.clamp(lo, hi)).unwrap_err();
        assert_eq!((e.kind(), e.op()), (ErrorKind::Invalid, "clamp"));
        let msg = e.to_string();
        assert!(
            msg.contains("lo ≤ hi") && msg.contains(&format!("{}:{line}", file!())),
            "{msg}"
        );
        assert_eq!(tape.len(), before, "a failed op records nothing");
        let line = line!() + 1;
        let e = t(&[0.0]).try_clamp(lo, hi).unwrap_err();
        assert!(e.to_string().contains(&format!("{}:{line}", file!())), "{e}");
        let line = line!() + 1;
        let e = attempt(|| t(&[0.0]).clamp(lo, hi)).unwrap_err();
        assert!(e.to_string().contains(&format!("{}:{line}", file!())), "{e}");
    }
}

#[test]
fn maximum_and_minimum_split_the_gradient_half_and_half_at_ties() {
    let tape = Tape::<f64>::new();
    let a = tape.var(t(&[1.0, 2.0, 3.0, 0.0, -0.0]));
    let b = tape.var(t(&[2.0, 2.0, 0.0, -0.0, 0.0]));
    let (hi, lo) = (a.maximum(b), a.minimum(b));
    assert_eq!(hi.value().to_vec(), vec![2.0, 2.0, 3.0, 0.0, -0.0]);
    assert_eq!(lo.value().to_vec(), vec![1.0, 2.0, 0.0, 0.0, -0.0]);
    // At a tie the value is `a`'s (the sign of a zero included).
    assert!(hi.value().data()[4].is_sign_negative() && lo.value().data()[3].is_sign_positive());
    let g = hi.sum().backward();
    assert_eq!(g[a].to_vec(), vec![0.0, 0.5, 1.0, 0.5, 0.5]);
    assert_eq!(g[b].to_vec(), vec![1.0, 0.5, 0.0, 0.5, 0.5]);
    let g = lo.sum().backward();
    assert_eq!(g[a].to_vec(), vec![1.0, 0.5, 0.0, 0.5, 0.5]);
    assert_eq!(g[b].to_vec(), vec![0.0, 0.5, 1.0, 0.5, 0.5]);
    // The two shares add up to g: max(x, x) = x has gradient exactly 1.
    let x = tape.var(t(&[0.3, -2.0]));
    assert_eq!(x.maximum(x).sum().backward()[x].to_vec(), vec![1.0, 1.0]);
    // Selected: an infinite cotangent gives the losing side 0, not NaN.
    let inf = f64::INFINITY;
    assert_eq!(
        grad_with(&[1.0, 3.0], &[inf, -inf], |x| x.maximum(x.tape().scalar(2.0))),
        vec![0.0, -inf]
    );
    // NaN propagates, and both operands get the gradient there.
    let (y, g) = value_and_grad(&[f64::NAN, 1.0], |x| x.maximum(x.tape().var(t(&[0.0, f64::NAN]))));
    assert!(y.iter().all(|v| v.is_nan()));
    assert_eq!(g, vec![1.0, 1.0]);
    assert!(Tensor::scalar(f64::NAN).minimum(&Tensor::scalar(1.0)).item().is_nan());
}

#[test]
fn pow_at_a_zero_base() {
    let tape = Tape::<f64>::new();
    let a = tape.var(t(&[0.0, 0.0, 0.0, 0.0, 4.0]));
    let e = tape.var(t(&[2.0, 0.5, 0.0, -1.0, 0.5]));
    let y = a.pow(e);
    assert_eq!(y.value().to_vec(), vec![0.0, 0.0, 1.0, f64::INFINITY, 2.0]);
    let g = y.sum().backward();
    // d/da = e·a^(e−1): 0 for e = 2, ∞ for e = ½ (the true slope), exactly 0 for e = 0.
    assert_eq!(g[a].to_vec(), vec![0.0, f64::INFINITY, 0.0, f64::NEG_INFINITY, 0.25]);
    // d/de = aᵉ ln a: 0 at a = 0 for e ≥ 0, not 0·(−∞) = NaN.
    let ge = g[e].to_vec();
    assert_eq!(ge[..3], [0.0, 0.0, 0.0]);
    assert_eq!(ge[3], f64::NEG_INFINITY);
    assert_eq!(ge[4], 2.0 * 4f64.ln());
    // A constant exponent needs no gradient: nothing of ln 0 leaks, to any order.
    let x = tape.var(t(&[0.0, -2.0]));
    let y = x.pow(tape.constant(t(&[3.0, 2.0]))).sum();
    let dx = tape.grad_graph(&[y], &[tape.scalar(1.0)], &[x])[0];
    assert_eq!(dx.value().to_vec(), vec![0.0, -4.0]);
    assert_eq!(
        tape.grad(&[dx.sum()], &[Tensor::scalar(1.0)], &[x])[0].to_vec(),
        vec![0.0, 2.0]
    );
    // A negative base: a real value for an integer exponent, NaN otherwise; NaN for d/de.
    let (y, g) = (
        t(&[-2.0]).pow(&t(&[3.0])),
        value_and_grad(&[3.0], |e| e.tape().constant(t(&[-2.0])).pow(e)),
    );
    assert_eq!(y.to_vec(), vec![-8.0]);
    assert!(g.1[0].is_nan());
    assert!(t(&[-2.0]).pow(&t(&[0.5])).item().is_nan());
}

#[test]
fn atan2_quadrants_and_a_zero_gradient_at_the_origin() {
    use std::f64::consts::{FRAC_PI_2, FRAC_PI_4, PI};
    let y = t(&[1.0, 1.0, -1.0, 0.0, 0.0, -0.0, 1.0]);
    let x = t(&[1.0, -1.0, -1.0, -1.0, 0.0, -1.0, 0.0]);
    let a = y.atan2(&x).to_vec();
    assert_eq!(
        a,
        vec![FRAC_PI_4, 3.0 * FRAC_PI_4, -3.0 * FRAC_PI_4, PI, 0.0, -PI, FRAC_PI_2]
    );
    let tape = Tape::<f64>::new();
    let (vy, vx) = (tape.var(t(&[0.0, 3.0, 0.0])), tape.var(t(&[0.0, 4.0, -2.0])));
    let g = vy.atan2(vx).sum().backward();
    assert_eq!(g[vy].to_vec(), vec![0.0, 4.0 / 25.0, -0.5]);
    assert_eq!(g[vx].to_vec(), vec![0.0, -3.0 / 25.0, 0.0]);
}

#[test]
fn binary_functions_name_the_op_and_shapes_when_they_do_not_broadcast() {
    let tape = Tape::<f64>::new();
    let (a, b) = (tape.var(Tensor::zeros([2, 3])), tape.var(Tensor::zeros([4])));
    type F = for<'t> fn(Var<'t, f64>, Var<'t, f64>) -> Var<'t, f64>;
    let ops: [(&str, F); 4] = [
        ("maximum", |a, b| a.maximum(b)),
        ("minimum", |a, b| a.minimum(b)),
        ("pow", |a, b| a.pow(b)),
        ("atan2", |a, b| a.atan2(b)),
    ];
    for (name, f) in ops {
        let e = attempt(|| f(a, b)).unwrap_err();
        let msg = e.to_string();
        assert_eq!((e.kind(), e.op()), (ErrorKind::Shape, name));
        assert!(msg.contains("[2, 3]") && msg.contains("[4]"), "{msg}");
        assert!(msg.contains(&format!("(at {}:", file!())), "{msg}"); // the closure's line
    }
    let line = line!() + 1;
    let e = attempt(|| a.atan2(b)).unwrap_err();
    assert!(e.to_string().contains(&format!("{}:{line}", file!())), "{e}");
    let line = line!() + 1;
    let e = attempt(|| Tensor::<f64>::zeros([2, 3]).pow(&Tensor::zeros([4]))).unwrap_err();
    assert_eq!(e.op(), "pow");
    assert!(e.to_string().contains(&format!("{}:{line}", file!())), "{e}");
}
