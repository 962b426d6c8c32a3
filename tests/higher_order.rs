//! Gradients of gradients: the recorded backward (`Tape::grad_graph`), the functional transforms
//! (`vjp jvp jacobian hessian hvp`), `gradgradcheck` over the registry, and first-order-only rules
//! failing loudly. Every expected value comes from something independent of the code under test:
//! finite differences of first-order gradients, closed forms, or a composed definition.

use approx::assert_relative_eq;
use tapegrad::check::{GradcheckOptions, numeric_jacobian};
use tapegrad::functional::{
    gradgradcheck, gradgradcheck_registry, hessian, hvp, hvp_n, jacobian, jvp, jvp_n, value_and_grad, vjp, vjp_n,
    with_hessian,
};
use tapegrad::{
    Cotangents, ErrorKind, Float, Op, OpInfo, Registry, Result, Tape, Tensor, Value, Var, VjpCtx, pointwise, sample,
};

fn t(v: &[f64], s: &[usize]) -> Tensor<f64> {
    Tensor::from_vec(v.to_vec(), s)
}

fn dot(a: &Tensor<f64>, b: &Tensor<f64>) -> f64 {
    a.data().iter().zip(b.data()).map(|(x, y)| x * y).sum()
}

/// `(∇f(x + h v) − ∇f(x − h v)) / 2h` from first-order gradients only.
fn fd_hvp<F>(f: F, x: &Tensor<f64>, v: &Tensor<f64>) -> Tensor<f64>
where
    F: for<'t> Fn(Var<'t, f64>) -> Var<'t, f64> + Copy,
{
    let h = 1e-5;
    let gp = value_and_grad(f, &x.zip_map(v, |a, b| a + h * b)).1;
    let gm = value_and_grad(f, &x.zip_map(v, |a, b| a - h * b)).1;
    gp.zip_map(&gm, |a, b| (a - b) / (2.0 * h))
}

/// The Hessian by central differences of first-order gradients (rows = ∂∇f/∂x_i).
fn fd_hessian<F>(f: F, x: &Tensor<f64>) -> Tensor<f64>
where
    F: for<'t> Fn(Var<'t, f64>) -> Var<'t, f64> + Copy,
{
    let n = x.numel();
    let mut data = Vec::with_capacity(n * n);
    for i in 0..n {
        let e = Tensor::from_fn(x.shape(), |j| if i == j { 1.0 } else { 0.0 });
        data.extend(fd_hvp(f, x, &e).into_vec());
    }
    let mut shape = x.shape().to_vec();
    shape.extend_from_slice(x.shape());
    Tensor::from_vec(data, shape)
}

/// A scalar function of one input.
type Scalar = for<'t> fn(Var<'t, f64>) -> Var<'t, f64>;

fn softmax_composed<'t>(x: Var<'t, f64>) -> Var<'t, f64> {
    let m = x.max_axis(-1, true).detach();
    let e = (x - m).exp();
    e / e.sum_axis(-1, true)
}

fn logsumexp<'t>(x: Var<'t, f64>) -> Var<'t, f64> {
    let m = x.max_axis(-1, true).detach();
    ((x - m).exp().sum_axis(-1, true).log() + m).sum()
}

/// The library's fused softmax (its VJP is the `softmax_backward` op, itself differentiable).
fn softmax_fused<'t>(x: Var<'t, f64>) -> Var<'t, f64> {
    x.softmax(-1)
}

// ---------------------------------------------------------------------------------------------
// The recorded backward itself.

#[test]
fn first_order_backward_leaves_the_tape_alone_recorded_backward_grows_it() {
    let tape = Tape::<f64>::new();
    let x = tape.var(t(&[0.5, -1.0, 2.0], &[3]));
    let y = (x.tanh() * x).sum();
    let n = tape.len();
    let _ = tape.grad(&[y], &[Tensor::scalar(1.0)], &[x]);
    let _ = y.backward();
    assert_eq!(tape.len(), n, "a first-order backward must not leave nodes behind");
    let g = tape.grad_graph(&[y], &[tape.scalar(1.0)], &[x])[0];
    assert!(tape.len() > n + 1);
    assert!(g.requires_grad(), "a recorded gradient must be differentiable");
}

