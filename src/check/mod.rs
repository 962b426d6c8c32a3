//! Checking gradients: finite differences ([`gradcheck`]), full Jacobians ([`jacobian`],
//! [`numeric_jacobian`]), and the registry-wide check ([`check_registry`]).
//!
//! ```
//! use tapegrad::{check::{gradcheck, GradcheckOptions}, Tensor};
//! let x = Tensor::<f64>::rand_normal([2, 3], 0.0, 1.0, 1);
//! let report = gradcheck(|v| (v[0].exp() / v[0].exp().sum_axis(1, true)).log(), &[x], &GradcheckOptions::default());
//! assert!(report.passed, "{report}");
//! ```

use crate::autodiff::tape::{Tape, Var};
use crate::core::float::Float;
use crate::core::rng::Rng;
use crate::core::shape::fmt_shape;
use crate::ops::{NanRule, Registry, Sample};
use crate::tensor::Tensor;
use std::fmt;

/// How [`gradcheck`] compares.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CheckMode {
    /// Full Jacobian for small problems (≤ 4096 input×output elements), projections otherwise.
    Auto,
    /// Every Jacobian entry: one VJP per output element, two evaluations per input element.
    Full,
    /// `n` random directions: compares `⟨v, J u⟩` from one VJP with a central difference of
    /// `⟨v, f(x + h u)⟩`, for random `u` and `v`. Cost independent of the size.
    Projection(usize),
}

/// Tolerances and mode for [`gradcheck`]. An entry passes when `|analytic − numeric| ≤
/// atol + rtol·|numeric|`.
#[derive(Clone, Copy, Debug)]
pub struct GradcheckOptions {
    /// Absolute tolerance.
    pub atol: f64,
    /// Relative tolerance.
    pub rtol: f64,
    /// Full Jacobian or random projections.
    pub mode: CheckMode,
    /// Seed for projection directions.
    pub seed: u64,
    /// The relative step; `None` chooses `ε^(1/3)` of the element type (the step is
    /// `rel_step · max(1, |x|)` per element).
    pub rel_step: Option<f64>,
}

impl Default for GradcheckOptions {
    /// Tolerances for `f64`: `atol = 1e-6`, `rtol = 1e-5`. Use [`for_f32`](Self::for_f32) for `f32`.
    fn default() -> Self {
        GradcheckOptions {
            atol: 1e-6,
            rtol: 1e-5,
            mode: CheckMode::Auto,
            seed: 0x5eed,
            rel_step: None,
        }
    }
}

impl GradcheckOptions {
    /// Looser tolerances suited to `f32` (`atol = rtol = 1e-2`).
    pub fn for_f32() -> Self {
        GradcheckOptions {
            atol: 1e-2,
            rtol: 1e-2,
            ..Self::default()
        }
    }

    /// Defaults for the element type `T`.
    pub fn for_type<T: Float>() -> Self {
        if T::EPSILON.to_f64() > 1e-10 {
            Self::for_f32()
        } else {
            Self::default()
        }
    }
}

/// The entry that fared worst in a [`gradcheck`].
#[derive(Clone, Debug, PartialEq)]
pub struct Mismatch {
    /// Which input.
    pub input: usize,
    /// The element of that input (a multi-index), or, in projection mode, the direction number.
    pub index: Vec<usize>,
    /// The element of the output (a multi-index); empty in projection mode.
    pub output_index: Vec<usize>,
    /// The value from the VJP rules.
    pub analytic: f64,
    /// The central-difference value.
    pub numeric: f64,
    /// The tolerance this entry had to meet.
    pub tol: f64,
}

/// What [`gradcheck`] found.
#[derive(Clone, Debug)]
pub struct GradcheckReport {
    /// True when every compared entry was within tolerance.
    pub passed: bool,
    /// The entry with the largest error relative to its tolerance.
    pub worst: Option<Mismatch>,
    /// The largest absolute error over all compared entries.
    pub max_abs_err: f64,
    /// How many entries were compared.
    pub compared: usize,
    /// The mode used (Auto resolved).
    pub mode: CheckMode,
}

