//! More reductions: over any set of axes (`sum_axes`, `mean_axes`), the two kinds of maximum
//! side by side, `prod`, `var` / `std`, `norm`, `cumsum`, and `argmax` / `argmin` (index data, no
//! gradient). (`logsumexp` is a fused op: [`crate::ops::fused::logsumexp`].)
//!
//! # Sets of axes
//!
//! A set of axes is any [`Axes`] (`[0, 2]`, `[-1]`, `vec![1usize]`); negative axes count from the
//! end. A repeated axis (`[1, -1]` on a 2-D value) or one out of range is an error naming the op
//! and the axis. The empty set reduces over no axis, as NumPy's `axis=()` (the result is the input
//! itself, reshaped by nothing); the `*_all` forms reduce over every axis.
//!
//! # Two maxima
//!
//! * [`max_axis`](Var::max_axis) / [`min_axis`](Var::min_axis) (one axis) send the **whole**
//!   gradient to the *first* maximal (minimal) element, as `torch.max(dim)` does.
//! * [`amax`](Var::amax) / [`amin`](Var::amin) (any set of axes) and [`max_all`](Var::max_all) /
//!   [`min_all`](Var::min_all) **split** the gradient evenly among the tied elements, as
//!   `torch.amax` and JAX do (and `torch.max()` without a dimension). `0.0` and `-0.0` tie.
//!
//! Both are valid subgradients; both propagate NaN (a NaN is the maximum and the minimum, and it is
//! the element the gradient goes to).
//!
//! # Conventions at the kinks
//!
//! * `prod`: the exact gradient at zeros — with one zero in a reduced set, the gradient at the zero
//!   is the product of the others and 0 elsewhere; with two or more, 0 everywhere. The rule is
//!   differentiable again (second derivatives at zeros are exact as well).
//! * `var(correction)` divides by `N − correction` (default 1, Bessel, as in PyTorch);
//!   `N ≤ correction` divides by 0 (NaN for zero spread, as in PyTorch). `std`'s gradient where the
//!   standard deviation is 0 is 0 (a subgradient; PyTorch gives NaN).
//! * `norm(p)`: `(Σ|x|ᵖ)^(1/p)` for a finite `p > 0` (computed scaled by the largest `|x|`, so it
//!   neither overflows nor underflows); the gradient `sign(x)·(|x|/‖x‖)ᵖ⁻¹·g` is 0 where the norm
//!   is 0 (the zero vector: the minimum-norm subgradient), and for `p = 1` it is `sign(x)·g` (0 at
//!   zero elements).

use super::arith::PowfOp;
use super::common::{arity, resolve_axis};
use super::index::Indices;
use super::layout::Axes;
use super::registry::{Choice, Domain, OpInfo, Registry};
use super::select::{Logic, TakeIf};
use crate::autodiff::rule::{Cotangents, Elem, Op, Pointwise, Value, VjpCtx};
use crate::autodiff::tape::{OpRef, Var};
use crate::core::error::{Error, ErrorKind, Result, fail};
use crate::core::float::Float;
use crate::core::shape::{Shape, fmt_shape};
use crate::ops::elementwise::Math;
use crate::tensor::axis::along_axis;
use crate::tensor::{Tensor, kernels};
use crate::{recipe, sample};
use std::panic::Location;

/// How a reduction over a set of axes lays out its input: the reduced axes moved last, so each
/// output element reduces one contiguous row of `n` elements.
pub(crate) struct Plan {
    /// The permutation putting the kept axes first (in order), then the reduced ones (in order).
    perm: Vec<usize>,
    /// The input shape with every reduced axis at extent 1 (the gradient's shape before broadcasting).
    pub(crate) keep: Shape,
    /// The output shape (`keep`, or with the reduced axes removed).
    out: Shape,
    /// Elements per row (the product of the reduced extents).
    n: usize,
}

/// Resolves a set of axes (`None`: every axis) against `shape` and lays out the reduction; a
/// repeated or out-of-range axis is an error naming `op` and the axis.
pub(crate) fn plan(op: &str, axes: Option<&[isize]>, shape: &[usize], keepdim: bool) -> Result<Plan> {
    let ndim = shape.len();
    let mut reduced = vec![false; ndim];
    match axes {
        None => reduced.iter_mut().for_each(|r| *r = true),
        Some(list) => {
            for &a in list {
                let r = resolve_axis(op, a, ndim)
                    .map_err(|e| Error::shape(op, format!("{} (shape {})", e.message(), fmt_shape(shape))))?;
                if std::mem::replace(&mut reduced[r], true) {
                    return Err(Error::shape(
                        op,
                        format!("axis {a} is repeated in the axes {list:?} (shape {})", fmt_shape(shape)),
                    ));
                }
            }
        }
    }
    let mut perm: Vec<usize> = (0..ndim).filter(|&a| !reduced[a]).collect();
    perm.extend((0..ndim).filter(|&a| reduced[a]));
    let keep: Shape = shape
        .iter()
        .zip(&reduced)
        .map(|(&n, &r)| if r { 1 } else { n })
        .collect();
    let out: Shape = if keepdim {
        keep.clone()
    } else {
        shape
            .iter()
            .zip(&reduced)
            .filter(|(_, r)| !**r)
            .map(|(&n, _)| n)
            .collect()
    };
    let n = shape
        .iter()
        .zip(&reduced)
        .filter(|(_, r)| **r)
        .map(|(&n, _)| n)
        .product();
    Ok(Plan { perm, keep, out, n })
}

impl Plan {
    /// The input's data with the reduced axes last (a copy unless they already are).
    fn rows<T: Float>(&self, x: &Tensor<T>) -> Tensor<T> {
        if self.perm.iter().enumerate().all(|(i, &p)| i == p) {
            x.clone()
        } else {
            x.permute(&self.perm)
        }
    }

    /// The number of output elements.
    fn count(&self) -> usize {
        self.out.iter().product()
    }

    /// `f` on every row (in the row-major order of the kept axes), one output element each;
    /// an empty row when the reduced axes have no elements.
    fn reduce<T: Float>(&self, x: &Tensor<T>, f: impl Fn(&[T]) -> T) -> Tensor<T> {
        let data = if self.count() == 0 {
            Vec::new()
        } else if self.n == 0 {
            vec![f(&[]); self.count()]
        } else {
            self.rows(x).data().chunks_exact(self.n).map(f).collect()
        };
        Tensor::from_parts(self.out.clone(), data)
    }
}

/// Resolves an op's axes for its rule (the forward already validated them).
fn plan_of<T: Float, V: Value<T>>(op: &str, axes: &Option<Vec<isize>>, x: &V, keepdim: bool) -> Result<Plan> {
    plan(op, axes.as_deref(), &x.shape(), keepdim)
}

/// `axes=[..]` and `keepdim`, for [`Op::params`].
fn axes_params(axes: &Option<Vec<isize>>, keepdim: bool) -> String {
    let k = if keepdim { ", keepdim" } else { "" };
    match axes {
        None => format!("all axes{k}"),
        Some(a) => format!("axes={a:?}{k}"),
    }
}

