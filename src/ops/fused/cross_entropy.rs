//! Fused softmax cross-entropy: one op whose forward computes `Σ_rows (lse(x)·Σt − ⟨t, x⟩)`
//! stably and keeps nothing but its 0-d loss, and whose rule is the op `cross_entropy_backward`:
//! `(softmax(x)·Σt − t) · g / rows`, recomputing the softmax from the logits in one kernel (the
//! logits are on the tape anyway, so the fused op keeps no extra bytes, and the memory traffic is
//! that of saving the probabilities: the forward no longer writes them, the backward reads the
//! logits instead). Every op is a pure function of its inputs.

use super::common::keep_shape;
use super::common::{row_count, same_shape, softmax_axis};
use crate::autodiff::rule::Value;
use crate::autodiff::rule::{Cotangents, Op, VjpCtx};
use crate::autodiff::tape::{OpRef, Var};
use crate::core::error::{Error, Result, fail};
use crate::core::float::Float;
use crate::core::shape::{fmt_shape, shape_of};
use crate::ops::common::arity;
use crate::ops::fused::log_softmax::LogSoftmaxOp;
use crate::ops::fused::softmax::{SoftmaxBackwardOp, SoftmaxOp};
use crate::ops::reference;
use crate::ops::registry::Choice;
use crate::ops::registry::{Domain, NanRule, OpInfo, Registry};
use crate::tensor::Tensor;
use crate::tensor::axis::{along_axis, to_last};
use crate::tensor::kernels::rows::{
    cross_entropy_backward_probs_rows, cross_entropy_backward_rows, cross_entropy_total,
};
use crate::tensor::kernels::split_axis;
use crate::{recipe, sample};
use std::panic::Location;
use std::sync::Arc;

/// The targets of a cross-entropy loss.
#[derive(Clone, Copy, Debug)]
pub enum Target<'a, 't, T: Float> {
    /// One class index per row (the logits' shape without the class axis, flattened row-major).
    Classes(&'a [usize]),
    /// A probability distribution per row, the logits' shape. It is an input of the op, so a
    /// gradient flows to it when it is a variable.
    Probs(Var<'t, T>),
}

/// How per-row losses are combined.
///
/// Over zero rows (logits of shape `[0, C]`, say) both give PyTorch's answer: the mean is
/// `0/0 = NaN`, the sum is 0, and the gradient is an empty tensor of the logits' shape. This holds
/// for the fused [`Var::cross_entropy_with`] and the composed [`Var::cross_entropy_composed`] alike.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reduction {
    /// The mean over rows (every position but the class axis): the gradient is `(p − t) / rows`.
    /// NaN over zero rows.
    #[default]
    Mean,
    /// The sum over rows (0 over zero rows).
    Sum,
}

/// Options of [`Var::cross_entropy_with`]: the class axis and the reduction.
#[derive(Clone, Copy, Debug)]
pub struct CrossEntropy {
    /// The class axis (negative counts from the end). Default: the last.
    pub axis: isize,
    /// Mean or sum over rows. Default: mean.
    pub reduction: Reduction,
}

impl Default for CrossEntropy {
    fn default() -> Self {
        CrossEntropy {
            axis: -1,
            reduction: Reduction::Mean,
        }
    }
}

/// What the cross-entropy op and its backward op share: the class axis, the reduction and the
/// class targets (probability targets are an input). Immutable.
#[derive(Clone, Debug)]
pub(crate) struct CeSpec {
    pub(crate) axis: isize,
    pub(crate) reduction: Reduction,
    pub(crate) classes: Option<Arc<[usize]>>,
}

impl CeSpec {
    fn params(&self) -> String {
        format!(
            "axis={}, {}, {}",
            self.axis,
            if self.classes.is_some() { "classes" } else { "probs" },
            if self.reduction == Reduction::Mean {
                "mean"
            } else {
                "sum"
            }
        )
    }

    /// The gradient's factor: `1 / rows` for a mean, 1 for a sum. Over zero rows it is 1: every
    /// gradient term belongs to a row, so there is nothing to scale (the loss itself, a mean of
    /// nothing, is NaN: see [`loss`](Self::loss)).
    fn scale<T: Float>(&self, shape: &[usize], axis: usize) -> T {
        match self.reduction {
            Reduction::Mean => T::ONE / T::from_usize(row_count(shape, axis).max(1)),
            Reduction::Sum => T::ONE,
        }
    }

