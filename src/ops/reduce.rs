//! Reductions: `sum mean` (all axes, or one axis with `keepdim`), `max` / `min` along an axis, and
//! `sum_to` (sum a broadcast result back to an input's shape — the VJP of broadcasting). More
//! reductions (over sets of axes, `amax`, `prod`, `var`, `norm`, `cumsum`, …) are in
//! [`reduce_more`](super::reduce_more).
//!
//! **Ties in `max_axis` / `min_axis`**: the whole gradient goes to the *first* maximal (minimal)
//! element along the axis (the one `argmax` / `argmin` returns), as in PyTorch's `max(dim)`; the
//! other tied elements get zero. This is a valid subgradient, and it keeps the gradient's sum equal
//! to the incoming gradient. (`amax` / `amin` split it evenly among the ties instead.)

use super::common::{arity, resolve_axis};
use super::reference;
use super::registry::{Choice, OpInfo, Registry};
use super::select::TakeIf;
use crate::autodiff::rule::Value;
use crate::autodiff::rule::{Cotangents, Op, VjpCtx};
use crate::autodiff::tape::{OpRef, Var};
use crate::core::error::{Error, Result};
use crate::core::float::Float;
use crate::core::shape::{Shape, broadcasts_to, fmt_shape, shape_of};
use crate::tensor::pool;
use crate::tensor::{Tensor, kernels};
use crate::{recipe, sample};

/// The shape of a reduction's output over `axis`.
fn reduced_shape(shape: &[usize], axis: usize, keepdim: bool) -> Shape {
    let mut s = shape_of(shape);
    if keepdim {
        s[axis] = 1;
    } else {
        s.remove(axis);
    }
    s
}

/// A reduction's gradient with the reduced axis put back as extent 1 (ready to broadcast).
fn keep_axis<T: Float, V: Value<T>>(g: &V, input_shape: &[usize], axis: Option<usize>) -> V {
    match axis {
        None => g.clone(),
        Some(a) => g.reshape(&reduced_shape(input_shape, a, true)),
    }
}

/// Sum (or mean) over all axes (`axis = None`, giving a 0-d result) or over one axis.
pub(crate) struct SumOp {
    pub(crate) axis: Option<isize>,
    pub(crate) keepdim: bool,
    pub(crate) mean: bool,
}

impl SumOp {
    fn name(&self) -> &'static str {
        if self.mean { "mean" } else { "sum" }
    }
}

impl<T: Float> Op<T> for SumOp {
    fn name(&self) -> &'static str {
        SumOp::name(self)
    }
    fn params(&self) -> String {
        match self.axis {
            None => String::new(),
            Some(a) => format!("axis={a}{}", if self.keepdim { ", keepdim" } else { "" }),
        }
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        let name = SumOp::name(self);
        arity(name, x, 1)?;
        let x = x[0];
        let (mut data, shape, n) = match self.axis {
            None => (vec![x.sum_all()], Shape::new(), x.numel()),
            Some(a) => {
                let a = resolve_axis(name, a, x.ndim())?;
                (
                    kernels::sum_axis(x.data(), x.shape(), a),
                    reduced_shape(x.shape(), a, self.keepdim),
                    x.shape()[a],
                )
            }
        };
        if self.mean {
            let inv = T::ONE / T::from_usize(n);
            data.iter_mut().for_each(|d| *d *= inv);
        }
        Ok(Tensor::from_parts(shape, data))
    }
    /// The gradient spread back over the summed axes (divided by their size for a mean).
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
        let shape = cx.input(0).shape();
        let axis = self
            .axis
            .map(|a| resolve_axis(SumOp::name(self), a, shape.len()))
            .transpose()?;
        let mut g = keep_axis(g, &shape, axis);
        if self.mean {
            let n = axis.map_or(shape.iter().product(), |a| shape[a]);
            g = g.scale(T::ONE / T::from_usize(n));
        }
        Ok(cx.grads([Some(g.broadcast_to(&shape))]))
    }
}

/// Maximum (or minimum) along one axis; the gradient goes to the first maximal (minimal) element.
pub(crate) struct MaxOp {
    pub(crate) axis: isize,
    pub(crate) keepdim: bool,
    pub(crate) min: bool,
}