impl fmt::Display for GradcheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "gradcheck {} ({} entries, {:?}, max |error| {:.3e})",
            if self.passed { "passed" } else { "FAILED" },
            self.compared,
            self.mode,
            self.max_abs_err
        )?;
        if let Some(w) = &self.worst {
            write!(
                f,
                "; worst: input {} element {:?}, output {:?}: analytic {:.10e} vs numeric {:.10e} (tolerance {:.3e})",
                w.input, w.index, w.output_index, w.analytic, w.numeric, w.tol
            )?;
        }
        Ok(())
    }
}

fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for a in (0..shape.len()).rev() {
        idx[a] = i % shape[a];
        i /= shape[a];
    }
    idx
}

/// Evaluates `f` on fresh inputs without recording gradients.
fn eval<T: Float, F>(f: &F, inputs: &[Tensor<T>]) -> Tensor<T>
where
    F: for<'t> Fn(&[Var<'t, T>]) -> Var<'t, T>,
{
    let tape = Tape::new();
    let vars: Vec<Var<'_, T>> = inputs.iter().map(|x| tape.var(x.clone())).collect();
    f(&vars).value()
}

/// Compares the gradients of `f` from its VJP rules with central finite differences.
///
/// The step for element `x` is `h = rel_step · max(1, |x|)` with `rel_step = ε^(1/3)` by default
/// (the step that balances truncation and rounding error for central differences). `f` may
/// return a tensor of any shape. See [`CheckMode`] for what is compared.
#[allow(clippy::needless_range_loop)]
pub fn gradcheck<T: Float, F>(f: F, inputs: &[Tensor<T>], opts: &GradcheckOptions) -> GradcheckReport
where
    F: for<'t> Fn(&[Var<'t, T>]) -> Var<'t, T>,
{
    let rel = opts.rel_step.unwrap_or_else(|| T::EPSILON.to_f64().cbrt());
    let step = |x: T| T::from_f64(rel * x.to_f64().abs().max(1.0));
    let out0 = eval(&f, inputs);
    let n_in: usize = inputs.iter().map(|x| x.numel()).sum();
    let mode = match opts.mode {
        CheckMode::Auto if n_in * out0.numel() <= 4096 => CheckMode::Full,
        CheckMode::Auto => CheckMode::Projection(8),
        m => m,
    };
    let mut report = GradcheckReport {
        passed: true,
        worst: None,
        max_abs_err: 0.0,
        compared: 0,
        mode,
    };
    let mut worst_ratio = -1.0;
    let mut consider = |m: Mismatch| {
        let err = (m.analytic - m.numeric).abs();
        let ratio = if err.is_nan() { f64::INFINITY } else { err / m.tol };
        report.compared += 1;
        report.max_abs_err = report.max_abs_err.max(if err.is_nan() { f64::INFINITY } else { err });
        if ratio > 1.0 {
            report.passed = false;
        }
        if ratio > worst_ratio {
            worst_ratio = ratio;
            report.worst = Some(m);
        }
    };
    let tol = |n: f64| opts.atol + opts.rtol * n.abs();
    match mode {
        CheckMode::Full | CheckMode::Auto => {
            // Analytic Jacobian rows: one VJP per output element, on one recording.
            let tape = Tape::new();
            let vars: Vec<Var<'_, T>> = inputs.iter().map(|x| tape.var(x.clone())).collect();
            let out = f(&vars);
            let on = out.numel();
            let mut rows: Vec<Vec<Tensor<T>>> = Vec::with_capacity(on);
            for o in 0..on {
                let mut e = vec![T::ZERO; on];
                e[o] = T::ONE;
                rows.push(tape.grad_lenient(&[out], &[Tensor::from_vec(e, out.shape())], &vars));
            }
            // Numeric columns: two evaluations per input element.
            for (k, x) in inputs.iter().enumerate() {
                for j in 0..x.numel() {
                    let h = step(x.data()[j]);
                    let mut xs = inputs.to_vec();
                    xs[k].data_mut()[j] = x.data()[j] + h;
                    let fp = eval(&f, &xs);
                    xs[k].data_mut()[j] = x.data()[j] - h;
                    let fm = eval(&f, &xs);
                    for o in 0..on {
                        let numeric = (fp.data()[o].to_f64() - fm.data()[o].to_f64()) / (2.0 * h.to_f64());
                        let analytic = rows[o][k].data()[j].to_f64();
                        consider(Mismatch {
                            input: k,
                            index: unravel(j, x.shape()),
                            output_index: unravel(o, out0.shape()),
                            analytic,
                            numeric,
                            tol: tol(numeric),
                        });
                    }
                }
            }
        }
        CheckMode::Projection(n) => {
            let mut rng = Rng::new(opts.seed);
            let tape = Tape::new();
            let vars: Vec<Var<'_, T>> = inputs.iter().map(|x| tape.var(x.clone())).collect();
            let out = f(&vars);
            for d in 0..n {
                let v = Tensor::<T>::from_fn(out0.shape(), |_| T::from_f64(rng.normal()));
                let us: Vec<Tensor<T>> = inputs
                    .iter()
                    .map(|x| Tensor::from_fn(x.shape(), |_| T::from_f64(rng.normal())))
                    .collect();
                let g = tape.grad_lenient(&[out], std::slice::from_ref(&v), &vars);
                let analytic: f64 = g
                    .iter()
                    .zip(&us)
                    .map(|(g, u)| {
                        g.data()
                            .iter()
                            .zip(u.data())
                            .map(|(a, b)| a.to_f64() * b.to_f64())
                            .sum::<f64>()
                    })
                    .sum();
                let scale = inputs
                    .iter()
                    .flat_map(|x| x.data().iter())
                    .map(|x| x.to_f64().abs())
                    .fold(1.0f64, f64::max);
                let h = rel * scale;
                let shifted = |sign: f64| -> Vec<Tensor<T>> {
                    inputs
                        .iter()
                        .zip(&us)
                        .map(|(x, u)| x.zip_map(u, |a, b| a + T::from_f64(sign * h) * b))
                        .collect()
                };
                let dot = |y: &Tensor<T>| -> f64 {
                    y.data()
                        .iter()
                        .zip(v.data())
                        .map(|(a, b)| a.to_f64() * b.to_f64())
                        .sum()
                };
                let numeric = (dot(&eval(&f, &shifted(1.0))) - dot(&eval(&f, &shifted(-1.0)))) / (2.0 * h);
                consider(Mismatch {
                    input: 0,
                    index: vec![d],
                    output_index: vec![],
                    analytic,
                    numeric,
                    tol: tol(numeric),
                });
            }
        }
    }
    report
}