#[test]
fn mixed_partials_through_a_recorded_backward() {
    // f(x, w) = Σ w·x³:  ∂f/∂x = 3w x²,  ∂²f/∂w∂x (contracted with 1) = 3x²,  ∂²f/∂x² ⋅ 1 = 6 w x.
    let tape = Tape::<f64>::new();
    let xv = t(&[0.5, -1.5, 2.0], &[3]);
    let wv = t(&[1.0, 2.0, -0.5], &[3]);
    let (x, w) = (tape.var(xv.clone()), tape.var(wv.clone()));
    let f = (w * x * x * x).sum();
    let dx = tape.grad_graph(&[f], &[tape.scalar(1.0)], &[x])[0];
    for i in 0..3 {
        assert_relative_eq!(
            dx.value().data()[i],
            3.0 * wv.data()[i] * xv.data()[i].powi(2),
            max_relative = 1e-14
        );
    }
    let ones = Tensor::ones([3]);
    let d2 = tape.grad(&[dx], std::slice::from_ref(&ones), &[x, w]);
    for i in 0..3 {
        let (xi, wi) = (xv.data()[i], wv.data()[i]);
        assert_relative_eq!(d2[0].data()[i], 6.0 * wi * xi, max_relative = 1e-14);
        assert_relative_eq!(d2[1].data()[i], 3.0 * xi * xi, max_relative = 1e-14);
    }
}

#[test]
fn a_cotangent_that_depends_on_the_input_is_differentiated_too() {
    // g(x) = Jᵀ c(x) with y = x², c = x:  g = 2x·x = 2x²,  d/dx Σ g = 4x.
    let tape = Tape::<f64>::new();
    let xv = t(&[1.0, -2.0, 0.5], &[3]);
    let x = tape.var(xv.clone());
    let y = x * x;
    let g = tape.grad_graph(&[y], &[x], &[x])[0];
    let d = tape.grad(&[g.sum()], &[Tensor::scalar(1.0)], &[x])[0].clone();
    assert_eq!(d.to_vec(), xv.map(|a| 4.0 * a).to_vec());
}

#[test]
fn recorded_gradient_with_respect_to_an_intermediate() {
    // y = exp(h), h = 2x:  dy/dh = exp(h) (recorded),  d/dx Σ dy/dh = 2 exp(2x).
    let tape = Tape::<f64>::new();
    let xv = t(&[0.1, 0.7], &[2]);
    let x = tape.var(xv.clone());
    let h = x * 2.0;
    let y = h.exp().sum();
    let gh = tape.grad_graph(&[y], &[tape.scalar(1.0)], &[h])[0];
    let d = tape.grad(&[gh], &[Tensor::ones([2])], &[x])[0].clone();
    for i in 0..2 {
        assert_relative_eq!(d.data()[i], 2.0 * (2.0 * xv.data()[i]).exp(), max_relative = 1e-14);
    }
}