    /// The loss from the sum of the per-row losses: `total / rows` for a mean (NaN over zero rows,
    /// like the mean of an empty tensor and like PyTorch), `total` for a sum (0 over zero rows).
    fn loss<T: Float>(&self, total: T, shape: &[usize], axis: usize) -> T {
        if self.reduction == Reduction::Mean && row_count(shape, axis) == 0 {
            return T::NAN;
        }
        total * self.scale(shape, axis)
    }

    /// Checks the logits and the targets (the last of `x` for probability targets) and returns
    /// the resolved class axis. Zero classes are an error: no distribution lives on them.
    pub(crate) fn check<T: Float>(&self, op: &str, x: &[&Tensor<T>]) -> Result<usize> {
        let a = softmax_axis(op, self.axis, x[0])?;
        let (c, rows) = (x[0].shape()[a], row_count(x[0].shape(), a));
        if c == 0 {
            return Err(Error::shape(
                op,
                format!(
                    "logits of shape {} have no classes: the class axis {a} has size 0 \
                     (cross-entropy needs at least one class)",
                    fmt_shape(x[0].shape())
                ),
            ));
        }
        match &self.classes {
            Some(t) => {
                if t.len() != rows {
                    return Err(Error::shape(
                        op,
                        format!(
                            "{} class targets for logits of shape {} with classes on axis {a} ({rows} rows)",
                            t.len(),
                            fmt_shape(x[0].shape())
                        ),
                    ));
                }
                if let Some((i, &k)) = t.iter().enumerate().find(|&(_, &k)| k >= c) {
                    return Err(Error::shape(
                        op,
                        format!(
                            "target {i} is class {k}, but logits of shape {} have {c} classes (axis {a})",
                            fmt_shape(x[0].shape())
                        ),
                    ));
                }
            }
            None => same_shape(op, x[0], x[x.len() - 1])?,
        }
        Ok(a)
    }

    /// The class targets as a one-hot tensor in the logits' layout.
    pub(crate) fn one_hot<T: Float>(&self, shape: &[usize], axis: usize) -> Tensor<T> {
        let t = self.classes.as_ref().expect("class targets");
        let (outer, n, inner) = split_axis(shape, axis);
        let mut d = vec![T::ZERO; shape.iter().product()];
        for o in 0..outer {
            for i in 0..inner {
                d[(o * n + t[o * inner + i]) * inner + i] = T::ONE;
            }
        }
        Tensor::from_parts(shape_of(shape), d)
    }
}

/// Inputs: logits `x` (and the probability targets, when given as such). Output: a 0-d loss.
#[derive(Clone, Debug)]
pub struct CrossEntropyOp(pub(crate) CeSpec);

impl<T: Float> Op<T> for CrossEntropyOp {
    fn name(&self) -> &'static str {
        "cross_entropy"
    }
    fn params(&self) -> String {
        self.0.params()
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        let s = &self.0;
        arity("cross_entropy", x, if s.classes.is_some() { 1 } else { 2 })?;
        let a = s.check("cross_entropy", x)?;
        let logits = to_last(x[0], a);
        let n = logits.shape()[logits.ndim() - 1];
        let targets = s.classes.is_none().then(|| to_last(x[1], a));
        let total = cross_entropy_total(
            logits.data(),
            s.classes.as_deref(),
            targets.as_ref().map(|t| t.data()),
            n,
        );
        Ok(Tensor::scalar(s.loss(total, x[0].shape(), a)))
    }
    /// `(softmax(x)·Σt − t) · g / rows`: the `cross_entropy_backward` op (one kernel from the
    /// logits); for probability targets also `−log_softmax(x) · g / rows`.
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
        let x = cx.input(0);
        let shape = x.shape();
        let a = crate::ops::common::resolve_axis("cross_entropy", self.0.axis, shape.len())?;
        let back = CrossEntropyBackwardOp(self.0.clone());
        let dx = match cx.needs_grad(0) {
            false => None,
            true if self.0.classes.is_some() => Some(V::apply(back, &[x, g])?),
            true => Some(V::apply(back, &[x, g, cx.input(1)])?),
        };
        if self.0.classes.is_some() {
            return Ok(cx.grads([dx]));
        }
        let dt = match cx.needs_grad(1) {
            true => {
                let lsm = V::apply(LogSoftmaxOp { axis: self.0.axis }, &[x])?;
                Some(lsm.mul(g).scale(-self.0.scale::<T>(&shape, a)))
            }
            false => None,
        };
        Ok(cx.grads([dx, dt]))
    }
}

