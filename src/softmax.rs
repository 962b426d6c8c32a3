//! Softmax three ways, side by side: composed from primitives, fused, and with cross-entropy.
//!
//! * [`Var::softmax_composed`]: `m = max(x)` (detached: softmax is shift-invariant, so this is
//!   exact), `e = exp(x − m)`, `y = e / Σe`. **No custom rule anywhere**: its gradient comes from
//!   the rules of `max`, `sub`, `exp`, `sum` and `div` alone — the cross terms `−y_j y_k` included.
//! * [`Var::softmax_naive`]: `exp(x) / Σ exp(x)`, for teaching. It overflows: `exp(710)` is `+∞`
//!   in `f64` (`exp(89)` in `f32`), so logits of a few hundred give `∞/∞ = NaN`.
//! * [`Var::softmax`]: one fused op. Its forward is one pass per row (max, exp and sum, scale);
//!   its VJP is the closed form `y ⊙ (g − Σ g⊙y)`, which needs only the saved output `y`. That VJP
//!   is itself an op (`softmax_backward`) with its own rule, so gradients of gradients work
//!   through the fused path too.
//! * [`Var::log_softmax`] (fused, VJP `g − softmax(x)·Σg`) and [`Var::log_softmax_composed`]
//!   (`x − m − log Σ exp(x − m)`).
//! * [`Var::cross_entropy`] with class-index or probability targets, mean or sum over the rows;
//!   its fused gradient is `(softmax(x) − t) / batch`. [`Var::cross_entropy_composed`] beside it.
//!
//! All work along any axis, in `f32` and `f64`.
//!
//! ```
//! use tapegrad::{Tape, Tensor};
//! use tapegrad::softmax::Target;
//! let tape = Tape::<f64>::new();
//! let x = tape.var(Tensor::from_vec(vec![1.0, 2.0, 3.0, 0.0, 0.0, 0.0], [2, 3]));
//! let fused = x.softmax(1);
//! let composed = x.softmax_composed(1);
//! assert!(fused.value().max_abs_diff(&composed.value()) < 1e-15);
//! let loss = x.cross_entropy(Target::Classes(&[2, 0]));
//! let g = loss.backward();
//! // (softmax(x) − onehot(t)) / batch
//! let y = fused.value();
//! assert!((g[x].get(&[0, 2]) - (y.get(&[0, 2]) - 1.0) / 2.0).abs() < 1e-15);
//! ```

use crate::autodiff::op::{Cotangents, EagerCtx, Op, TensorGrads, VjpCtx};
use crate::autodiff::tape::{OpRef, Var};
use crate::core::error::{Error, Result, fail};
use crate::core::float::Float;
use crate::core::shape::{fmt_shape, numel, shape_of};
use crate::ops::{NanRule, OpInfo, Registry, arity, resolve_axis};
use crate::sample;
use crate::tensor::{Tensor, kernels, pool};
use std::cell::RefCell;
use std::panic::Location;
use std::rc::Rc;

// ---------------------------------------------------------------------------------------------
// Row kernels. Each works on contiguous rows of length `n` (the softmax axis last); other axes
// are handled by `along_last`, which moves the axis to the end and back.
// ---------------------------------------------------------------------------------------------

/// `y = softmax(x)` row by row: max, exp(x − max) with the sum, scale by 1/sum.
///
/// A NaN in a row makes that whole row NaN (through the sum), without a separate check.
fn softmax_rows<T: Float>(x: &[T], n: usize) -> Vec<T> {
    let mut out = pool::alloc(x.len());
    for xr in x.chunks_exact(n) {
        let m = kernels::max_ignoring_nan(xr);
        let start = out.len();
        out.extend(xr.iter().map(|&v| v - m));
        let row = &mut out[start..];
        kernels::exp_inplace(row);
        let inv = T::ONE / kernels::sum_slice(row);
        row.iter_mut().for_each(|v| *v *= inv);
    }
    out
}

/// `dx = y ⊙ (g − Σ g⊙y)` row by row.
fn softmax_backward_rows<T: Float>(y: &[T], g: &[T], n: usize) -> Vec<T> {
    let mut out = pool::alloc(y.len());
    for (yr, gr) in y.chunks_exact(n).zip(g.chunks_exact(n)) {
        let s = kernels::dot(yr, gr);
        out.extend(yr.iter().zip(gr).map(|(&y, &g)| y * (g - s)));
    }
    out
}

/// `x − m − log Σ exp(x − m)` row by row.
fn log_softmax_rows<T: Float>(x: &[T], n: usize) -> Vec<T> {
    let mut out = pool::copy(x);
    for (row, xr) in out.chunks_exact_mut(n).zip(x.chunks_exact(n)) {
        let lse = logsumexp(xr, row);
        row.iter_mut().zip(xr).for_each(|(o, &v)| *o = v - lse);
    }
    out
}