#[test]
fn fan_out_and_broadcasting_accumulate_in_the_recorded_backward() {
    // Shared use of x in several broadcast products: the Hessian from the recorded backward must
    // match finite differences of first-order gradients.
    fn f(x: Var<'_, f64>) -> Var<'_, f64> {
        let bb = x.tape().constant(Tensor::<f64>::rand_normal([3], 0.0, 1.0, 3));
        let s = x.sum_axis(0, true); // [1,3], broadcast back against x
        ((x * bb).tanh() * s + x.exp() * x).mean()
    }
    let x = Tensor::rand_normal([2, 3], 0.0, 0.7, 4);
    let h = hessian(f, &x);
    let fd = fd_hessian(f, &x);
    assert_eq!(h.shape(), &[2, 3, 2, 3]);
    assert!(h.max_abs_diff(&fd) < 1e-7, "{h}\nvs\n{fd}");
}

#[test]
fn third_derivatives_match_closed_forms() {
    let xv = t(&[-1.2, -0.3, 0.4, 1.1], &[4]);
    let tape = Tape::<f64>::new();
    let x = tape.var(xv.clone());
    let one = |v: Var<'_, f64>| tape.constant(Tensor::ones(v.shape()));
    // Elementwise functions, summed: the k-th derivative of Σ f(x_i) contracted with ones is f⁽ᵏ⁾(x).
    type Case = (&'static str, fn(f64) -> f64);
    let cases: [(Var<'_, f64>, Case); 3] = [
        // tanh''' = (1 − t²)(6t² − 2)
        (
            x.tanh().sum(),
            ("tanh", |a: f64| {
                let t = a.tanh();
                (1.0 - t * t) * (6.0 * t * t - 2.0)
            }),
        ),
        // (x e^x)''' = (x + 3) e^x
        ((x * x.exp()).sum(), ("x·exp", |a: f64| (a + 3.0) * a.exp())),
        // σ''' = σ(1−σ)(1 − 6σ + 6σ²)
        (
            x.sigmoid().sum(),
            ("sigmoid", |a: f64| {
                let s = 1.0 / (1.0 + (-a).exp());
                s * (1.0 - s) * (1.0 - 6.0 * s + 6.0 * s * s)
            }),
        ),
    ];
    for (y, (name, d3)) in cases {
        let d1 = tape.grad_graph(&[y], &[one(y)], &[x])[0];
        let d2 = tape.grad_graph(&[d1], &[one(d1)], &[x])[0];
        let d3v = tape.grad(&[d2], &[Tensor::ones(d2.shape())], &[x])[0].clone();
        for i in 0..4 {
            assert_relative_eq!(d3v.data()[i], d3(xv.data()[i]), max_relative = 1e-12, epsilon = 1e-14);
        }
        let _ = name;
    }
    // Third derivative of a scalar function of a scalar: f = x⁴ + log x at x = 1.5: f''' = 24x + 2/x³.
    let s = tape.var(Tensor::scalar(1.5));
    let f = s * s * s * s + s.log();
    let d1 = tape.grad_graph(&[f], &[tape.scalar(1.0)], &[s])[0];
    let d2 = tape.grad_graph(&[d1], &[tape.scalar(1.0)], &[s])[0];
    let d3 = tape.grad_graph(&[d2], &[tape.scalar(1.0)], &[s])[0];
    let d4 = tape.grad(&[d3], &[Tensor::scalar(1.0)], &[s])[0].item();
    assert_relative_eq!(d1.item(), 4.0 * 1.5f64.powi(3) + 1.0 / 1.5, max_relative = 1e-14);
    assert_relative_eq!(
        d2.item(),
        12.0 * 1.5f64.powi(2) - 1.0 / 1.5f64.powi(2),
        max_relative = 1e-14
    );
    assert_relative_eq!(d3.item(), 24.0 * 1.5 + 2.0 / 1.5f64.powi(3), max_relative = 1e-14);
    assert_relative_eq!(d4, 24.0 - 6.0 / 1.5f64.powi(4), max_relative = 1e-13);
}

// ---------------------------------------------------------------------------------------------
// The functional API.

#[test]
fn hvp_matches_finite_differences_of_gradients() {
    // A small MLP loss in its weights: matmul, broadcast bias, tanh, composed softmax + log, mean.
    fn mlp(w: Var<'_, f64>) -> Var<'_, f64> {
        let tape = w.tape();
        let x = tape.constant(Tensor::rand_normal([5, 4], 0.0, 1.0, 11));
        let b = tape.constant(Tensor::rand_normal([3], 0.0, 0.1, 12));
        let tgt = tape.constant(Tensor::from_fn(
            [5, 3],
            |i| if i % 3 == (i / 3) % 3 { 1.0 } else { 0.0 },
        ));
        let z = (x.matmul(w) + b).tanh().mul_scalar(2.0);
        -(softmax_composed(z).log() * tgt).sum_axis(1, false).mean() + (w * w).sum().mul_scalar(0.01)
    }
    // max (not detached) and abs, relu: piecewise, second derivative 0 a.e. away from kinks.
    fn piecewise(x: Var<'_, f64>) -> Var<'_, f64> {
        (x.max_axis(1, false) * x.sum_axis(1, false)).sum() + (x.abs() * x.exp()).sum() + (x.relu() * x).sum()
    }
    fn powers(x: Var<'_, f64>) -> Var<'_, f64> {
        (x.powf(2.5) / (x.sqrt() + 1.0)).sum() + (1.0 / x).sum()
    }
    let w = Tensor::rand_normal([4, 3], 0.0, 0.5, 13);
    let xp = Tensor::rand_uniform([2, 3], 0.5, 2.0, 14);
    let cases: [(&str, Scalar, Tensor<f64>); 3] = [
        ("mlp", mlp, w),
        ("piecewise", piecewise, Tensor::rand_normal([3, 4], 0.0, 1.0, 15)),
        ("powers", powers, xp),
    ];
    for (name, f, x) in cases {
        for seed in 0..3 {
            let v = Tensor::rand_normal(x.shape(), 0.0, 1.0, 100 + seed);
            let a = hvp(f, &x, &v);
            let n = fd_hvp(f, &x, &v);
            let err = a.max_abs_diff(&n);
            let scale = n.data().iter().fold(1.0f64, |m, v| m.max(v.abs()));
            assert!(
                err < 1e-7 * scale,
                "{name}: hvp {a} vs finite differences {n} (err {err:.3e})"
            );
        }
    }
}

#[test]
fn hessian_of_logsumexp_is_diag_y_minus_y_yt() {
    for (seed, n) in [(1u64, 3usize), (2, 5), (3, 1)] {
        let x = Tensor::rand_normal([n], 0.0, 2.0, seed);
        let h = hessian(logsumexp, &x);
        // y = softmax(x), computed independently in plain f64.
        let m = x.data().iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = x.data().iter().map(|a| (a - m).exp()).collect();
        let s: f64 = e.iter().sum();
        let y: Vec<f64> = e.iter().map(|a| a / s).collect();
        let expect = Tensor::from_fn([n, n], |f| {
            let (i, j) = (f / n, f % n);
            (if i == j { y[i] } else { 0.0 }) - y[i] * y[j]
        });
        assert!(h.max_abs_diff(&expect) < 1e-15, "n={n}: {h} vs {expect}");
    }
}

#[test]
fn hessians_of_fused_and_composed_softmax_losses_agree() {
    // Loss = Σ c ⊙ log(softmax(x W)) + Σ d ⊙ softmax(x W): cross-entropy-like and a quadratic-free
    // linear read-out, over a batch (softmax along the last axis), as a function of W.
    fn loss<'t>(w: Var<'t, f64>, sm: fn(Var<'t, f64>) -> Var<'t, f64>) -> Var<'t, f64> {
        let tape = w.tape();
        let x = tape.constant(Tensor::rand_normal([3, 2], 0.0, 1.0, 21));
        let c = tape.constant(Tensor::rand_uniform([3, 4], 0.0, 1.0, 22));
        let d = tape.constant(Tensor::rand_normal([3, 4], 0.0, 1.0, 23));
        let y = sm(x.matmul(w));
        (c * y.log()).sum() + (d * y).sum()
    }
    fn fused(w: Var<'_, f64>) -> Var<'_, f64> {
        loss(w, softmax_fused)
    }
    fn composed(w: Var<'_, f64>) -> Var<'_, f64> {
        loss(w, softmax_composed)
    }
    let w = Tensor::rand_normal([2, 4], 0.0, 1.0, 24);
    let hf = hessian(fused, &w);
    let hc = hessian(composed, &w);
    assert_eq!(hf.shape(), &[2, 4, 2, 4]);
    assert!(
        hf.max_abs_diff(&hc) < 1e-12,
        "fused vs composed: {:.3e}",
        hf.max_abs_diff(&hc)
    );
    let fd = fd_hessian(composed, &w);
    assert!(
        hc.max_abs_diff(&fd) < 1e-7,
        "composed vs finite differences: {:.3e}",
        hc.max_abs_diff(&fd)
    );
    // And the fused op's second derivative on its own, by gradgradcheck.
    let r = gradgradcheck(
        |v| softmax_fused(v[0]),
        &[Tensor::rand_normal([2, 3], 0.0, 1.0, 25)],
        &GradcheckOptions::default(),
    );
    assert!(r.passed, "{r}");
}

#[test]
fn hessian_is_symmetric_and_with_hessian_reuses_one_recording() {
    fn f(x: Var<'_, f64>) -> Var<'_, f64> {
        ((x.matmul(x.t())).tanh().sum() + x.exp().sum()).mul_scalar(0.5)
    }
    let x = Tensor::rand_normal([2, 3], 0.0, 0.8, 31);
    let h = hessian(f, &x);
    let n = 6;
    for i in 0..n {
        for j in 0..n {
            assert_relative_eq!(h.data()[i * n + j], h.data()[j * n + i], epsilon = 1e-13);
        }
    }
    let (val, g) = value_and_grad(f, &x);
    with_hessian(f, &x, |hs| {
        assert_eq!(hs.value(), val);
        assert!(hs.grad().max_abs_diff(&g) < 1e-15);
        for k in 0..3 {
            let v = Tensor::rand_normal([2, 3], 0.0, 1.0, 40 + k);
            let hv = hs.hvp(&v);
            // H v from the full Hessian.
            let expect = Tensor::from_fn([2, 3], |i| (0..n).map(|j| h.data()[i * n + j] * v.data()[j]).sum());
            assert!(hv.max_abs_diff(&expect) < 1e-13);
        }
    });
}

#[test]
fn jvp_and_vjp_agree_with_the_jacobian() {
    fn f(x: Var<'_, f64>) -> Var<'_, f64> {
        let a = x.tape().constant(Tensor::rand_normal([3, 4], 0.0, 1.0, 51));
        softmax_composed(x.reshape([1, 3]).matmul(a)).reshape([4]) * x.sum()
    }
    let x = Tensor::rand_normal([3], 0.0, 1.0, 52);
    let j = jacobian(f, &x); // [4, 3]
    let jn = numeric_jacobian(f, &x);
    assert!(j.max_abs_diff(&jn) < 1e-8);
    let tv = Tensor::rand_normal([3], 0.0, 1.0, 53);
    let (y, jt) = jvp(f, &x, &tv);
    assert_eq!(y.shape(), &[4]);
    for o in 0..4 {
        let expect: f64 = (0..3).map(|i| j.data()[o * 3 + i] * tv.data()[i]).sum();
        assert_relative_eq!(jt.data()[o], expect, epsilon = 1e-14, max_relative = 1e-12);
    }
    let v = Tensor::rand_normal([4], 0.0, 1.0, 54);
    let (_, vj) = vjp(f, &x, &v);
    for i in 0..3 {
        let expect: f64 = (0..4).map(|o| v.data()[o] * j.data()[o * 3 + i]).sum();
        assert_relative_eq!(vj.data()[i], expect, epsilon = 1e-14, max_relative = 1e-12);
    }
    // ⟨v, J t⟩ = ⟨Jᵀ v, t⟩
    assert_relative_eq!(dot(&v, &jt), dot(&vj, &tv), max_relative = 1e-12);
}

#[test]
fn multi_input_variants() {
    // f(a, b) = Σ tanh(a @ b): check jvp_n / vjp_n / hvp_n against finite differences.
    fn f<'t>(v: &[Var<'t, f64>]) -> Var<'t, f64> {
        v[0].matmul(v[1]).tanh().sum()
    }
    let a = Tensor::rand_normal([2, 3], 0.0, 0.7, 61);
    let b = Tensor::rand_normal([3, 2], 0.0, 0.7, 62);
    let (ta, tb) = (
        Tensor::rand_normal([2, 3], 0.0, 1.0, 63),
        Tensor::rand_normal([3, 2], 0.0, 1.0, 64),
    );
    let h = 1e-5;
    let eval = |a: &Tensor<f64>, b: &Tensor<f64>| {
        let tape = Tape::new();
        f(&[tape.constant(a.clone()), tape.constant(b.clone())]).item()
    };
    let step = |x: &Tensor<f64>, d: &Tensor<f64>, s: f64| x.zip_map(d, |p, q| p + s * q);
    let num = (eval(&step(&a, &ta, h), &step(&b, &tb, h)) - eval(&step(&a, &ta, -h), &step(&b, &tb, -h))) / (2.0 * h);
    let (_, jt) = jvp_n(f, &[a.clone(), b.clone()], &[ta.clone(), tb.clone()]);
    assert_relative_eq!(jt.item(), num, max_relative = 1e-8);
    let (_, g) = vjp_n(f, &[a.clone(), b.clone()], &Tensor::scalar(1.0));
    assert_relative_eq!(dot(&g[0], &ta) + dot(&g[1], &tb), num, max_relative = 1e-8);
    // H [ta; tb] by finite differences of both gradients along (ta, tb).
    let grads_at = |s: f64| vjp_n(f, &[step(&a, &ta, s), step(&b, &tb, s)], &Tensor::scalar(1.0)).1;
    let (gp, gm) = (grads_at(h), grads_at(-h));
    let hv = hvp_n(f, &[a, b], &[ta, tb]);
    for k in 0..2 {
        let fd = gp[k].zip_map(&gm[k], |p, q| (p - q) / (2.0 * h));
        assert!(hv[k].max_abs_diff(&fd) < 1e-7, "block {k}: {} vs {fd}", hv[k]);
    }
}

#[test]
fn hessian_of_a_non_scalar_function_is_refused_with_the_callers_line() {
    let e = std::panic::catch_unwind(|| hessian(|x| x * x, &t(&[1.0, 2.0], &[2]))).unwrap_err();
    let msg = e.downcast_ref::<String>().unwrap();
    assert!(msg.contains("one-element output") && msg.contains("[2]"), "{msg}");
    assert!(msg.contains(file!()), "{msg}");
}

// ---------------------------------------------------------------------------------------------
// gradgradcheck and the registry.

#[test]
fn every_registered_op_passes_gradgradcheck_in_f64() {
    let reg = Registry::builtin();
    assert!(reg.iter().any(|i| i.differentiable_twice));
    let failures = gradgradcheck_registry(reg, &GradcheckOptions::default());
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.iter().map(|f| f.to_string()).collect::<Vec<_>>().join("\n")
    );
}

/// `x³` with a correct first-order rule computed from values, declared first order only.
struct CubeFirstOrder;
impl<T: Float> Op<T> for CubeFirstOrder {
    fn name(&self) -> &'static str {
        "cube_first_order"
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        Ok(x[0].map(|a| a * a * a))
    }
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
        let gx = cx
            .input(0)
            .value()
            .zip_map(&g.value(), |x, g| T::from_f64(3.0) * x * x * g);
        Ok(cx.first_order_only("cube_first_order", g, [Some(gx)]))
    }
}

/// `x³` whose rule is right to first order but hides `x` behind a constant: its second derivative
/// would silently be wrong. Registered (wrongly) as differentiable twice: gradgradcheck must catch it.
struct CubeSilentZero;
impl<T: Float> Op<T> for CubeSilentZero {
    fn name(&self) -> &'static str {
        "cube_silent"
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        Ok(x[0].map(|a| a * a * a))
    }
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
        let x2 = cx.input(0).value().map(|a| T::from_f64(3.0) * a * a);
        Ok(cx.grads([Some(g.mul(&g.constant(x2)))]))
    }
}

/// `x³` with a proper recorded rule.
struct Cube;
impl<T: Float> Op<T> for Cube {
    fn name(&self) -> &'static str {
        "cube"
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        Ok(x[0].map(|a| a * a * a))
    }
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
        let x = cx.input(0);
        Ok(cx.grads([Some(pointwise!(T; g, x => g * x * x * T::from_f64(3.0)))]))
    }
}