impl MaxOp {
    fn name(&self) -> &'static str {
        if self.min { "min" } else { "max" }
    }

    /// The first arg-max (arg-min) and the maxima (minima) along axis `a`; NaN counts as the
    /// extreme in both cases. A minimum is the maximum of `−x` (negation is exact).
    fn extremes<T: Float>(&self, x: &Tensor<T>, a: usize) -> (Vec<usize>, Vec<T>) {
        if !self.min {
            return kernels::argmax_axis(x.data(), x.shape(), a);
        }
        let neg: Vec<T> = x.data().iter().map(|&v| -v).collect();
        let (idx, vals) = kernels::argmax_axis(&neg, x.shape(), a);
        (idx, vals.into_iter().map(|v| -v).collect())
    }
}

impl<T: Float> Op<T> for MaxOp {
    fn name(&self) -> &'static str {
        MaxOp::name(self)
    }
    fn params(&self) -> String {
        format!("axis={}{}", self.axis, if self.keepdim { ", keepdim" } else { "" })
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        let name = MaxOp::name(self);
        arity(name, x, 1)?;
        let x = x[0];
        let a = resolve_axis(name, self.axis, x.ndim())?;
        if x.shape()[a] == 0 {
            return Err(Error::shape(
                name,
                format!(
                    "cannot take the {name} over the empty axis {a} of {}",
                    fmt_shape(x.shape())
                ),
            ));
        }
        // Values only, in one vectorised pass (the arg-max is the rule's, which picks the same).
        let vals = kernels::extreme_axis(x.data(), x.shape(), a, self.min);
        Ok(Tensor::from_parts(reduced_shape(x.shape(), a, self.keepdim), vals))
    }
    /// `g` at the first arg-max of each row, exactly 0 elsewhere: *selected* through a one-hot
    /// mask (a constant: the arg-max is piecewise constant), never multiplied by it, so an
    /// infinite or NaN `g` cannot leak into the zeros.
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
        let x = cx.input(0);
        let xv = x.value();
        let a = resolve_axis(MaxOp::name(self), self.axis, xv.ndim())?;
        let (idx, _) = self.extremes(&xv, a);
        let (outer, n, inner) = kernels::split_axis(xv.shape(), a);
        let mut mask = pool::filled(xv.numel(), T::ZERO);
        for o in 0..outer {
            for i in 0..inner {
                mask[(o * n + idx[o * inner + i]) * inner + i] = T::ONE;
            }
        }
        let mask = x.constant(Tensor::from_parts(shape_of(xv.shape()), mask));
        let g = keep_axis(g, xv.shape(), Some(a));
        Ok(cx.grads([Some(V::pointwise(&TakeIf, [&mask, &g]))]))
    }
}

/// Sums a tensor down to a shape it was broadcast from.
pub(crate) struct SumToOp(pub(crate) Shape);

impl<T: Float> Op<T> for SumToOp {
    fn name(&self) -> &'static str {
        "sum_to"
    }
    fn params(&self) -> String {
        format!("shape={}", fmt_shape(&self.0))
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        arity("sum_to", x, 1)?;
        let x = x[0];
        if !broadcasts_to(&self.0, x.shape()) {
            return Err(Error::shape(
                "sum_to",
                format!(
                    "{} does not broadcast to {}, so {} cannot be summed down to it",
                    fmt_shape(&self.0),
                    fmt_shape(x.shape()),
                    fmt_shape(x.shape())
                ),
            ));
        }
        Ok(Tensor::from_parts(
            self.0.clone(),
            kernels::sum_to(x.data(), x.shape(), &self.0),
        ))
    }
    /// The rule of summing down is broadcasting back up.
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
        Ok(cx.grads([Some(g.broadcast_to(&cx.input(0).shape()))]))
    }
}