/// `dx = g − exp(out) · Σg` row by row.
fn log_softmax_backward_rows<T: Float>(out: &[T], g: &[T], n: usize) -> Vec<T> {
    let mut dx = pool::copy(out);
    for (d, gr) in dx.chunks_exact_mut(n).zip(g.chunks_exact(n)) {
        let s = kernels::sum_slice(gr);
        kernels::exp_inplace(d);
        d.iter_mut().zip(gr).for_each(|(d, &g)| *d = g - *d * s);
    }
    dx
}

/// `log Σ exp(x)` of one row, using `scratch` (same length) for the exponentials.
fn logsumexp<T: Float>(x: &[T], scratch: &mut [T]) -> T {
    // A NaN is ignored here but reaches the result through exp and the sum.
    let m = kernels::max_ignoring_nan(x);
    if !m.is_finite() {
        // All −∞ (log 0 = −∞), or a +∞ that must propagate.
        return m;
    }
    scratch.iter_mut().zip(x).for_each(|(s, &v)| *s = v - m);
    kernels::exp_inplace(scratch);
    m + kernels::sum_slice(scratch).ln()
}

/// The permutation that moves `axis` to the end, keeping the other axes in order (so rows come
/// in the row-major order of the remaining axes), and its inverse.
fn axis_to_end(ndim: usize, axis: usize) -> (Vec<usize>, Vec<usize>) {
    let mut perm: Vec<usize> = (0..ndim).filter(|&a| a != axis).collect();
    perm.push(axis);
    let mut inv = vec![0; ndim];
    for (i, &p) in perm.iter().enumerate() {
        inv[p] = i;
    }
    (perm, inv)
}

/// Moves `axis` to the end (a copy, unless it already is last).
fn to_last<T: Float>(x: &Tensor<T>, axis: usize) -> Tensor<T> {
    if axis + 1 == x.ndim() {
        x.clone()
    } else {
        x.permute(axis_to_end(x.ndim(), axis).0)
    }
}

/// Moves the last axis back to position `axis` (the inverse of [`to_last`]).
fn from_last<T: Float>(x: Tensor<T>, axis: usize) -> Tensor<T> {
    if axis + 1 == x.ndim() {
        x
    } else {
        x.permute(axis_to_end(x.ndim(), axis).1)
    }
}

/// Runs a row kernel along `axis` of same-shaped inputs and returns the result in the input layout.
fn along_axis<T: Float>(inputs: &[&Tensor<T>], axis: usize, f: impl Fn(&[&[T]], usize) -> Vec<T>) -> Tensor<T> {
    let n = inputs[0].shape()[axis];
    let moved: Vec<Tensor<T>> = inputs.iter().map(|t| to_last(t, axis)).collect();
    let data: Vec<&[T]> = moved.iter().map(|t| t.data()).collect();
    let out = Tensor::from_parts(
        shape_of(moved[0].shape()),
        if n == 0 { Vec::new() } else { f(&data, n) },
    );
    from_last(out, axis)
}

/// Resolves the axis of a softmax-family op; 0-d inputs are rejected with the op's name, and an
/// axis out of range with the op's name and the input's shape.
fn softmax_axis<T: Float>(op: &str, axis: isize, x: &Tensor<T>) -> Result<usize> {
    if x.ndim() == 0 {
        return Err(Error::shape(
            op,
            "needs at least one axis; got a 0-d value (reshape it to [1])",
        ));
    }
    resolve_axis(op, axis, x.ndim())
        .map_err(|e| Error::shape(op, format!("{} (shape {})", e.message(), fmt_shape(x.shape()))))
}

/// The number of rows of `shape` with classes (or the softmax) along `axis`: the product of the
/// other extents (0 when any of them is 0, however long the axis).
fn row_count(shape: &[usize], axis: usize) -> usize {
    shape
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != axis)
        .map(|(_, &n)| n)
        .product()
}