fn registry_with(name: &'static str, differentiable_twice: bool, samples: fn() -> Vec<tapegrad::Sample>) -> Registry {
    let mut r = Registry::new();
    let info = OpInfo::new(name, "test op", samples);
    r.register(if differentiable_twice {
        info
    } else {
        info.first_order_only()
    });
    r
}

#[test]
fn first_order_only_ops_are_declared_and_fail_loudly() {
    let opts = GradcheckOptions::default();
    // Declared first order only, and it is: no failure (first order is still checked by gradcheck).
    let reg = registry_with("cube_first_order", false, || {
        vec![sample!("[2,2]", [Tensor::rand_normal([2, 2], 0.0, 1.0, 71)], |v| v[0]
            .tape()
            .apply(CubeFirstOrder, &[v[0]]))]
    });
    assert!(gradgradcheck_registry(&reg, &opts).is_empty());
    assert!(tapegrad::check::check_registry(&reg, &opts).is_empty());
    // Claimed differentiable twice, but first order only: reported, with the loud error.
    let reg = registry_with("cube_first_order", true, || {
        vec![sample!("[3]", [Tensor::rand_normal([3], 0.0, 1.0, 72)], |v| v[0]
            .tape()
            .apply(CubeFirstOrder, &[v[0]]))]
    });
    let f = gradgradcheck_registry(&reg, &opts);
    assert_eq!(f.len(), 1);
    assert!(f[0].problem.contains("first order only"), "{}", f[0]);
    // Negative control: a silent-zero second derivative claimed differentiable twice is caught by
    // the finite differences.
    let reg = registry_with("cube_silent", true, || {
        vec![sample!("[3]", [Tensor::rand_normal([3], 0.0, 1.0, 73)], |v| v[0]
            .tape()
            .apply(CubeSilentZero, &[v[0]]))]
    });
    let f = gradgradcheck_registry(&reg, &opts);
    assert_eq!(f.len(), 1, "the silent zero went unnoticed");
    assert!(f[0].problem.contains("FAILED"), "{}", f[0]);
    // A properly differentiable op declared first order only: the declaration is flagged as stale.
    let reg = registry_with("cube", false, || {
        vec![sample!("[3]", [Tensor::rand_normal([3], 0.0, 1.0, 74)], |v| v[0]
            .tape()
            .apply(Cube, &[v[0]]))]
    });
    let f = gradgradcheck_registry(&reg, &opts);
    assert_eq!(f.len(), 1);
    assert!(f[0].problem.contains("raised no error"), "{}", f[0]);
    // And the proper op passes when declared correctly.
    let reg = registry_with("cube", true, || {
        vec![sample!("[3]", [Tensor::rand_normal([3], 0.0, 1.0, 74)], |v| v[0]
            .tape()
            .apply(Cube, &[v[0]]))]
    });
    assert!(gradgradcheck_registry(&reg, &opts).is_empty());
}