/// Inputs: logits `x`, the upstream gradient `g` (0-d), and the probability targets if any.
/// Output: `(softmax(x)·Σt − t) · g · scale` (`Σt = 1` per row for class targets).
#[derive(Clone, Debug)]
pub struct CrossEntropyBackwardOp(pub(crate) CeSpec);

impl<T: Float> Op<T> for CrossEntropyBackwardOp {
    fn name(&self) -> &'static str {
        "cross_entropy_backward"
    }
    fn params(&self) -> String {
        self.0.params()
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        let s = &self.0;
        arity("cross_entropy_backward", x, if s.classes.is_some() { 2 } else { 3 })?;
        let (logits, g) = (x[0], x[1]);
        let a = softmax_axis("cross_entropy_backward", s.axis, logits)?;
        let k = g.item() * s.scale::<T>(logits.shape(), a);
        Ok(match &s.classes {
            Some(t) => along_axis(&[logits], a, |d, n| cross_entropy_backward_rows(d[0], t, k, n)),
            None => along_axis(&[logits, x[2]], a, |d, n| {
                cross_entropy_backward_probs_rows(d[0], d[1], k, n)
            }),
        })
    }
    /// With `dx = (p·S − t)·g·c` (`S = Σt` per row, 1 for class targets), `p = softmax(x)`, and
    /// an upstream `u`: `∂/∂x = softmax_backward(p, u·S)·g·c`, `∂/∂g = Σ u⊙(p·S − t)·c`,
    /// `∂/∂t = (Σ u⊙p − u)·g·c`.
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, u: &V) -> Result<Cotangents<V>> {
        let s = &self.0;
        let (x, g) = (cx.input(0), cx.input(1));
        let shape = x.shape();
        let a = crate::ops::common::resolve_axis("cross_entropy_backward", s.axis, shape.len())?;
        let c = s.scale::<T>(&shape, a);
        let p = V::apply(SoftmaxOp { axis: s.axis }, &[x])?;
        let sb = |v: &V| V::apply(SoftmaxBackwardOp { axis: s.axis }, &[&p, v]);
        if s.classes.is_some() {
            let t = x.constant(s.one_hot(&shape, a));
            let dx = match cx.needs_grad(0) {
                true => Some(sb(u)?.mul(g).scale(c)),
                false => None,
            };
            let dg = cx.needs_grad(1).then(|| u.mul(&p.add(&t.neg())).sum_to(&[]).scale(c));
            return Ok(cx.grads([dx, dg]));
        }
        let t = cx.input(2);
        let st = t.sum_to(&keep_shape(&shape, a));
        let dx = match cx.needs_grad(0) {
            true => Some(sb(&u.mul(&st))?.mul(g).scale(c)),
            false => None,
        };
        let dg = cx
            .needs_grad(1)
            .then(|| u.mul(&p.mul(&st).add(&t.neg())).sum_to(&[]).scale(c));
        let dt = cx.needs_grad(2).then(|| {
            let sup = u.mul(&p).sum_to(&keep_shape(&shape, a));
            sup.add(&u.neg()).mul(g).scale(c)
        });
        Ok(cx.grads([dx, dg, dt]))
    }
}