fn same_shape<T: Float>(op: &str, a: &Tensor<T>, b: &Tensor<T>) -> Result<()> {
    if a.shape() == b.shape() {
        Ok(())
    } else {
        Err(Error::shape(
            op,
            format!(
                "inputs must have one shape, got {} and {}",
                fmt_shape(a.shape()),
                fmt_shape(b.shape())
            ),
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Fused softmax and its backward op.
// ---------------------------------------------------------------------------------------------

struct SoftmaxOp {
    axis: isize,
}

impl<T: Float> Op<T> for SoftmaxOp {
    fn name(&self) -> &'static str {
        "softmax"
    }
    fn params(&self) -> String {
        format!("axis={}", self.axis)
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        arity("softmax", x, 1)?;
        let a = softmax_axis("softmax", self.axis, x[0])?;
        Ok(along_axis(x, a, |d, n| softmax_rows(d[0], n)))
    }
    fn vjp_tensors(&self, cx: &EagerCtx<'_, T>, g: &Tensor<T>) -> Option<TensorGrads<T>> {
        let y = cx.output();
        let a = softmax_axis("softmax", self.axis, y).ok()?;
        Some(cx.grads([&|| along_axis(&[y, g], a, |d, n| softmax_backward_rows(d[0], d[1], n))]))
    }
    /// `y ⊙ (g − Σ g⊙y)`, recorded as the `softmax_backward` op on the saved output.
    fn vjp<'t>(&self, cx: &VjpCtx<'_, 't, T>, g: Var<'t, T>) -> Result<Cotangents<'t, T>> {
        Ok(cx.grads([Some(softmax_backward(cx.output(), g, self.axis))]))
    }
}

/// `dx = y ⊙ (g − Σ g⊙y)`: the VJP of softmax as an op of its own, so it can be differentiated.
struct SoftmaxBackwardOp {
    axis: isize,
}

impl<T: Float> Op<T> for SoftmaxBackwardOp {
    fn name(&self) -> &'static str {
        "softmax_backward"
    }
    fn params(&self) -> String {
        format!("axis={}", self.axis)
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        arity("softmax_backward", x, 2)?;
        same_shape("softmax_backward", x[0], x[1])?;
        let a = softmax_axis("softmax_backward", self.axis, x[0])?;
        Ok(along_axis(x, a, |d, n| softmax_backward_rows(d[0], d[1], n)))
    }
    /// With `dx_i = y_i g_i − y_i s`, `s = Σ g⊙y`, and an upstream `u`:
    /// `∂/∂g = y ⊙ (u − Σ u⊙y)` (softmax_backward again) and `∂/∂y = u ⊙ (g − s) − g · Σ u⊙y`.
    fn vjp<'t>(&self, cx: &VjpCtx<'_, 't, T>, u: Var<'t, T>) -> Result<Cotangents<'t, T>> {
        let (y, g, a) = (cx.input(0), cx.input(1), self.axis);
        let dy = cx.needs_grad(0).then(|| {
            let s = (g * y).sum_axis(a, true);
            u * (g - s) - g * (u * y).sum_axis(a, true)
        });
        let dg = cx.needs_grad(1).then(|| softmax_backward(y, u, a));
        Ok(cx.grads([dy, dg]))
    }
}

fn softmax_backward<'t, T: Float>(y: Var<'t, T>, g: Var<'t, T>, axis: isize) -> Var<'t, T> {
    y.tape.op(OpRef::Shared(Rc::new(SoftmaxBackwardOp { axis })), &[y, g])
}

// ---------------------------------------------------------------------------------------------
// Fused log-softmax and its backward op.
// ---------------------------------------------------------------------------------------------

struct LogSoftmaxOp {
    axis: isize,
}

impl<T: Float> Op<T> for LogSoftmaxOp {
    fn name(&self) -> &'static str {
        "log_softmax"
    }
    fn params(&self) -> String {
        format!("axis={}", self.axis)
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        arity("log_softmax", x, 1)?;
        let a = softmax_axis("log_softmax", self.axis, x[0])?;
        Ok(along_axis(x, a, |d, n| log_softmax_rows(d[0], n)))
    }
    fn vjp_tensors(&self, cx: &EagerCtx<'_, T>, g: &Tensor<T>) -> Option<TensorGrads<T>> {
        let out = cx.output();
        let a = softmax_axis("log_softmax", self.axis, out).ok()?;
        Some(cx.grads([&|| along_axis(&[out, g], a, |d, n| log_softmax_backward_rows(d[0], d[1], n))]))
    }
    /// `g − softmax(x) · Σg`, recorded as `log_softmax_backward` on the saved output.
    fn vjp<'t>(&self, cx: &VjpCtx<'_, 't, T>, g: Var<'t, T>) -> Result<Cotangents<'t, T>> {
        let out = cx.output();
        Ok(cx.grads([Some(out.tape.op(
            OpRef::Shared(Rc::new(LogSoftmaxBackwardOp { axis: self.axis })),
            &[out, g],
        ))]))
    }
}

/// `dx = g − exp(out) · Σg` with `out = log_softmax(x)`.
struct LogSoftmaxBackwardOp {
    axis: isize,
}

impl<T: Float> Op<T> for LogSoftmaxBackwardOp {
    fn name(&self) -> &'static str {
        "log_softmax_backward"
    }
    fn params(&self) -> String {
        format!("axis={}", self.axis)
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        arity("log_softmax_backward", x, 2)?;
        same_shape("log_softmax_backward", x[0], x[1])?;
        let a = softmax_axis("log_softmax_backward", self.axis, x[0])?;
        Ok(along_axis(x, a, |d, n| log_softmax_backward_rows(d[0], d[1], n)))
    }
    /// With `p = exp(out)` and an upstream `u`: `∂/∂g = u − Σ u⊙p`, `∂/∂out = −u ⊙ p · Σg`.
    fn vjp<'t>(&self, cx: &VjpCtx<'_, 't, T>, u: Var<'t, T>) -> Result<Cotangents<'t, T>> {
        let (out, g, a) = (cx.input(0), cx.input(1), self.axis);
        let p = out.exp();
        let d_out = cx.needs_grad(0).then(|| -(u * p * g.sum_axis(a, true)));
        let d_g = cx.needs_grad(1).then(|| u - (u * p).sum_axis(a, true));
        Ok(cx.grads([d_out, d_g]))
    }
}

