//! `gradgradcheck`: second derivatives against finite differences of gradients, and the registry
//! check that every op declared differentiable twice passes it (and every other op fails loudly).

use super::gradcheck::{GradcheckOptions, GradcheckReport, gradcheck};
use super::registry::RegistryFailure;
use crate::autodiff::tape::{Tape, Var};
use crate::core::error::{Error, ErrorKind, Result};
use crate::core::float::Float;
use crate::core::rng::Rng;
use crate::ops::Registry;
use crate::tensor::Tensor;
use std::fmt;
use std::panic::Location;

/// What [`gradgradcheck`] found: one [`gradcheck`] of the map `(x, v) ↦ ∂⟨v, f(x)⟩/∂x_k` per input
/// `k`, or the error that differentiating twice raised.
#[derive(Clone, Debug)]
pub struct GradgradcheckReport {
    /// True when every second derivative was within tolerance and no error was raised.
    pub passed: bool,
    /// The error raised by differentiating twice, if any (e.g. a first-order-only rule).
    pub error: Option<Error>,
    /// One report per input of `f`: the check of that input's gradient as a function of all the
    /// inputs and of the cotangent `v` (input number `inputs.len()` in the reports).
    pub reports: Vec<GradcheckReport>,
}

impl fmt::Display for GradgradcheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gradgradcheck {}", if self.passed { "passed" } else { "FAILED" })?;
        if let Some(e) = &self.error {
            write!(f, ": differentiating twice failed: {e}")?;
        }
        for (k, r) in self.reports.iter().enumerate() {
            if !r.passed || self.reports.len() == 1 {
                write!(f, "; gradient of input {k}: {r}")?;
            }
        }
        Ok(())
    }
}

/// Records `f` at the inputs, then its backward with a recorded cotangent `v`, and
/// differentiates every gradient with respect to all inputs and `v`: `Ok` when that works.
fn differentiate_twice<T: Float, F>(f: &F, inputs: &[Tensor<T>], v: &Tensor<T>) -> Result<()>
where
    F: for<'t> Fn(&[Var<'t, T>]) -> Var<'t, T>,
{
    let tape = Tape::new();
    let xs: Vec<Var<'_, T>> = inputs.iter().map(|x| tape.var(x.clone())).collect();
    let y = f(&xs);
    let vv = tape.var(v.clone());
    let gs = tape.grad_graph_impl(&[y], &[vv], &xs, true, Location::caller())?;
    let mut wrt = xs.clone();
    wrt.push(vv);
    let ones: Vec<Tensor<T>> = gs.iter().map(|g| Tensor::ones(g.shape())).collect();
    tape.grad_impl(&gs, &ones, &wrt, true, Location::caller()).map(|_| ())
}

/// Checks second derivatives of `f` by finite differences of its gradient, in the manner of
/// PyTorch's `gradgradcheck`.
///
/// A random cotangent `v` (shaped like `f`'s output, drawn from `opts.seed`) is fixed; for each
/// input `k`, the map `(x, v) ↦ ∂⟨v, f(x)⟩/∂x_k` — computed by a *recorded* backward pass — is
/// itself [`gradcheck`]ed with `opts`: its derivatives from the recorded backward's own rules
/// against central differences of first-order gradients. This covers every second derivative
/// `∂²⟨v, f⟩/∂x_k∂x_j` and the derivative with respect to `v` (which checks the first-order VJP
/// once more). An error while differentiating twice (a first-order-only rule) fails the check.
///
/// ```
/// use tapegrad::{check::GradcheckOptions, functional::gradgradcheck, Tensor};
/// let x = Tensor::<f64>::rand_normal([2, 3], 0.0, 1.0, 7);
/// let r = gradgradcheck(|v| (v[0].tanh() * v[0]).sum_axis(1, false), &[x], &GradcheckOptions::default());
/// assert!(r.passed, "{r}");
/// ```
pub fn gradgradcheck<T: Float, F>(f: F, inputs: &[Tensor<T>], opts: &GradcheckOptions) -> GradgradcheckReport
where
    F: for<'t> Fn(&[Var<'t, T>]) -> Var<'t, T>,
{
    let out_shape = {
        let tape = Tape::new();
        let xs: Vec<Var<'_, T>> = inputs.iter().map(|x| tape.var(x.clone())).collect();
        f(&xs).shape()
    };
    let mut rng = Rng::new(opts.seed ^ 0x9e37_79b9_7f4a_7c15);
    let v = Tensor::<T>::from_fn(&out_shape, |_| T::from_f64(rng.normal()));
    if let Err(e) = differentiate_twice(&f, inputs, &v) {
        return GradgradcheckReport {
            passed: false,
            error: Some(e),
            reports: vec![],
        };
    }
    let n = inputs.len();
    let mut all = inputs.to_vec();
    all.push(v);
    let reports: Vec<GradcheckReport> = (0..n)
        .map(|k| {
            gradcheck(
                |vars| {
                    // gradcheck's numeric pass records its inputs as constants; the gradient needs
                    // variables, so re-record those (the analytic pass passes variables through).
                    let xs: Vec<Var<'_, T>> = vars[..n]
                        .iter()
                        .map(|&x| if x.requires_grad() { x } else { x.tape().var(x.value()) })
                        .collect();
                    let y = f(&xs);
                    y.tape().grad_graph_lenient(&[y], &[vars[n]], &[xs[k]])[0]
                },
                &all,
                opts,
            )
        })
        .collect();
    GradgradcheckReport {
        passed: reports.iter().all(|r| r.passed),
        error: None,
        reports,
    }
}

/// The second-order counterpart of [`check_registry`](crate::check::check_registry), in `f64`:
/// every sample of every op declared `differentiable_twice` must pass [`gradgradcheck`] with
/// `opts`; every sample of an op declared first order only must fail *loudly* (an error of kind
/// [`ErrorKind::NoVjp`] naming the op) when differentiated twice — never return a silent zero.
/// Returns every failure (empty when all pass).
pub fn gradgradcheck_registry(reg: &Registry, opts: &GradcheckOptions) -> Vec<RegistryFailure> {
    let mut failures = Vec::new();
    for info in reg.iter() {
        for s in (info.samples)() {
            let fail = |problem: String| RegistryFailure {
                op: info.name,
                sample: s.label.clone(),
                problem,
            };
            if info.differentiable_twice {
                let r = gradgradcheck(s.f64, &s.inputs, opts);
                if !r.passed {
                    failures.push(fail(r.to_string()));
                }
            } else {
                let out_shape = {
                    let tape = Tape::<f64>::new();
                    let xs: Vec<Var<'_, f64>> = s.inputs.iter().map(|x| tape.var(x.clone())).collect();
                    (s.f64)(&xs).shape()
                };
                let v = Tensor::rand_normal(&out_shape, 0.0, 1.0, opts.seed);
                match differentiate_twice(&s.f64, &s.inputs, &v) {
                    Ok(()) => failures.push(fail(
                        "declared first order only (differentiable_twice: false), but differentiating it \
                         twice raised no error: a second derivative would silently be wrong (or the \
                         declaration is out of date)"
                            .into(),
                    )),
                    Err(e) if e.kind() == ErrorKind::NoVjp && e.to_string().contains(info.name) => {}
                    Err(e) => failures.push(fail(format!(
                        "differentiating twice failed, but not with a NoVjp error naming the op: {e}"
                    ))),
                }
            }
        }
    }
    failures
}