impl<'t, T: Float> Var<'t, T> {
    /// Softmax cross-entropy of these logits (classes on the last axis, mean over rows), fused.
    /// The gradient is `(softmax(x) − t) / rows`. See [`cross_entropy_with`](Self::cross_entropy_with)
    /// (for zero rows, zero classes and the errors too).
    #[track_caller]
    pub fn cross_entropy(self, target: Target<'_, 't, T>) -> Var<'t, T> {
        self.cross_entropy_with(target, CrossEntropy::default())
    }

    /// Softmax cross-entropy with a chosen class axis and reduction, fused: one op whose forward
    /// computes `Σ_rows (logsumexp(x) − ⟨t, x⟩)` and keeps only the 0-d loss; its backward
    /// recomputes `softmax(x)` from the logits in one kernel.
    ///
    /// Over zero rows (logits `[0, C]`) the loss is NaN for a mean and 0 for a sum, with an empty
    /// gradient, as in PyTorch (see [`Reduction`]). Panics with an error naming `cross_entropy`,
    /// the logits' shape and the caller's line for a 0-d input, an axis out of range, zero
    /// classes (logits `[N, 0]`), the wrong number of class targets, a class index out of range,
    /// or probability targets whose shape is not the logits' shape.
    #[track_caller]
    pub fn cross_entropy_with(self, target: Target<'_, 't, T>, opts: CrossEntropy) -> Var<'t, T> {
        let (classes, inputs): (Option<Arc<[usize]>>, Vec<Var<'t, T>>) = match target {
            Target::Classes(c) => (Some(c.into()), vec![self]),
            Target::Probs(t) => (None, vec![self, t]),
        };
        let spec = CeSpec {
            axis: opts.axis,
            reduction: opts.reduction,
            classes,
        };
        self.tape.op(OpRef::new(CrossEntropyOp(spec)), &inputs)
    }

    /// Softmax cross-entropy composed from primitives: `−Σ t ⊙ log_softmax_composed(x)` reduced
    /// over rows (class targets become a one-hot constant).
    ///
    /// Same results as the fused [`cross_entropy_with`](Self::cross_entropy_with), zero rows
    /// included (NaN for a mean, 0 for a sum, an empty gradient), and the same checks, made before
    /// anything is recorded: its errors name `cross_entropy_composed`, the shapes and the caller's line.
    #[track_caller]
    pub fn cross_entropy_composed(self, target: Target<'_, 't, T>, opts: CrossEntropy) -> Var<'t, T> {
        const OP: &str = "cross_entropy_composed";
        let loc = Location::caller();
        let x = self.value();
        let spec = CeSpec {
            axis: opts.axis,
            reduction: opts.reduction,
            classes: match target {
                Target::Classes(c) => Some(c.into()),
                Target::Probs(_) => None,
            },
        };
        let checked = match target {
            Target::Classes(_) => spec.check(OP, &[&x]),
            Target::Probs(t) => spec.check(OP, &[&x, &t.value()]),
        };
        let a = checked.unwrap_or_else(|e| fail(e.at(loc)));
        let t = match target {
            Target::Probs(t) => t,
            Target::Classes(_) => self.tape.constant(spec.one_hot(x.shape(), a)),
        };
        let per_row = -(t * self.log_softmax_composed(opts.axis)).sum_axis(opts.axis, false);
        match opts.reduction {
            Reduction::Mean => per_row.mean(),
            Reduction::Sum => per_row.sum(),
        }
    }
}

fn ce(axis: isize, reduction: Reduction) -> CrossEntropy {
    CrossEntropy { axis, reduction }
}