#[test]
fn a_first_order_rule_names_the_op_and_the_users_line_when_differentiated_twice() {
    let tape = Tape::<f64>::new();
    let x = tape.var(t(&[0.5, 2.0], &[2]));
    let line = line!() + 1;
    let y = tape.apply(CubeFirstOrder, &[x]).sum();
    // First order is right (3x²) and costs no recorded nodes.
    assert_eq!(y.backward()[x].to_vec(), vec![0.75, 12.0]);
    let g = tape.grad_graph(&[y], &[tape.scalar(1.0)], &[x])[0];
    assert_eq!(g.value().to_vec(), vec![0.75, 12.0]);
    let e = tape.try_grad(&[g], &[Tensor::ones([2])], &[x]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoVjp);
    assert_eq!(e.op(), "cube_first_order");
    let loc = e.location().expect("a location");
    assert_eq!((loc.file(), loc.line()), (file!(), line), "{e}");
    assert!(e.to_string().contains("cannot be differentiated twice"), "{e}");
    // hvp and gradgradcheck refuse it loudly as well.
    let r = gradgradcheck(
        |v| v[0].tape().apply(CubeFirstOrder, &[v[0]]),
        &[t(&[1.0], &[1])],
        &GradcheckOptions::default(),
    );
    assert!(
        !r.passed && r.error.as_ref().is_some_and(|e| e.kind() == ErrorKind::NoVjp),
        "{r}"
    );
    let p = std::panic::catch_unwind(|| {
        hvp(
            |x| x.tape().apply(CubeFirstOrder, &[x]).sum(),
            &t(&[1.0], &[1]),
            &t(&[1.0], &[1]),
        )
    });
    assert!(p.is_err());
}

