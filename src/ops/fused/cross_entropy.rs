//! Fused softmax cross-entropy: one op whose forward computes `Σ_rows (lse(x)·Σt − ⟨t, x⟩)`
//! stably and keeps nothing but its 0-d loss, and whose rule is the op `cross_entropy_backward`:
//! `(softmax(x)·Σt − t) · g / rows`, recomputing the softmax from the logits in one kernel (the
//! logits are on the tape anyway, so the fused op keeps no extra bytes, and the memory traffic is
//! that of saving the probabilities: the forward no longer writes them, the backward reads the
//! logits instead). Every op is a pure function of its inputs.

use super::common::keep_shape;
use super::common::{row_count, same_shape, softmax_axis};
use crate::autodiff::rule::{Cotangents, Op, VjpCtx};
use crate::autodiff::rule::{Elem, Pointwise, Value};
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
use crate::ops::select::Logic;
use crate::tensor::Tensor;
use crate::tensor::axis::{along_axis, to_last};
use crate::tensor::kernels::rows::{
    cross_entropy_backward_probs_rows, cross_entropy_backward_rows, cross_entropy_total, logsumexp, softmax_rows,
};
use crate::tensor::kernels::split_axis;
use crate::tensor::pool;
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

/// Options of [`Var::cross_entropy_with`] (and [`Var::cross_entropy_composed`]): the class axis,
/// the reduction, and PyTorch's `ignore_index`, class `weight` and `label_smoothing`, with
/// PyTorch's semantics exactly.
///
/// With `C` classes, weights `w` (all 1 without), smoothing `ε`, the loss of a row is
/// `−Σ_c w_c q_c log softmax(x)_c`, where `q = (1 − ε)·onehot(y) + ε/C` for a class target `y`
/// and `q = (1 − ε)·t + ε/C` for a probability target `t`. With class targets, a row whose target
/// is the ignored index contributes nothing (to the loss or the gradient), and a **mean divides
/// by `Σ w_{y_r}` over the rows not ignored** (NaN when that is 0, all rows ignored, say); with
/// probability targets a mean divides by the number of rows, and `ignore_index` has no effect.
///
/// ```
/// use tapegrad::softmax::{CrossEntropy, Reduction};
/// let opts = CrossEntropy::default().ignore_index(0).weight(&[1.0, 2.0, 0.5]).label_smoothing(0.1);
/// assert_eq!((opts.axis, opts.reduction, opts.ignore_index), (-1, Reduction::Mean, Some(0)));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct CrossEntropy {
    /// The class axis (negative counts from the end). Default: the last.
    pub axis: isize,
    /// Mean or sum over rows. Default: mean.
    pub reduction: Reduction,
    /// A class target that marks a row to ignore (it need not be a valid class, as PyTorch's
    /// `-100`). Default: none.
    pub ignore_index: Option<usize>,
    /// One weight per class (`C` of them). Default: none (all 1).
    pub weight: Option<Arc<[f64]>>,
    /// `ε` in `[0, 1]`: the target mixed with the uniform distribution, `(1 − ε)·t + ε/C`.
    /// Default: 0.
    pub label_smoothing: f64,
}

impl Default for CrossEntropy {
    fn default() -> Self {
        CrossEntropy {
            axis: -1,
            reduction: Reduction::Mean,
            ignore_index: None,
            weight: None,
            label_smoothing: 0.0,
        }
    }
}

impl CrossEntropy {
    /// The same options with the class axis `axis`.
    pub fn axis(mut self, axis: isize) -> Self {
        self.axis = axis;
        self
    }
    /// The same options with the reduction `reduction`.
    pub fn reduction(mut self, reduction: Reduction) -> Self {
        self.reduction = reduction;
        self
    }
    /// The same options ignoring rows whose class target is `index`.
    pub fn ignore_index(mut self, index: usize) -> Self {
        self.ignore_index = Some(index);
        self
    }
    /// The same options with one weight per class.
    pub fn weight(mut self, weight: &[f64]) -> Self {
        self.weight = Some(weight.into());
        self
    }
    /// The same options with label smoothing `eps` (in `[0, 1]`).
    pub fn label_smoothing(mut self, eps: f64) -> Self {
        self.label_smoothing = eps;
        self
    }
}