/// Rejects an empty reduction for ops that have no value there (a maximum, a norm has one: 0).
fn non_empty(op: &str, p: &Plan, shape: &[usize]) -> Result<()> {
    if p.n == 0 && p.count() > 0 {
        return Err(Error::shape(
            op,
            format!(
                "cannot take the {op} over no elements (the reduced axes of {} are empty)",
                fmt_shape(shape)
            ),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// sum / mean over a set of axes

/// Sum (or mean) over a set of axes.
struct SumAxesOp {
    axes: Vec<isize>,
    keepdim: bool,
    mean: bool,
}

impl SumAxesOp {
    fn name(&self) -> &'static str {
        if self.mean { "mean_axes" } else { "sum_axes" }
    }
}

impl<T: Float> Op<T> for SumAxesOp {
    fn name(&self) -> &'static str {
        SumAxesOp::name(self)
    }
    fn params(&self) -> String {
        axes_params(&Some(self.axes.clone()), self.keepdim)
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        let name = SumAxesOp::name(self);
        arity(name, x, 1)?;
        let p = plan(name, Some(&self.axes), x[0].shape(), self.keepdim)?;
        let rows = p.rows(x[0]);
        let mut data = kernels::sum_axis(rows.data(), &[p.count(), p.n], 1);
        if self.mean {
            let inv = T::ONE / T::from_usize(p.n);
            data.iter_mut().for_each(|d| *d *= inv);
        }
        Ok(Tensor::from_parts(p.out, data))
    }
    /// The gradient broadcast back over the reduced axes (divided by their size for a mean).
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
        let x = cx.input(0);
        let p = plan(SumAxesOp::name(self), Some(&self.axes), &x.shape(), self.keepdim)?;
        let mut g = g.reshape(&p.keep);
        if self.mean {
            g = g.scale(T::ONE / T::from_usize(p.n));
        }
        Ok(cx.grads([Some(g.broadcast_to(&x.shape()))]))
    }
}

// ---------------------------------------------------------------------------------------------
// amax / amin: ties share the gradient

/// Maximum (or minimum) over a set of axes (`None`: all); the gradient is split among the ties.
struct AmaxOp {
    axes: Option<Vec<isize>>,
    keepdim: bool,
    min: bool,
}

impl AmaxOp {
    fn name(&self) -> &'static str {
        if self.min { "amin" } else { "amax" }
    }
}

/// The maximum (`min` false) or minimum of a non-empty row; a NaN wins.
fn extreme<T: Float>(row: &[T], min: bool) -> T {
    let mut m = row[0];
    for &v in &row[1..] {
        if m.is_nan() {
            break;
        }
        if v.is_nan() || (if min { v < m } else { v > m }) {
            m = v;
        }
    }
    m
}

/// `g / count` where the mask holds, exactly 0 elsewhere (selected, never multiplied by the mask).
struct ShareAmongTies;
impl<T: Float> Pointwise<T, 3> for ShareAmongTies {
    #[inline(always)]
    fn eval<E: Elem<T>>(&self, [mask, g, inv]: [E; 3]) -> E {
        mask.select(g * inv, g.lit(T::ZERO))
    }
}

impl<T: Float> Op<T> for AmaxOp {
    fn name(&self) -> &'static str {
        AmaxOp::name(self)
    }
    fn params(&self) -> String {
        axes_params(&self.axes, self.keepdim)
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        let name = AmaxOp::name(self);
        arity(name, x, 1)?;
        let p = plan(name, self.axes.as_deref(), x[0].shape(), self.keepdim)?;
        non_empty(name, &p, x[0].shape())?;
        Ok(p.reduce(x[0], |r| extreme(r, self.min)))
    }
    /// `g / k` at each of the `k` elements equal to the extreme (NaN ones, where the extreme is
    /// NaN), exactly 0 elsewhere. The tie mask and the counts are constants, computed from values.
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
        let x = cx.input(0);
        let p = plan_of(AmaxOp::name(self), &self.axes, x, self.keepdim)?;
        let xv = x.value();
        let y = cx.output().value().reshape(&p.keep).broadcast_to(xv.shape());
        let mask = xv.zip_map(&y, |a, m| {
            if a == m || (a.is_nan() && m.is_nan()) {
                T::ONE
            } else {
                T::ZERO
            }
        });
        let inv = mask.sum_to(&p.keep).map(|k| T::ONE / k);
        let (mask, inv) = (x.constant(mask), x.constant(inv));
        let g = g.reshape(&p.keep);
        Ok(cx.grads([Some(V::pointwise(&ShareAmongTies, [&mask, &g, &inv]))]))
    }
}

// ---------------------------------------------------------------------------------------------
// prod

/// Product over a set of axes (`None`: all).
struct ProdOp {
    axes: Option<Vec<isize>>,
    keepdim: bool,
}

/// `1` where the mask (of zeros) holds, `x` elsewhere.
struct ZeroToOne;
impl<T: Float> Pointwise<T, 2> for ZeroToOne {
    #[inline(always)]
    fn eval<E: Elem<T>>(&self, [zero, x]: [E; 2]) -> E {
        zero.select(x.lit(T::ONE), x)
    }
}

/// `g · y / x` (no zero in the input).
struct ProdNoZero;
impl<T: Float> Pointwise<T, 3> for ProdNoZero {
    #[inline(always)]
    fn eval<E: Elem<T>>(&self, [g, y, x]: [E; 3]) -> E {
        g * (y / x)
    }
}

/// The product of the others, `∂ prod / ∂x_i`, for rows with zeros. `q` is the product of the
/// row's non-zero elements, `xt` the input with its zeros replaced by 1, `zs` the sum of the row's
/// zero elements (0 in value, but it carries their derivative), `c0 c1 c2` whether the row has
/// 0, 1 or 2 zeros. At a zero: `q` (one zero), the other zero times `q` (two zeros), else 0.
/// Elsewhere: `q / x` (no zero), the zero times `q / x` (one zero), else 0 — every branch exact in
/// value and in its first derivative.
struct ProdOthers;
impl<T: Float> Pointwise<T, 8> for ProdOthers {
    #[inline(always)]
    fn eval<E: Elem<T>>(&self, [zero, c0, c1, c2, x, xt, q, zs]: [E; 8]) -> E {
        let z = x.lit(T::ZERO);
        let at_zero = c1.select(q, c2.select((zs - x) * q, z));
        let q_over = q / xt;
        let elsewhere = c0.select(q_over, c1.select(zs * q_over, z));
        zero.select(at_zero, elsewhere)
    }
}