impl<'t, T: Float> Var<'t, T> {
    /// Sum of all elements (a 0-d result).
    #[track_caller]
    pub fn sum(self) -> Var<'t, T> {
        self.tape.op(
            OpRef::new(SumOp {
                axis: None,
                keepdim: false,
                mean: false,
            }),
            &[self],
        )
    }

    /// Sum over one axis (negative counts from the end); `keepdim` keeps it with extent 1.
    #[track_caller]
    pub fn sum_axis(self, axis: isize, keepdim: bool) -> Var<'t, T> {
        self.tape.op(
            OpRef::new(SumOp {
                axis: Some(axis),
                keepdim,
                mean: false,
            }),
            &[self],
        )
    }

    /// Mean of all elements (a 0-d result).
    #[track_caller]
    pub fn mean(self) -> Var<'t, T> {
        self.tape.op(
            OpRef::new(SumOp {
                axis: None,
                keepdim: false,
                mean: true,
            }),
            &[self],
        )
    }

    /// Mean over one axis; `keepdim` keeps it with extent 1.
    #[track_caller]
    pub fn mean_axis(self, axis: isize, keepdim: bool) -> Var<'t, T> {
        self.tape.op(
            OpRef::new(SumOp {
                axis: Some(axis),
                keepdim,
                mean: true,
            }),
            &[self],
        )
    }

    /// Maximum over one axis; `keepdim` keeps it with extent 1. The gradient goes to the first
    /// maximal element (see the module docs on ties). NaN propagates.
    #[track_caller]
    pub fn max_axis(self, axis: isize, keepdim: bool) -> Var<'t, T> {
        self.tape.op(
            OpRef::new(MaxOp {
                axis,
                keepdim,
                min: false,
            }),
            &[self],
        )
    }

    /// Minimum over one axis; `keepdim` keeps it with extent 1. The gradient goes to the first
    /// minimal element (like [`max_axis`](Self::max_axis); `amin` splits it among ties). NaN
    /// propagates.
    ///
    /// ```
    /// let tape = tapegrad::Tape::<f64>::new();
    /// let x = tape.var(tapegrad::Tensor::from_vec(vec![3.0, 1.0, 1.0, 2.0], [2, 2]));
    /// let m = x.min_axis(1, false);
    /// assert_eq!(m.value().to_vec(), vec![1.0, 1.0]);
    /// assert_eq!(m.sum().backward()[x].to_vec(), vec![0.0, 1.0, 1.0, 0.0]);
    /// ```
    #[track_caller]
    pub fn min_axis(self, axis: isize, keepdim: bool) -> Var<'t, T> {
        self.tape.op(
            OpRef::new(MaxOp {
                axis,
                keepdim,
                min: true,
            }),
            &[self],
        )
    }

    /// Sum over one axis, kept with extent 1 (`sum_axis(axis, true)`, named: the form a row
    /// normalisation `x / x.sum_keepdim(-1)` broadcasts back).
    #[track_caller]
    pub fn sum_keepdim(self, axis: isize) -> Var<'t, T> {
        self.sum_axis(axis, true)
    }

    /// Mean over one axis, kept with extent 1 (`mean_axis(axis, true)`, named).
    #[track_caller]
    pub fn mean_keepdim(self, axis: isize) -> Var<'t, T> {
        self.mean_axis(axis, true)
    }

    /// Maximum over one axis, kept with extent 1 (`max_axis(axis, true)`, named).
    #[track_caller]
    pub fn max_keepdim(self, axis: isize) -> Var<'t, T> {
        self.max_axis(axis, true)
    }

    /// Sums down to `shape`, the inverse of broadcasting `shape` up to this variable's shape.
    /// Returns `self` unchanged (no node) when the shapes are already equal.
    #[track_caller]
    pub fn sum_to(self, shape: impl AsRef<[usize]>) -> Var<'t, T> {
        let shape = shape.as_ref();
        if self.tape.node(self.index).value.shape() == shape {
            return self;
        }
        self.tape.op(OpRef::new(SumToOp(shape_of(shape))), &[self])
    }
}