// ---------------------------------------------------------------------------------------------
// Cross-entropy.
// ---------------------------------------------------------------------------------------------

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

/// State shared by the cross-entropy op and its backward op: the targets, and the softmax the
/// forward computed (the one thing the backward needs).
struct CeShared<T: Float> {
    axis: isize,
    reduction: Reduction,
    classes: Option<Rc<[usize]>>,
    probs: RefCell<Option<Tensor<T>>>,
}

impl<T: Float> CeShared<T> {
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
    fn scale(&self, x: &Tensor<T>, axis: usize) -> T {
        match self.reduction {
            Reduction::Mean => T::ONE / T::from_usize(row_count(x.shape(), axis).max(1)),
            Reduction::Sum => T::ONE,
        }
    }

    /// The loss from the sum of the per-row losses: `total / rows` for a mean (NaN over zero rows,
    /// like the mean of an empty tensor and like PyTorch), `total` for a sum (0 over zero rows).
    fn loss(&self, total: T, x: &Tensor<T>, axis: usize) -> T {
        if self.reduction == Reduction::Mean && row_count(x.shape(), axis) == 0 {
            return T::NAN;
        }
        total * self.scale(x, axis)
    }

    /// Checks the logits and the targets (the last of `x` for probability targets) and returns
    /// the resolved class axis. Zero classes are an error: no distribution lives on them.
    fn check(&self, op: &str, x: &[&Tensor<T>]) -> Result<usize> {
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

    /// The targets as a dense tensor in the logits' layout (one-hot for class indices).
    fn dense(&self, x: &Tensor<T>, axis: usize, probs: Option<&Tensor<T>>) -> Tensor<T> {
        match &self.classes {
            None => probs.expect("probability targets are an input").clone(),
            Some(t) => {
                let (outer, n, inner) = kernels::split_axis(x.shape(), axis);
                let mut d = vec![T::ZERO; x.numel()];
                for o in 0..outer {
                    for i in 0..inner {
                        d[(o * n + t[o * inner + i]) * inner + i] = T::ONE;
                    }
                }
                Tensor::from_parts(shape_of(x.shape()), d)
            }
        }
    }
}

/// Inputs: logits `x` (and the probability targets, when given as such). Output: a 0-d loss.
struct CrossEntropyOp<T: Float>(Rc<CeShared<T>>);

impl<T: Float> Op<T> for CrossEntropyOp<T> {
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
        let mut p = pool::copy(logits.data());
        let mut total = T::ZERO;
        let targets_last = if s.classes.is_none() {
            Some(to_last(x[1], a))
        } else {
            None
        };
        if n > 0 {
            for (r, (pr, xr)) in p.chunks_exact_mut(n).zip(logits.data().chunks_exact(n)).enumerate() {
                let lse = logsumexp(xr, pr); // pr holds exp(x − m) afterwards
                let inv = T::ONE / kernels::sum_slice(pr);
                pr.iter_mut().for_each(|v| *v *= inv);
                total += match (&s.classes, &targets_last) {
                    (Some(t), _) => lse - xr[t[r]],
                    (None, Some(t)) => {
                        let tr = &t.data()[r * n..(r + 1) * n];
                        lse * kernels::sum_slice(tr) - kernels::dot(tr, xr)
                    }
                    _ => unreachable!(),
                };
            }
        }
        let probs = Tensor::from_parts(shape_of(logits.shape()), p);
        *s.probs.borrow_mut() = Some(from_last(probs, a));
        Ok(Tensor::scalar(s.loss(total, x[0], a)))
    }
    fn vjp_tensors(&self, cx: &EagerCtx<'_, T>, g: &Tensor<T>) -> Option<TensorGrads<T>> {
        let x = cx.input(0);
        let back = CrossEntropyBackwardOp(self.0.clone());
        if self.0.classes.is_some() {
            return Some(cx.grads([&|| back.forward(&[x, g]).expect("checked by the forward")]));
        }
        let t = cx.input(1);
        let a = softmax_axis("cross_entropy", self.0.axis, x).ok()?;
        let k = g.item() * self.0.scale(x, a);
        Some(
            cx.grads([&|| back.forward(&[x, g, t]).expect("checked by the forward"), &|| {
                along_axis(&[x], a, |d, n| log_softmax_rows(d[0], n)).map(|v| -v * k)
            }]),
        )
    }
    /// `(softmax(x) − t) · g / rows`, recorded as `cross_entropy_backward` (which reuses the
    /// softmax saved by the forward); for probability targets also `−log_softmax(x) · g / rows`.
    fn vjp<'t>(&self, cx: &VjpCtx<'_, 't, T>, g: Var<'t, T>) -> Result<Cotangents<'t, T>> {
        let x = cx.input(0);
        let mut inputs: Vec<Var<'t, T>> = vec![x, g];
        if self.0.classes.is_none() {
            inputs.push(cx.input(1));
        }
        let dx = cx.needs_grad(0).then(|| {
            x.tape
                .op(OpRef::Shared(Rc::new(CrossEntropyBackwardOp(self.0.clone()))), &inputs)
        });
        if self.0.classes.is_some() {
            return Ok(cx.grads([dx]));
        }
        let dt = cx.needs_grad(1).then(|| {
            let xv = x.value();
            let a = resolve_axis("cross_entropy", self.0.axis, xv.ndim()).expect("checked in forward");
            -(x.log_softmax(self.0.axis) * g).mul_scalar(self.0.scale(&xv, a))
        });
        Ok(cx.grads([dx, dt]))
    }
}