impl<T: Float> Op<T> for ProdOp {
    fn name(&self) -> &'static str {
        "prod"
    }
    fn params(&self) -> String {
        axes_params(&self.axes, self.keepdim)
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        arity("prod", x, 1)?;
        let p = plan("prod", self.axes.as_deref(), x[0].shape(), self.keepdim)?;
        Ok(p.reduce(x[0], |r| r.iter().fold(T::ONE, |a, &b| a * b)))
    }
    /// `g · ∏_{j≠i} x_j`: `g·y/x` when no reduced set holds a zero; otherwise by cases on the
    /// number of zeros of each set (see [`ProdOthers`]), built from `prod` of the input with its
    /// zeros replaced by 1 — so the rule is exact at zeros and differentiable again.
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
        let x = cx.input(0);
        let p = plan_of("prod", &self.axes, x, self.keepdim)?;
        let xv = x.value();
        let g = g.reshape(&p.keep);
        if !xv.data().contains(&T::ZERO) {
            let y = cx.output().reshape(&p.keep);
            return Ok(cx.grads([Some(V::pointwise(&ProdNoZero, [&g, &y, x]))]));
        }
        let zeros = xv.map(|v| if v == T::ZERO { T::ONE } else { T::ZERO });
        let count = zeros.sum_to(&p.keep);
        let is = |k: f64| count.map(move |c| if c == T::from_f64(k) { T::ONE } else { T::ZERO });
        let (c0, c1, c2) = (x.constant(is(0.0)), x.constant(is(1.0)), x.constant(is(2.0)));
        let zeros = x.constant(zeros);
        let xt = V::pointwise(&ZeroToOne, [&zeros, x]);
        let q = V::apply(
            ProdOp {
                axes: self.axes.clone(),
                keepdim: true,
            },
            &[&xt],
        )?;
        let zs = V::pointwise(&TakeIf, [&zeros, x]).sum_to(&p.keep);
        let others = V::pointwise(&ProdOthers, [&zeros, &c0, &c1, &c2, x, &xt, &q, &zs]);
        Ok(cx.grads([Some(g.mul(&others))]))
    }
}

// ---------------------------------------------------------------------------------------------
// var / std

/// Variance (or standard deviation) over a set of axes (`None`: all), dividing by `N − correction`.
struct VarOp {
    axes: Option<Vec<isize>>,
    correction: usize,
    keepdim: bool,
    std: bool,
}

impl VarOp {
    fn name(&self) -> &'static str {
        if self.std { "std" } else { "var" }
    }
}

/// `g · (x − m) · c` (the variance's rule, `c = 2/(N − correction)`).
struct VarRule<T>(T);
impl<T: Float> Pointwise<T, 3> for VarRule<T> {
    #[inline(always)]
    fn eval<E: Elem<T>>(&self, [g, x, m]: [E; 3]) -> E {
        g * (x - m) * self.0
    }
}

/// `g · (x − m) / (d · s)`, 0 where `s = 0` (the standard deviation's rule, `d = N − correction`).
struct StdRule<T>(T);
impl<T: Float> Pointwise<T, 4> for StdRule<T> {
    #[inline(always)]
    fn eval<E: Elem<T>>(&self, [g, x, m, s]: [E; 4]) -> E {
        let zero = s.lit(T::ZERO);
        s.eq(zero).select(zero, (g * (x - m)).chain_div(s * self.0))
    }
}

impl<T: Float> Op<T> for VarOp {
    fn name(&self) -> &'static str {
        VarOp::name(self)
    }
    fn params(&self) -> String {
        format!(
            "{}, correction={}",
            axes_params(&self.axes, self.keepdim),
            self.correction
        )
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        let name = VarOp::name(self);
        arity(name, x, 1)?;
        let p = plan(name, self.axes.as_deref(), x[0].shape(), self.keepdim)?;
        let d = T::from_usize(p.n.saturating_sub(self.correction));
        Ok(p.reduce(x[0], |r| {
            let m = r.iter().fold(T::ZERO, |a, &b| a + b) / T::from_usize(r.len());
            let v = r.iter().fold(T::ZERO, |a, &b| a + (b - m) * (b - m)) / d;
            if self.std { v.sqrt() } else { v }
        }))
    }
    /// `var`: `g · 2(x − mean)/(N − correction)`; `std`: `g · (x − mean)/((N − correction)·std)`,
    /// 0 where `std = 0`. The mean is recorded from `x`, so the rule is differentiable again.
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
        let x = cx.input(0);
        let p = plan_of(VarOp::name(self), &self.axes, x, self.keepdim)?;
        let d = T::from_usize(p.n.saturating_sub(self.correction));
        let m = x.sum_to(&p.keep).scale(T::ONE / T::from_usize(p.n));
        let g = g.reshape(&p.keep);
        let dx = if self.std {
            let s = cx.output().reshape(&p.keep);
            V::pointwise(&StdRule(d), [&g, x, &m, &s])
        } else {
            V::pointwise(&VarRule(T::from_f64(2.0) / d), [&g, x, &m])
        };
        Ok(cx.grads([Some(dx)]))
    }
}

// ---------------------------------------------------------------------------------------------
// norm

/// The `p`-norm over a set of axes (`None`: all).
struct NormOp {
    p: f64,
    axes: Option<Vec<isize>>,
    keepdim: bool,
}

/// `g · sign(x) · (|x|/n)^(p−1)`, 0 where the norm `n` is 0.
struct NormRule(f64);
impl<T: Float> Pointwise<T, 3> for NormRule {
    #[inline(always)]
    fn eval<E: Elem<T>>(&self, [g, x, n]: [E; 3]) -> E {
        let zero = n.lit(T::ZERO);
        let d = if self.0 == 1.0 {
            x.sign()
        } else if self.0 == 2.0 {
            x / n
        } else {
            x.sign() * (x.abs() / n).map1(&PowfOp(self.0 - 1.0))
        };
        n.eq(zero).select(zero, g * d)
    }
}

/// `(Σ|x|ᵖ)^(1/p)` of a row, scaled by its largest `|x|` (NaN propagates; 0 for an empty row).
fn norm_row<T: Float>(r: &[T], p: f64) -> T {
    if r.iter().any(|v| v.is_nan()) {
        return T::NAN;
    }
    if p == 1.0 {
        return r.iter().fold(T::ZERO, |a, &b| a + b.abs());
    }
    let m = r.iter().fold(T::ZERO, |a, &b| a.max(b.abs()));
    if m == T::ZERO || !m.is_finite() {
        return m;
    }
    let pt = T::from_f64(p);
    let s = r.iter().fold(T::ZERO, |a, &b| {
        let t = b.abs() / m;
        a + if p == 2.0 { t * t } else { t.powf(pt) }
    });
    m * if p == 2.0 { s.sqrt() } else { s.powf(T::ONE / pt) }
}

impl<T: Float> Op<T> for NormOp {
    fn name(&self) -> &'static str {
        "norm"
    }
    fn params(&self) -> String {
        format!("p={}, {}", self.p, axes_params(&self.axes, self.keepdim))
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        arity("norm", x, 1)?;
        if !(self.p.is_finite() && self.p > 0.0) {
            return Err(Error::new(
                ErrorKind::Invalid,
                "norm",
                format!("p must be finite and positive, got {}", self.p),
            ));
        }
        let p = plan("norm", self.axes.as_deref(), x[0].shape(), self.keepdim)?;
        Ok(p.reduce(x[0], |r| norm_row(r, self.p)))
    }
    /// `g · sign(x) · (|x|/‖x‖)^(p−1)` (`g·sign(x)` for `p = 1`, `g·x/‖x‖` for `p = 2`), 0 where
    /// the norm is 0; recorded from `x` and the saved norm, so it is differentiable again.
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
        let x = cx.input(0);
        let p = plan_of("norm", &self.axes, x, self.keepdim)?;
        let n = cx.output().reshape(&p.keep);
        let g = g.reshape(&p.keep);
        Ok(cx.grads([Some(V::pointwise(&NormRule(self.p), [&g, x, &n]))]))
    }
}

// ---------------------------------------------------------------------------------------------
// cumsum

/// Cumulative sum along an axis (from the end when `reverse`).
struct CumsumOp {
    axis: isize,
    reverse: bool,
}