/// The full Jacobian of `f` at `x` from the VJP rules: one backward per output element, on one
/// recording. The result has shape `out.shape ++ x.shape`.
///
/// ```
/// use tapegrad::{check::jacobian, Tensor};
/// let j = jacobian(|x| x * x, &Tensor::from_vec(vec![1.0f64, 2.0], [2]));
/// assert_eq!(j.to_vec(), vec![2.0, 0.0, 0.0, 4.0]);
/// ```
pub fn jacobian<T: Float, F>(f: F, x: &Tensor<T>) -> Tensor<T>
where
    F: for<'t> Fn(Var<'t, T>) -> Var<'t, T>,
{
    let tape = Tape::new();
    let xv = tape.var(x.clone());
    let out = f(xv);
    let on = out.numel();
    let mut data = Vec::with_capacity(on * x.numel());
    for o in 0..on {
        let mut e = vec![T::ZERO; on];
        e[o] = T::ONE;
        let g = tape.grad_lenient(&[out], &[Tensor::from_vec(e, out.shape())], &[xv]);
        data.extend_from_slice(g[0].data());
    }
    let mut shape = out.shape();
    shape.extend_from_slice(x.shape());
    Tensor::from_vec(data, shape)
}

/// The Jacobian of `f` at `x` by central differences (shape `out.shape ++ x.shape`), with the
/// step `ε^(1/3)·max(1, |x|)`.
pub fn numeric_jacobian<T: Float, F>(f: F, x: &Tensor<T>) -> Tensor<T>
where
    F: for<'t> Fn(Var<'t, T>) -> Var<'t, T>,
{
    let eval1 = |x: &Tensor<T>| {
        let tape = Tape::new();
        f(tape.var(x.clone())).value()
    };
    let out0 = eval1(x);
    let (on, xn) = (out0.numel(), x.numel());
    let mut data = vec![T::ZERO; on * xn];
    let rel = T::EPSILON.to_f64().cbrt();
    for j in 0..xn {
        let h = rel * x.data()[j].to_f64().abs().max(1.0);
        let mut xp = x.clone();
        xp.data_mut()[j] = x.data()[j] + T::from_f64(h);
        let mut xm = x.clone();
        xm.data_mut()[j] = x.data()[j] - T::from_f64(h);
        let (fp, fm) = (eval1(&xp), eval1(&xm));
        for o in 0..on {
            data[o * xn + j] = T::from_f64((fp.data()[o].to_f64() - fm.data()[o].to_f64()) / (2.0 * h));
        }
    }
    let mut shape = crate::core::shape::shape_of(out0.shape());
    shape.extend_from_slice(x.shape());
    Tensor::from_vec(data, shape)
}