/// Inputs: logits `x`, the upstream gradient `g` (0-d), and the probability targets if any.
/// Output: `(softmax(x)·Σt − t) · g · scale` (`Σt = 1` per row for class targets).
struct CrossEntropyBackwardOp<T: Float>(Rc<CeShared<T>>);

impl<T: Float> Op<T> for CrossEntropyBackwardOp<T> {
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
        let saved = s.probs.borrow().clone();
        let p = match saved {
            Some(p) if p.shape() == logits.shape() => p,
            _ => along_axis(&[logits], a, |d, n| softmax_rows(d[0], n)),
        };
        let k = g.item() * s.scale(logits, a);
        let mut d = p.into_vec();
        match &s.classes {
            Some(t) => {
                let (outer, n, inner) = kernels::split_axis(logits.shape(), a);
                d.iter_mut().for_each(|v| *v *= k);
                for o in 0..outer {
                    for i in 0..inner {
                        d[(o * n + t[o * inner + i]) * inner + i] -= k;
                    }
                }
            }
            None => {
                // Rows of t need not sum to 1: d/dx (lse·Σt − ⟨t, x⟩) = p·Σt − t.
                let p = Tensor::from_parts(shape_of(logits.shape()), d);
                return Ok(along_axis(&[&p, x[2]], a, |r, n| {
                    let mut out = pool::alloc(r[0].len());
                    for (pr, tr) in r[0].chunks_exact(n).zip(r[1].chunks_exact(n)) {
                        let st = kernels::sum_slice(tr);
                        out.extend(pr.iter().zip(tr).map(|(&p, &t)| (p * st - t) * k));
                    }
                    out
                }));
            }
        }
        Ok(Tensor::from_parts(shape_of(logits.shape()), d))
    }
    /// With `dx = (p·S − t)·g·c` (`S = Σt` per row, 1 for class targets) and an upstream `u`:
    /// `∂/∂x = softmax_backward(p, u·S)·g·c`, `∂/∂g = Σ u⊙(p·S − t)·c`,
    /// `∂/∂t = (Σ u⊙p − u)·g·c`.
    fn vjp<'t>(&self, cx: &VjpCtx<'_, 't, T>, u: Var<'t, T>) -> Result<Cotangents<'t, T>> {
        let s = &self.0;
        let (x, g) = (cx.input(0), cx.input(1));
        let xv = x.value();
        let a = resolve_axis("cross_entropy_backward", s.axis, xv.ndim())?;
        let c = s.scale(&xv, a);
        let p = x.softmax(s.axis);
        if s.classes.is_some() {
            let t = x.tape.constant(s.dense(&xv, a, None));
            let dx = cx
                .needs_grad(0)
                .then(|| (softmax_backward(p, u, s.axis) * g).mul_scalar(c));
            let dg = cx.needs_grad(1).then(|| (u * (p - t)).sum().mul_scalar(c));
            return Ok(cx.grads([dx, dg]));
        }
        let t = cx.input(2);
        let st = t.sum_axis(s.axis, true);
        let dx = cx
            .needs_grad(0)
            .then(|| (softmax_backward(p, u * st, s.axis) * g).mul_scalar(c));
        let dg = cx.needs_grad(1).then(|| (u * (p * st - t)).sum().mul_scalar(c));
        let dt = cx
            .needs_grad(2)
            .then(|| (((u * p).sum_axis(s.axis, true) - u) * g).mul_scalar(c));
        Ok(cx.grads([dx, dg, dt]))
    }
}