/// Cumulative sums of every row of `n` (from the end of each row when `reverse`).
fn cumsum_rows<T: Float>(d: &[T], n: usize, reverse: bool) -> Vec<T> {
    let mut out = d.to_vec();
    for row in out.chunks_exact_mut(n) {
        if reverse {
            for i in (0..n - 1).rev() {
                row[i] += row[i + 1];
            }
        } else {
            for i in 1..n {
                row[i] += row[i - 1];
            }
        }
    }
    out
}

impl<T: Float> Op<T> for CumsumOp {
    fn name(&self) -> &'static str {
        "cumsum"
    }
    fn params(&self) -> String {
        format!("axis={}{}", self.axis, if self.reverse { ", reverse" } else { "" })
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        arity("cumsum", x, 1)?;
        let a = resolve_axis("cumsum", self.axis, x[0].ndim())
            .map_err(|e| Error::shape("cumsum", format!("{} (shape {})", e.message(), fmt_shape(x[0].shape()))))?;
        Ok(along_axis(x, a, |d, n| cumsum_rows(d[0], n, self.reverse)))
    }
    /// The cumulative sum from the other end: `dx_i = Σ_{j ≥ i} g_j` (a `cumsum` itself).
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
        let dx = V::apply(
            CumsumOp {
                axis: self.axis,
                reverse: !self.reverse,
            },
            &[g],
        )?;
        Ok(cx.grads([Some(dx)]))
    }
}

// ---------------------------------------------------------------------------------------------
// argmax / argmin

/// The first index of the maximum (minimum) along `axis`; NaN counts as the extreme.
fn arg_extreme<T: Float>(op: &str, x: &Tensor<T>, axis: isize, keepdim: bool, min: bool) -> Result<Indices> {
    let a = resolve_axis(op, axis, x.ndim())
        .map_err(|e| Error::shape(op, format!("{} (shape {})", e.message(), fmt_shape(x.shape()))))?;
    let p = plan(op, Some(&[a as isize]), x.shape(), keepdim)?;
    non_empty(op, &p, x.shape())?;
    let idx = if p.n == 0 {
        Vec::new()
    } else {
        p.rows(x)
            .data()
            .chunks_exact(p.n)
            .map(|r| {
                let m = extreme(r, min);
                r.iter()
                    .position(|&v| v == m || (v.is_nan() && m.is_nan()))
                    .unwrap_or(0)
            })
            .collect()
    };
    Indices::try_new(idx, &p.out)
}

impl<T: Float> Tensor<T> {
    /// The index of the first maximal element along `axis` (negative counts from the end), as
    /// [`Indices`] of the reduced shape (`keepdim` keeps the axis with extent 1). A NaN counts as
    /// the maximum (as in PyTorch), so its first position is returned. Panics (a `Shape` error
    /// naming `argmax`, with your line) for an axis out of range or an empty axis.
    ///
    /// ```
    /// let x = tapegrad::Tensor::from_vec(vec![1.0, 3.0, 3.0, f64::NAN, 0.0, 5.0], [2, 3]);
    /// assert_eq!(x.argmax(1, false).data(), &[1, 0]); // first of the tie; NaN wins
    /// ```
    #[track_caller]
    pub fn argmax(&self, axis: isize, keepdim: bool) -> Indices {
        let here = Location::caller();
        arg_extreme("argmax", self, axis, keepdim, false).unwrap_or_else(|e| fail(e.at(here)))
    }

    /// The index of the first minimal element along `axis`; a NaN counts as the minimum (as in
    /// PyTorch). See [`argmax`](Self::argmax).
    ///
    /// ```
    /// let x = tapegrad::Tensor::from_vec(vec![2.0, 1.0, 1.0], [3]);
    /// assert_eq!(x.argmin(0, false).data(), &[1]);
    /// ```
    #[track_caller]
    pub fn argmin(&self, axis: isize, keepdim: bool) -> Indices {
        let here = Location::caller();
        arg_extreme("argmin", self, axis, keepdim, true).unwrap_or_else(|e| fail(e.at(here)))
    }
}

