//! Layout ops: `reshape` (and its forms `squeeze`, `unsqueeze`, `flatten`), `permute`/`transpose`,
//! `broadcast_to`. They move values, never combine them, so each rule is the inverse movement:
//! reshape back, permute by the inverse permutation, sum back down (`sum_to`).
//!
//! # Axes
//!
//! An axis is an `isize` everywhere in the API, negative ones counting from the end (`-1` is the
//! last), as in NumPy and PyTorch. A list of axes (a permutation) is anything that implements
//! [`Axes`]: an array, slice or `Vec` of `usize`, `isize` or `i32`, so `x.permute([1, 0])`,
//! `x.permute([-1, 0])` and `x.permute(vec![2usize, 0, 1])` all work.

use super::common::{arity, resolve_axis};
use super::reference;
use super::registry::{Choice, OpInfo, Registry};
use crate::autodiff::rule::Value;
use crate::autodiff::rule::{Cotangents, Op, VjpCtx};
use crate::autodiff::tape::{OpRef, Var};
use crate::core::error::{Error, ErrorKind, Result, fail};
use crate::core::float::Float;
use crate::core::shape::{Shape, fmt_shape, shape_of};
use crate::tensor::Tensor;
use crate::{recipe, sample};
use smallvec::SmallVec;
use std::panic::Location;

/// An integer usable as an axis or a position: `usize`, `isize` or `i32` (so integer literals,
/// which default to `i32`, work wherever one is expected).
pub trait IndexInt: Copy {
    /// The value as an `isize` (a `usize` beyond `isize::MAX` saturates, so it stays out of range).
    fn to_isize(self) -> isize;
}

impl IndexInt for usize {
    fn to_isize(self) -> isize {
        isize::try_from(self).unwrap_or(isize::MAX)
    }
}
impl IndexInt for isize {
    fn to_isize(self) -> isize {
        self
    }
}
impl IndexInt for i32 {
    fn to_isize(self) -> isize {
        self as isize
    }
}

/// A list of axes (negative ones count from the end): an array, slice, `Vec` or `SmallVec` of
/// [`IndexInt`]s, or a reference to one.
///
/// ```
/// let tape = tapegrad::Tape::<f64>::new();
/// let x = tape.var(tapegrad::Tensor::zeros([2, 3, 4]));
/// assert_eq!(x.permute([2, 0, 1]).shape().as_slice(), &[4, 2, 3]);
/// assert_eq!(x.permute([-1, 0, 1]).shape().as_slice(), &[4, 2, 3]);
/// assert_eq!(x.permute(vec![2usize, 0, 1]).shape().as_slice(), &[4, 2, 3]);
/// ```
pub trait Axes {
    /// The axes, as given (not yet resolved against a shape).
    fn to_axes(&self) -> SmallVec<[isize; 4]>;
}

impl<A: IndexInt> Axes for [A] {
    fn to_axes(&self) -> SmallVec<[isize; 4]> {
        self.iter().map(|a| a.to_isize()).collect()
    }
}
impl<A: IndexInt, const N: usize> Axes for [A; N] {
    fn to_axes(&self) -> SmallVec<[isize; 4]> {
        self[..].to_axes()
    }
}
impl<A: IndexInt> Axes for Vec<A> {
    fn to_axes(&self) -> SmallVec<[isize; 4]> {
        self[..].to_axes()
    }
}
impl<A: smallvec::Array> Axes for SmallVec<A>
where
    A::Item: IndexInt,
{
    fn to_axes(&self) -> SmallVec<[isize; 4]> {
        self[..].to_axes()
    }
}
impl<X: Axes + ?Sized> Axes for &X {
    fn to_axes(&self) -> SmallVec<[isize; 4]> {
        (**self).to_axes()
    }
}

/// The error for a new axis `axis` (of `stack`, `unsqueeze`) out of range for parts of `shape`.
pub(crate) fn new_axis_error(op: &str, axis: isize, shape: &[usize]) -> Error {
    let n = shape.len() + 1;
    Error::shape(
        op,
        format!(
            "axis {axis} is out of range for a new axis of {}: the result has {n} axes (-{n}..={})",
            fmt_shape(shape),
            n - 1
        ),
    )
}