impl<'t, T: Float> Var<'t, T> {
    /// Softmax along `axis`, fused: one pass per row forward, the closed-form VJP
    /// `y ⊙ (g − Σ g⊙y)` backward (saving only `y`). Stable for any finite logits.
    #[track_caller]
    pub fn softmax(self, axis: isize) -> Var<'t, T> {
        self.tape.op(OpRef::Shared(Rc::new(SoftmaxOp { axis })), &[self])
    }

    /// Softmax along `axis` composed from primitives: `m = max(x)` detached, `e = exp(x − m)`,
    /// `e / Σe`. Its gradient comes from the primitives' rules alone.
    ///
    /// Along an empty axis (shape `[5, 0]`, axis 1) the result is empty, as for the fused op; the
    /// max is skipped there (it has no value, and there is nothing to overflow).
    #[track_caller]
    pub fn softmax_composed(self, axis: isize) -> Var<'t, T> {
        let a = composed_axis("softmax_composed", self, axis, Location::caller());
        let shifted = if self.value().shape()[a] == 0 {
            self
        } else {
            self - self.max_axis(axis, true).detach()
        };
        let e = shifted.exp();
        e / e.sum_axis(axis, true)
    }

    /// Softmax along `axis` as the textbook writes it, `exp(x) / Σ exp(x)`. For teaching only:
    /// `exp` overflows for logits above ~709 (`f64`) or ~88 (`f32`), giving NaN.
    #[track_caller]
    pub fn softmax_naive(self, axis: isize) -> Var<'t, T> {
        let e = self.exp();
        e / e.sum_axis(axis, true)
    }

    /// Log-softmax along `axis`, fused: `x − log Σ exp(x)` computed stably, VJP `g − softmax(x)·Σg`.
    #[track_caller]
    pub fn log_softmax(self, axis: isize) -> Var<'t, T> {
        self.tape.op(OpRef::Shared(Rc::new(LogSoftmaxOp { axis })), &[self])
    }

    /// Log-softmax composed from primitives: `s = x − max(x)` (max detached), `s − log Σ exp(s)`.
    /// Along an empty axis the result is empty (`log(softmax_composed(x))`, which never takes the
    /// `log 0` of an empty sum).
    #[track_caller]
    pub fn log_softmax_composed(self, axis: isize) -> Var<'t, T> {
        let a = composed_axis("log_softmax_composed", self, axis, Location::caller());
        if self.value().shape()[a] == 0 {
            return self.softmax_composed(axis).log();
        }
        let s = self - self.max_axis(axis, true).detach();
        s - s.exp().sum_axis(axis, true).log()
    }

    /// Softmax cross-entropy of these logits (classes on the last axis, mean over rows), fused.
    /// The gradient is `(softmax(x) − t) / rows`. See [`cross_entropy_with`](Self::cross_entropy_with)
    /// (for zero rows, zero classes and the errors too).
    #[track_caller]
    pub fn cross_entropy(self, target: Target<'_, 't, T>) -> Var<'t, T> {
        self.cross_entropy_with(target, CrossEntropy::default())
    }

    /// Softmax cross-entropy with a chosen class axis and reduction, fused: one op whose forward
    /// computes `Σ_rows (logsumexp(x) − ⟨t, x⟩)` and saves `softmax(x)` for the backward.
    ///
    /// Over zero rows (logits `[0, C]`) the loss is NaN for a mean and 0 for a sum, with an empty
    /// gradient, as in PyTorch (see [`Reduction`]). Panics with an error naming `cross_entropy`,
    /// the logits' shape and the caller's line for a 0-d input, an axis out of range, zero
    /// classes (logits `[N, 0]`), the wrong number of class targets, a class index out of range,
    /// or probability targets whose shape is not the logits' shape.
    #[track_caller]
    pub fn cross_entropy_with(self, target: Target<'_, 't, T>, opts: CrossEntropy) -> Var<'t, T> {
        let (classes, inputs): (Option<Rc<[usize]>>, Vec<Var<'t, T>>) = match target {
            Target::Classes(c) => (Some(c.into()), vec![self]),
            Target::Probs(t) => (None, vec![self, t]),
        };
        let shared = Rc::new(CeShared {
            axis: opts.axis,
            reduction: opts.reduction,
            classes,
            probs: RefCell::new(None),
        });
        self.tape.op(OpRef::Shared(Rc::new(CrossEntropyOp(shared))), &inputs)
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
        let shared = CeShared::<T> {
            axis: opts.axis,
            reduction: opts.reduction,
            classes: match target {
                Target::Classes(c) => Some(c.into()),
                Target::Probs(_) => None,
            },
            probs: RefCell::new(None),
        };
        let checked = match target {
            Target::Classes(_) => shared.check(OP, &[&x]),
            Target::Probs(t) => shared.check(OP, &[&x, &t.value()]),
        };
        let a = checked.unwrap_or_else(|e| fail(e.at(loc)));
        let t = match target {
            Target::Probs(t) => t,
            Target::Classes(_) => self.tape.constant(shared.dense(&x, a, None)),
        };
        let per_row = -(t * self.log_softmax_composed(opts.axis)).sum_axis(opts.axis, false);
        match opts.reduction {
            Reduction::Mean => per_row.mean(),
            Reduction::Sum => per_row.sum(),
        }
    }
}