impl<'t, T: Float> Var<'t, T> {
    /// Sum over a set of axes (see the [module docs](self) on axes); `keepdim` keeps them with
    /// extent 1.
    ///
    /// ```
    /// let tape = tapegrad::Tape::<f64>::new();
    /// let x = tape.var(tapegrad::Tensor::ones([2, 3, 4]));
    /// let s = x.sum_axes([0, -1], false);
    /// assert_eq!(s.value().to_vec(), vec![8.0; 3]);
    /// assert_eq!(x.sum_axes([0, 2], true).shape().as_slice(), &[1, 3, 1]);
    /// ```
    #[track_caller]
    pub fn sum_axes(self, axes: impl Axes, keepdim: bool) -> Var<'t, T> {
        let axes = axes.to_axes().to_vec();
        self.tape.op(
            OpRef::new(SumAxesOp {
                axes,
                keepdim,
                mean: false,
            }),
            &[self],
        )
    }

    /// Mean over a set of axes; `keepdim` keeps them with extent 1.
    #[track_caller]
    pub fn mean_axes(self, axes: impl Axes, keepdim: bool) -> Var<'t, T> {
        let axes = axes.to_axes().to_vec();
        self.tape.op(
            OpRef::new(SumAxesOp {
                axes,
                keepdim,
                mean: true,
            }),
            &[self],
        )
    }

    /// Maximum over a set of axes, the gradient **split evenly among ties** (like `torch.amax`);
    /// NaN propagates. (`max_axis` gives it all to the first maximum instead.)
    ///
    /// ```
    /// let tape = tapegrad::Tape::<f64>::new();
    /// let x = tape.var(tapegrad::Tensor::from_vec(vec![2.0, 2.0, 1.0, 0.0], [2, 2]));
    /// let m = x.amax([0, 1], false);
    /// assert_eq!(m.value().item(), 2.0);
    /// assert_eq!(m.backward()[x].to_vec(), vec![0.5, 0.5, 0.0, 0.0]);
    /// ```
    #[track_caller]
    pub fn amax(self, axes: impl Axes, keepdim: bool) -> Var<'t, T> {
        self.extreme_op(Some(axes.to_axes().to_vec()), keepdim, false)
    }

    /// Minimum over a set of axes, the gradient split evenly among ties (like `torch.amin`).
    #[track_caller]
    pub fn amin(self, axes: impl Axes, keepdim: bool) -> Var<'t, T> {
        self.extreme_op(Some(axes.to_axes().to_vec()), keepdim, true)
    }

    /// Maximum of all elements (a 0-d result), the gradient split evenly among ties (`amax` over
    /// every axis, like `torch.max()` without a dimension).
    #[track_caller]
    pub fn max_all(self) -> Var<'t, T> {
        self.extreme_op(None, false, false)
    }

    /// Minimum of all elements (a 0-d result), the gradient split evenly among ties.
    #[track_caller]
    pub fn min_all(self) -> Var<'t, T> {
        self.extreme_op(None, false, true)
    }

    #[track_caller]
    fn extreme_op(self, axes: Option<Vec<isize>>, keepdim: bool, min: bool) -> Var<'t, T> {
        self.tape.op(OpRef::new(AmaxOp { axes, keepdim, min }), &[self])
    }

    /// The index of the first maximal element along `axis`, of the current value: index data
    /// (a constant: no gradient), usable with `gather` / `index_select`. NaN counts as the maximum.
    /// See [`Tensor::argmax`].
    #[track_caller]
    pub fn argmax(self, axis: isize, keepdim: bool) -> Indices {
        let here = Location::caller();
        arg_extreme("argmax", &self.value(), axis, keepdim, false).unwrap_or_else(|e| fail(e.at(here)))
    }

    /// The index of the first minimal element along `axis` (a constant: no gradient); NaN counts
    /// as the minimum. See [`Tensor::argmin`].
    #[track_caller]
    pub fn argmin(self, axis: isize, keepdim: bool) -> Indices {
        let here = Location::caller();
        arg_extreme("argmin", &self.value(), axis, keepdim, true).unwrap_or_else(|e| fail(e.at(here)))
    }

    /// Product along one axis; `keepdim` keeps it with extent 1. The gradient is exact at zeros
    /// (see the [module docs](self)) and differentiable again.
    ///
    /// ```
    /// let tape = tapegrad::Tape::<f64>::new();
    /// let x = tape.var(tapegrad::Tensor::from_vec(vec![2.0, 0.0, 3.0], [3]));
    /// let p = x.prod_axis(0, false);
    /// assert_eq!(p.value().item(), 0.0);
    /// assert_eq!(p.backward()[x].to_vec(), vec![0.0, 6.0, 0.0]); // one zero: the others' product
    /// ```
    #[track_caller]
    pub fn prod_axis(self, axis: isize, keepdim: bool) -> Var<'t, T> {
        self.tape.op(
            OpRef::new(ProdOp {
                axes: Some(vec![axis]),
                keepdim,
            }),
            &[self],
        )
    }

    /// Product of all elements (a 0-d result); exact gradient at zeros.
    #[track_caller]
    pub fn prod_all(self) -> Var<'t, T> {
        self.tape.op(
            OpRef::new(ProdOp {
                axes: None,
                keepdim: false,
            }),
            &[self],
        )
    }

    /// Variance over a set of axes, dividing by `N − correction` (`correction = 1`: the unbiased
    /// estimate, PyTorch's default; 0: the population variance).
    ///
    /// ```
    /// let tape = tapegrad::Tape::<f64>::new();
    /// let x = tape.var(tapegrad::Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], [4]));
    /// assert_eq!(x.var([0], 1, false).value().item(), 5.0 / 3.0);
    /// assert_eq!(x.var([0], 0, false).value().item(), 1.25);
    /// ```
    #[track_caller]
    pub fn var(self, axes: impl Axes, correction: usize, keepdim: bool) -> Var<'t, T> {
        self.var_op(Some(axes.to_axes().to_vec()), correction, keepdim, false)
    }

    /// Variance of all elements (a 0-d result), dividing by `N − correction`.
    #[track_caller]
    pub fn var_all(self, correction: usize) -> Var<'t, T> {
        self.var_op(None, correction, false, false)
    }

    /// Standard deviation over a set of axes: `√var`. Its gradient where it is 0 (all elements
    /// equal) is 0.
    #[track_caller]
    pub fn std(self, axes: impl Axes, correction: usize, keepdim: bool) -> Var<'t, T> {
        self.var_op(Some(axes.to_axes().to_vec()), correction, keepdim, true)
    }

    /// Standard deviation of all elements (a 0-d result).
    #[track_caller]
    pub fn std_all(self, correction: usize) -> Var<'t, T> {
        self.var_op(None, correction, false, true)
    }

    #[track_caller]
    fn var_op(self, axes: Option<Vec<isize>>, correction: usize, keepdim: bool, std: bool) -> Var<'t, T> {
        self.tape.op(
            OpRef::new(VarOp {
                axes,
                correction,
                keepdim,
                std,
            }),
            &[self],
        )
    }

    /// The `p`-norm `(Σ|x|ᵖ)^(1/p)` over a set of axes (`p` finite and positive: 1, 2, 3, 1.5, …).
    /// The gradient at the zero vector is 0 (see the [module docs](self)).
    ///
    /// ```
    /// let tape = tapegrad::Tape::<f64>::new();
    /// let x = tape.var(tapegrad::Tensor::from_vec(vec![3.0, -4.0, 0.0, 0.0], [2, 2]));
    /// let n = x.norm(2.0, [1], false);
    /// assert_eq!(n.value().to_vec(), vec![5.0, 0.0]);
    /// assert_eq!(n.sum().backward()[x].to_vec(), vec![0.6, -0.8, 0.0, 0.0]);
    /// ```
    #[track_caller]
    pub fn norm(self, p: f64, axes: impl Axes, keepdim: bool) -> Var<'t, T> {
        let axes = Some(axes.to_axes().to_vec());
        self.tape.op(OpRef::new(NormOp { p, axes, keepdim }), &[self])
    }

    /// The `p`-norm of all elements (a 0-d result).
    #[track_caller]
    pub fn norm_all(self, p: f64) -> Var<'t, T> {
        self.tape.op(
            OpRef::new(NormOp {
                p,
                axes: None,
                keepdim: false,
            }),
            &[self],
        )
    }

    /// Cumulative sum along `axis`: `y_i = Σ_{j ≤ i} x_j`. Its gradient is the cumulative sum
    /// from the other end ([`reverse_cumsum`](Self::reverse_cumsum)).
    ///
    /// ```
    /// let tape = tapegrad::Tape::<f64>::new();
    /// let x = tape.var(tapegrad::Tensor::from_vec(vec![1.0, 2.0, 3.0], [3]));
    /// assert_eq!(x.cumsum(0).value().to_vec(), vec![1.0, 3.0, 6.0]);
    /// assert_eq!(x.cumsum(0).sum().backward()[x].to_vec(), vec![3.0, 2.0, 1.0]);
    /// ```
    #[track_caller]
    pub fn cumsum(self, axis: isize) -> Var<'t, T> {
        self.tape.op(OpRef::new(CumsumOp { axis, reverse: false }), &[self])
    }

    /// Cumulative sum from the end along `axis`: `y_i = Σ_{j ≥ i} x_j` (the op `cumsum`, reversed).
    #[track_caller]
    pub fn reverse_cumsum(self, axis: isize) -> Var<'t, T> {
        self.tape.op(OpRef::new(CumsumOp { axis, reverse: true }), &[self])
    }
}

// ---------------------------------------------------------------------------------------------
// recipes

/// A set of axes for a value with `ndim` axes: tame, each axis in or out (negative or not);
/// wild, up to three small integers (repeats and out-of-range ones included).
fn pick_axes(c: &mut Choice<'_>, ndim: usize) -> Vec<isize> {
    if c.wild() {
        let k = c.below(4);
        return (0..k).map(|_| (c.byte() as i8 % 5) as isize).collect();
    }
    (0..ndim)
        .filter_map(|a| {
            let b = c.byte();
            (b & 1 == 1).then(|| {
                if b & 2 != 0 {
                    a as isize - ndim as isize
                } else {
                    a as isize
                }
            })
        })
        .collect()
}