/// Resolves a permutation given with possibly negative axes against `ndim` axes, or reports it
/// (naming the axes as given and the shape) when it is not a permutation of `0..ndim`.
fn resolve_perm(axes: &[isize], shape: &[usize]) -> Result<Vec<usize>> {
    let n = shape.len();
    let mut seen = vec![false; n];
    let mut perm = Vec::with_capacity(n);
    let ok = axes.len() == n
        && axes.iter().all(|&a| {
            let r = if a < 0 { a.checked_add(n as isize) } else { Some(a) };
            match r {
                Some(r) if (0..n as isize).contains(&r) && !std::mem::replace(&mut seen[r as usize], true) => {
                    perm.push(r as usize);
                    true
                }
                _ => false,
            }
        });
    if ok {
        return Ok(perm);
    }
    let valid = if n == 0 {
        "a 0-d value has no axes, so only [] is".to_string()
    } else {
        format!("each of 0..{n} (or -{n}..0 from the end) must appear exactly once")
    };
    Err(Error::new(
        ErrorKind::Invalid,
        "permute",
        format!(
            "{axes:?} is not a permutation of the axes of {} ({valid})",
            fmt_shape(shape)
        ),
    ))
}

pub(crate) struct ReshapeOp(pub(crate) Shape);
impl<T: Float> Op<T> for ReshapeOp {
    fn name(&self) -> &'static str {
        "reshape"
    }
    fn params(&self) -> String {
        format!("shape={}", fmt_shape(&self.0))
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        arity("reshape", x, 1)?;
        x[0].try_reshape(&self.0)
            .map_err(|e| Error::shape("reshape", e.message()))
    }
    /// Reshape back.
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
        Ok(cx.grads([Some(g.reshape(&cx.input(0).shape()))]))
    }
}

/// Axis `i` of the output is axis `self.0[i]` of the input (negative axes count from the end).
struct PermuteOp(SmallVec<[isize; 4]>);
impl<T: Float> Op<T> for PermuteOp {
    fn name(&self) -> &'static str {
        "permute"
    }
    fn params(&self) -> String {
        format!("axes={:?}", &self.0[..])
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        arity("permute", x, 1)?;
        let perm = resolve_perm(&self.0, x[0].shape())?;
        x[0].try_permute(&perm)
            .map_err(|e| Error::new(e.kind(), "permute", e.message()))
    }
    /// Permute back by the inverse permutation.
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
        let perm = resolve_perm(&self.0, &cx.input(0).shape())?;
        let mut inv = vec![0; perm.len()];
        for (i, &p) in perm.iter().enumerate() {
            inv[p] = i;
        }
        Ok(cx.grads([Some(g.permute(&inv))]))
    }
}

pub(crate) struct BroadcastToOp(pub(crate) Shape);
impl<T: Float> Op<T> for BroadcastToOp {
    fn name(&self) -> &'static str {
        "broadcast_to"
    }
    fn params(&self) -> String {
        format!("shape={}", fmt_shape(&self.0))
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        arity("broadcast_to", x, 1)?;
        // Re-raised without the location inside this file: the tape adds the user's.
        x[0].try_broadcast_to(&self.0)
            .map_err(|e| Error::shape("broadcast_to", e.message()))
    }
    /// The rule of broadcasting is summing back down.
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
        Ok(cx.grads([Some(g.sum_to(&cx.input(0).shape()))]))
    }
}