/// Resolves the axis of a composed softmax-family function before anything is recorded, failing
/// with the function's name, the shape and the caller's line.
fn composed_axis<T: Float>(op: &str, x: Var<'_, T>, axis: isize, loc: &'static Location<'static>) -> usize {
    softmax_axis(op, axis, &x.value()).unwrap_or_else(|e| fail(e.at(loc)))
}

// ---------------------------------------------------------------------------------------------
// Fused/composed pairs, and the registry entries.
// ---------------------------------------------------------------------------------------------

/// A fused op and its composed definition, for [`check::fused_vs_composed`](crate::check::fused_vs_composed).
pub struct FusedPair {
    /// The fused op's name.
    pub name: &'static str,
    /// The fused expression.
    pub fused: for<'t> fn(&[Var<'t, f64>]) -> Var<'t, f64>,
    /// The same function composed from primitives.
    pub composed: for<'t> fn(&[Var<'t, f64>]) -> Var<'t, f64>,
    /// Inputs to compare them on.
    pub inputs: fn() -> Vec<Vec<Tensor<f64>>>,
}

/// Every fused op of this module with its composed definition.
pub fn fused_pairs() -> Vec<FusedPair> {
    fn inputs() -> Vec<Vec<Tensor<f64>>> {
        [[1usize, 1], [1, 2], [3, 5], [8, 64], [4, 1000]]
            .iter()
            .enumerate()
            .map(|(i, s)| vec![Tensor::rand_normal(s, 0.0, 3.0, 700 + i as u64)])
            .collect()
    }
    fn ce_inputs() -> Vec<Vec<Tensor<f64>>> {
        vec![
            vec![Tensor::rand_normal([4, 7], 0.0, 2.0, 710)],
            vec![Tensor::rand_normal([4, 5, 6], 0.0, 2.0, 711)],
        ]
    }
    vec![
        FusedPair {
            name: "softmax (axis -1)",
            fused: |v| v[0].softmax(-1),
            composed: |v| v[0].softmax_composed(-1),
            inputs,
        },
        FusedPair {
            name: "softmax (axis 0)",
            fused: |v| v[0].softmax(0),
            composed: |v| v[0].softmax_composed(0),
            inputs,
        },
        FusedPair {
            name: "log_softmax (axis -1)",
            fused: |v| v[0].log_softmax(-1),
            composed: |v| v[0].log_softmax_composed(-1),
            inputs,
        },
        FusedPair {
            name: "log_softmax (axis 0)",
            fused: |v| v[0].log_softmax(0),
            composed: |v| v[0].log_softmax_composed(0),
            inputs,
        },
        FusedPair {
            name: "cross_entropy (classes, axis 1, mean)",
            fused: |v| v[0].cross_entropy_with(Target::Classes(&CE_CLASSES[..rows(v[0], 1)]), ce(1, Reduction::Mean)),
            composed: |v| {
                v[0].cross_entropy_composed(Target::Classes(&CE_CLASSES[..rows(v[0], 1)]), ce(1, Reduction::Mean))
            },
            inputs: ce_inputs,
        },
        FusedPair {
            name: "cross_entropy (classes, axis 0, sum)",
            fused: |v| v[0].cross_entropy_with(Target::Classes(&CE_CLASSES[..rows(v[0], 0)]), ce(0, Reduction::Sum)),
            composed: |v| {
                v[0].cross_entropy_composed(Target::Classes(&CE_CLASSES[..rows(v[0], 0)]), ce(0, Reduction::Sum))
            },
            inputs: ce_inputs,
        },
    ]
}

/// Class indices valid for at least 4 classes, used by samples.
const CE_CLASSES: [usize; 32] = [
    2, 0, 3, 1, 1, 3, 0, 2, 3, 3, 1, 0, 2, 1, 0, 3, 0, 0, 2, 1, 3, 2, 2, 1, 0, 3, 1, 2, 3, 0, 1, 2,
];

fn rows<T: Float>(x: Var<'_, T>, axis: usize) -> usize {
    let s = x.shape();
    numel(&s) / s[axis]
}

fn ce(axis: isize, reduction: Reduction) -> CrossEntropy {
    CrossEntropy { axis, reduction }
}

/// `x` and a weight `w` of the same shape: the loss `Σ w ⊙ op(x)` has a gradient that depends
/// on `w`, so recording it (grad_graph) puts the backward op on the tape with both of its inputs
/// tracked — and the gradcheck of that gradient checks the backward op's own rule.
fn x_and_w(s: &[usize], seed: u64) -> [Tensor<f64>; 2] {
    [
        Tensor::rand_normal(s, 0.0, 1.5, seed),
        Tensor::rand_normal(s, 0.0, 1.0, seed + 1),
    ]
}

