//! Elementwise losses reduced to a 0-d value: [`mse_loss`](Var::mse_loss) and
//! [`binary_cross_entropy_with_logits`](Var::binary_cross_entropy_with_logits), each one op with a
//! closed-form rule written in the rule vocabulary (so differentiable again), and PyTorch's
//! semantics: a [`Reduction`] of mean (NaN over zero elements) or sum (0 over zero elements).

use crate::autodiff::rule::{Cotangents, Elem, Op, Pointwise, Value, VjpCtx};
use crate::autodiff::tape::{OpRef, Var};
use crate::core::error::{Error, Result};
use crate::core::float::Float;
use crate::core::shape::{broadcast_extents, fmt_shape};
use crate::ops::common::arity;
use crate::ops::elementwise::Math;
use crate::ops::fused::cross_entropy::Reduction;
use crate::ops::registry::{Choice, Domain, OpInfo, Registry};
use crate::tensor::Tensor;
use crate::{recipe, sample};

/// The factor of a reduction over `n` elements: `1/n` for a mean, 1 for a sum (1 over zero
/// elements, where the gradient is empty anyway).
fn factor<T: Float>(reduction: Reduction, n: usize) -> T {
    match reduction {
        Reduction::Mean => T::ONE / T::from_usize(n.max(1)),
        Reduction::Sum => T::ONE,
    }
}

/// The reduced loss from the sum of the per-element losses (a mean of nothing is NaN).
fn reduce<T: Float>(reduction: Reduction, total: T, n: usize) -> Tensor<T> {
    Tensor::scalar(match (reduction, n) {
        (Reduction::Mean, 0) => T::NAN,
        _ => total * factor::<T>(reduction, n),
    })
}

fn same_shape<T: Float>(op: &str, x: &Tensor<T>, t: &Tensor<T>) -> Result<()> {
    if x.shape() == t.shape() {
        return Ok(());
    }
    Err(Error::shape(
        op,
        format!(
            "the input {} and the target {} must have one shape",
            fmt_shape(x.shape()),
            fmt_shape(t.shape())
        ),
    ))
}

fn reduction_name(r: Reduction) -> &'static str {
    match r {
        Reduction::Mean => "mean",
        Reduction::Sum => "sum",
    }
}

/// `Σ (x − t)²`, divided by the element count for a mean. Inputs: `x`, `t` (same shape).
#[derive(Clone, Copy, Debug)]
pub struct MseLossOp {
    /// Mean or sum.
    pub reduction: Reduction,
}

/// `±2k·(x − t)·g`.
struct MseRule<T>(T);
impl<T: Float> Pointwise<T, 3> for MseRule<T> {
    #[inline(always)]
    fn eval<E: Elem<T>>(&self, [x, t, g]: [E; 3]) -> E {
        (x - t) * g * self.0
    }
}

impl<T: Float> Op<T> for MseLossOp {
    fn name(&self) -> &'static str {
        "mse_loss"
    }
    fn params(&self) -> String {
        reduction_name(self.reduction).into()
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        arity("mse_loss", x, 2)?;
        same_shape("mse_loss", x[0], x[1])?;
        let mut total = T::ZERO;
        for (&a, &b) in x[0].data().iter().zip(x[1].data()) {
            total += (a - b) * (a - b);
        }
        Ok(reduce(self.reduction, total, x[0].numel()))
    }
    /// `∂x = 2k (x − t) g`, `∂t = −∂x`, `k` the reduction's factor.
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
        let (x, t) = (cx.input(0), cx.input(1));
        let k = T::from_f64(2.0) * factor::<T>(self.reduction, x.numel());
        Ok(cx.grads([
            cx.needs_grad(0).then(|| V::pointwise(&MseRule(k), [x, t, g])),
            cx.needs_grad(1).then(|| V::pointwise(&MseRule(-k), [x, t, g])),
        ]))
    }
}

/// Binary cross-entropy on logits, stably: per element `(1 − t)·x + w·sp(−x)` with
/// `sp(−x) = log1p(e^{−|x|}) + max(−x, 0)` (= `log(1 + e^{−x})`) and `w = 1 + (p − 1)·t` for a
/// positive-class weight `p` (1 without one); reduced by a mean or a sum. Inputs: logits `x`,
/// targets `t` (same shape), then `p` when `pos_weight` (broadcasting to `x`'s shape).
#[derive(Clone, Copy, Debug)]
pub struct BceWithLogitsOp {
    /// Mean or sum.
    pub reduction: Reduction,
    /// Whether a positive-class weight is the third input.
    pub pos_weight: bool,
}

/// `log(1 + e^{−x})` computed stably, over any [`Elem`].
#[inline(always)]
fn softplus_neg<T: Float, E: Elem<T>>(x: E) -> E {
    ((-x.abs()).exp() + T::ONE).log() + (-x).relu()
}