/// One failure found by [`check_registry`].
#[derive(Clone, Debug)]
pub struct RegistryFailure {
    /// The op's registered name.
    pub op: &'static str,
    /// The sample's label (empty for a registry-level problem such as "no samples").
    pub sample: String,
    /// What went wrong.
    pub problem: String,
}

impl fmt::Display for RegistryFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}]: {}", self.op, self.sample, self.problem)
    }
}

/// Runs the generic checks over every op of a registry, in `f64`: each op has samples; each
/// sample's expression records the op it is listed under; its gradients pass [`gradcheck`]
/// with `opts`. Returns every failure (empty when all pass).
pub fn check_registry(reg: &Registry, opts: &GradcheckOptions) -> Vec<RegistryFailure> {
    let mut failures = Vec::new();
    for info in reg.iter() {
        let samples = (info.samples)();
        if samples.is_empty() {
            failures.push(RegistryFailure {
                op: info.name,
                sample: String::new(),
                problem: "registered without samples, so nothing checks its gradient".into(),
            });
        }
        for s in samples {
            let fail = |problem: String| RegistryFailure {
                op: info.name,
                sample: s.label.clone(),
                problem,
            };
            // The sample must actually exercise the op it is listed under.
            let tape = Tape::<f64>::new();
            let vars: Vec<Var<'_, f64>> = s.inputs.iter().map(|x| tape.var(x.clone())).collect();
            let out = (s.f64)(&vars);
            let used = (0..tape.len()).any(|i| tape.node(i).op.as_ref().is_some_and(|o| o.get().name() == info.name));
            if !used {
                failures.push(fail(format!("the sample never records op {:?}", info.name)));
                continue;
            }
            let _ = out;
            let r = gradcheck(s.f64, &s.inputs, opts);
            if !r.passed {
                failures.push(fail(format!(
                    "{r} (inputs {})",
                    s.inputs
                        .iter()
                        .map(|x| fmt_shape(x.shape()))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
    }
    failures
}

/// Options of [`fused_vs_composed`].
#[derive(Clone, Copy, Debug)]
pub struct FusedOptions {
    /// How many random cotangents to compare VJPs on.
    pub cotangents: usize,
    /// Relative tolerance (`|fused − composed| ≤ atol + rtol·|composed|`).
    pub rtol: f64,
    /// Absolute tolerance.
    pub atol: f64,
    /// Seed for the random cotangents.
    pub seed: u64,
}

impl Default for FusedOptions {
    /// Three cotangents; `rtol = 1e-12`, `atol = 1e-14` (both sides are computed in `f64`).
    fn default() -> Self {
        FusedOptions {
            cotangents: 3,
            rtol: 1e-12,
            atol: 1e-14,
            seed: 0xf05e,
        }
    }
}

/// What [`fused_vs_composed`] found: the largest discrepancies of the forward values and of the
/// VJPs, and where the worst (relative to its tolerance) was.
#[derive(Clone, Debug)]
pub struct FusedReport {
    /// True when every compared value was within tolerance.
    pub passed: bool,
    /// Largest `|fused − composed|` of the forward values.
    pub forward_max_abs: f64,
    /// Largest `|fused − composed|` over all VJP entries.
    pub vjp_max_abs: f64,
    /// The worst entry: `"forward"` or `"vjp k, input i"`, the element, fused and composed values.
    pub worst: Option<(String, Vec<usize>, f64, f64)>,
    /// How many values were compared.
    pub compared: usize,
}

impl fmt::Display for FusedReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "fused vs composed {} ({} values): forward max |diff| {:.3e}, VJP max |diff| {:.3e}",
            if self.passed { "agree" } else { "DISAGREE" },
            self.compared,
            self.forward_max_abs,
            self.vjp_max_abs
        )?;
        if let Some((what, at, a, b)) = &self.worst {
            write!(f, "; worst: {what} at {at:?}: fused {a:.15e} vs composed {b:.15e}")?;
        }
        Ok(())
    }
}

/// Checks a fused op against its composed definition in `f64`: same forward values, and the same
/// VJPs on random (seeded) cotangents, for every input.
///
/// Use it for any fused op you write: the composed side needs no custom rule, so it is the
/// independent reference.
///
/// ```
/// use tapegrad::{Math, Op, Tape, Tensor, Value, VjpCtx, Cotangents, Result, Float};
/// use tapegrad::check::{fused_vs_composed, FusedOptions};
///
/// /// log(1 + eˣ) in one op, with the rule σ(x)·g.
/// struct Softplus;
/// impl<T: Float> Op<T> for Softplus {
///     fn name(&self) -> &'static str { "softplus" }
///     fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
///         Ok(x[0].map(|v| v.max(T::ZERO) + (T::ONE + (-v.abs()).exp()).ln()))
///     }
///     fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
///         let x = cx.input(0);
///         Ok(cx.grads([Some(tapegrad::pointwise!(T; g, x => g * x.sigmoid()))]))
///     }
/// }
///
/// let x = Tensor::rand_normal([4, 5], 0.0, 2.0, 1);
/// let report = fused_vs_composed(
///     |v| v[0].tape().apply(Softplus, &[v[0]]),
///     |v| (v[0].exp() + 1.0).log(),
///     &[x],
///     &FusedOptions::default(),
/// );
/// assert!(report.passed, "{report}");
/// ```
pub fn fused_vs_composed<F, C>(fused: F, composed: C, inputs: &[Tensor<f64>], opts: &FusedOptions) -> FusedReport
where
    F: for<'t> Fn(&[Var<'t, f64>]) -> Var<'t, f64>,
    C: for<'t> Fn(&[Var<'t, f64>]) -> Var<'t, f64>,
{
    let (tf, tc) = (Tape::<f64>::new(), Tape::<f64>::new());
    let vf: Vec<Var<'_, f64>> = inputs.iter().map(|x| tf.var(x.clone())).collect();
    let vc: Vec<Var<'_, f64>> = inputs.iter().map(|x| tc.var(x.clone())).collect();
    let (of, oc) = (fused(&vf), composed(&vc));
    let mut report = FusedReport {
        passed: true,
        forward_max_abs: 0.0,
        vjp_max_abs: 0.0,
        worst: None,
        compared: 0,
    };
    let mut worst_ratio = -1.0;
    let mut compare =
        |what: String, shape: &[usize], a: &Tensor<f64>, b: &Tensor<f64>, is_fwd: bool, r: &mut FusedReport| {
            if a.shape() != b.shape() {
                r.passed = false;
                r.worst = Some((
                    format!("{what}: shapes {} vs {}", fmt_shape(a.shape()), fmt_shape(b.shape())),
                    vec![],
                    f64::NAN,
                    f64::NAN,
                ));
                worst_ratio = f64::INFINITY;
                return;
            }
            for (i, (&x, &y)) in a.data().iter().zip(b.data()).enumerate() {
                let d = if x == y { 0.0 } else { (x - y).abs() };
                let d = if d.is_nan() { f64::INFINITY } else { d };
                let ratio = d / (opts.atol + opts.rtol * y.abs());
                r.compared += 1;
                if is_fwd {
                    r.forward_max_abs = r.forward_max_abs.max(d);
                } else {
                    r.vjp_max_abs = r.vjp_max_abs.max(d);
                }
                if ratio > 1.0 {
                    r.passed = false;
                }
                if ratio > worst_ratio {
                    worst_ratio = ratio;
                    r.worst = Some((what.clone(), unravel(i, shape), x, y));
                }
            }
        };
    compare(
        "forward".into(),
        of.value().shape(),
        &of.value(),
        &oc.value(),
        true,
        &mut report,
    );
    let mut rng = Rng::new(opts.seed);
    for k in 0..opts.cotangents {
        let v = Tensor::<f64>::from_fn(oc.shape(), |_| rng.normal());
        let gf = tf.grad_lenient(&[of], std::slice::from_ref(&v), &vf);
        let gc = tc.grad_lenient(&[oc], std::slice::from_ref(&v), &vc);
        for (i, (a, b)) in gf.iter().zip(&gc).enumerate() {
            compare(format!("vjp {k}, input {i}"), b.shape(), a, b, false, &mut report);
        }
    }
    report
}