impl<'t, T: Float> Var<'t, T> {
    /// The same values with another shape of the same size (no copy).
    #[track_caller]
    pub fn reshape(self, shape: impl AsRef<[usize]>) -> Var<'t, T> {
        self.tape.op(OpRef::new(ReshapeOp(shape_of(shape))), &[self])
    }

    /// Reorders the axes: axis `i` of the result is axis `perm[i]` of `self`; a negative axis
    /// counts from the end (see [`Axes`]). Panics with an `Invalid` error naming `permute`, the
    /// axes and the shape when `perm` is not a permutation of the axes (nothing is recorded then).
    ///
    /// ```
    /// let tape = tapegrad::Tape::<f64>::new();
    /// let x = tape.var(tapegrad::Tensor::zeros([2, 3, 4]));
    /// assert_eq!(x.permute([1, 0, 2]).shape().as_slice(), &[3, 2, 4]);
    /// assert_eq!(x.permute([-1, -3, -2]).shape().as_slice(), &[4, 2, 3]);
    /// ```
    #[track_caller]
    pub fn permute(self, perm: impl Axes) -> Var<'t, T> {
        self.tape.op(OpRef::new(PermuteOp(perm.to_axes())), &[self])
    }

    /// Removes axis `axis`, which must have extent 1 (negative counts from the end). Recorded as
    /// a `reshape`. Panics with a `Shape` error naming `squeeze`, the axis and the shape when the
    /// axis is out of range or its extent is not 1 (nothing is recorded then).
    ///
    /// ```
    /// let tape = tapegrad::Tape::<f64>::new();
    /// let x = tape.var(tapegrad::Tensor::zeros([2, 1, 3]));
    /// assert_eq!(x.squeeze(1).shape().as_slice(), &[2, 3]);
    /// assert_eq!(x.squeeze(-2).shape().as_slice(), &[2, 3]);
    /// ```
    #[track_caller]
    pub fn squeeze(self, axis: isize) -> Var<'t, T> {
        let loc = Location::caller();
        let mut shape = self.shape();
        let a = resolve_axis("squeeze", axis, shape.len()).unwrap_or_else(|e| fail(e.at(loc)));
        if shape[a] != 1 {
            fail(
                Error::shape(
                    "squeeze",
                    format!(
                        "axis {axis} of {} has extent {}, not 1, so it cannot be removed",
                        fmt_shape(&shape),
                        shape[a]
                    ),
                )
                .at(loc),
            );
        }
        shape.remove(a);
        self.reshape(shape)
    }

    /// Inserts an axis of extent 1 so that it becomes axis `axis` of the result: `0..=ndim`, or
    /// `-(ndim + 1)..0` from the end (`-1` appends it). Recorded as a `reshape`. Panics with a
    /// `Shape` error naming `unsqueeze` when the axis is out of range (nothing is recorded then).
    ///
    /// ```
    /// let tape = tapegrad::Tape::<f64>::new();
    /// let x = tape.var(tapegrad::Tensor::zeros([2, 3]));
    /// assert_eq!(x.unsqueeze(0).shape().as_slice(), &[1, 2, 3]);
    /// assert_eq!(x.unsqueeze(-1).shape().as_slice(), &[2, 3, 1]);
    /// ```
    #[track_caller]
    pub fn unsqueeze(self, axis: isize) -> Var<'t, T> {
        let loc = Location::caller();
        let mut shape = self.shape();
        let a = resolve_axis("unsqueeze", axis, shape.len() + 1)
            .unwrap_or_else(|_| fail(new_axis_error("unsqueeze", axis, &shape).at(loc)));
        shape.insert(a, 1);
        self.reshape(shape)
    }

    /// Merges axes `start..=end` (inclusive, as PyTorch; negative counts from the end) into one.
    /// A 0-d value counts as having one axis of extent 1, so `flatten(0, -1)` of it is `[1]`.
    /// Recorded as a `reshape`. Panics with a `Shape` error naming `flatten`, the axes and the
    /// shape when an axis is out of range or `start` comes after `end` (nothing is recorded then).
    ///
    /// ```
    /// let tape = tapegrad::Tape::<f64>::new();
    /// let x = tape.var(tapegrad::Tensor::zeros([2, 3, 4]));
    /// assert_eq!(x.flatten(1, -1).shape().as_slice(), &[2, 12]);
    /// assert_eq!(x.flatten(0, -1).shape().as_slice(), &[24]);
    /// ```
    #[track_caller]
    pub fn flatten(self, start: isize, end: isize) -> Var<'t, T> {
        let loc = Location::caller();
        let mut shape = self.shape();
        if shape.is_empty() {
            shape.push(1);
        }
        let resolve = |a| resolve_axis("flatten", a, shape.len()).map_err(|e| e.at(loc));
        let (s, e) = match (resolve(start), resolve(end)) {
            (Ok(s), Ok(e)) if s <= e => (s, e),
            (Err(err), _) | (_, Err(err)) => fail(err),
            _ => fail(
                Error::shape(
                    "flatten",
                    format!(
                        "axes {start}..={end} of {}: the start axis comes after the end axis",
                        fmt_shape(&shape)
                    ),
                )
                .at(loc),
            ),
        };
        let merged: usize = shape[s..=e].iter().product();
        let mut out: Shape = shape[..s].iter().copied().collect();
        out.push(merged);
        out.extend_from_slice(&shape[e + 1..]);
        self.reshape(out)
    }

    /// Swaps axes `a` and `b`; a negative axis counts from the end (`-1` is the last). Recorded as
    /// a `permute`. Panics with a `Shape` error naming `transpose`, the axes and the shape when
    /// either axis is out of range (nothing is recorded then).
    ///
    /// ```
    /// let tape = tapegrad::Tape::<f64>::new();
    /// let x = tape.var(tapegrad::Tensor::zeros([2, 3, 4]));
    /// assert_eq!(x.transpose(0, -1).shape().as_slice(), &[4, 3, 2]);
    /// ```
    #[track_caller]
    pub fn transpose(self, a: isize, b: isize) -> Var<'t, T> {
        let loc = Location::caller(); // here, not in the closure, which has its own location
        let perm = crate::tensor::transpose_perm(&self.shape(), a, b).unwrap_or_else(|e| fail(e.at(loc)));
        self.permute(perm)
    }

    /// Swaps the last two axes (the matrix transpose of a 2-D value, batched for more axes).
    /// A 0-d or 1-D value has no pair of axes to swap and is returned as it is (no node), as
    /// PyTorch's `t()` does.
    #[track_caller]
    pub fn t(self) -> Var<'t, T> {
        if self.shape().len() < 2 {
            return self;
        }
        self.transpose(-2, -1)
    }

    /// Broadcasts to a larger shape (NumPy rules). Returns `self` (no node) when already that shape.
    #[track_caller]
    pub fn broadcast_to(self, shape: impl AsRef<[usize]>) -> Var<'t, T> {
        let shape = shape.as_ref();
        if self.tape.node(self.index).value.shape() == shape {
            return self;
        }
        self.tape.op(OpRef::new(BroadcastToOp(shape_of(shape))), &[self])
    }
}

