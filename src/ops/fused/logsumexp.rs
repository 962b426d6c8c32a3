//! Fused log-sum-exp: `log Σ exp(x)` along an axis in one stable row kernel (shifted by the row's
//! maximum), with the closed-form VJP `g · softmax(x)` — the softmax by the fused `softmax` op,
//! whose own rule makes this one differentiable again (no backward op of its own is needed). Its composed twin, [`Var::logsumexp_composed`], is checked against it
//! by `fused_vs_composed` (its pairs are listed in
//! [`crate::softmax::fused_pairs`]).
//!
//! Edge cases: a row holding NaN gives NaN; a row whose maximum is `+∞` gives `+∞`; a row of all
//! `−∞` (or an empty row) gives `−∞`, as in PyTorch.

use super::common::softmax_axis;
use super::softmax::SoftmaxOp;
use crate::autodiff::rule::{Cotangents, Op, Value, VjpCtx};
use crate::autodiff::tape::{OpRef, Var};
use crate::core::error::{Result, fail};
use crate::core::float::Float;
use crate::core::shape::Shape;
use crate::ops::common::arity;
use crate::ops::registry::{OpInfo, Registry};
use crate::tensor::Tensor;
use crate::tensor::axis::to_last;
use crate::{recipe, sample};
use std::panic::Location;

/// `y = log Σ exp(x)` along `axis` (`keepdim` keeps it with extent 1).
#[derive(Clone, Copy, Debug)]
pub struct LogSumExpOp {
    /// The axis (negative counts from the end).
    pub axis: isize,
    /// Keep the reduced axis with extent 1.
    pub keepdim: bool,
}

/// `log Σ exp(r)` of one row, shifted by its maximum (NaN propagates).
fn logsumexp_row<T: Float>(r: &[T]) -> T {
    let mut m = T::NEG_INFINITY;
    for &v in r {
        if v.is_nan() {
            return T::NAN;
        }
        if v > m {
            m = v;
        }
    }
    if !m.is_finite() {
        return m; // +∞, or −∞ for a row of −∞ (or an empty row)
    }
    let s = r.iter().fold(T::ZERO, |a, &v| a + (v - m).exp());
    m + s.ln()
}

/// The output shapes: with the axis at extent 1, and the result's.
fn shapes(shape: &[usize], a: usize, keepdim: bool) -> (Shape, Shape) {
    let mut keep: Shape = shape.iter().copied().collect();
    keep[a] = 1;
    let mut out = keep.clone();
    if !keepdim {
        out.remove(a);
    }
    (keep, out)
}

impl<T: Float> Op<T> for LogSumExpOp {
    fn name(&self) -> &'static str {
        "logsumexp"
    }
    fn params(&self) -> String {
        format!("axis={}{}", self.axis, if self.keepdim { ", keepdim" } else { "" })
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        arity("logsumexp", x, 1)?;
        let x = x[0];
        let a = softmax_axis("logsumexp", self.axis, x)?;
        let (_, out) = shapes(x.shape(), a, self.keepdim);
        let n = x.shape()[a];
        let count: usize = out.iter().product();
        let data: Vec<T> = if count == 0 {
            Vec::new()
        } else if n == 0 {
            vec![T::NEG_INFINITY; count]
        } else {
            to_last(x, a).data().chunks_exact(n).map(logsumexp_row).collect()
        };
        Ok(Tensor::from_parts(out, data))
    }
    /// `g · softmax(x)` (broadcast back over the axis), the softmax by the fused `softmax` op:
    /// stable at any magnitude (`exp(x − y)` from the saved output would carry the rounding of a
    /// large `y`), and differentiable again through softmax's own rule.
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
        let x = cx.input(0);
        let shape = x.shape();
        let a = crate::ops::common::resolve_axis("logsumexp", self.axis, shape.len())?;
        let (keep, _) = shapes(&shape, a, self.keepdim);
        let p = V::apply(SoftmaxOp { axis: self.axis }, &[x])?;
        Ok(cx.grads([Some(g.reshape(&keep).mul(&p))]))
    }
}

impl<'t, T: Float> Var<'t, T> {
    /// `log Σ exp(x)` along `axis`, fused: one stable pass per row (shifted by the row's
    /// maximum), VJP `g · softmax(x)`. `keepdim` keeps the axis with extent 1.
    ///
    /// ```
    /// let tape = tapegrad::Tape::<f64>::new();
    /// let x = tape.var(tapegrad::Tensor::from_vec(vec![1000.0, 1000.0], [2]));
    /// let y = x.logsumexp(0, false);
    /// assert!((y.value().item() - (1000.0 + 2f64.ln())).abs() < 1e-9); // no overflow
    /// assert_eq!(y.backward()[x].to_vec(), vec![0.5, 0.5]);
    /// ```
    #[track_caller]
    pub fn logsumexp(self, axis: isize, keepdim: bool) -> Var<'t, T> {
        self.tape.op(OpRef::new(LogSumExpOp { axis, keepdim }), &[self])
    }

    /// `log Σ exp(x)` along `axis`, composed from primitives: `m + log Σ exp(x − m)` with `m` the
    /// row maximum, detached (shift invariance: no gradient is lost). The twin the fused op is
    /// checked against.
    #[track_caller]
    pub fn logsumexp_composed(self, axis: isize, keepdim: bool) -> Var<'t, T> {
        let here = Location::caller();
        softmax_axis("logsumexp_composed", axis, &self.peek()).unwrap_or_else(|e| fail(e.at(here)));
        let m = self.max_keepdim(axis).detach();
        let y = (self - m).exp().sum_keepdim(axis).log() + m;
        if keepdim { y } else { y.sum_axis(axis, false) }
    }
}

pub(crate) fn register(r: &mut Registry) {
    r.register(
        OpInfo::new(
            "logsumexp",
            "fused log Σ exp along an axis (keepdim), stable; VJP g · softmax(x)",
            || {
                let n = |s: &[usize], seed| Tensor::<f64>::rand_normal(s, 0.0, 1.5, seed);
                vec![
                    sample!("[3,5] axis 1", [n(&[3, 5], 360)], |v| v[0].logsumexp(1, false))
                        .with_reference(|x| reference(&x[0], 1, false)),
                    sample!("[2,3,4] axis -3 keepdim", [n(&[2, 3, 4], 361)], |v| v[0]
                        .logsumexp(-3, true))
                    .with_reference(|x| reference(&x[0], -3, true)),
                    sample!("[2,3,2] axis 1", [n(&[2, 3, 2], 362)], |v| v[0].logsumexp(1, false))
                        .with_reference(|x| reference(&x[0], 1, false)),
                    sample!("[1] axis 0", [n(&[1], 363)], |v| v[0].logsumexp(0, false))
                        .with_reference(|x| reference(&x[0], 0, false)),
                ]
            },
        )
        // Tame: an axis in range (`None` for a 0-d value); wild: any small axis, 0-d values too.
        .recipe(recipe!(|c, v| {
            let x = c.pick(v);
            let keep = c.flag();
            let axis = c.axis(x.shape().len())?;
            Some(x.logsumexp(axis, keep))
        })),
    );
}

/// A naive `f64` reference: for every output element, `ln Σ exp` of its line by `std` maths,
/// shifted by the line's maximum; no library kernel.
fn reference(x: &Tensor<f64>, axis: isize, keepdim: bool) -> Tensor<f64> {
    crate::ops::reduce_more::naive::reduce(x, Some(&[axis]), keepdim, |l| {
        let m = l.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        m + l.iter().map(|v| (v - m).exp()).sum::<f64>().ln()
    })
}
