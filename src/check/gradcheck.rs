//! `gradcheck` (a rule's gradient against central finite differences, element by element or by
//! random projections) and full Jacobians.

use crate::autodiff::tape::{Tape, Var};
use crate::core::float::Float;
use crate::core::rng::Rng;
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

pub(crate) fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for a in (0..shape.len()).rev() {
        idx[a] = i % shape[a];
        i /= shape[a];
    }
    idx
}

/// `⟨a, b⟩`, accumulated in `f64`.
fn dot<T: Float>(a: &Tensor<T>, b: &Tensor<T>) -> f64 {
    a.data()
        .iter()
        .zip(b.data())
        .map(|(x, y)| x.to_f64() * y.to_f64())
        .sum()
}

/// `Σ_k ⟨a_k, b_k⟩`, accumulated in `f64`: a gradient `a` applied to a direction `b`.
pub(crate) fn dot_all<T: Float>(a: &[Tensor<T>], b: &[Tensor<T>]) -> f64 {
    a.iter().zip(b).map(|(a, b)| dot(a, b)).sum()
}

/// The largest `|x|` over all elements of `xs`, at least 1: what a step along a random direction
/// is scaled by.
pub(crate) fn step_scale<T: Float>(xs: &[Tensor<T>]) -> f64 {
    xs.iter()
        .flat_map(|x| x.data().iter())
        .fold(1.0f64, |m, x| m.max(x.to_f64().abs()))
}

/// `x_k + t·u_k` for every `k`: the point a step `t` along the direction `u` from `x`.
pub(crate) fn shifted<T: Float>(xs: &[Tensor<T>], us: &[Tensor<T>], t: f64) -> Vec<Tensor<T>> {
    xs.iter()
        .zip(us)
        .map(|(x, u)| x.zip_map(u, |a, b| a + T::from_f64(t) * b))
        .collect()
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
                let analytic = dot_all(&g, &us);
                let h = rel * step_scale(inputs);
                let numeric = (dot(&eval(&f, &shifted(inputs, &us, h)), &v)
                    - dot(&eval(&f, &shifted(inputs, &us, -h)), &v))
                    / (2.0 * h);
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