/// Random programs' and the fuzzer's call of `reshape` and its forms. Tame: the same number of
/// elements split into up to three factors, or `unsqueeze` at any new axis, `squeeze` of an axis of
/// extent 1 (a general reshape when there is none), `flatten` of a run of axes; wild: any small
/// shape (the wrong size included), or any small axes for the forms.
fn reshape_recipe<'t, T: Float>(c: &mut Choice<'_>, v: &[Var<'t, T>]) -> Option<Var<'t, T>> {
    let x = c.pick(v);
    let shape = x.shape();
    let nd = shape.len();
    let small = |c: &mut Choice<'_>| (c.byte() as i8 % 5) as isize;
    match c.below(5) {
        1 if c.wild() => return Some(x.unsqueeze(small(c))),
        2 if c.wild() => return Some(x.squeeze(small(c))),
        3 if c.wild() => {
            let (s, e) = (small(c), small(c));
            return Some(x.flatten(s, e));
        }
        1 => {
            let a = c.below(nd + 1) as isize;
            return Some(x.unsqueeze(if c.flag() { a - nd as isize - 1 } else { a }));
        }
        2 => {
            let ones: Vec<usize> = (0..nd).filter(|&d| shape[d] == 1).collect();
            if !ones.is_empty() {
                let a = c.one_of(&ones) as isize;
                return Some(x.squeeze(if c.flag() { a - nd as isize } else { a }));
            }
        }
        3 => {
            let n = nd.max(1);
            let s = c.below(n);
            let e = s + c.below(n - s);
            return Some(x.flatten(s as isize, e as isize - if c.flag() { n as isize } else { 0 }));
        }
        _ => {}
    }
    if c.wild() {
        return Some(x.reshape(c.any_shape()));
    }
    let mut rest = x.numel();
    let mut dims = Vec::new();
    for _ in 0..c.below(3) {
        let divisors: Vec<usize> = (1..=rest).filter(|&d| rest.is_multiple_of(d)).collect();
        if divisors.is_empty() {
            break;
        }
        let d = c.one_of(&divisors);
        dims.push(d);
        rest /= d;
    }
    dims.push(rest);
    Some(x.reshape(dims))
}

/// Random programs' and the fuzzer's call of `permute`. Tame: a permutation of the axes, some of
/// them given from the end (negative); wild: any short list of small axes, negative ones included
/// (repeats, gaps, the wrong length), or a `transpose` of any two small axes.
fn permute_recipe<'t, T: Float>(c: &mut Choice<'_>, v: &[Var<'t, T>]) -> Option<Var<'t, T>> {
    let x = c.pick(v);
    if !c.wild() {
        let n = x.shape().len() as isize;
        let perm: Vec<isize> = c
            .permutation(n as usize)
            .into_iter()
            .map(|p| if c.flag() { p as isize - n } else { p as isize })
            .collect();
        return Some(x.permute(perm));
    }
    if c.flag() {
        let (a, b) = ((c.byte() as i8 % 4) as isize, (c.byte() as i8 % 4) as isize);
        return Some(x.transpose(a, b));
    }
    let n = c.below(5);
    let perm: Vec<isize> = (0..n).map(|_| (c.byte() as i8 % 5) as isize).collect();
    Some(x.permute(perm))
}

/// Random programs' and the fuzzer's call of `broadcast_to`. Tame: axes of extent 1 stretched
/// to 1–3 and maybe a new leading axis; wild: any small shape.
fn broadcast_to_recipe<'t, T: Float>(c: &mut Choice<'_>, v: &[Var<'t, T>]) -> Option<Var<'t, T>> {
    let x = c.pick(v);
    if c.wild() {
        return Some(x.broadcast_to(c.any_shape()));
    }
    let shape = x.shape();
    let mut target: Vec<usize> = shape.iter().map(|&n| if n == 1 { 1 + c.below(3) } else { n }).collect();
    if shape.len() < 3 && c.flag() {
        target.insert(0, 1 + c.below(3));
    }
    Some(x.broadcast_to(target))
}

pub(crate) fn register(r: &mut Registry) {
    r.register(
        OpInfo::new(
            "reshape",
            "same values, new shape (also squeeze, unsqueeze, flatten)",
            || {
                let n = |s: &[usize], seed| Tensor::<f64>::rand_normal(s, 0.0, 1.0, seed);
                vec![
                    sample!("[2,3] to [3,2]", [n(&[2, 3], 50)], |v| v[0].reshape([3, 2]))
                        .with_reference(|x| reference::reshape(&x[0], &[3, 2])),
                    sample!("[2,3,2] to [12]", [n(&[2, 3, 2], 51)], |v| v[0].reshape([12]))
                        .with_reference(|x| reference::reshape(&x[0], &[12])),
                    sample!("0-d to [1,1]", [Tensor::scalar(0.5)], |v| v[0].reshape([1, 1]))
                        .with_reference(|x| reference::reshape(&x[0], &[1, 1])),
                    sample!("squeeze axis -2 of [2,1,3]", [n(&[2, 1, 3], 57)], |v| v[0].squeeze(-2))
                        .with_reference(|x| reference::reshape(&x[0], &[2, 3])),
                    sample!("unsqueeze [3] at -1", [n(&[3], 58)], |v| v[0].unsqueeze(-1))
                        .with_reference(|x| reference::reshape(&x[0], &[3, 1])),
                    sample!("flatten axes 1..=-1 of [2,3,2]", [n(&[2, 3, 2], 59)], |v| v[0]
                        .flatten(1, -1))
                    .with_reference(|x| reference::reshape(&x[0], &[2, 6])),
                    sample!("flatten 0-d", [Tensor::scalar(-0.3)], |v| v[0].flatten(0, -1))
                        .with_reference(|x| reference::reshape(&x[0], &[1])),
                ]
            },
        )
        .recipe(recipe!(|c, v| reshape_recipe(c, v))),
    );
    r.register(
        OpInfo::new("permute", "reorder axes (transpose)", || {
            let n = |s: &[usize], seed| Tensor::<f64>::rand_normal(s, 0.0, 1.0, seed);
            vec![
                sample!("transpose [2,3]", [n(&[2, 3], 52)], |v| v[0].t())
                    .with_reference(|x| reference::permute(&x[0], &[1, 0])),
                sample!("[2,3,4] by [2,0,1]", [n(&[2, 3, 4], 53)], |v| v[0].permute([2, 0, 1]))
                    .with_reference(|x| reference::permute(&x[0], &[2, 0, 1])),
                sample!("[1,3] transpose", [n(&[1, 3], 54)], |v| v[0].transpose(0, 1))
                    .with_reference(|x| reference::permute(&x[0], &[1, 0])),
                sample!("[2,3,4] by [-1,0,-2] (from the end)", [n(&[2, 3, 4], 60)], |v| v[0]
                    .permute([-1, 0, -2]))
                .with_reference(|x| reference::permute(&x[0], &[2, 0, 1])),
            ]
        })
        .recipe(recipe!(|c, v| permute_recipe(c, v))),
    );
    r.register(
        OpInfo::new("broadcast_to", "repeat along broadcast axes (NumPy rules)", || {
            let n = |s: &[usize], seed| Tensor::<f64>::rand_normal(s, 0.0, 1.0, seed);
            vec![
                sample!("[3] to [2,3]", [n(&[3], 55)], |v| v[0].broadcast_to([2, 3]))
                    .with_reference(|x| reference::broadcast_to(&x[0], &[2, 3])),
                sample!("[3,1] to [2,3,4]", [n(&[3, 1], 56)], |v| v[0].broadcast_to([2, 3, 4]))
                    .with_reference(|x| reference::broadcast_to(&x[0], &[2, 3, 4])),
                sample!("0-d to [2,2]", [Tensor::scalar(0.7)], |v| v[0].broadcast_to([2, 2]))
                    .with_reference(|x| reference::broadcast_to(&x[0], &[2, 2])),
            ]
        })
        .recipe(recipe!(|c, v| broadcast_to_recipe(c, v))),
    );
}