/// `k·g·((1 − t) − w·σ(−x))`, `w = 1 + (p − 1)·t`: the gradient for the logits.
struct BceDx<T>(T);
impl<T: Float> Pointwise<T, 4> for BceDx<T> {
    #[inline(always)]
    fn eval<E: Elem<T>>(&self, [x, t, p, g]: [E; 4]) -> E {
        let w = (p - T::ONE) * t + T::ONE;
        g * (-(t - T::ONE) - w * (-x).sigmoid()) * self.0
    }
}
/// `k·g·((p − 1)·sp(−x) − x)`: the gradient for the targets.
struct BceDt<T>(T);
impl<T: Float> Pointwise<T, 3> for BceDt<T> {
    #[inline(always)]
    fn eval<E: Elem<T>>(&self, [x, p, g]: [E; 3]) -> E {
        g * ((p - T::ONE) * softplus_neg(x) - x) * self.0
    }
}
/// `k·g·t·sp(−x)`: the gradient for the positive-class weight (before summing to its shape).
struct BceDp<T>(T);
impl<T: Float> Pointwise<T, 3> for BceDp<T> {
    #[inline(always)]
    fn eval<E: Elem<T>>(&self, [x, t, g]: [E; 3]) -> E {
        g * t * softplus_neg(x) * self.0
    }
}

impl<T: Float> Op<T> for BceWithLogitsOp {
    fn name(&self) -> &'static str {
        "binary_cross_entropy_with_logits"
    }
    fn params(&self) -> String {
        format!(
            "{}{}",
            reduction_name(self.reduction),
            if self.pos_weight { ", pos_weight" } else { "" }
        )
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        const OP: &str = "binary_cross_entropy_with_logits";
        arity(OP, x, 2 + self.pos_weight as usize)?;
        same_shape(OP, x[0], x[1])?;
        let pw = match self.pos_weight {
            true => {
                let fits = broadcast_extents(x[2].shape(), x[0].shape()).is_some_and(|s| s.as_slice() == x[0].shape());
                if !fits {
                    return Err(Error::shape(
                        OP,
                        format!(
                            "pos_weight {} does not broadcast to the logits' shape {}",
                            fmt_shape(x[2].shape()),
                            fmt_shape(x[0].shape())
                        ),
                    ));
                }
                Some(x[2].broadcast_to(x[0].shape()))
            }
            false => None,
        };
        let mut total = T::ZERO;
        for (i, (&v, &t)) in x[0].data().iter().zip(x[1].data()).enumerate() {
            let sp = (-v.abs()).exp().ln_1p() + (-v).max(T::ZERO);
            let w = match &pw {
                Some(p) => T::ONE + (p.data()[i] - T::ONE) * t,
                None => T::ONE,
            };
            total += (T::ONE - t) * v + w * sp;
        }
        Ok(reduce(self.reduction, total, x[0].numel()))
    }
    /// With `k` the reduction's factor and `w = 1 + (p − 1)·t`: `∂x = k g ((1 − t) − w σ(−x))`
    /// (`k g (σ(x) − t)` without a weight), `∂t = k g ((p − 1) sp(−x) − x)`,
    /// `∂p = Σ k g t sp(−x)` (summed to `p`'s shape), `sp(−x) = log(1 + e^{−x})`.
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
        let (x, t) = (cx.input(0), cx.input(1));
        let k = factor::<T>(self.reduction, x.numel());
        let one = x.constant(Tensor::scalar(T::ONE));
        let p = if self.pos_weight { cx.input(2) } else { &one };
        let dx = cx.needs_grad(0).then(|| V::pointwise(&BceDx(k), [x, t, p, g]));
        let dt = cx
            .needs_grad(1)
            .then(|| V::pointwise_sum_to_like(&BceDt(k), [x, p, g], t));
        if !self.pos_weight {
            return Ok(cx.grads([dx, dt]));
        }
        let dp = cx
            .needs_grad(2)
            .then(|| V::pointwise_sum_to_like(&BceDp(k), [x, t, g], p));
        Ok(cx.grads([dx, dt, dp]))
    }
}

