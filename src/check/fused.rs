//! `fused_vs_composed`: a fused op against its composed definition, forward values and VJPs on
//! random cotangents, in `f64`.

use super::gradcheck::unravel;
use crate::autodiff::tape::{Tape, Var};
use crate::core::rng::Rng;
use crate::core::shape::fmt_shape;
use crate::tensor::Tensor;
use std::fmt;

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