/// What the cross-entropy op and its backward op share: the class axis, the reduction and the
/// class targets (probability targets are an input). Immutable.
#[derive(Clone, Debug)]
pub(crate) struct CeSpec {
    pub(crate) axis: isize,
    pub(crate) reduction: Reduction,
    pub(crate) classes: Option<Arc<[usize]>>,
    pub(crate) ignore: Option<usize>,
    pub(crate) weight: Option<Arc<[f64]>>,
    pub(crate) smoothing: f64,
}

impl CeSpec {
    pub(crate) fn new(opts: &CrossEntropy, classes: Option<Arc<[usize]>>) -> Self {
        CeSpec {
            axis: opts.axis,
            reduction: opts.reduction,
            classes,
            ignore: opts.ignore_index,
            weight: opts.weight.clone(),
            smoothing: opts.label_smoothing,
        }
    }

    /// The options this spec was made from.
    pub(crate) fn options(&self) -> CrossEntropy {
        CrossEntropy {
            axis: self.axis,
            reduction: self.reduction,
            ignore_index: self.ignore,
            weight: self.weight.clone(),
            label_smoothing: self.smoothing,
        }
    }

    fn params(&self) -> String {
        let mut p = format!(
            "axis={}, {}, {}",
            self.axis,
            if self.classes.is_some() { "classes" } else { "probs" },
            if self.reduction == Reduction::Mean {
                "mean"
            } else {
                "sum"
            }
        );
        if let Some(i) = self.ignore {
            p += &format!(", ignore_index={i}");
        }
        if let Some(w) = &self.weight {
            p += &format!(", weight={w:?}");
        }
        if self.smoothing != 0.0 {
            p += &format!(", label_smoothing={}", self.smoothing);
        }
        p
    }

    /// True without ignored index, class weights or label smoothing (the one-hot fast path).
    fn plain(&self) -> bool {
        self.ignore.is_none() && self.weight.is_none() && self.smoothing == 0.0
    }

    /// The weight of class `c` (1 without weights).
    fn w(&self, c: usize) -> f64 {
        self.weight.as_ref().map_or(1.0, |w| w[c])
    }

    /// What a mean divides by: with class targets, `Σ w_{y_r}` over the rows not ignored (the
    /// row count without weights and ignored rows); with probability targets, the row count.
    fn divisor(&self, shape: &[usize], axis: usize) -> f64 {
        match &self.classes {
            Some(t) if !self.plain() => t.iter().filter(|&&k| self.ignore != Some(k)).map(|&k| self.w(k)).sum(),
            _ => row_count(shape, axis) as f64,
        }
    }

    /// The gradient's factor: `1 / divisor` for a mean (`1 / rows` without options), 1 for a
    /// sum. Over a zero divisor (zero rows, every row ignored) it is 1: every gradient term
    /// belongs to a counted row, so there is nothing to scale (the loss itself, a mean of
    /// nothing, is NaN: see [`loss`](Self::loss)).
    fn scale<T: Float>(&self, shape: &[usize], axis: usize) -> T {
        match self.reduction {
            Reduction::Mean => match self.divisor(shape, axis) {
                0.0 => T::ONE,
                d => T::ONE / T::from_f64(d),
            },
            Reduction::Sum => T::ONE,
        }
    }

    /// The loss from the sum of the per-row losses: `total / divisor` for a mean (NaN over a
    /// zero divisor — zero rows, or every row ignored — like PyTorch), `total` for a sum.
    fn loss<T: Float>(&self, total: T, shape: &[usize], axis: usize) -> T {
        if self.reduction == Reduction::Mean && self.divisor(shape, axis) == 0.0 {
            return T::NAN;
        }
        total * self.scale(shape, axis)
    }

    /// The class weights as a tensor broadcasting along `axis` of `shape` (ones without weights).
    fn weight_along<T: Float>(&self, shape: &[usize], axis: usize) -> Tensor<T> {
        let mut s = vec![1; shape.len()];
        s[axis] = shape[axis];
        Tensor::from_fn(s, |c| T::from_f64(self.w(c)))
    }