impl<'t, T: Float> Var<'t, T> {
    /// The mean squared error against `target` (same shape), PyTorch's `mse_loss`:
    /// `Σ (x − t)²`, divided by the element count for [`Reduction::Mean`]. A 0-d result; a mean
    /// over zero elements is NaN. Panics with a `Shape` error naming `mse_loss`, both shapes and
    /// the caller's line when the shapes differ.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor, softmax::Reduction};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::from_vec(vec![1.0, 2.0, 4.0], [3]));
    /// let t = tape.constant(Tensor::from_vec(vec![1.0, 0.0, 1.0], [3]));
    /// let l = x.mse_loss(t, Reduction::Mean);
    /// assert_eq!(l.item(), 13.0 / 3.0);
    /// assert_eq!(l.backward()[x].to_vec(), vec![0.0, 4.0 / 3.0, 2.0]);
    /// ```
    #[track_caller]
    pub fn mse_loss(self, target: Var<'t, T>, reduction: Reduction) -> Var<'t, T> {
        self.tape.op(OpRef::new(MseLossOp { reduction }), &[self, target])
    }

    /// Binary cross-entropy of these logits against `target` (probabilities, same shape), as
    /// PyTorch's `binary_cross_entropy_with_logits`, computed stably:
    /// `max(x, 0) − x·t + log1p(e^{−|x|})` per element — with a positive-class weight `p`
    /// (broadcasting to the logits' shape, e.g. one per class of the last axis),
    /// `(1 − t)·x + (1 + (p − 1)·t)·log(1 + e^{−x})` — reduced by a mean or a sum (NaN for a
    /// mean over zero elements). Finite for any finite logits. Panics with a `Shape` error naming
    /// the op, the shapes and the caller's line when the target's shape differs from the logits'
    /// or `pos_weight` does not broadcast to it.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor, softmax::Reduction};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::from_vec(vec![0.0, 1000.0, -1000.0], [3]));
    /// let t = tape.constant(Tensor::from_vec(vec![1.0, 1.0, 1.0], [3]));
    /// let l = x.binary_cross_entropy_with_logits(t, None, Reduction::Sum);
    /// assert!((l.item() - (2f64.ln() + 1000.0)).abs() < 1e-9);     // no overflow
    /// assert_eq!(l.backward()[x].to_vec(), vec![-0.5, 0.0, -1.0]); // σ(x) − t
    /// ```
    #[track_caller]
    pub fn binary_cross_entropy_with_logits(
        self,
        target: Var<'t, T>,
        pos_weight: Option<Var<'t, T>>,
        reduction: Reduction,
    ) -> Var<'t, T> {
        let op = BceWithLogitsOp {
            reduction,
            pos_weight: pos_weight.is_some(),
        };
        let inputs: Vec<Var<'t, T>> = [self, target].into_iter().chain(pos_weight).collect();
        self.tape.op(OpRef::new(op), &inputs)
    }
}

/// The naive mean squared error (plain loops).
fn mse_reference(x: &Tensor<f64>, t: &Tensor<f64>, mean: bool) -> Tensor<f64> {
    let mut s = 0.0;
    for i in 0..x.numel() {
        let d = x.data()[i] - t.data()[i];
        s += d * d;
    }
    Tensor::scalar(if mean { s / x.numel() as f64 } else { s })
}

/// The naive binary cross-entropy on logits, `−[p·t·log σ(x) + (1 − t)·log(1 − σ(x))]` with
/// `std`'s maths (`log σ(x) = −ln(1 + e^{−x})`, evaluated as written: the samples' logits are
/// moderate), `pos_weight` per element of the last axis.
fn bce_reference(x: &Tensor<f64>, t: &Tensor<f64>, pw: Option<&Tensor<f64>>, mean: bool) -> Tensor<f64> {
    let c = x.shape().last().copied().unwrap_or(1);
    let mut s = 0.0;
    for i in 0..x.numel() {
        let (v, y) = (x.data()[i], t.data()[i]);
        let p = pw.map_or(1.0, |p| if p.numel() == 1 { p.data()[0] } else { p.data()[i % c] });
        let log_sig = -(1.0 + (-v).exp()).ln();
        let log_one_minus = -(1.0 + v.exp()).ln();
        s -= p * y * log_sig + (1.0 - y) * log_one_minus;
    }
    Tensor::scalar(if mean { s / x.numel() as f64 } else { s })
}

/// Two values of the pool of one shape (tame: `x` and another value of its shape, or a constant
/// of its shape if there is none — not `x` detached, whose value would follow `x` under finite
/// differences); any two (wild).
fn pair<'t, T: Float>(c: &mut Choice<'_>, v: &[Var<'t, T>]) -> (Var<'t, T>, Var<'t, T>) {
    let x = c.pick(v);
    let start = c.below(v.len());
    if c.wild() {
        return (x, v[start]);
    }
    let shape = x.shape();
    let other = (0..v.len())
        .map(|k| v[(start + k) % v.len()])
        .find(|t| t.shape() == shape && t.index() != x.index());
    let constant = || {
        let t = Tensor::from_fn(&shape, |i| T::from_f64(0.75 - 0.5 * (i % 3) as f64));
        x.tape().constant(t)
    };
    (x, other.unwrap_or_else(constant))
}