/// Random programs' and the fuzzer's call of `cross_entropy`. Tame: an axis in range with at
/// least one class, a mean or a sum, and either one valid class index per row or, when the pool
/// holds a value of the logits' shape, its softmax along the axis as probability targets (which
/// get a gradient too); `None` for a 0-d value. Wild: any small axis, any value of the pool as
/// probability targets, or class targets of any count holding indices up to 2 past the last class.
fn ce_recipe<'t, T: Float>(c: &mut Choice<'_>, v: &[Var<'t, T>]) -> Option<Var<'t, T>> {
    let x = c.pick(v);
    let shape = x.shape();
    let axis = c.axis(shape.len())?;
    let reduction = if c.flag() { Reduction::Sum } else { Reduction::Mean };
    let opts = ce(axis, reduction);
    let probs = c.flag();
    let classes_along = crate::ops::common::resolve_axis("cross_entropy", axis, shape.len())
        .ok()
        .map(|a| (shape[a], row_count(&shape, a)));
    if c.wild() {
        if probs {
            return Some(x.cross_entropy_with(Target::Probs(c.pick(v)), opts));
        }
        let (n, rows) = match classes_along {
            Some((n, rows)) if c.flag() => (n, rows),
            _ => (c.below(5), c.below(8)),
        };
        let classes: Vec<usize> = (0..rows).map(|_| c.below(n + 3)).collect();
        return Some(x.cross_entropy_with(Target::Classes(&classes), opts));
    }
    let (n, rows) = classes_along.filter(|&(n, _)| n > 0)?;
    if probs {
        let start = c.below(v.len());
        let same = (0..v.len())
            .map(|k| v[(start + k) % v.len()])
            .find(|t| t.shape() == shape);
        if let Some(t) = same {
            return Some(x.cross_entropy_with(Target::Probs(t.softmax(axis)), opts));
        }
    }
    let classes: Vec<usize> = (0..rows).map(|_| c.below(n)).collect();
    Some(x.cross_entropy_with(Target::Classes(&classes), opts))
}

pub(crate) fn register(r: &mut Registry) {
    r.register(OpInfo {
        name: "cross_entropy",
        summary: "fused softmax cross-entropy (class or probability targets, mean or sum)",
        differentiable_twice: true,
        nan: NanRule::Propagates,
        domain: Domain::Real,
        recipe: Some(recipe!(|c, v| ce_recipe(c, v))),
        samples: || {
            let n = |s: &[usize], seed| Tensor::<f64>::rand_normal(s, 0.0, 1.5, seed);
            let probs = |s: &[usize], seed| {
                let u = Tensor::<f64>::rand_uniform(s, 0.1, 1.0, seed);
                let tot = u.sum_all() / (u.numel() / s[s.len() - 1]) as f64;
                u.map(|v| v / tot)
            };
            vec![
                sample!("classes [4,5] mean", [n(&[4, 5], 95)], |v| v[0]
                    .cross_entropy(Target::Classes(&[0, 4, 2, 2])))
                .with_reference(|x| reference::cross_entropy(&x[0], -1, Some(&[0, 4, 2, 2]), None, true)),
                sample!("classes [5,3] axis 0 sum", [n(&[5, 3], 96)], |v| {
                    v[0].cross_entropy_with(Target::Classes(&[4, 0, 1]), ce(0, Reduction::Sum))
                })
                .with_reference(|x| reference::cross_entropy(&x[0], 0, Some(&[4, 0, 1]), None, false)),
                sample!("classes [2,3,4] axis 1", [n(&[2, 3, 4], 97)], |v| {
                    v[0].cross_entropy_with(Target::Classes(&[2, 0, 1, 1, 0, 2, 1, 0]), ce(1, Reduction::Mean))
                })
                .with_reference(|x| reference::cross_entropy(&x[0], 1, Some(&[2, 0, 1, 1, 0, 2, 1, 0]), None, true)),
                sample!("probs [3,4] mean", [n(&[3, 4], 98), probs(&[3, 4], 99)], |v| {
                    v[0].cross_entropy(Target::Probs(v[1]))
                })
                .with_reference(|x| reference::cross_entropy(&x[0], -1, None, Some(&x[1]), true)),
                sample!("[1,1]", [n(&[1, 1], 100)], |v| v[0]
                    .cross_entropy(Target::Classes(&[0])))
                .with_reference(|x| reference::cross_entropy(&x[0], -1, Some(&[0]), None, true)),
            ]
        },
    });
    r.register(OpInfo {
        name: "cross_entropy_backward",
        summary: "(softmax(x) − t)·g/rows, the VJP of cross-entropy as an op (checked through a recorded gradient)",
        differentiable_twice: true,
        nan: NanRule::Propagates,
        domain: Domain::Real,
        recipe: None,
        samples: || {
            vec![
                sample!(
                    "classes [3,4]",
                    [Tensor::rand_normal([3, 4], 0.0, 1.5, 101), Tensor::scalar(1.7)],
                    |v| {
                        let t = v[0].tape();
                        let l = v[0].cross_entropy(Target::Classes(&[1, 3, 0])) * v[1];
                        t.grad_graph(&[l], &[t.scalar(1.0)], &[v[0]])[0]
                    }
                ),
                sample!(
                    "probs [2,3] sum",
                    [
                        Tensor::rand_normal([2, 3], 0.0, 1.5, 102),
                        Tensor::rand_uniform([2, 3], 0.0, 1.0, 103)
                    ],
                    |v| {
                        let t = v[0].tape();
                        let l = v[0].cross_entropy_with(Target::Probs(v[1]), ce(-1, Reduction::Sum));
                        t.grad_graph(&[l], &[t.scalar(1.0)], &[v[0]])[0]
                    }
                ),
            ]
        },
    });
}