/// Records `sample` in `f64` on a fresh tape and returns its output value.
fn eval_sample(s: &Sample, inputs: &[Tensor<f64>]) -> Tensor<f64> {
    let tape = Tape::<f64>::new();
    let vars: Vec<Var<'_, f64>> = inputs.iter().map(|x| tape.var(x.clone())).collect();
    (s.f64)(&vars).value()
}

/// Checks that NaN propagates through every op of a registry (unless the op declares
/// [`NanRule::Absorbs`], with its reason): for every sample, input and element, a NaN planted
/// there reaches every output element that depends on it. An output element *depends* on an
/// input element when replacing that element by other values (a few finite perturbations)
/// changes it — so a `relu` at a negative input depends on it (its output changes when the input
/// turns positive) and must become NaN when the input is NaN.
pub fn check_nan_propagation(reg: &Registry) -> Vec<RegistryFailure> {
    let mut failures = Vec::new();
    for info in reg.iter() {
        if let NanRule::Absorbs(_) = info.nan {
            continue;
        }
        for s in (info.samples)() {
            let base = eval_sample(&s, &s.inputs);
            'inputs: for (k, x) in s.inputs.iter().enumerate() {
                for j in 0..x.numel() {
                    let v = x.data()[j];
                    let mut depends = vec![false; base.numel()];
                    for p in [v + 0.37, v - 1.3, 3.1, -2.2, 0.05] {
                        let mut xs = s.inputs.clone();
                        xs[k].data_mut()[j] = p;
                        let out = eval_sample(&s, &xs);
                        for (d, (a, b)) in depends.iter_mut().zip(out.data().iter().zip(base.data())) {
                            *d |= a.to_bits() != b.to_bits();
                        }
                    }
                    let mut xs = s.inputs.clone();
                    xs[k].data_mut()[j] = f64::NAN;
                    let out = eval_sample(&s, &xs);
                    if let Some(o) = (0..base.numel()).find(|&o| depends[o] && !out.data()[o].is_nan()) {
                        failures.push(RegistryFailure {
                            op: info.name,
                            sample: s.label.clone(),
                            problem: format!(
                                "a NaN at element {:?} of input {k} ({}) does not reach output element {:?}, which depends on it (it is {})",
                                unravel(j, x.shape()),
                                fmt_shape(x.shape()),
                                unravel(o, base.shape()),
                                out.data()[o]
                            ),
                        });
                        break 'inputs;
                    }
                }
            }
        }
    }
    failures
}