/// `x` made tie-free over `axes` (`None`: all): `tanh(x)/4` plus a constant ramp of distinct
/// integers over the reduced axes (shuffled by the choices), so elements of one reduced set are
/// at least ½ apart (the maxima and the spread then have no kink). `None` for invalid axes.
fn tie_free<'t, T: Float>(c: &mut Choice<'_>, x: Var<'t, T>, axes: Option<&[isize]>) -> Option<Var<'t, T>> {
    let shape = x.shape();
    let p = plan("tie_free", axes, &shape, true).ok()?;
    let ramp_shape: Vec<usize> = shape
        .iter()
        .zip(&p.keep)
        .map(|(&n, &k)| if k == 1 { n } else { 1 })
        .collect();
    let order = c.permutation(p.n);
    let ramp = Tensor::from_fn(&ramp_shape, |k| T::from_f64(order[k] as f64));
    Some(x.tanh().mul_scalar(T::from_f64(0.25)) + x.tape().constant(ramp))
}

fn sum_axes_recipe<'t, T: Float>(c: &mut Choice<'_>, v: &[Var<'t, T>], mean: bool) -> Option<Var<'t, T>> {
    let x = c.pick(v);
    let keep = c.flag();
    let axes = pick_axes(c, x.shape().len());
    Some(if mean {
        x.mean_axes(axes, keep)
    } else {
        x.sum_axes(axes, keep)
    })
}

fn amax_recipe<'t, T: Float>(c: &mut Choice<'_>, v: &[Var<'t, T>], min: bool) -> Option<Var<'t, T>> {
    let x = c.pick(v);
    let keep = c.flag();
    let all = c.flag();
    let axes = pick_axes(c, x.shape().len());
    let x = if c.wild() {
        x
    } else {
        tie_free(c, x, (!all).then_some(&axes[..]))?
    };
    Some(match (all, min) {
        (true, false) => x.max_all(),
        (true, true) => x.min_all(),
        (false, false) => x.amax(axes, keep),
        (false, true) => x.amin(axes, keep),
    })
}

fn prod_recipe<'t, T: Float>(c: &mut Choice<'_>, v: &[Var<'t, T>]) -> Option<Var<'t, T>> {
    let x = c.pick(v);
    let keep = c.flag();
    if c.flag() {
        return Some(x.prod_all());
    }
    let axis = c.axis(x.shape().len())?;
    Some(x.prod_axis(axis, keep))
}

fn var_recipe<'t, T: Float>(c: &mut Choice<'_>, v: &[Var<'t, T>], std: bool) -> Option<Var<'t, T>> {
    let x = c.pick(v);
    let keep = c.flag();
    let all = c.flag();
    let mut correction = c.below(3);
    let axes = pick_axes(c, x.shape().len());
    let call = |x: Var<'t, T>, correction: usize| match (all, std) {
        (true, false) => x.var_all(correction),
        (true, true) => x.std_all(correction),
        (false, false) => x.var(&axes, correction, keep),
        (false, true) => x.std(&axes, correction, keep),
    };
    if c.wild() {
        return Some(call(x, correction));
    }
    let n = plan("var", (!all).then_some(&axes[..]), &x.shape(), keep).ok()?.n;
    correction = correction.min(1);
    if n <= correction || (std && n < 2) {
        return None; // no spread to divide by, or a standard deviation at its kink
    }
    let x = if std {
        tie_free(c, x, (!all).then_some(&axes[..]))?
    } else {
        x
    };
    Some(call(x, correction))
}

fn norm_recipe<'t, T: Float>(c: &mut Choice<'_>, v: &[Var<'t, T>]) -> Option<Var<'t, T>> {
    let x = c.pick(v);
    let keep = c.flag();
    let all = c.flag();
    let p = if c.wild() {
        c.one_of(&[1.0, 2.0, 3.0, 0.0, -1.0, f64::NAN, f64::INFINITY])
    } else {
        c.one_of(&[1.0, 2.0, 3.0, 1.5])
    };
    let axes = pick_axes(c, x.shape().len());
    let x = c.into_domain(x, Domain::AwayFromZero);
    Some(if all { x.norm_all(p) } else { x.norm(p, axes, keep) })
}

fn cumsum_recipe<'t, T: Float>(c: &mut Choice<'_>, v: &[Var<'t, T>]) -> Option<Var<'t, T>> {
    let x = c.pick(v);
    let reverse = c.flag();
    let axis = c.axis(x.shape().len())?;
    Some(if reverse {
        x.reverse_cumsum(axis)
    } else {
        x.cumsum(axis)
    })
}

// ---------------------------------------------------------------------------------------------
// registry

pub(crate) fn register(r: &mut Registry) {
    r.register(
        OpInfo::new("sum_axes", "sum over a set of axes (keepdim)", || {
            let n = |s: &[usize], seed| Tensor::<f64>::rand_normal(s, 0.0, 1.0, seed);
            vec![
                sample!("axes [0,2] of [2,3,4]", [n(&[2, 3, 4], 300)], |v| v[0]
                    .sum_axes([0, 2], false))
                .with_reference(|x| naive::reduce(&x[0], Some(&[0, 2]), false, naive::sum)),
                sample!("axes [-1,0] keepdim of [2,3,2]", [n(&[2, 3, 2], 301)], |v| v[0]
                    .sum_axes([-1, 0], true))
                .with_reference(|x| naive::reduce(&x[0], Some(&[-1, 0]), true, naive::sum)),
                sample!("axes [1] of [3,2]", [n(&[3, 2], 302)], |v| v[0].sum_axes([1], false))
                    .with_reference(|x| naive::reduce(&x[0], Some(&[1]), false, naive::sum)),
                sample!("no axes of [2,2]", [n(&[2, 2], 303)], |v| v[0]
                    .sum_axes([] as [isize; 0], false))
                .with_reference(|x| naive::reduce(&x[0], Some(&[]), false, naive::sum)),
                sample!("[1] axis 0", [n(&[1], 304)], |v| v[0].sum_axes([0], false))
                    .with_reference(|x| naive::reduce(&x[0], Some(&[0]), false, naive::sum)),
            ]
        })
        .recipe(recipe!(|c, v| sum_axes_recipe(c, v, false))),
    );
    r.register(
        OpInfo::new("mean_axes", "mean over a set of axes (keepdim)", || {
            let n = |s: &[usize], seed| Tensor::<f64>::rand_normal(s, 0.0, 1.0, seed);
            vec![
                sample!("axes [0,2] of [2,3,4]", [n(&[2, 3, 4], 305)], |v| v[0]
                    .mean_axes([0, 2], false))
                .with_reference(|x| naive::reduce(&x[0], Some(&[0, 2]), false, naive::mean)),
                sample!("axes [-2] keepdim of [3,2]", [n(&[3, 2], 306)], |v| v[0]
                    .mean_axes([-2], true))
                .with_reference(|x| naive::reduce(&x[0], Some(&[-2]), true, naive::mean)),
                sample!("[1,1] axes [0,1]", [n(&[1, 1], 307)], |v| v[0].mean_axes([0, 1], false))
                    .with_reference(|x| naive::reduce(&x[0], Some(&[0, 1]), false, naive::mean)),
            ]
        })
        .recipe(recipe!(|c, v| mean_axes_recipe(c, v))),
    );
    r.register(
        OpInfo::new(
            "amax",
            "max over a set of axes or all (keepdim); gradient split evenly among ties",
            || {
                vec![
                    sample!("axes [0,2] of [2,3,2]", [naive::distinct(&[2, 3, 2], 310)], |v| v[0]
                        .amax([0, 2], false))
                    .with_reference(|x| naive::reduce(&x[0], Some(&[0, 2]), false, naive::max)),
                    sample!("axis -1 keepdim of [3,4]", [naive::distinct(&[3, 4], 311)], |v| v[0]
                        .amax([-1], true))
                    .with_reference(|x| naive::reduce(&x[0], Some(&[-1]), true, naive::max)),
                    sample!("all of [2,3]", [naive::distinct(&[2, 3], 312)], |v| v[0].max_all())
                        .with_reference(|x| naive::reduce(&x[0], None, false, naive::max)),
                    sample!("0-d", [Tensor::scalar(0.4)], |v| v[0].max_all())
                        .with_reference(|x| naive::reduce(&x[0], None, false, naive::max)),
                    sample!("[1] axis 0", [Tensor::from_vec(vec![-0.7], [1])], |v| v[0]
                        .amax([0], false))
                    .with_reference(|x| naive::reduce(&x[0], Some(&[0]), false, naive::max)),
                ]
            },
        )
        .recipe(recipe!(|c, v| amax_recipe(c, v, false))),
    );
    r.register(
        OpInfo::new(
            "amin",
            "min over a set of axes or all (keepdim); gradient split evenly among ties",
            || {
                vec![
                    sample!("axes [1,-1] of [2,3,2]", [naive::distinct(&[2, 3, 2], 313)], |v| v[0]
                        .amin([1, -1], true))
                    .with_reference(|x| naive::reduce(&x[0], Some(&[1, -1]), true, naive::min)),
                    sample!("all of [3,2]", [naive::distinct(&[3, 2], 314)], |v| v[0].min_all())
                        .with_reference(|x| naive::reduce(&x[0], None, false, naive::min)),
                    sample!("[1] axis 0", [Tensor::from_vec(vec![0.3], [1])], |v| v[0]
                        .amin([0], false))
                    .with_reference(|x| naive::reduce(&x[0], Some(&[0]), false, naive::min)),
                ]
            },
        )
        .recipe(recipe!(|c, v| amax_recipe(c, v, true))),
    );
    r.register(
        OpInfo::new(
            "prod",
            "product along an axis or all (keepdim); exact gradient at zeros",
            || {
                let n = |s: &[usize], seed| Tensor::<f64>::rand_normal(s, 0.0, 1.0, seed);
                let with_zeros = || {
                    Tensor::from_vec(
                        vec![0.5, 0.0, -1.5, 1.2, 0.8, -0.6, 0.0, 1.1, 0.0, 0.9, 1.3, 0.7],
                        [3, 4],
                    )
                };
                vec![
                    sample!("axis 1 of [3,4]", [n(&[3, 4], 320)], |v| v[0].prod_axis(1, false))
                        .with_reference(|x| naive::reduce(&x[0], Some(&[1]), false, naive::prod)),
                    sample!("axis -2 keepdim of [2,3,2]", [n(&[2, 3, 2], 321)], |v| v[0]
                        .prod_axis(-2, true))
                    .with_reference(|x| naive::reduce(&x[0], Some(&[-2]), true, naive::prod)),
                    sample!("all of [2,3]", [n(&[2, 3], 322)], |v| v[0].prod_all())
                        .with_reference(|x| naive::reduce(&x[0], None, false, naive::prod)),
                    sample!("0-d", [Tensor::scalar(-0.8)], |v| v[0].prod_all())
                        .with_reference(|x| naive::reduce(&x[0], None, false, naive::prod)),
                    sample!("rows with 0, 1 and 2 zeros, axis 1", [with_zeros()], |v| v[0]
                        .prod_axis(1, false))
                    .with_reference(|x| naive::reduce(&x[0], Some(&[1]), false, naive::prod)),
                    sample!("columns with 0, 1 and 2 zeros, axis 0", [with_zeros()], |v| v[0]
                        .prod_axis(0, true))
                    .with_reference(|x| naive::reduce(&x[0], Some(&[0]), true, naive::prod)),
                    sample!("all with 3 zeros", [with_zeros()], |v| v[0].prod_all())
                        .with_reference(|x| naive::reduce(&x[0], None, false, naive::prod)),
                ]
            },
        )
        .recipe(recipe!(|c, v| prod_recipe(c, v))),
    );
    r.register(
        OpInfo::new(
            "var",
            "variance over a set of axes or all, dividing by N − correction (keepdim)",
            || {
                let n = |s: &[usize], seed| Tensor::<f64>::rand_normal(s, 0.0, 1.0, seed);
                vec![
                    sample!("axes [0,2] of [2,3,4], correction 1", [n(&[2, 3, 4], 330)], |v| v[0]
                        .var([0, 2], 1, false))
                    .with_reference(|x| naive::reduce(&x[0], Some(&[0, 2]), false, |l| naive::var(l, 1))),
                    sample!("axis -1 keepdim of [3,4], correction 0", [n(&[3, 4], 331)], |v| v[0]
                        .var([-1], 0, true))
                    .with_reference(|x| naive::reduce(&x[0], Some(&[-1]), true, |l| naive::var(l, 0))),
                    sample!("all of [2,3], correction 1", [n(&[2, 3], 332)], |v| v[0].var_all(1))
                        .with_reference(|x| naive::reduce(&x[0], None, false, |l| naive::var(l, 1))),
                    sample!("[1], correction 0", [n(&[1], 333)], |v| v[0].var_all(0))
                        .with_reference(|x| naive::reduce(&x[0], None, false, |l| naive::var(l, 0))),
                ]
            },
        )
        .recipe(recipe!(|c, v| var_recipe(c, v, false))),
    );
    r.register(
        OpInfo::new(
            "std",
            "standard deviation over a set of axes or all (correction, keepdim); gradient 0 where it is 0",
            || {
                let n = |s: &[usize], seed| Tensor::<f64>::rand_normal(s, 0.0, 1.0, seed);
                vec![
                    sample!("axes [0,2] of [2,3,4], correction 1", [n(&[2, 3, 4], 334)], |v| v[0]
                        .std([0, 2], 1, false))
                    .with_reference(|x| naive::reduce(&x[0], Some(&[0, 2]), false, |l| naive::var(l, 1).sqrt())),
                    sample!("axis 0 keepdim of [3,2], correction 0", [n(&[3, 2], 335)], |v| v[0]
                        .std([0], 0, true))
                    .with_reference(|x| naive::reduce(&x[0], Some(&[0]), true, |l| naive::var(l, 0).sqrt())),
                    sample!("all of [1,2], correction 1", [n(&[1, 2], 336)], |v| v[0].std_all(1))
                        .with_reference(|x| naive::reduce(&x[0], None, false, |l| naive::var(l, 1).sqrt())),
                ]
            },
        )
        .recipe(recipe!(|c, v| var_recipe(c, v, true))),
    );
    r.register(
        OpInfo::new(
            "norm",
            "p-norm over a set of axes or all (keepdim); gradient 0 at the zero vector",
            || {
                let d = |s: &[usize], seed| Domain::AwayFromZero.sample(s, seed);
                vec![
                    sample!("L2 axis 1 of [3,4]", [d(&[3, 4], 340)], |v| v[0].norm(2.0, [1], false))
                        .with_reference(|x| naive::reduce(&x[0], Some(&[1]), false, |l| naive::norm(l, 2.0))),
                    sample!("L1 axes [0,2] keepdim of [2,3,2]", [d(&[2, 3, 2], 341)], |v| v[0].norm(
                        1.0,
                        [0, -1],
                        true
                    ))
                    .with_reference(|x| naive::reduce(&x[0], Some(&[0, -1]), true, |l| naive::norm(l, 1.0))),
                    sample!("L3 all of [2,3]", [d(&[2, 3], 342)], |v| v[0].norm_all(3.0))
                        .with_reference(|x| naive::reduce(&x[0], None, false, |l| naive::norm(l, 3.0))),
                    sample!("L1.5 axis 0 of [3,2]", [d(&[3, 2], 343)], |v| v[0].norm(
                        1.5,
                        [0],
                        false
                    ))
                    .with_reference(|x| naive::reduce(&x[0], Some(&[0]), false, |l| naive::norm(l, 1.5))),
                    sample!("L2 0-d", [Tensor::scalar(-0.6)], |v| v[0].norm_all(2.0))
                        .with_reference(|x| naive::reduce(&x[0], None, false, |l| naive::norm(l, 2.0))),
                ]
            },
        )
        .domain(Domain::AwayFromZero)
        .recipe(recipe!(|c, v| norm_recipe(c, v))),
    );
    r.register(
        OpInfo::new(
            "cumsum",
            "cumulative sum along an axis (or from its end); VJP the reverse cumsum",
            || {
                let n = |s: &[usize], seed| Tensor::<f64>::rand_normal(s, 0.0, 1.0, seed);
                vec![
                    sample!("axis 1 of [3,4]", [n(&[3, 4], 350)], |v| v[0].cumsum(1))
                        .with_reference(|x| naive::cumsum(&x[0], 1, false)),
                    sample!("axis -3 of [2,3,2]", [n(&[2, 3, 2], 351)], |v| v[0].cumsum(-3))
                        .with_reference(|x| naive::cumsum(&x[0], -3, false)),
                    sample!("reverse axis 1 of [2,3,2]", [n(&[2, 3, 2], 352)], |v| v[0]
                        .reverse_cumsum(1))
                    .with_reference(|x| naive::cumsum(&x[0], 1, true)),
                    sample!("[1] axis 0", [n(&[1], 353)], |v| v[0].cumsum(0))
                        .with_reference(|x| naive::cumsum(&x[0], 0, false)),
                ]
            },
        )
        .recipe(recipe!(|c, v| cumsum_recipe(c, v))),
    );
}

fn mean_axes_recipe<'t, T: Float>(c: &mut Choice<'_>, v: &[Var<'t, T>]) -> Option<Var<'t, T>> {
    sum_axes_recipe(c, v, true)
}

/// Naive `f64` references for this file's ops: one output element at a time, multi-indices
/// unravelled by hand; none of the library's kernels.
pub(crate) mod naive {
    use crate::tensor::Tensor;

    /// The multi-index of flat position `i` in a row-major `shape`.
    fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
        let mut idx = vec![0; shape.len()];
        for a in (0..shape.len()).rev() {
            idx[a] = i % shape[a];
            i /= shape[a];
        }
        idx
    }

    /// `axis` counted from the front.
    fn axis_of(a: isize, ndim: usize) -> usize {
        if a < 0 {
            (a + ndim as isize) as usize
        } else {
            a as usize
        }
    }

    /// Groups the elements of `x` by their position on the kept axes (every element of a group in
    /// row-major order) and folds each group with `f`.
    pub(crate) fn reduce(
        x: &Tensor<f64>,
        axes: Option<&[isize]>,
        keepdim: bool,
        f: impl Fn(&[f64]) -> f64,
    ) -> Tensor<f64> {
        let nd = x.ndim();
        let reduced: Vec<bool> = (0..nd)
            .map(|a| axes.is_none_or(|l| l.iter().any(|&b| axis_of(b, nd) == a)))
            .collect();
        let keep: Vec<usize> = (0..nd).map(|a| if reduced[a] { 1 } else { x.shape()[a] }).collect();
        let groups_n: usize = keep.iter().product();
        let mut groups = vec![Vec::new(); groups_n];
        for i in 0..x.numel() {
            let idx = unravel(i, x.shape());
            let mut g = 0;
            for a in 0..nd {
                g = g * keep[a] + if reduced[a] { 0 } else { idx[a] };
            }
            groups[g].push(x.data()[i]);
        }
        let out: Vec<f64> = groups.iter().map(|l| f(l)).collect();
        let shape: Vec<usize> = if keepdim {
            keep
        } else {
            (0..nd).filter(|&a| !reduced[a]).map(|a| x.shape()[a]).collect()
        };
        Tensor::from_vec(out, shape)
    }

    /// Σ.
    pub(crate) fn sum(l: &[f64]) -> f64 {
        l.iter().sum()
    }
    /// The arithmetic mean.
    pub(crate) fn mean(l: &[f64]) -> f64 {
        sum(l) / l.len() as f64
    }
    /// The maximum (NaN if any).
    pub(crate) fn max(l: &[f64]) -> f64 {
        if l.iter().any(|v| v.is_nan()) {
            return f64::NAN;
        }
        l.iter().cloned().fold(f64::NEG_INFINITY, f64::max)
    }
    /// The minimum (NaN if any).
    pub(crate) fn min(l: &[f64]) -> f64 {
        if l.iter().any(|v| v.is_nan()) {
            return f64::NAN;
        }
        l.iter().cloned().fold(f64::INFINITY, f64::min)
    }
    /// Π.
    pub(crate) fn prod(l: &[f64]) -> f64 {
        l.iter().product()
    }
    /// Σ(x − mean)² / (N − correction).
    pub(crate) fn var(l: &[f64], correction: usize) -> f64 {
        let m = mean(l);
        l.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (l.len() as f64 - correction as f64)
    }
    /// (Σ|x|ᵖ)^(1/p), unscaled.
    pub(crate) fn norm(l: &[f64], p: f64) -> f64 {
        l.iter().map(|v| v.abs().powf(p)).sum::<f64>().powf(1.0 / p)
    }
    /// Cumulative sums along `axis` (from its end when `reverse`), one output element at a time.
    pub(crate) fn cumsum(x: &Tensor<f64>, axis: isize, reverse: bool) -> Tensor<f64> {
        let a = axis_of(axis, x.ndim());
        let n = x.shape()[a];
        let stride: usize = x.shape()[a + 1..].iter().product();
        let mut out = Vec::with_capacity(x.numel());
        for i in 0..x.numel() {
            let k = unravel(i, x.shape())[a];
            let base = i - k * stride;
            let range: Vec<usize> = if reverse { (k..n).collect() } else { (0..=k).collect() };
            out.push(range.iter().map(|&j| x.data()[base + j * stride]).sum());
        }
        Tensor::from_vec(out, x.shape())
    }
    /// Distinct values `0.37·k` in a seeded order (no ties, so finite differences of a maximum
    /// do not straddle one).
    pub(crate) fn distinct(shape: &[usize], seed: u64) -> Tensor<f64> {
        let n: usize = shape.iter().product();
        let mut rng = crate::core::rng::Rng::new(seed);
        let mut v: Vec<f64> = (0..n).map(|i| i as f64 * 0.37 - 1.0).collect();
        for i in (1..n).rev() {
            v.swap(i, rng.below(i + 1));
        }
        Tensor::from_vec(v, shape)
    }
}