fn reduction_of(c: &mut Choice<'_>) -> Reduction {
    if c.flag() { Reduction::Sum } else { Reduction::Mean }
}

/// Random programs' and the fuzzer's call of `mse_loss`: two values of one shape (tame) or any
/// two (wild), a mean or a sum.
fn mse_recipe<'t, T: Float>(c: &mut Choice<'_>, v: &[Var<'t, T>]) -> Option<Var<'t, T>> {
    let (x, t) = pair(c, v);
    Some(x.mse_loss(t, reduction_of(c)))
}

/// Random programs' and the fuzzer's call of `binary_cross_entropy_with_logits`. Tame: logits
/// and, as targets, the sigmoid of a value of the same shape (so they lie in (0, 1)); now and
/// then a positive-class weight, a pool value of the logits' last extent mapped to be positive.
/// Wild: any values, any pool value as the weight.
fn bce_recipe<'t, T: Float>(c: &mut Choice<'_>, v: &[Var<'t, T>]) -> Option<Var<'t, T>> {
    let (x, t) = pair(c, v);
    let reduction = reduction_of(c);
    if c.wild() {
        let pw = c.flag().then(|| c.pick(v));
        return Some(x.binary_cross_entropy_with_logits(t, pw, reduction));
    }
    let last = x.shape().last().copied();
    let pw = match (c.flag(), last) {
        (true, Some(n)) => v
            .iter()
            .copied()
            .find(|p| p.shape().as_slice() == [n])
            .map(|p| c.into_domain(p, Domain::Positive)),
        _ => None,
    };
    Some(x.binary_cross_entropy_with_logits(t.sigmoid(), pw, reduction))
}

pub(crate) fn register(r: &mut Registry) {
    r.register(
        OpInfo::new("mse_loss", "mean squared error (mean or sum), 0-d", || {
            let n = |s: &[usize], seed| Tensor::<f64>::rand_normal(s, 0.0, 1.0, seed);
            vec![
                sample!("[3,4] mean", [n(&[3, 4], 740), n(&[3, 4], 741)], |v| v[0]
                    .mse_loss(v[1], Reduction::Mean))
                .with_reference(|x| mse_reference(&x[0], &x[1], true)),
                sample!("[2,3,4] sum", [n(&[2, 3, 4], 742), n(&[2, 3, 4], 743)], |v| v[0]
                    .mse_loss(v[1], Reduction::Sum))
                .with_reference(|x| mse_reference(&x[0], &x[1], false)),
                sample!("0-d mean", [n(&[], 744), n(&[], 745)], |v| v[0]
                    .mse_loss(v[1], Reduction::Mean))
                .with_reference(|x| mse_reference(&x[0], &x[1], true)),
            ]
        })
        .recipe(recipe!(|c, v| mse_recipe(c, v))),
    );
    r.register(
        OpInfo::new(
            "binary_cross_entropy_with_logits",
            "stable binary cross-entropy on logits (optional pos_weight; mean or sum), 0-d",
            || {
                let n = |s: &[usize], seed| Tensor::<f64>::rand_normal(s, 0.0, 2.0, seed);
                let p = |s: &[usize], seed| Tensor::<f64>::rand_uniform(s, 0.05, 0.95, seed);
                vec![
                    sample!("[4,5] mean", [n(&[4, 5], 750), p(&[4, 5], 751)], |v| {
                        v[0].binary_cross_entropy_with_logits(v[1], None, Reduction::Mean)
                    })
                    .with_reference(|x| bce_reference(&x[0], &x[1], None, true)),
                    sample!(
                        "[2,3,4] sum, pos_weight [4]",
                        [
                            n(&[2, 3, 4], 752),
                            p(&[2, 3, 4], 753),
                            Tensor::rand_uniform([4], 0.5, 3.0, 754)
                        ],
                        |v| v[0].binary_cross_entropy_with_logits(v[1], Some(v[2]), Reduction::Sum)
                    )
                    .with_reference(|x| bce_reference(&x[0], &x[1], Some(&x[2]), false)),
                    sample!(
                        "[1] mean, pos_weight [1]",
                        [n(&[1], 755), p(&[1], 756), Tensor::scalar(2.5).reshape([1])],
                        |v| v[0].binary_cross_entropy_with_logits(v[1], Some(v[2]), Reduction::Mean)
                    )
                    .with_reference(|x| bce_reference(&x[0], &x[1], Some(&x[2]), true)),
                    sample!("0-d sum", [n(&[], 757), p(&[], 758)], |v| {
                        v[0].binary_cross_entropy_with_logits(v[1], None, Reduction::Sum)
                    })
                    .with_reference(|x| bce_reference(&x[0], &x[1], None, false)),
                ]
            },
        )
        .recipe(recipe!(|c, v| bce_recipe(c, v))),
    );
}