/// Random programs' and the fuzzer's call of `sum` / `mean`: over everything or over one axis.
/// Tame: an axis in range (everything for a 0-d value); wild: any small axis.
fn sum_recipe<'t, T: Float>(c: &mut Choice<'_>, v: &[Var<'t, T>], mean: bool) -> Option<Var<'t, T>> {
    let x = c.pick(v);
    let keep = c.flag();
    let axis = if c.flag() { None } else { c.axis(x.shape().len()) };
    Some(match (axis, mean) {
        (None, false) => x.sum(),
        (None, true) => x.mean(),
        (Some(a), false) => x.sum_axis(a, keep),
        (Some(a), true) => x.mean_axis(a, keep),
    })
}

/// Random programs' and the fuzzer's call of `max`. Wild: any small axis, empty axes included.
/// Tame: the maximum is not differentiable at a tie, and ties are common (a broadcast value
/// repeats itself), so the input is made tie-free first: `tanh(x)/4` lies in `(−¼, ¼)`, and a
/// constant ramp of distinct integers along the axis (in an order the choices shuffle) keeps
/// every pair of elements at least ½ apart. The gradient still flows, through the arg-max, to
/// the chosen element.
fn max_recipe<'t, T: Float>(c: &mut Choice<'_>, v: &[Var<'t, T>], min: bool) -> Option<Var<'t, T>> {
    let x = c.pick(v);
    let keep = c.flag();
    let shape = x.shape();
    let axis = c.axis(shape.len())?;
    let call = |x: Var<'t, T>| {
        if min {
            x.min_axis(axis, keep)
        } else {
            x.max_axis(axis, keep)
        }
    };
    if c.wild() {
        return Some(call(x));
    }
    let a = resolve_axis("max", axis, shape.len()).ok()?;
    let order = c.permutation(shape[a]);
    let mut ramp_shape = vec![1; shape.len()];
    ramp_shape[a] = shape[a];
    let ramp = Tensor::from_fn(&ramp_shape, |k| T::from_f64(order[k] as f64));
    let tie_free = x.tanh().mul_scalar(T::from_f64(0.25)) + x.tape().constant(ramp);
    Some(call(tie_free))
}

/// Random programs' and the fuzzer's call of `sum_to`. Tame: a shape the value was (or could
/// have been) broadcast from — leading axes dropped, others set to 1; wild: any small shape.
fn sum_to_recipe<'t, T: Float>(c: &mut Choice<'_>, v: &[Var<'t, T>]) -> Option<Var<'t, T>> {
    let x = c.pick(v);
    if c.wild() {
        return Some(x.sum_to(c.any_shape()));
    }
    let shape = x.shape();
    let drop = c.below(shape.len() + 1);
    let target: Vec<usize> = shape[drop..].iter().map(|&n| if c.flag() { 1 } else { n }).collect();
    Some(x.sum_to(target))
}

/// The minimum along an axis, as the negated maximum of the negation (both naive references).
fn min_axis_reference(x: &Tensor<f64>, axis: isize, keepdim: bool) -> Tensor<f64> {
    let m = reference::max_axis(&reference::map(x, |v| -v), axis, keepdim);
    reference::map(&m, |v| -v)
}

pub(crate) fn register(r: &mut Registry) {
    r.register(
        OpInfo::new("sum", "sum over all axes or one axis (keepdim)", || {
            let n = |s: &[usize], seed| Tensor::<f64>::rand_normal(s, 0.0, 1.0, seed);
            vec![
                sample!("all of [2,3]", [n(&[2, 3], 30)], |v| v[0].sum()).with_reference(|x| reference::sum_all(&x[0])),
                sample!("axis 0 of [2,3]", [n(&[2, 3], 31)], |v| v[0].sum_axis(0, false))
                    .with_reference(|x| reference::sum_axis(&x[0], 0, false)),
                sample!("axis 1 keepdim of [2,3]", [n(&[2, 3], 32)], |v| v[0].sum_axis(1, true))
                    .with_reference(|x| reference::sum_axis(&x[0], 1, true)),
                sample!("axis -2 of [2,3,4]", [n(&[2, 3, 4], 33)], |v| v[0].sum_axis(-2, false))
                    .with_reference(|x| reference::sum_axis(&x[0], -2, false)),
                sample!("0-d", [Tensor::scalar(0.3)], |v| v[0].sum()).with_reference(|x| reference::sum_all(&x[0])),
                sample!("[1] axis 0", [n(&[1], 34)], |v| v[0].sum_axis(0, true))
                    .with_reference(|x| reference::sum_axis(&x[0], 0, true)),
            ]
        })
        .recipe(recipe!(|c, v| sum_recipe(c, v, false))),
    );
    r.register(
        OpInfo::new("mean", "mean over all axes or one axis (keepdim)", || {
            let n = |s: &[usize], seed| Tensor::<f64>::rand_normal(s, 0.0, 1.0, seed);
            vec![
                sample!("all of [2,3]", [n(&[2, 3], 35)], |v| v[0].mean())
                    .with_reference(|x| reference::mean_all(&x[0])),
                sample!("axis 1 of [2,3,2]", [n(&[2, 3, 2], 36)], |v| v[0].mean_axis(1, false))
                    .with_reference(|x| reference::mean_axis(&x[0], 1, false)),
                sample!("axis 0 keepdim of [4,2]", [n(&[4, 2], 37)], |v| v[0].mean_axis(0, true))
                    .with_reference(|x| reference::mean_axis(&x[0], 0, true)),
                sample!("[1]", [n(&[1], 38)], |v| v[0].mean()).with_reference(|x| reference::mean_all(&x[0])),
            ]
        })
        .recipe(recipe!(|c, v| sum_recipe(c, v, true))),
    );
    r.register(
        OpInfo::new(
            "max",
            "max along one axis (keepdim); gradient to the first arg-max",
            || {
                // Distinct values, so finite differences do not straddle a tie.
                let d = |s: &[usize], seed: u64| {
                    let n: usize = s.iter().product();
                    let mut rng = crate::core::rng::Rng::new(seed);
                    let mut v: Vec<f64> = (0..n).map(|i| i as f64 * 0.37).collect();
                    for i in (1..n).rev() {
                        v.swap(i, rng.below(i + 1));
                    }
                    Tensor::from_vec(v, s)
                };
                vec![
                    sample!("axis 1 of [3,4]", [d(&[3, 4], 40)], |v| v[0].max_axis(1, false))
                        .with_reference(|x| reference::max_axis(&x[0], 1, false)),
                    sample!("axis 0 keepdim of [3,4]", [d(&[3, 4], 41)], |v| v[0].max_axis(0, true))
                        .with_reference(|x| reference::max_axis(&x[0], 0, true)),
                    sample!("axis 1 of [2,3,2]", [d(&[2, 3, 2], 42)], |v| v[0].max_axis(1, true))
                        .with_reference(|x| reference::max_axis(&x[0], 1, true)),
                    sample!("[1] axis 0", [d(&[1], 43)], |v| v[0].max_axis(0, false))
                        .with_reference(|x| reference::max_axis(&x[0], 0, false)),
                ]
            },
        )
        .recipe(recipe!(|c, v| max_recipe(c, v, false))),
    );
    r.register(
        OpInfo::new(
            "min",
            "min along one axis (keepdim); gradient to the first arg-min",
            || {
                let d = |s: &[usize], seed: u64| {
                    let n: usize = s.iter().product();
                    let mut rng = crate::core::rng::Rng::new(seed);
                    let mut v: Vec<f64> = (0..n).map(|i| i as f64 * 0.41 - 1.0).collect();
                    for i in (1..n).rev() {
                        v.swap(i, rng.below(i + 1));
                    }
                    Tensor::from_vec(v, s)
                };
                vec![
                    sample!("axis 1 of [3,4]", [d(&[3, 4], 48)], |v| v[0].min_axis(1, false))
                        .with_reference(|x| min_axis_reference(&x[0], 1, false)),
                    sample!("axis -3 keepdim of [2,3,2]", [d(&[2, 3, 2], 49)], |v| v[0]
                        .min_axis(-3, true))
                    .with_reference(|x| min_axis_reference(&x[0], -3, true)),
                    sample!("[1] axis 0", [d(&[1], 50)], |v| v[0].min_axis(0, false))
                        .with_reference(|x| min_axis_reference(&x[0], 0, false)),
                ]
            },
        )
        .recipe(recipe!(|c, v| max_recipe(c, v, true))),
    );
    r.register(
        OpInfo::new(
            "sum_to",
            "sum down to a shape that broadcasts up to the input (VJP of broadcasting)",
            || {
                let n = |s: &[usize], seed| Tensor::<f64>::rand_normal(s, 0.0, 1.0, seed);
                vec![
                    sample!("[2,3] to [3]", [n(&[2, 3], 44)], |v| v[0].sum_to([3]))
                        .with_reference(|x| reference::sum_to(&x[0], &[3])),
                    sample!("[2,3,4] to [3,1]", [n(&[2, 3, 4], 45)], |v| v[0].sum_to([3, 1]))
                        .with_reference(|x| reference::sum_to(&x[0], &[3, 1])),
                    sample!("[4,2] to []", [n(&[4, 2], 46)], |v| v[0].sum_to([]))
                        .with_reference(|x| reference::sum_to(&x[0], &[])),
                    sample!("[2,3] to [1,1]", [n(&[2, 3], 47)], |v| v[0].sum_to([1, 1]))
                        .with_reference(|x| reference::sum_to(&x[0], &[1, 1])),
                ]
            },
        )
        .recipe(recipe!(|c, v| sum_to_recipe(c, v))),
    );
}