/// True when two gradient entries agree: bitwise equal, both NaN, or finite and within a relative
/// `1e-12` (the two paths may round in another order).
fn same_entry(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits()
        || (a.is_nan() && b.is_nan())
        || (a.is_finite() && b.is_finite() && (a - b).abs() <= 1e-12 * (1.0 + a.abs().max(b.abs())))
}

/// Checks that the two backward paths agree on every sample of a registry, in `f64`: the
/// first-order backward ([`Tape::grad`], on values) and the recorded one ([`Tape::grad_graph`],
/// on `Var`s) give the same gradients for an ordinary random cotangent and for cotangents holding
/// `0`, `+∞`, `−∞` and NaN. A recorded rule that computes the wrong *value* fails here even when
/// it is differentiable.
pub fn check_backward_paths_agree(reg: &Registry) -> Vec<RegistryFailure> {
    let mut failures = Vec::new();
    for info in reg.iter() {
        for s in (info.samples)() {
            let tape = Tape::<f64>::new();
            let vars: Vec<Var<'_, f64>> = s.inputs.iter().map(|x| tape.var(x.clone())).collect();
            let out = (s.f64)(&vars);
            let mut rng = Rng::new(0xa9ee);
            let n = out.numel();
            let ordinary = Tensor::<f64>::from_fn(out.shape(), |_| rng.normal());
            let specials = [0.0, f64::INFINITY, f64::NEG_INFINITY, f64::NAN];
            let mut cotangents = vec![("random".to_string(), ordinary.clone())];
            for (r, &sp) in specials.iter().enumerate() {
                // The special value at every position in turn (one cotangent per position for
                // small outputs, a stride through larger ones), the rest ordinary.
                for o in (0..n).step_by((n / 4).max(1)) {
                    let mut c = ordinary.clone();
                    c.data_mut()[o] = sp;
                    if r == 0 && n > 1 {
                        c.data_mut()[(o + 1) % n] = 0.0;
                    }
                    cotangents.push((format!("{sp} at {:?}", unravel(o, &out.shape())), c));
                }
            }
            for (what, c) in cotangents {
                let first = tape.grad_lenient(&[out], std::slice::from_ref(&c), &vars);
                let cv = tape.constant(c);
                let recorded: Vec<Tensor<f64>> = tape
                    .grad_graph_lenient(&[out], &[cv], &vars)
                    .iter()
                    .map(|v| v.value())
                    .collect();
                let bad = first.iter().zip(&recorded).enumerate().find_map(|(k, (a, b))| {
                    (0..a.numel())
                        .find(|&e| !same_entry(a.data()[e], b.data()[e]))
                        .map(|e| (k, e, a.data()[e], b.data()[e], a.shape().to_vec()))
                });
                if let Some((k, e, a, b, shape)) = bad {
                    failures.push(RegistryFailure {
                        op: info.name,
                        sample: s.label.clone(),
                        problem: format!(
                            "cotangent {what}: the gradient of input {k} at {:?} is {a} first-order but {b} recorded",
                            unravel(e, &shape)
                        ),
                    });
                    break;
                }
            }
        }
    }
    failures
}