    /// The effective probability targets `((1 − ε)·t + ε/C) ⊙ w` (`t` itself without options),
    /// in any interpretation (on tensors for the forward, recorded in rules).
    fn probs_target<T: Float, V: Value<T>>(&self, t: &V, shape: &[usize], axis: usize) -> V {
        if self.plain() {
            return t.clone();
        }
        let eps = self.smoothing;
        let uniform = t.constant(Tensor::scalar(T::from_f64(eps / shape[axis] as f64)));
        let w = t.constant(self.weight_along(shape, axis));
        t.scale(T::from_f64(1.0 - eps)).add(&uniform).mul(&w)
    }

    /// The class targets as a dense tensor in the logits' layout: `w_c·((1 − ε)·[c = y_r] + ε/C)`
    /// per row, zero rows where the target is ignored (the one-hot targets without options).
    pub(crate) fn class_target<T: Float>(&self, shape: &[usize], axis: usize) -> Tensor<T> {
        let t = self.classes.as_ref().expect("class targets");
        let (outer, n, inner) = split_axis(shape, axis);
        let eps = self.smoothing;
        // Each class's value off and on target, computed once (the same arithmetic per element
        // as `w_c·((1 − ε)·[c = y] + ε/C)`), then copied into place row by row.
        let q = |hit: bool| (1.0 - eps) * f64::from(u8::from(hit)) + eps / n as f64;
        let off: Vec<T> = (0..n).map(|c| T::from_f64(self.w(c) * q(false))).collect();
        let on: Vec<T> = (0..n).map(|c| T::from_f64(self.w(c) * q(true))).collect();
        let mut d = pool::filled(shape.iter().product(), T::ZERO);
        for o in 0..outer {
            for i in 0..inner {
                let y = t[o * inner + i];
                if self.ignore == Some(y) {
                    continue;
                }
                if inner == 1 {
                    let row = &mut d[o * n..(o + 1) * n];
                    if eps != 0.0 || self.weight.is_some() {
                        row.copy_from_slice(&off);
                    }
                    if let Some(v) = row.get_mut(y) {
                        *v = on[y]; // (a target out of range was refused by `check`)
                    }
                    continue;
                }
                for c in 0..n {
                    d[(o * n + c) * inner + i] = if c == y { on[c] } else { off[c] };
                }
            }
        }
        Tensor::from_parts(shape_of(shape), d)
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
        if !(0.0..=1.0).contains(&self.smoothing) {
            return Err(Error::shape(
                op,
                format!("label smoothing must lie in [0, 1], got {}", self.smoothing),
            ));
        }
        if let Some(w) = &self.weight
            && w.len() != c
        {
            return Err(Error::shape(
                op,
                format!(
                    "{} class weights for logits of shape {} with {c} classes (axis {a})",
                    w.len(),
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
                if let Some((i, &k)) = t.iter().enumerate().find(|&(_, &k)| k >= c && self.ignore != Some(k)) {
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
        if s.classes.is_some() && !s.plain() {
            let t = to_last(&s.class_target::<T>(x[0].shape(), a), a);
            let total = dense_total(logits.data(), t.data(), n);
            return Ok(Tensor::scalar(s.loss(total, x[0].shape(), a)));
        }
        let targets = s
            .classes
            .is_none()
            .then(|| to_last(&s.probs_target(x[1], x[0].shape(), a), a));
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
                let dt = lsm.mul(g).scale(-self.0.scale::<T>(&shape, a));
                Some(match self.0.plain() {
                    true => dt,
                    // t enters as ((1 − ε)·t + ε/C) ⊙ w.
                    false => dt
                        .mul(&x.constant(self.0.weight_along(&shape, a)))
                        .scale(T::from_f64(1.0 - self.0.smoothing)),
                })
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
            Some(_) if !s.plain() => {
                let t = s.class_target::<T>(logits.shape(), a);
                along_axis(&[logits, &t], a, |d, n| dense_backward_rows(d[0], d[1], k, n))
            }
            Some(t) => along_axis(&[logits], a, |d, n| cross_entropy_backward_rows(d[0], t, k, n)),
            None => {
                let t = s.probs_target(x[2], logits.shape(), a);
                along_axis(&[logits, &t], a, |d, n| {
                    cross_entropy_backward_probs_rows(d[0], d[1], k, n)
                })
            }
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
        if s.classes.is_some() && !s.plain() {
            // Rows with an all-zero target (ignored) are constant 0: their gradients are selected
            // away, never multiplied by a mask.
            let tv = s.class_target::<T>(&shape, a);
            let st_v = tv.sum_to(&keep_shape(&shape, a));
            let live = x.constant(st_v.map(|v| if v != T::ZERO { T::ONE } else { T::ZERO }));
            let (t, st) = (x.constant(tv), x.constant(st_v));
            let dx = match cx.needs_grad(0) {
                true => Some(V::pointwise(&Keep, [&live, &sb(&u.mul(&st))?.mul(g).scale(c)])),
                false => None,
            };
            let dg = cx.needs_grad(1).then(|| {
                let per = u.mul(&p.mul(&st).add(&t.neg()));
                V::pointwise(&Keep, [&live, &per]).sum_to(&[]).scale(c)
            });
            return Ok(cx.grads([dx, dg]));
        }
        if s.classes.is_some() {
            let t = x.constant(s.class_target(&shape, a));
            let dx = match cx.needs_grad(0) {
                true => Some(sb(u)?.mul(g).scale(c)),
                false => None,
            };
            let dg = cx.needs_grad(1).then(|| u.mul(&p.add(&t.neg())).sum_to(&[]).scale(c));
            return Ok(cx.grads([dx, dg]));
        }
        let t = &s.probs_target(cx.input(2), &shape, a);
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
            let dt = sup.add(&u.neg()).mul(g).scale(c);
            match s.plain() {
                true => dt,
                false => dt
                    .mul(&x.constant(s.weight_along(&shape, a)))
                    .scale(T::from_f64(1.0 - s.smoothing)),
            }
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
        let spec = CeSpec::new(&opts, classes);
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
        let x = self.peek();
        let spec = CeSpec::new(
            &opts,
            match target {
                Target::Classes(c) => Some(c.into()),
                Target::Probs(_) => None,
            },
        );
        let checked = match target {
            Target::Classes(_) => spec.check(OP, &[&x]),
            Target::Probs(t) => spec.check(OP, &[&x, &t.peek()]),
        };
        let a = checked.unwrap_or_else(|e| fail(e.at(loc)));
        let lsm = self.log_softmax_composed(opts.axis);
        if let (Target::Classes(_), false) = (target, spec.plain()) {
            // Ignored rows are selected away (a NaN logit in one stays out of the loss).
            let t = spec.class_target::<T>(x.shape(), a);
            let live = t
                .sum_to(&keep_shape(x.shape(), a))
                .map(|v| if v != T::ZERO { T::ONE } else { T::ZERO });
            let per_row = -(self.tape.constant(t) * lsm).sum_keepdim(opts.axis);
            let per_row = self.tape.constant(live).select(per_row, self.tape.scalar(T::ZERO));
            return match (opts.reduction, spec.divisor(x.shape(), a)) {
                (Reduction::Sum, _) => per_row.sum(),
                (Reduction::Mean, 0.0) => per_row.sum() + T::NAN,
                (Reduction::Mean, d) => per_row.sum() * T::from_f64(1.0 / d),
            };
        }
        let t = match target {
            Target::Probs(t) => {
                let (w, eps) = (spec.weight_along::<T>(x.shape(), a), opts.label_smoothing);
                match spec.plain() {
                    true => t,
                    false => {
                        (t * T::from_f64(1.0 - eps) + T::from_f64(eps / x.shape()[a] as f64)) * self.tape.constant(w)
                    }
                }
            }
            Target::Classes(_) => self.tape.constant(spec.class_target(x.shape(), a)),
        };
        let per_row = -(t * lsm).sum_axis(opts.axis, false);
        match opts.reduction {
            Reduction::Mean => per_row.mean(),
            Reduction::Sum => per_row.sum(),
        }
    }
}

/// Class weights for samples with four classes.
const CE_W4: [f64; 4] = [1.0, 0.5, 2.0, 1.5];

fn ce(axis: isize, reduction: Reduction) -> CrossEntropy {
    CrossEntropy::default().axis(axis).reduction(reduction)
}

/// `on` where `live` is non-zero, exactly 0 elsewhere (a select, not a product).
struct Keep;
impl<T: Float> Pointwise<T, 2> for Keep {
    #[inline(always)]
    fn eval<E: Elem<T>>(&self, [live, on]: [E; 2]) -> E {
        live.select(on, on.lit(T::ZERO))
    }
}

/// `Σ_rows Σ_c t_c·(lse(x) − x_c)` over rows of length `n` of the logits and a dense target,
/// skipping terms with `t_c = 0` (so a row with an all-zero target — an ignored row — adds
/// nothing, whatever its logits, and a zero-target class never turns `0 · ∞` into NaN).
fn dense_total<T: Float>(x: &[T], t: &[T], n: usize) -> T {
    if n == 0 {
        return T::ZERO;
    }
    let mut scratch = vec![T::ZERO; n];
    let mut total = T::ZERO;
    for (xr, tr) in x.chunks_exact(n).zip(t.chunks_exact(n)) {
        if tr.iter().all(|&v| v == T::ZERO) {
            continue;
        }
        let lse = logsumexp(xr, &mut scratch);
        for (&v, &tc) in xr.iter().zip(tr) {
            if tc != T::ZERO {
                total += tc * (lse - v);
            }
        }
    }
    total
}

/// `dx = (softmax(x)·S − t)·k` row by row (`S = Σ t` per row) for a dense target; exactly 0 on
/// rows whose target is all zero (ignored rows).
fn dense_backward_rows<T: Float>(x: &[T], t: &[T], k: T, n: usize) -> Vec<T> {
    let mut out = softmax_rows(x, n);
    for (row, tr) in out.chunks_exact_mut(n).zip(t.chunks_exact(n)) {
        let st = tr.iter().fold(T::ZERO, |a, &b| a + b);
        if tr.iter().all(|&v| v == T::ZERO) {
            row.iter_mut().for_each(|v| *v = T::ZERO);
            continue;
        }
        row.iter_mut().zip(tr).for_each(|(p, &t)| *p = (*p * st - t) * k);
    }
    out
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

/// The naive `f64` cross-entropy with options, PyTorch's formula as written: `log p` by a naive
/// log-softmax per row, then with class targets `(1 − ε)·nll + (ε/C)·smooth`, `nll = −Σ w_y log p_y`,
/// `smooth = −Σ_c w_c log p_c` over rows not ignored, each divided by `Σ w_y` for a mean; with
/// probability targets `−Σ_c w_c ((1 − ε) t_c + ε/C) log p_c`, divided by the rows for a mean.
#[allow(clippy::too_many_arguments)]
fn reference_with_options(
    x: &Tensor<f64>,
    axis: usize,
    classes: Option<&[usize]>,
    probs: Option<&Tensor<f64>>,
    ignore: Option<usize>,
    weight: Option<&[f64]>,
    eps: f64,
    mean: bool,
) -> Tensor<f64> {
    let s = x.shape();
    let outer: usize = s[..axis].iter().product();
    let n = s[axis];
    let inner: usize = s[axis + 1..].iter().product();
    let w = |c: usize| weight.map_or(1.0, |w| w[c]);
    let (mut nll, mut smooth, mut soft, mut denom) = (0.0, 0.0, 0.0, 0.0);
    for o in 0..outer {
        for i in 0..inner {
            let at = |c: usize| (o * n + c) * inner + i;
            let m = (0..n).map(|c| x.data()[at(c)]).fold(f64::NEG_INFINITY, f64::max);
            let lse = m + (0..n).map(|c| (x.data()[at(c)] - m).exp()).sum::<f64>().ln();
            let logp = |c: usize| x.data()[at(c)] - lse;
            match (classes, probs) {
                (Some(t), _) => {
                    let y = t[o * inner + i];
                    if ignore == Some(y) {
                        continue;
                    }
                    nll -= w(y) * logp(y);
                    denom += w(y);
                    for c in 0..n {
                        smooth -= w(c) * logp(c);
                    }
                }
                (None, Some(t)) => {
                    for c in 0..n {
                        soft -= w(c) * ((1.0 - eps) * t.data()[at(c)] + eps / n as f64) * logp(c);
                    }
                    denom += 1.0;
                }
                (None, None) => panic!("reference: cross-entropy without targets"),
            }
        }
    }
    let d = if mean { denom } else { 1.0 };
    Tensor::scalar(match classes {
        Some(_) => (1.0 - eps) * nll / d + eps / n as f64 * smooth / d,
        None => soft / d,
    })
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
                sample!(
                    "classes [5,4] ignore 2, weight, smoothing 0.1",
                    [n(&[5, 4], 760)],
                    |v| {
                        let o = CrossEntropy::default()
                            .ignore_index(2)
                            .weight(&CE_W4)
                            .label_smoothing(0.1);
                        v[0].cross_entropy_with(Target::Classes(&[0, 2, 3, 1, 2]), o)
                    }
                )
                .with_reference(|x| {
                    let t = [0, 2, 3, 1, 2];
                    reference_with_options(&x[0], 1, Some(&t), None, Some(2), Some(&CE_W4), 0.1, true)
                }),
                sample!("classes [2,3,4] axis 1, weight, sum", [n(&[2, 3, 4], 761)], |v| {
                    let o = ce(1, Reduction::Sum).weight(&[0.5, 2.0, 1.5]);
                    v[0].cross_entropy_with(Target::Classes(&[2, 0, 1, 1, 0, 2, 1, 0]), o)
                })
                .with_reference(|x| {
                    let t = [2, 0, 1, 1, 0, 2, 1, 0];
                    reference_with_options(&x[0], 1, Some(&t), None, None, Some(&[0.5, 2.0, 1.5]), 0.0, false)
                }),
                sample!(
                    "classes [4,3] ignore 7 (not a class), smoothing 0.3, sum",
                    [n(&[4, 3], 762)],
                    |v| {
                        let o = ce(-1, Reduction::Sum).ignore_index(7).label_smoothing(0.3);
                        v[0].cross_entropy_with(Target::Classes(&[7, 0, 2, 7]), o)
                    }
                )
                .with_reference(|x| {
                    reference_with_options(&x[0], 1, Some(&[7, 0, 2, 7]), None, Some(7), None, 0.3, false)
                }),
                sample!(
                    "probs [3,4] weight, smoothing 0.2",
                    [n(&[3, 4], 763), probs(&[3, 4], 764)],
                    |v| {
                        let o = CrossEntropy::default().weight(&CE_W4).label_smoothing(0.2);
                        v[0].cross_entropy_with(Target::Probs(v[1]), o)
                    }
                )
                .with_reference(|x| reference_with_options(&x[0], 1, None, Some(&x[1]), None, Some(&CE_W4), 0.2, true)),
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
                    "classes [4,3] ignore 1, weight, smoothing 0.2",
                    [Tensor::rand_normal([4, 3], 0.0, 1.5, 765), Tensor::scalar(0.8)],
                    |v| {
                        let t = v[0].tape();
                        let o = CrossEntropy::default()
                            .ignore_index(1)
                            .weight(&[0.5, 1.0, 2.0])
                            .label_smoothing(0.2);
                        let l = v[0].cross_entropy_with(Target::Classes(&[0, 1, 2, 2]), o) * v[1];
                        t.grad_graph(&[l], &[t.scalar(1.0)], &[v[0]])[0]
                    }
                ),
                sample!(
                    "probs [2,3] weight, smoothing 0.1",
                    [
                        Tensor::rand_normal([2, 3], 0.0, 1.5, 766),
                        Tensor::rand_uniform([2, 3], 0.0, 1.0, 767)
                    ],
                    |v| {
                        let t = v[0].tape();
                        let o = CrossEntropy::default().weight(&[0.5, 1.0, 2.0]).label_smoothing(0.1);
                        let l = v[0].cross_entropy_with(Target::Probs(v[1]), o);
                        t.grad_graph(&[l], &[t.scalar(1.0)], &[v[0], v[1]])[0]
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