pub(crate) fn register(r: &mut Registry) {
    r.register(OpInfo {
        name: "softmax",
        summary: "fused softmax along an axis; VJP y ⊙ (g − Σ g⊙y)",
        differentiable_twice: true,
        nan: NanRule::Propagates,
        samples: || {
            let n = |s: &[usize], seed| Tensor::<f64>::rand_normal(s, 0.0, 1.5, seed);
            vec![
                sample!("[3,5] axis 1", [n(&[3, 5], 80)], |v| v[0].softmax(1)),
                sample!("[3,5] axis 0", [n(&[3, 5], 81)], |v| v[0].softmax(0)),
                sample!("[2,3,4] axis 1", [n(&[2, 3, 4], 82)], |v| v[0].softmax(1)),
                sample!("[1,1]", [n(&[1, 1], 83)], |v| v[0].softmax(-1)),
                sample!("[1,2]", [n(&[1, 2], 84)], |v| v[0].softmax(-1)),
                sample!("[4] (1-D)", [n(&[4], 85)], |v| v[0].softmax(0)),
            ]
        },
    });
    r.register(OpInfo {
        name: "softmax_backward",
        summary: "y ⊙ (g − Σ g⊙y), the VJP of softmax as an op (checked through a recorded gradient)",
        differentiable_twice: true,
        nan: NanRule::Propagates,
        samples: || {
            vec![
                sample!("[3,4] axis 1", x_and_w(&[3, 4], 86), |v| {
                    let t = v[0].tape();
                    let l = (v[0].softmax(1) * v[1]).sum();
                    t.grad_graph(&[l], &[t.scalar(1.0)], &[v[0]])[0]
                }),
                sample!("[3,4] axis 0", x_and_w(&[3, 4], 88), |v| {
                    let t = v[0].tape();
                    let l = (v[0].softmax(0) * v[1]).sum();
                    t.grad_graph(&[l], &[t.scalar(1.0)], &[v[0]])[0]
                }),
            ]
        },
    });
    r.register(OpInfo {
        name: "log_softmax",
        summary: "fused log-softmax along an axis; VJP g − softmax(x)·Σg",
        differentiable_twice: true,
        nan: NanRule::Propagates,
        samples: || {
            let n = |s: &[usize], seed| Tensor::<f64>::rand_normal(s, 0.0, 1.5, seed);
            vec![
                sample!("[3,5] axis 1", [n(&[3, 5], 90)], |v| v[0].log_softmax(1)),
                sample!("[2,3,4] axis 0", [n(&[2, 3, 4], 91)], |v| v[0].log_softmax(0)),
                sample!("[1,1]", [n(&[1, 1], 92)], |v| v[0].log_softmax(-1)),
            ]
        },
    });
    r.register(OpInfo {
        name: "log_softmax_backward",
        summary: "g − exp(out)·Σg, the VJP of log-softmax as an op (checked through a recorded gradient)",
        differentiable_twice: true,
        nan: NanRule::Propagates,
        samples: || {
            vec![sample!("[3,4] axis 1", x_and_w(&[3, 4], 93), |v| {
                let t = v[0].tape();
                let l = (v[0].log_softmax(1) * v[1]).sum();
                t.grad_graph(&[l], &[t.scalar(1.0)], &[v[0]])[0]
            })]
        },
    });
    r.register(OpInfo {
        name: "cross_entropy",
        summary: "fused softmax cross-entropy (class or probability targets, mean or sum)",
        differentiable_twice: true,
        nan: NanRule::Propagates,
        samples: || {
            let n = |s: &[usize], seed| Tensor::<f64>::rand_normal(s, 0.0, 1.5, seed);
            let probs = |s: &[usize], seed| {
                let u = Tensor::<f64>::rand_uniform(s, 0.1, 1.0, seed);
                let tot = u.sum_all() / (u.numel() / s[s.len() - 1]) as f64;
                u.map(|v| v / tot)
            };
            vec![
                sample!("classes [4,5] mean", [n(&[4, 5], 95)], |v| v[0]
                    .cross_entropy(Target::Classes(&[0, 4, 2, 2]))),
                sample!("classes [5,3] axis 0 sum", [n(&[5, 3], 96)], |v| {
                    v[0].cross_entropy_with(Target::Classes(&[4, 0, 1]), ce(0, Reduction::Sum))
                }),
                sample!("classes [2,3,4] axis 1", [n(&[2, 3, 4], 97)], |v| {
                    v[0].cross_entropy_with(Target::Classes(&[2, 0, 1, 1, 0, 2, 1, 0]), ce(1, Reduction::Mean))
                }),
                sample!("probs [3,4] mean", [n(&[3, 4], 98), probs(&[3, 4], 99)], |v| {
                    v[0].cross_entropy(Target::Probs(v[1]))
                }),
                sample!("[1,1]", [n(&[1, 1], 100)], |v| v[0]
                    .cross_entropy(Target::Classes(&[0]))),
            ]
        },
    });
    r.register(OpInfo {
        name: "cross_entropy_backward",
        summary: "(softmax(x) − t)·g/rows, the VJP of cross-entropy as an op (checked through a recorded gradient)",
        differentiable_twice: true,
        nan: NanRule::Propagates,
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