#[test]
fn gradgradcheck_negative_control_on_a_wrong_second_derivative() {
    // The rule below is correct to first order (3x²g) but its second derivative is 3x² instead of
    // 6x (the x² is built from a detached copy for one factor): gradgradcheck must fail, gradcheck
    // must pass.
    struct HalfDetached;
    impl<T: Float> Op<T> for HalfDetached {
        fn name(&self) -> &'static str {
            "half_detached"
        }
        fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
            Ok(x[0].map(|a| a * a * a))
        }
        fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
            let x = cx.input(0);
            Ok(cx.grads([Some(g.mul(x).mul(&x.constant(x.value())).scale(T::from_f64(3.0)))]))
        }
    }
    fn f<'t>(v: &[Var<'t, f64>]) -> Var<'t, f64> {
        v[0].tape().apply(HalfDetached, &[v[0]])
    }
    let x = [Tensor::rand_uniform([3], 0.5, 1.5, 81)];
    let opts = GradcheckOptions::default();
    assert!(tapegrad::check::gradcheck(f, &x, &opts).passed);
    let r = gradgradcheck(f, &x, &opts);
    assert!(!r.passed, "{r}");
    assert!(r.to_string().contains("FAILED"));
}

#[test]
fn several_outputs_and_repeated_outputs_accumulate_their_recorded_seeds() {
    // Seeds (y, a) and (y, b) on the same output, plus (z, c): g = (a + b)·∂y/∂x + c·∂z/∂x, and its
    // derivative with respect to the cotangents (which are variables) is the Jacobians themselves.
    let tape = Tape::<f64>::new();
    let xv = t(&[0.3, -0.8], &[2]);
    let x = tape.var(xv.clone());
    let (y, z) = (x.exp(), x * x);
    let (a, b, c) = (
        tape.var(t(&[1.0, 2.0], &[2])),
        tape.var(t(&[0.5, 0.5], &[2])),
        tape.var(t(&[3.0, -1.0], &[2])),
    );
    let g = tape.grad_graph(&[y, y, z], &[a, b, c], &[x])[0];
    for i in 0..2 {
        let xi = xv.data()[i];
        let expect = (a.value().data()[i] + b.value().data()[i]) * xi.exp() + c.value().data()[i] * 2.0 * xi;
        assert_relative_eq!(g.value().data()[i], expect, max_relative = 1e-14);
    }
    let d = tape.grad(&[g], &[Tensor::ones([2])], &[a, b, c, x]);
    for i in 0..2 {
        let xi = xv.data()[i];
        assert_relative_eq!(d[0].data()[i], xi.exp(), max_relative = 1e-14);
        assert_relative_eq!(d[1].data()[i], xi.exp(), max_relative = 1e-14);
        assert_relative_eq!(d[2].data()[i], 2.0 * xi, max_relative = 1e-14);
        let expect = (a.value().data()[i] + b.value().data()[i]) * xi.exp() + c.value().data()[i] * 2.0;
        assert_relative_eq!(d[3].data()[i], expect, max_relative = 1e-14);
    }
}

#[test]
fn a_failed_recorded_backward_leaves_the_tape_as_it_was() {
    struct NoRule;
    impl<T: Float> Op<T> for NoRule {
        fn name(&self) -> &'static str {
            "no_rule_here"
        }
        fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
            Ok(x[0].clone())
        }
    }
    let tape = Tape::<f64>::new();
    let x = tape.var(t(&[1.0, 2.0], &[2]));
    // exp's rule runs (and is recorded) before the sweep reaches the op without a rule.
    let y = tape.apply(NoRule, &[x * 2.0]).exp().sum();
    let n = tape.len();
    let e = tape.try_grad_graph(&[y], &[tape.scalar(1.0)], &[x]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoVjp);
    assert!(e.to_string().contains("no_rule_here"));
    assert_eq!(tape.len(), n + 1, "only the seed made before the call may remain");
}

#[test]
fn asking_for_the_gradient_of_a_constant_is_an_error_not_a_silent_zero() {
    // d(c²)/dc = 2c ≠ 0, but a constant is pruned from the sweep: the core used to return 0.
    let tape = Tape::<f64>::new();
    let c = tape.constant(Tensor::scalar(3.0));
    let x = tape.var(Tensor::scalar(2.0));
    let y = c * c + x;
    let line = line!() + 1;
    let e = tape.try_grad(&[y], &[Tensor::scalar(1.0)], &[x, c]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid);
    assert!(
        e.to_string().contains("silent zero") && e.to_string().contains("constant"),
        "{e}"
    );
    assert_eq!(e.location().map(|l| (l.file(), l.line())), Some((file!(), line)));
    let e = tape
        .try_grad_graph(&[y], &[tape.scalar(1.0)], &[x.detach()])
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid);
    // A variable the output does not depend on still gets zeros.
    let unused = tape.var(Tensor::scalar(5.0));
    assert_eq!(tape.grad(&[y], &[Tensor::scalar(1.0)], &[unused])[0].item(), 0.0);
}
