//! Indexing and joining: `slice` (and `narrow`, `split`, `chunk`), `index_select`, `embedding`,
//! `gather` and `scatter_add`, `concat` (and `stack`), `pad`, and `select_scalar` (`where` with
//! number branches).
//!
//! # Conventions
//!
//! * **The axis comes first** (`x.gather(axis, index)`, `Var::concat(axis, &parts)`), and it is an
//!   `isize`: negative axes count from the end (`-1` is the last), as everywhere in the API.
//! * **Slices are Python's**: `x.slice(0, 1..)` is `x[1:]`, `x.slice(0, ..-1)` is `x[:-1]`,
//!   `x.slice_step(1, .., 2)` is `x[:, ::2]`. Ends out of range are clamped, so a slice can be
//!   empty but never fails on its bounds; the step must be positive. [`narrow`](Var::narrow) is
//!   the strict form (start and length must fit).
//! * **Indices are `usize` data** ([`Indices`]: a shape and row-major values). An index out of
//!   range is an error of kind [`ErrorKind::Invalid`] naming the op, the index, where it sits
//!   and the extent it exceeds, with the line of your code; nothing is recorded then.
//! * **Gradients accumulate on repeated indices**: a row gathered twice gets both gradients
//!   (the classic bug is to keep only one). The rules are data movements in the other direction,
//!   each of them an op with a rule of its own, so every one is differentiable again:
//!
//! | op | its rule | whose rule is |
//! |---|---|---|
//! | `slice` | `slice_backward` (the gradient placed at the sliced positions, 0 elsewhere) | `slice` |
//! | `index_select`, `embedding` | `index_select_backward` (rows added into the positions they came from) | `index_select` |
//! | `gather` | `scatter_add` (into zeros) | `gather` |
//! | `concat` | one `slice` per part | `slice_backward` |
//! | `pad` | a `slice` per padded axis | `slice_backward` |
//!
//! ```
//! use tapegrad::{Indices, Tape, Tensor};
//! let tape = Tape::<f64>::new();
//! let x = tape.var(Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], [4]));
//! let d = x.slice(0, 1..) - x.slice(0, ..-1);                 // x[1:] − x[:-1]
//! assert_eq!(d.value().to_vec(), vec![1.0, 1.0, 1.0]);
//! let y = x.gather(0, Indices::from([3, 0, 3]));             // index 3 twice
//! assert_eq!(y.value().to_vec(), vec![4.0, 1.0, 4.0]);
//! assert_eq!(y.sum().backward()[x].to_vec(), vec![1.0, 0.0, 0.0, 2.0]);  // accumulated
//! ```

use super::common::{arity, resolve_axis};
use super::layout::{IndexInt, new_axis_error};
use super::reference;
use super::registry::{Choice, OpInfo, Registry};
use crate::autodiff::rule::{Cotangents, Op, Value, VjpCtx};
use crate::autodiff::tape::{OpRef, Tape, TruncateGuard, Var};
use crate::core::error::{Error, ErrorKind, Result, fail};
use crate::core::float::Float;
use crate::core::shape::{Shape, fmt_shape, shape_of, strides, try_numel};
use crate::tensor::kernels::split_axis;
use crate::tensor::pool;
use crate::tensor::{Tensor, checked_numel};
use crate::{recipe, sample};
use std::ops::{Range, RangeFrom, RangeFull, RangeInclusive, RangeTo, RangeToInclusive};
use std::panic::Location;
use std::sync::Arc;

// ---------------------------------------------------------------------------------------------
// Index tensors and slice ranges.
// ---------------------------------------------------------------------------------------------

/// A tensor of indices: a shape and `usize` values in row-major order — the index argument of
/// [`gather`](Var::gather), [`scatter_add`](Var::scatter_add) and [`embedding`](Var::embedding).
/// Cloning shares the values (no copy).
///
/// ```
/// use tapegrad::Indices;
/// let i = Indices::new(vec![0, 2, 1, 1], [2, 2]);
/// assert_eq!(i.shape(), &[2, 2]);
/// assert_eq!(Indices::from([4, 0]).shape(), &[2]);    // 1-D from an array, slice or Vec
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Indices {
    shape: Shape,
    data: Arc<[usize]>,
}

impl Indices {
    /// Indices of `shape` holding `data` in row-major order. Panics (a `Shape` error naming
    /// `indices`, with your line) when the sizes differ.
    #[track_caller]
    pub fn new(data: Vec<usize>, shape: impl AsRef<[usize]>) -> Self {
        Self::try_new(data, shape).unwrap_or_else(|e| fail(e))
    }

    /// Like [`new`](Self::new), returning the error instead of panicking.
    #[track_caller]
    pub fn try_new(data: Vec<usize>, shape: impl AsRef<[usize]>) -> Result<Self> {
        let shape = shape.as_ref();
        if try_numel(shape) != Some(data.len()) {
            return Err(Error::shape(
                "indices",
                format!("{} indices cannot fill shape {}", data.len(), fmt_shape(shape)),
            )
            .at(Location::caller()));
        }
        Ok(Indices {
            shape: shape_of(shape),
            data: data.into(),
        })
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The values, in row-major order.
    pub fn data(&self) -> &[usize] {
        &self.data
    }

    /// The number of axes.
    pub fn ndim(&self) -> usize {
        self.shape.len()
    }

    /// The number of indices.
    pub fn numel(&self) -> usize {
        self.data.len()
    }
}

impl From<Vec<usize>> for Indices {
    /// 1-D indices.
    fn from(v: Vec<usize>) -> Self {
        Indices {
            shape: shape_of([v.len()]),
            data: v.into(),
        }
    }
}
impl From<&[usize]> for Indices {
    /// 1-D indices.
    fn from(v: &[usize]) -> Self {
        Indices::from(v.to_vec())
    }
}
impl From<&Vec<usize>> for Indices {
    /// 1-D indices.
    fn from(v: &Vec<usize>) -> Self {
        Indices::from(v.clone())
    }
}
impl<const N: usize> From<[usize; N]> for Indices {
    /// 1-D indices.
    fn from(v: [usize; N]) -> Self {
        Indices::from(v.to_vec())
    }
}
impl From<&Indices> for Indices {
    fn from(i: &Indices) -> Self {
        i.clone()
    }
}

/// A range of positions along one axis, Python-style: any Rust range of [`IndexInt`]s (`a..b`,
/// `a..`, `..b`, `..`, `a..=b`, `..=b`), or a pair `(start, end)` (end exclusive), negative
/// positions counting from the end. Write `x[1:-1]` as `(1, -1)`: the literal range `1..-1` means
/// the same to tapegrad, but clippy rejects it (`reversed_empty_ranges`, an error by default).
pub trait SliceRange {
    /// The start and the (exclusive) end as given; `None` is an open end.
    fn bounds(&self) -> (Option<isize>, Option<isize>);
}

/// The exclusive end of an inclusive one: `..=-1` reaches the last element (an open end).
fn inclusive_end(e: isize) -> Option<isize> {
    if e == -1 { None } else { Some(e.saturating_add(1)) }
}

impl<A: IndexInt> SliceRange for Range<A> {
    fn bounds(&self) -> (Option<isize>, Option<isize>) {
        (Some(self.start.to_isize()), Some(self.end.to_isize()))
    }
}
impl<A: IndexInt> SliceRange for RangeFrom<A> {
    fn bounds(&self) -> (Option<isize>, Option<isize>) {
        (Some(self.start.to_isize()), None)
    }
}
impl<A: IndexInt> SliceRange for RangeTo<A> {
    fn bounds(&self) -> (Option<isize>, Option<isize>) {
        (None, Some(self.end.to_isize()))
    }
}
impl<A: IndexInt, B: IndexInt> SliceRange for (A, B) {
    fn bounds(&self) -> (Option<isize>, Option<isize>) {
        (Some(self.0.to_isize()), Some(self.1.to_isize()))
    }
}
impl SliceRange for RangeFull {
    fn bounds(&self) -> (Option<isize>, Option<isize>) {
        (None, None)
    }
}
impl<A: IndexInt> SliceRange for RangeInclusive<A> {
    fn bounds(&self) -> (Option<isize>, Option<isize>) {
        (Some(self.start().to_isize()), inclusive_end(self.end().to_isize()))
    }
}
impl<A: IndexInt> SliceRange for RangeToInclusive<A> {
    fn bounds(&self) -> (Option<isize>, Option<isize>) {
        (None, inclusive_end(self.end.to_isize()))
    }
}

/// A branch of [`select_scalar`](Var::select_scalar): a recorded value, or a number (recorded as a
/// 0-d constant, broadcast against the others).
pub trait Branch<'t, T: Float> {
    /// The branch as a value on `tape`.
    fn into_var(self, tape: &'t Tape<T>) -> Var<'t, T>;
}
impl<'t, T: Float> Branch<'t, T> for Var<'t, T> {
    fn into_var(self, _tape: &'t Tape<T>) -> Var<'t, T> {
        self
    }
}
impl<'t, T: Float> Branch<'t, T> for T {
    #[track_caller]
    fn into_var(self, tape: &'t Tape<T>) -> Var<'t, T> {
        tape.scalar(self)
    }
}

// ---------------------------------------------------------------------------------------------
// Kernels: blocks along one axis, and index tensors.
// ---------------------------------------------------------------------------------------------

/// For every outer position, the `inner`-long blocks at positions `at(k)`, `k < m`, of an axis of
/// extent `n`: the movement slicing, `index_select` and `embedding` share.
fn take_blocks<T: Float>(
    x: &[T],
    (outer, n, inner): (usize, usize, usize),
    m: usize,
    at: impl Fn(usize) -> usize,
) -> Vec<T> {
    if outer == 0 || m == 0 || inner == 0 {
        return Vec::new();
    }
    let mut out = pool::alloc(outer * m * inner);
    for row in x.chunks_exact(n * inner).take(outer) {
        for k in 0..m {
            let s = at(k) * inner;
            out.extend_from_slice(&row[s..s + inner]);
        }
    }
    out
}

/// The adjoint of [`take_blocks`]: block `k` of `g` (`outer × m × inner`) goes to position `at(k)`
/// of an axis of extent `n` that is zero elsewhere — added (repeated positions accumulate) or,
/// when the positions are distinct, copied.
fn put_blocks<T: Float>(
    g: &[T],
    (outer, m, inner): (usize, usize, usize),
    n: usize,
    at: impl Fn(usize) -> usize,
    add: bool,
) -> Vec<T> {
    let mut out = pool::filled(outer * n * inner, T::ZERO);
    if outer == 0 || m == 0 || inner == 0 {
        return out;
    }
    for (o, src) in g.chunks_exact(m * inner).take(outer).enumerate() {
        let dst = &mut out[o * n * inner..(o + 1) * n * inner];
        for k in 0..m {
            let (d, s) = (at(k) * inner, k * inner);
            if add {
                for (a, &b) in dst[d..d + inner].iter_mut().zip(&src[s..s + inner]) {
                    *a += b;
                }
            } else {
                dst[d..d + inner].copy_from_slice(&src[s..s + inner]);
            }
        }
    }
    out
}

/// The multi-index of flat position `p` in a row-major tensor of `shape` (for error messages).
fn unravel(mut p: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        if shape[d] > 0 {
            idx[d] = p % shape[d];
            p /= shape[d];
        }
    }
    idx
}

/// Calls `f(p, off)` for every flat position `p` of `index`, where `off` is the flat position, in
/// a row-major tensor of `shape`, of the element `index` picks there: `p`'s own multi-index with
/// its component on `axis` replaced by the index value (torch's `gather`/`scatter_add` rule).
fn for_each_picked(index: &Indices, shape: &[usize], axis: usize, mut f: impl FnMut(usize, usize)) {
    let st = strides(shape);
    let is = index.shape();
    let mut pos = vec![0usize; is.len()];
    let mut base = 0usize; // Σ over the other axes of pos[d] · st[d]
    for (p, &i) in index.data().iter().enumerate() {
        f(p, base + i * st[axis]);
        for d in (0..is.len()).rev() {
            pos[d] += 1;
            if d != axis {
                base += st[d];
            }
            if pos[d] < is[d] {
                break;
            }
            if d != axis {
                base -= st[d] * pos[d];
            }
            pos[d] = 0;
        }
    }
}

/// The error for an index (`subject`: the index, where it sits) out of range for `target` (what
/// it indexes, with its extent `n`).
fn out_of_range(op: &str, subject: String, target: String, n: usize) -> Error {
    Error::new(
        ErrorKind::Invalid,
        op,
        format!("{subject} is out of range for {target} (valid: 0..{n})"),
    )
}

/// Checks `index` against a tensor of `shape` for a gather or scatter along `axis`: as many axes,
/// no larger extent off the axis, every value below the axis's extent. Returns the axis resolved.
fn check_index(op: &str, index: &Indices, shape: &[usize], axis: isize, what: &str) -> Result<usize> {
    let a = resolve_axis(op, axis, shape.len())?;
    let is = index.shape();
    if is.len() != shape.len() {
        return Err(Error::shape(
            op,
            format!(
                "the index {} has {} axes but the {what} {} has {}: they must have as many",
                fmt_shape(is),
                is.len(),
                fmt_shape(shape),
                shape.len()
            ),
        ));
    }
    if let Some(d) = (0..is.len()).find(|&d| d != a && is[d] > shape[d]) {
        return Err(Error::shape(
            op,
            format!(
                "the index {} is larger than the {what} {} on axis {d} ({} > {}); only axis {a}, the one \
                 indexed, may be larger",
                fmt_shape(is),
                fmt_shape(shape),
                is[d],
                shape[d]
            ),
        ));
    }
    let n = shape[a];
    if let Some(p) = index.data().iter().position(|&i| i >= n) {
        let subject = format!(
            "index {} at {:?} of the index {}",
            index.data()[p],
            unravel(p, is),
            fmt_shape(is)
        );
        let target = format!("axis {axis} of the {what} {}, of extent {n}", fmt_shape(shape));
        return Err(out_of_range(op, subject, target, n));
    }
    Ok(a)
}

/// Checks 1-D `indices` against an axis of extent `n` (of `shape`).
fn check_positions(op: &str, indices: &[usize], axis: isize, shape: &[usize], n: usize) -> Result<()> {
    match indices.iter().position(|&i| i >= n) {
        None => Ok(()),
        Some(p) => {
            let subject = format!("index {} at position {p} of the indices", indices[p]);
            let target = format!("axis {axis} of {}, of extent {n}", fmt_shape(shape));
            Err(out_of_range(op, subject, target, n))
        }
    }
}

/// A short listing of indices for `params` (the first eight).
fn fmt_indices(i: &[usize]) -> String {
    if i.len() <= 8 {
        format!("{i:?}")
    } else {
        format!("{:?}… ({} in all)", &i[..8], i.len())
    }
}

/// `shape` with axis `axis` set to `n`.
fn with_extent(shape: &[usize], axis: usize, n: usize) -> Shape {
    let mut s = shape_of(shape);
    s[axis] = n;
    s
}

// ---------------------------------------------------------------------------------------------
// slice and its rule.
// ---------------------------------------------------------------------------------------------

/// `x[start:end:step]` along one axis, resolved against the input's extent in the forward.
#[derive(Clone, Copy, Debug)]
struct SliceOp {
    axis: isize,
    start: Option<isize>,
    end: Option<isize>,
    step: isize,
}

/// A slice resolved against a shape: `count` positions `start + k·step` of an axis of `extent`.
#[derive(Clone, Copy, Debug)]
struct Resolved {
    axis: usize,
    start: usize,
    count: usize,
    step: usize,
    extent: usize,
}

impl SliceOp {
    /// A plain `start..end` slice (resolved positions).
    fn range(axis: usize, start: usize, end: usize) -> Self {
        SliceOp {
            axis: axis as isize,
            start: Some(start as isize),
            end: Some(end as isize),
            step: 1,
        }
    }

    fn resolve(&self, shape: &[usize]) -> Result<Resolved> {
        let axis = resolve_axis("slice", self.axis, shape.len())?;
        if self.step <= 0 {
            return Err(Error::new(
                ErrorKind::Invalid,
                "slice",
                format!(
                    "step {} is not positive: a slice takes every step-th element from its start on, so \
                     the step must be at least 1",
                    self.step
                ),
            ));
        }
        let extent = shape[axis];
        // A valid shape's extents fit in isize (their product is bounded by isize::MAX).
        let n = extent as isize;
        let clamp = |i: isize| (if i < 0 { i.saturating_add(n) } else { i }).clamp(0, n) as usize;
        let start = self.start.map_or(0, clamp);
        let end = self.end.map_or(extent, clamp);
        let step = self.step as usize;
        let count = if end > start { (end - start - 1) / step + 1 } else { 0 };
        Ok(Resolved {
            axis,
            start,
            count,
            step,
            extent,
        })
    }
}

impl<T: Float> Op<T> for SliceOp {
    fn name(&self) -> &'static str {
        "slice"
    }
    fn params(&self) -> String {
        let b = |i: Option<isize>| i.map_or(String::new(), |i| i.to_string());
        let step = if self.step == 1 {
            String::new()
        } else {
            format!(":{}", self.step)
        };
        format!("axis={}, {}:{}{step}", self.axis, b(self.start), b(self.end))
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        arity("slice", x, 1)?;
        let x = x[0];
        let r = self.resolve(x.shape())?;
        if r.start == 0 && r.count == r.extent {
            return Ok(x.clone()); // the whole axis (step 1, or at most one element)
        }
        let data = take_blocks(x.data(), split_axis(x.shape(), r.axis), r.count, |k| {
            r.start + k * r.step
        });
        Ok(Tensor::from_parts(with_extent(x.shape(), r.axis, r.count), data))
    }
    /// The gradient put back at the sliced positions, exactly 0 elsewhere: `slice_backward`.
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
        let r = self.resolve(&cx.input(0).shape())?;
        let back = SliceBackwardOp {
            axis: r.axis,
            start: r.start,
            step: r.step,
            extent: r.extent,
        };
        Ok(cx.grads([Some(V::apply(back, &[g])?)]))
    }
}

/// The rule of `slice`: the input placed at positions `start + k·step` of an axis of `extent`,
/// zeros elsewhere.
#[derive(Clone, Copy, Debug)]
struct SliceBackwardOp {
    axis: usize,
    start: usize,
    step: usize,
    extent: usize,
}

impl<T: Float> Op<T> for SliceBackwardOp {
    fn name(&self) -> &'static str {
        "slice_backward"
    }
    fn params(&self) -> String {
        format!(
            "axis={}, at {}::{} of {}",
            self.axis, self.start, self.step, self.extent
        )
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        arity("slice_backward", x, 1)?;
        let g = x[0];
        let a = resolve_axis("slice_backward", self.axis as isize, g.ndim())?;
        let m = g.shape()[a];
        let fits = m == 0
            || (m - 1)
                .checked_mul(self.step)
                .and_then(|o| o.checked_add(self.start))
                .is_some_and(|last| last < self.extent);
        if !fits || self.step == 0 {
            return Err(Error::shape(
                "slice_backward",
                format!(
                    "{m} elements at {}, {}+{}, … do not fit in an axis of extent {} ({})",
                    self.start,
                    self.start,
                    self.step,
                    self.extent,
                    fmt_shape(g.shape())
                ),
            ));
        }
        let shape = with_extent(g.shape(), a, self.extent);
        checked_numel::<T>("slice_backward", &shape)?;
        let (outer, _, inner) = split_axis(g.shape(), a);
        let data = put_blocks(
            g.data(),
            (outer, m, inner),
            self.extent,
            |k| self.start + k * self.step,
            false,
        );
        Ok(Tensor::from_parts(shape, data))
    }
    /// Slicing the positions back out.
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
        let m = cx.input(0).shape()[self.axis];
        let end = (self.start + m * self.step).min(self.extent);
        let op = SliceOp {
            axis: self.axis as isize,
            start: Some(self.start as isize),
            end: Some(end as isize),
            step: self.step as isize,
        };
        Ok(cx.grads([Some(V::apply(op, &[g])?)]))
    }
}

// ---------------------------------------------------------------------------------------------
// index_select, embedding, and their rule.
// ---------------------------------------------------------------------------------------------

/// The positions `indices` along one axis, in order (repeats allowed).
#[derive(Clone, Debug)]
struct IndexSelectOp {
    axis: isize,
    indices: Arc<[usize]>,
}

impl<T: Float> Op<T> for IndexSelectOp {
    fn name(&self) -> &'static str {
        "index_select"
    }
    fn params(&self) -> String {
        format!("axis={}, indices={}", self.axis, fmt_indices(&self.indices))
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        arity("index_select", x, 1)?;
        let x = x[0];
        let a = resolve_axis("index_select", self.axis, x.ndim())?;
        let n = x.shape()[a];
        check_positions("index_select", &self.indices, self.axis, x.shape(), n)?;
        let shape = with_extent(x.shape(), a, self.indices.len());
        checked_numel::<T>("index_select", &shape)?;
        let data = take_blocks(x.data(), split_axis(x.shape(), a), self.indices.len(), |k| {
            self.indices[k]
        });
        Ok(Tensor::from_parts(shape, data))
    }
    /// Each block of the gradient added back into the position it was taken from (repeated
    /// positions accumulate): `index_select_backward`.
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
        let shape = cx.input(0).shape();
        let a = resolve_axis("index_select", self.axis, shape.len())?;
        let back = IndexSelectBackwardOp {
            axis: a,
            indices: self.indices.clone(),
            extent: shape[a],
        };
        Ok(cx.grads([Some(V::apply(back, &[g])?)]))
    }
}

/// The rule of `index_select` (and `embedding`): block `k` of the input added into position
/// `indices[k]` of an axis of `extent`, zeros elsewhere.
#[derive(Clone, Debug)]
struct IndexSelectBackwardOp {
    axis: usize,
    indices: Arc<[usize]>,
    extent: usize,
}

impl<T: Float> Op<T> for IndexSelectBackwardOp {
    fn name(&self) -> &'static str {
        "index_select_backward"
    }
    fn params(&self) -> String {
        format!(
            "axis={}, indices={}, extent={}",
            self.axis,
            fmt_indices(&self.indices),
            self.extent
        )
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        const OP: &str = "index_select_backward";
        arity(OP, x, 1)?;
        let g = x[0];
        let a = resolve_axis(OP, self.axis as isize, g.ndim())?;
        let m = g.shape()[a];
        if m != self.indices.len() {
            return Err(Error::shape(
                OP,
                format!(
                    "{} has {m} blocks on axis {a} for {} indices",
                    fmt_shape(g.shape()),
                    self.indices.len()
                ),
            ));
        }
        check_positions(OP, &self.indices, a as isize, g.shape(), self.extent)?;
        let shape = with_extent(g.shape(), a, self.extent);
        checked_numel::<T>(OP, &shape)?;
        let (outer, _, inner) = split_axis(g.shape(), a);
        let data = put_blocks(g.data(), (outer, m, inner), self.extent, |k| self.indices[k], true);
        Ok(Tensor::from_parts(shape, data))
    }
    /// Selecting the positions back out.
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
        let op = IndexSelectOp {
            axis: self.axis as isize,
            indices: self.indices.clone(),
        };
        Ok(cx.grads([Some(V::apply(op, &[g])?)]))
    }
}

/// Rows `ids` of a table: the output has shape `ids.shape ++ table.shape[1..]`.
#[derive(Clone, Debug)]
struct EmbeddingOp {
    ids: Indices,
}

impl<T: Float> Op<T> for EmbeddingOp {
    fn name(&self) -> &'static str {
        "embedding"
    }
    fn params(&self) -> String {
        format!("ids {} {}", fmt_shape(self.ids.shape()), fmt_indices(self.ids.data()))
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        arity("embedding", x, 1)?;
        let t = x[0];
        if t.ndim() == 0 {
            return Err(Error::shape(
                "embedding",
                "the table is 0-d; it needs at least one axis (its rows)",
            ));
        }
        let rows = t.shape()[0];
        if let Some(p) = self.ids.data().iter().position(|&i| i >= rows) {
            let subject = format!(
                "id {} at {:?} of the ids {}",
                self.ids.data()[p],
                unravel(p, self.ids.shape()),
                fmt_shape(self.ids.shape())
            );
            let target = format!("the table {}, which has {rows} rows", fmt_shape(t.shape()));
            return Err(out_of_range("embedding", subject, target, rows));
        }
        let mut shape = shape_of(self.ids.shape());
        shape.extend_from_slice(&t.shape()[1..]);
        checked_numel::<T>("embedding", &shape)?;
        let data = take_blocks(t.data(), split_axis(t.shape(), 0), self.ids.numel(), |k| {
            self.ids.data()[k]
        });
        Ok(Tensor::from_parts(shape, data))
    }
    /// Each row of the gradient added into the row of the table it came from (a row looked up
    /// twice gets both): `index_select_backward` along axis 0.
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
        let table = cx.input(0).shape();
        let mut rows_shape = shape_of([self.ids.numel()]);
        rows_shape.extend_from_slice(&table[1..]);
        let back = IndexSelectBackwardOp {
            axis: 0,
            indices: self.ids.data.clone(),
            extent: table[0],
        };
        Ok(cx.grads([Some(V::apply(back, &[&g.reshape(&rows_shape)])?)]))
    }
}

// ---------------------------------------------------------------------------------------------
// gather and scatter_add: each the other's rule.
// ---------------------------------------------------------------------------------------------

/// torch's `gather`: `out[p] = x[p with p[axis] = index[p]]`, `out` of the index's shape.
#[derive(Clone, Debug)]
pub(crate) struct GatherOp {
    pub(crate) axis: isize,
    pub(crate) index: Indices,
}

impl<T: Float> Op<T> for GatherOp {
    fn name(&self) -> &'static str {
        "gather"
    }
    fn params(&self) -> String {
        format!("axis={}, index {}", self.axis, fmt_shape(self.index.shape()))
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        arity("gather", x, 1)?;
        let x = x[0];
        let a = check_index("gather", &self.index, x.shape(), self.axis, "input")?;
        let mut data = pool::alloc(self.index.numel());
        let xd = x.data();
        for_each_picked(&self.index, x.shape(), a, |_, off| data.push(xd[off]));
        Ok(Tensor::from_parts(shape_of(self.index.shape()), data))
    }
    /// The gradient scattered back, added where an element was picked more than once:
    /// `scatter_add` into zeros of the input's shape.
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
        let back = ScatterAddOp {
            axis: self.axis,
            index: self.index.clone(),
            shape: cx.input(0).shape(),
        };
        Ok(cx.grads([Some(V::apply(back, &[g])?)]))
    }
}

/// torch's `scatter_add` into zeros of `shape`: `out[p with p[axis] = index[p]] += src[p]`, `src`
/// of the index's shape.
#[derive(Clone, Debug)]
pub(crate) struct ScatterAddOp {
    pub(crate) axis: isize,
    pub(crate) index: Indices,
    pub(crate) shape: Shape,
}

impl<T: Float> Op<T> for ScatterAddOp {
    fn name(&self) -> &'static str {
        "scatter_add"
    }
    fn params(&self) -> String {
        format!(
            "axis={}, index {}, into {}",
            self.axis,
            fmt_shape(self.index.shape()),
            fmt_shape(&self.shape)
        )
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        arity("scatter_add", x, 1)?;
        let src = x[0];
        if src.shape() != self.index.shape() {
            return Err(Error::shape(
                "scatter_add",
                format!(
                    "the source {} must have the index's shape {}",
                    fmt_shape(src.shape()),
                    fmt_shape(self.index.shape())
                ),
            ));
        }
        let a = check_index("scatter_add", &self.index, &self.shape, self.axis, "output")?;
        let mut out = pool::filled(checked_numel::<T>("scatter_add", &self.shape)?, T::ZERO);
        let sd = src.data();
        for_each_picked(&self.index, &self.shape, a, |p, off| out[off] += sd[p]);
        Ok(Tensor::from_parts(self.shape.clone(), out))
    }
    /// Every source element gets the gradient of the element it was added into: `gather`.
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
        let op = GatherOp {
            axis: self.axis,
            index: self.index.clone(),
        };
        Ok(cx.grads([Some(V::apply(op, &[g])?)]))
    }
}

// ---------------------------------------------------------------------------------------------
// concat and pad.
// ---------------------------------------------------------------------------------------------

/// Its inputs joined along one axis, in order.
#[derive(Clone, Copy, Debug)]
struct ConcatOp {
    axis: isize,
}

impl<T: Float> Op<T> for ConcatOp {
    fn name(&self) -> &'static str {
        "concat"
    }
    fn params(&self) -> String {
        format!("axis={}", self.axis)
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        let Some(first) = x.first() else {
            return Err(Error::new(
                ErrorKind::Invalid,
                "concat",
                "no parts to join: give at least one",
            ));
        };
        let s0 = first.shape();
        let a = resolve_axis("concat", self.axis, s0.len())?;
        let mut total = 0usize;
        for (k, p) in x.iter().enumerate() {
            let s = p.shape();
            if s.len() != s0.len() || (0..s.len()).any(|d| d != a && s[d] != s0[d]) {
                return Err(Error::shape(
                    "concat",
                    format!(
                        "part {k} has shape {} but part 0 has {}: the parts must have the same extents \
                         except on the axis joined ({})",
                        fmt_shape(s),
                        fmt_shape(s0),
                        self.axis
                    ),
                ));
            }
            total = total.saturating_add(s[a]);
        }
        let shape = with_extent(s0, a, total);
        let n = checked_numel::<T>("concat", &shape)?;
        let (outer, _, inner) = split_axis(s0, a);
        let mut data = pool::alloc(n);
        if n > 0 {
            for o in 0..outer {
                for p in x {
                    let len = p.shape()[a] * inner;
                    data.extend_from_slice(&p.data()[o * len..(o + 1) * len]);
                }
            }
        }
        Ok(Tensor::from_parts(shape, data))
    }
    /// Each part gets its own stretch of the gradient: one `slice` per part.
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
        let a = resolve_axis("concat", self.axis, cx.input(0).shape().len())?;
        let mut out = Cotangents::new();
        let mut off = 0;
        for k in 0..cx.arity() {
            let len = cx.input(k).shape()[a];
            out.push(if cx.needs_grad(k) {
                Some(V::apply(SliceOp::range(a, off, off + len), &[g])?)
            } else {
                None
            });
            off += len;
        }
        Ok(out)
    }
}

/// The input surrounded, on every axis, by `before` and `after` elements of `value`.
#[derive(Clone, Debug)]
struct PadOp<T> {
    widths: Vec<(usize, usize)>,
    value: T,
}

impl<T: Float> Op<T> for PadOp<T> {
    fn name(&self) -> &'static str {
        "pad"
    }
    fn params(&self) -> String {
        format!("widths={:?}, value={}", self.widths, self.value)
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        arity("pad", x, 1)?;
        let x = x[0];
        let (xs, nd) = (x.shape(), x.ndim());
        if self.widths.len() != nd {
            return Err(Error::shape(
                "pad",
                format!(
                    "{} (before, after) pairs for {}, which has {nd} axes: give one pair per axis",
                    self.widths.len(),
                    fmt_shape(xs)
                ),
            ));
        }
        let mut shape = Shape::new();
        for (d, &(b, a)) in self.widths.iter().enumerate() {
            let n = xs[d].checked_add(b).and_then(|n| n.checked_add(a)).ok_or_else(|| {
                Error::shape(
                    "pad",
                    format!("padding axis {d} of {} by ({b}, {a}) overflows", fmt_shape(xs)),
                )
            })?;
            shape.push(n);
        }
        let mut data = vec![self.value; checked_numel::<T>("pad", &shape)?];
        if x.numel() > 0 {
            if nd == 0 {
                data[0] = x.data()[0];
            } else {
                // Copy the rows of the last axis, walking the other axes with an odometer.
                let (last, os) = (xs[nd - 1], strides(&shape));
                let mut pos = vec![0usize; nd - 1];
                for row in x.data().chunks_exact(last) {
                    let off: usize =
                        (0..nd - 1).map(|d| (pos[d] + self.widths[d].0) * os[d]).sum::<usize>() + self.widths[nd - 1].0;
                    data[off..off + last].copy_from_slice(row);
                    for d in (0..nd - 1).rev() {
                        pos[d] += 1;
                        if pos[d] < xs[d] {
                            break;
                        }
                        pos[d] = 0;
                    }
                }
            }
        }
        Ok(Tensor::from_parts(shape, data))
    }
    /// The padding cut off again: a `slice` per padded axis.
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
        let xs = cx.input(0).shape();
        let mut g = g.clone();
        for (d, &(b, a)) in self.widths.iter().enumerate() {
            if (b, a) != (0, 0) {
                g = V::apply(SliceOp::range(d, b, b + xs[d]), &[&g])?;
            }
        }
        Ok(cx.grads([Some(g)]))
    }
}

// ---------------------------------------------------------------------------------------------
// The methods.
// ---------------------------------------------------------------------------------------------

impl<'t, T: Float> Var<'t, T> {
    /// Records `op` on `inputs` at `loc`, panicking with its error.
    fn record_at(self, op: impl Op<T>, inputs: &[Var<'t, T>], loc: &'static Location<'static>) -> Var<'t, T> {
        self.tape
            .record(OpRef::new(op), inputs, loc)
            .unwrap_or_else(|e| fail(e))
    }

    /// `self[range]` along `axis`, Python-style: `x.slice(0, 1..)` is `x[1:]`, `x.slice(-1, ..-1)`
    /// is `x[..., :-1]`, `x.slice(0, (1, -1))` is `x[1:-1]` (see [`SliceRange`]); negative
    /// positions count from the end, and ends beyond the axis are clamped (so the result may be
    /// empty, never an error). The gradient is placed back at the sliced positions (zero
    /// elsewhere). Panics with a `Shape` error naming `slice` when the axis is out of range
    /// (nothing is recorded then).
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::from_vec((0..6).map(f64::from).collect(), [2, 3]));
    /// assert_eq!(x.slice(1, 1..).value().to_vec(), vec![1.0, 2.0, 4.0, 5.0]);
    /// assert_eq!(x.slice(0, -1..).value().to_vec(), vec![3.0, 4.0, 5.0]);
    /// assert_eq!(x.slice(1, 5..).shape().as_slice(), &[2, 0]);       // clamped: empty
    /// ```
    #[track_caller]
    pub fn slice(self, axis: isize, range: impl SliceRange) -> Var<'t, T> {
        self.slice_step(axis, range, 1)
    }

    /// `self[start:end:step]` along `axis` (see [`slice`](Self::slice)); `step` must be positive
    /// (an `Invalid` error naming `slice` otherwise).
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::from_vec((0..7).map(f64::from).collect(), [7]));
    /// assert_eq!(x.slice_step(0, .., 3).value().to_vec(), vec![0.0, 3.0, 6.0]);
    /// assert_eq!(x.slice_step(0, (1, -1), 2).value().to_vec(), vec![1.0, 3.0, 5.0]);
    /// ```
    #[track_caller]
    pub fn slice_step(self, axis: isize, range: impl SliceRange, step: isize) -> Var<'t, T> {
        let (start, end) = range.bounds();
        let op = SliceOp { axis, start, end, step };
        self.record_at(op, &[self], Location::caller())
    }

    /// The `len` elements from `start` on along `axis` (a negative `start` counts from the end),
    /// as PyTorch's `narrow`: strict, unlike [`slice`](Self::slice) — a `Shape` error naming
    /// `narrow`, the start, the length and the extent when they do not fit. Recorded as a `slice`.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], [4]));
    /// assert_eq!(x.narrow(0, -3, 2).value().to_vec(), vec![2.0, 3.0]);
    /// assert!(tapegrad::attempt(|| x.narrow(0, 3, 2)).is_err());
    /// ```
    #[track_caller]
    pub fn narrow(self, axis: isize, start: isize, len: usize) -> Var<'t, T> {
        let loc = Location::caller();
        let shape = self.shape();
        let a = resolve_axis("narrow", axis, shape.len()).unwrap_or_else(|e| fail(e.at(loc)));
        let n = shape[a];
        let s = if start < 0 {
            start.checked_add(n as isize)
        } else {
            Some(start)
        };
        let Some(s) = s.filter(|&s| s >= 0 && s as usize <= n && len <= n - s as usize) else {
            fail(
                Error::shape(
                    "narrow",
                    format!(
                        "start {start} and length {len} do not fit axis {axis} of {} (extent {n})",
                        fmt_shape(&shape)
                    ),
                )
                .at(loc),
            )
        };
        self.record_at(SliceOp::range(a, s as usize, s as usize + len), &[self], loc)
    }

    /// Pieces of `size` along `axis`, in order (the last one shorter when `size` does not divide
    /// the extent; one empty piece for an empty axis), as PyTorch's `split` with a size. Each
    /// piece is a `slice`. Panics with an `Invalid` error naming `split` when `size` is 0.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::from_vec((0..5).map(f64::from).collect(), [5]));
    /// let p = x.split(0, 2);
    /// assert_eq!(p.iter().map(|v| v.numel()).collect::<Vec<_>>(), vec![2, 2, 1]);
    /// ```
    #[track_caller]
    pub fn split(self, axis: isize, size: usize) -> Vec<Var<'t, T>> {
        let loc = Location::caller();
        let shape = self.shape();
        let a = resolve_axis("split", axis, shape.len()).unwrap_or_else(|e| fail(e.at(loc)));
        if size == 0 {
            fail(
                Error::new(
                    ErrorKind::Invalid,
                    "split",
                    "a piece size of 0 would never end: give at least 1",
                )
                .at(loc),
            );
        }
        let n = shape[a];
        let mut sizes = vec![size; n / size];
        if !n.is_multiple_of(size) || n == 0 {
            sizes.push(n % size);
        }
        self.pieces(a, &sizes, loc)
    }

    /// Pieces of the given sizes along `axis`, in order; the sizes must add up to the extent (a
    /// `Shape` error naming `split_sizes` otherwise). Each piece is a `slice`.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::zeros([2, 5]));
    /// let p = x.split_sizes(-1, [1, 4]);
    /// assert_eq!(p[1].shape().as_slice(), &[2, 4]);
    /// ```
    #[track_caller]
    pub fn split_sizes(self, axis: isize, sizes: impl AsRef<[usize]>) -> Vec<Var<'t, T>> {
        let loc = Location::caller();
        let (shape, sizes) = (self.shape(), sizes.as_ref());
        let a = resolve_axis("split_sizes", axis, shape.len()).unwrap_or_else(|e| fail(e.at(loc)));
        let total = sizes.iter().try_fold(0usize, |s, &k| s.checked_add(k));
        if total != Some(shape[a]) {
            fail(
                Error::shape(
                    "split_sizes",
                    format!(
                        "sizes {sizes:?} do not add up to the extent {} of axis {axis} of {}",
                        shape[a],
                        fmt_shape(&shape)
                    ),
                )
                .at(loc),
            );
        }
        self.pieces(a, sizes, loc)
    }

    /// `chunks` pieces along `axis` whose sizes differ by at most one, the larger first (as
    /// NumPy's `array_split`; unlike PyTorch's `chunk`, which may return fewer pieces): some are
    /// empty when `chunks` exceeds the extent. Each piece is a `slice`. Panics with an `Invalid`
    /// error naming `chunk` when `chunks` is 0.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::zeros([5, 2]));
    /// let p = x.chunk(0, 3);
    /// assert_eq!(p.iter().map(|v| v.shape()[0]).collect::<Vec<_>>(), vec![2, 2, 1]);
    /// ```
    #[track_caller]
    pub fn chunk(self, axis: isize, chunks: usize) -> Vec<Var<'t, T>> {
        let loc = Location::caller();
        let shape = self.shape();
        let a = resolve_axis("chunk", axis, shape.len()).unwrap_or_else(|e| fail(e.at(loc)));
        if chunks == 0 {
            fail(Error::new(ErrorKind::Invalid, "chunk", "0 chunks: give at least 1").at(loc));
        }
        let (base, rem) = (shape[a] / chunks, shape[a] % chunks);
        let sizes: Vec<usize> = (0..chunks).map(|k| base + usize::from(k < rem)).collect();
        self.pieces(a, &sizes, loc)
    }

    /// Consecutive slices of `sizes` along (resolved) axis `a`; all or nothing is recorded.
    fn pieces(self, a: usize, sizes: &[usize], loc: &'static Location<'static>) -> Vec<Var<'t, T>> {
        let guard = TruncateGuard::new(self.tape);
        let mut off = 0;
        let mut out = Vec::with_capacity(sizes.len());
        for &k in sizes {
            out.push(self.record_at(SliceOp::range(a, off, off + k), &[self], loc));
            off += k;
        }
        guard.disarm();
        out
    }

    /// The positions `indices` along `axis`, in order (repeats allowed), as PyTorch's
    /// `index_select`: the axis's extent becomes `indices.len()`. A position taken twice gets both
    /// gradients. Panics with an `Invalid` error naming `index_select`, the index, its position
    /// and the extent when an index is out of range (nothing is recorded then).
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [3, 2]));
    /// let y = x.index_select(0, [2, 0, 2]);
    /// assert_eq!(y.value().to_vec(), vec![5.0, 6.0, 1.0, 2.0, 5.0, 6.0]);
    /// assert_eq!(y.sum().backward()[x].to_vec(), vec![1.0, 1.0, 0.0, 0.0, 2.0, 2.0]);
    /// ```
    #[track_caller]
    pub fn index_select(self, axis: isize, indices: impl AsRef<[usize]>) -> Var<'t, T> {
        let op = IndexSelectOp {
            axis,
            indices: indices.as_ref().into(),
        };
        self.record_at(op, &[self], Location::caller())
    }

    /// Rows of this table (axis 0) looked up by `ids`: the result has shape
    /// `ids.shape ++ table.shape[1..]` (a `[V, D]` table and `[B, L]` ids give `[B, L, D]`). A row
    /// looked up several times gets the sum of their gradients. Panics with an `Invalid` error
    /// naming `embedding`, the id, where it sits and the number of rows when an id is out of
    /// range, or a `Shape` error for a 0-d table (nothing is recorded then).
    ///
    /// ```
    /// use tapegrad::{Indices, Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let table = tape.var(Tensor::from_vec(vec![0.0, 0.1, 1.0, 1.1, 2.0, 2.1], [3, 2]));
    /// let e = table.embedding(Indices::new(vec![2, 0, 2, 2], [2, 2]));
    /// assert_eq!(e.shape().as_slice(), &[2, 2, 2]);
    /// assert_eq!(e.sum().backward()[table].to_vec(), vec![1.0, 1.0, 0.0, 0.0, 3.0, 3.0]);
    /// ```
    #[track_caller]
    pub fn embedding(self, ids: impl Into<Indices>) -> Var<'t, T> {
        self.record_at(EmbeddingOp { ids: ids.into() }, &[self], Location::caller())
    }

    /// PyTorch's `gather`: `out[p] = self[p with p[axis] = index[p]]`, with `out` of the index's
    /// shape; the index has as many axes as `self`, and off `axis` no larger extents. An element
    /// picked several times gets the sum of their gradients (the rule is `scatter_add`). Panics
    /// with an `Invalid` error naming `gather`, the index, where it sits, the axis and its extent
    /// when an index is out of range, or a `Shape` error when the index's shape does not fit.
    ///
    /// ```
    /// use tapegrad::{Indices, Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3]));
    /// let y = x.gather(1, Indices::new(vec![2, 2, 0, 1], [2, 2]));   // per row: columns 2,2 / 0,1
    /// assert_eq!(y.value().to_vec(), vec![3.0, 3.0, 4.0, 5.0]);
    /// assert_eq!(y.sum().backward()[x].to_vec(), vec![0.0, 0.0, 2.0, 1.0, 1.0, 0.0]);
    /// ```
    #[track_caller]
    pub fn gather(self, axis: isize, index: impl Into<Indices>) -> Var<'t, T> {
        let op = GatherOp {
            axis,
            index: index.into(),
        };
        self.record_at(op, &[self], Location::caller())
    }

    /// PyTorch's `scatter_add`: `self` with every element `src[p]` added into
    /// `self[p with p[axis] = index[p]]` (repeated targets accumulate). `src` has the index's
    /// shape; the index has as many axes as `self`, and off `axis` no larger extents. Recorded as
    /// a `scatter_add` (of `src` into zeros) and an `add`. Errors as [`gather`](Self::gather)'s,
    /// naming `scatter_add`; nothing is recorded then.
    ///
    /// ```
    /// use tapegrad::{Indices, Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let base = tape.var(Tensor::zeros([3]));
    /// let src = tape.var(Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], [4]));
    /// let y = base.scatter_add(0, Indices::from([2, 0, 2, 2]), src);
    /// assert_eq!(y.value().to_vec(), vec![2.0, 0.0, 8.0]);
    /// ```
    #[track_caller]
    pub fn scatter_add(self, axis: isize, index: impl Into<Indices>, src: Var<'t, T>) -> Var<'t, T> {
        let loc = Location::caller();
        let op = ScatterAddOp {
            axis,
            index: index.into(),
            shape: self.shape(),
        };
        let guard = TruncateGuard::new(self.tape);
        let scattered = self.record_at(op, &[src], loc);
        let out = self + scattered;
        guard.disarm();
        out
    }

    /// The parts joined along `axis`, in order (as PyTorch's `cat`); they must have the same
    /// extents except on that axis. Each part's gradient is its stretch of the output's (a
    /// `slice`). Panics with a `Shape` error naming `concat`, the part and the shapes when they do
    /// not fit, or an `Invalid` one for no parts (nothing is recorded then).
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor, Var};
    /// let tape = Tape::<f64>::new();
    /// let a = tape.var(Tensor::zeros([2, 3]));
    /// let b = tape.var(Tensor::ones([2, 1]));
    /// assert_eq!(Var::concat(-1, &[a, b, a]).shape().as_slice(), &[2, 7]);
    /// ```
    #[track_caller]
    pub fn concat(axis: isize, parts: &[Var<'t, T>]) -> Var<'t, T> {
        let loc = Location::caller();
        let Some(first) = parts.first() else {
            fail(Error::new(ErrorKind::Invalid, "concat", "no parts to join: give at least one").at(loc))
        };
        first.record_at(ConcatOp { axis }, parts, loc)
    }

    /// The parts, which must all have the same shape, stacked along a new axis `axis` of the
    /// result (`0..=ndim`, negative from the end), as PyTorch's `stack`. Recorded as a `reshape` of
    /// each part and a `concat`. Panics with a `Shape` error naming `stack` when the shapes differ
    /// or the axis is out of range, an `Invalid` one for no parts (nothing is recorded then).
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor, Var};
    /// let tape = Tape::<f64>::new();
    /// let a = tape.var(Tensor::from_vec(vec![1.0, 2.0], [2]));
    /// let b = tape.var(Tensor::from_vec(vec![3.0, 4.0], [2]));
    /// assert_eq!(Var::stack(0, &[a, b]).value().to_vec(), vec![1.0, 2.0, 3.0, 4.0]);
    /// assert_eq!(Var::stack(-1, &[a, b]).value().to_vec(), vec![1.0, 3.0, 2.0, 4.0]);
    /// ```
    #[track_caller]
    pub fn stack(axis: isize, parts: &[Var<'t, T>]) -> Var<'t, T> {
        let loc = Location::caller();
        let Some(first) = parts.first() else {
            fail(Error::new(ErrorKind::Invalid, "stack", "no parts to stack: give at least one").at(loc))
        };
        let s0 = first.shape();
        for (k, p) in parts.iter().enumerate() {
            first.tape.check_own(p, "stack").unwrap_or_else(|e| fail(e.at(loc)));
            if p.shape() != s0 {
                fail(
                    Error::shape(
                        "stack",
                        format!(
                            "part {k} has shape {} but part 0 has {}: stacked parts must have the same shape",
                            fmt_shape(&p.shape()),
                            fmt_shape(&s0)
                        ),
                    )
                    .at(loc),
                );
            }
        }
        let a = resolve_axis("stack", axis, s0.len() + 1)
            .unwrap_or_else(|_| fail(new_axis_error("stack", axis, &s0).at(loc)));
        let mut grown = s0.clone();
        grown.insert(a, 1);
        let guard = TruncateGuard::new(first.tape);
        let mut lifted = Vec::with_capacity(parts.len());
        for p in parts {
            lifted.push(p.reshape(&grown));
        }
        let out = first.record_at(ConcatOp { axis: a as isize }, &lifted, loc);
        guard.disarm();
        out
    }

    /// The value surrounded by `value`: `widths[d] = (before, after)` elements on each side of
    /// axis `d`, one pair per axis (as NumPy's constant `pad`). The gradient is the output's with
    /// the padding cut off. Panics with a `Shape` error naming `pad` when the number of pairs is
    /// not the number of axes or the result would be too large (nothing is recorded then).
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::from_vec(vec![1.0, 2.0], [1, 2]));
    /// let y = x.pad([(0, 1), (1, 0)], -1.0);
    /// assert_eq!(y.value().to_vec(), vec![-1.0, 1.0, 2.0, -1.0, -1.0, -1.0]);
    /// ```
    #[track_caller]
    pub fn pad(self, widths: impl AsRef<[(usize, usize)]>, value: T) -> Var<'t, T> {
        let op = PadOp {
            widths: widths.as_ref().to_vec(),
            value,
        };
        self.record_at(op, &[self], Location::caller())
    }

    /// NumPy's `where(self, on_true, on_false)` where either branch may be a number:
    /// `mask.select_scalar(x, 0.0)` is `x` where the mask is non-zero and `0` elsewhere. A number
    /// is recorded as a 0-d constant; the rest is [`select`](Self::select) (the branch not taken
    /// gets exactly zero gradient, even where it is infinite or NaN).
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::from_vec(vec![-2.0, 3.0], [2]));
    /// let y = x.gt(tape.scalar(0.0)).select_scalar(x, 0.0);      // relu
    /// assert_eq!(y.value().to_vec(), vec![0.0, 3.0]);
    /// assert_eq!(y.sum().backward()[x].to_vec(), vec![0.0, 1.0]);
    /// ```
    #[track_caller]
    pub fn select_scalar(self, on_true: impl Branch<'t, T>, on_false: impl Branch<'t, T>) -> Var<'t, T> {
        let guard = TruncateGuard::new(self.tape);
        let (a, b) = (on_true.into_var(self.tape), on_false.into_var(self.tape));
        let out = self.select(a, b);
        guard.disarm();
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Recipes.
// ---------------------------------------------------------------------------------------------

/// A wild index for an axis of `extent`: usually in range, sometimes just past it or huge.
fn wild_index(c: &mut Choice<'_>, extent: usize) -> usize {
    match c.below(8) {
        0 => usize::MAX,
        1 => extent,
        2 => extent + 1,
        _ => c.below(extent.max(1)),
    }
}

/// The extent of `axis` of `shape`, when the axis is in range.
fn extent_of(shape: &[usize], axis: isize) -> Option<usize> {
    resolve_axis("", axis, shape.len()).ok().map(|a| shape[a])
}

/// A position of an axis of extent `n`, given from the front or (negative) from the end.
fn position(c: &mut Choice<'_>, p: usize, n: usize) -> isize {
    if c.flag() { p as isize - n as isize } else { p as isize }
}

/// Random programs' and the fuzzer's call of `slice` and the methods built on it (`slice_step`,
/// `narrow`, one piece of `split`, `split_sizes` or `chunk`). Tame: an axis in range and a
/// non-empty piece (so later ops of the program never see an empty value); wild: any small axis,
/// start, end, step, length, size or count (empty, zero, negative, out of range).
fn slice_recipe<'t, T: Float>(c: &mut Choice<'_>, v: &[Var<'t, T>]) -> Option<Var<'t, T>> {
    let x = c.pick(v);
    let shape = x.shape();
    let axis = c.axis(shape.len())?;
    let mode = c.below(5);
    if c.wild() {
        let mut small = || (c.byte() as i8 % 6) as isize;
        let (s, e, k) = (small(), small(), small());
        return Some(match mode {
            0 => x.slice_step(axis, s..e, k),
            1 => x.narrow(axis, s, k.unsigned_abs()),
            2 => x.split(axis, k.unsigned_abs()).swap_remove(0),
            3 => x.chunk(axis, k.unsigned_abs()).swap_remove(0),
            _ => x.split_sizes(axis, [s.unsigned_abs(), e.unsigned_abs()]).swap_remove(0),
        });
    }
    let n = extent_of(&shape, axis)?;
    if n == 0 {
        return None;
    }
    Some(match mode {
        0 => {
            // A non-empty range start..end, each end given from the front or from the end (an
            // end at the extent is given as the extent itself, or left open).
            let start = c.below(n);
            let end = start + 1 + c.below(n - start);
            let s = position(c, start, n);
            let e = if end == n { n as isize } else { position(c, end, n) };
            let step = 1 + c.below(3) as isize;
            match c.below(3) {
                0 if start == 0 => x.slice_step(axis, ..e, step),
                1 if end == n => x.slice_step(axis, s.., step),
                _ => x.slice_step(axis, s..e, step),
            }
        }
        1 => {
            let start = c.below(n);
            let len = 1 + c.below(n - start);
            x.narrow(axis, position(c, start, n), len)
        }
        2 => {
            let p = x.split(axis, 1 + c.below(n));
            p[c.below(p.len())]
        }
        3 => {
            let p = x.chunk(axis, 1 + c.below(n.min(3)));
            p[c.below(p.len())]
        }
        _ => {
            let first = 1 + c.below(n);
            let sizes: Vec<usize> = if first == n { vec![n] } else { vec![first, n - first] };
            let p = x.split_sizes(axis, sizes);
            p[c.below(p.len())]
        }
    })
}

/// Random programs' and the fuzzer's call of `index_select`. Tame: 1–4 indices in range, repeats
/// likely; wild: any number of indices (none included), some out of range or huge.
fn index_select_recipe<'t, T: Float>(c: &mut Choice<'_>, v: &[Var<'t, T>]) -> Option<Var<'t, T>> {
    let x = c.pick(v);
    let shape = x.shape();
    let axis = c.axis(shape.len())?;
    if c.wild() {
        let n = extent_of(&shape, axis).unwrap_or(3);
        let idx: Vec<usize> = (0..c.below(5)).map(|_| wild_index(c, n)).collect();
        return Some(x.index_select(axis, idx));
    }
    let n = extent_of(&shape, axis)?;
    if n == 0 {
        return None;
    }
    let idx: Vec<usize> = (0..1 + c.below(4)).map(|_| c.below(n)).collect();
    Some(x.index_select(axis, idx))
}

/// Random programs' and the fuzzer's call of `embedding`. Tame: a table with rows and ids of up to
/// two axes in range; wild: any value as the table (0-d included), any ids shape, ids out of range.
fn embedding_recipe<'t, T: Float>(c: &mut Choice<'_>, v: &[Var<'t, T>]) -> Option<Var<'t, T>> {
    let t = c.pick(v);
    let shape = t.shape();
    let rows = shape.first().copied().unwrap_or(0);
    if c.wild() {
        let ids_shape = c.any_shape();
        let ids: Vec<usize> = (0..ids_shape.iter().product()).map(|_| wild_index(c, rows)).collect();
        return Some(t.embedding(Indices::new(ids, ids_shape)));
    }
    if rows == 0 {
        return None;
    }
    let ids_shape: Vec<usize> = (0..c.below(3)).map(|_| 1 + c.below(3)).collect();
    let ids: Vec<usize> = (0..ids_shape.iter().product()).map(|_| c.below(rows)).collect();
    Some(t.embedding(Indices::new(ids, ids_shape)))
}

/// Random programs' and the fuzzer's call of `gather`. Tame: an index with as many axes, extents
/// 1..=the input's off the axis and 1–3 on it, values in range; wild: an index with one axis more
/// or less now and then, any small extents, values out of range.
fn gather_recipe<'t, T: Float>(c: &mut Choice<'_>, v: &[Var<'t, T>]) -> Option<Var<'t, T>> {
    let x = c.pick(v);
    let shape = x.shape();
    let axis = c.axis(shape.len())?;
    if c.wild() {
        let nd = match c.below(4) {
            0 => shape.len() + 1,
            1 => shape.len().saturating_sub(1),
            _ => shape.len(),
        };
        let is: Vec<usize> = (0..nd).map(|_| c.below(4)).collect();
        let n = extent_of(&shape, axis).unwrap_or(3);
        let data: Vec<usize> = (0..is.iter().product()).map(|_| wild_index(c, n)).collect();
        return Some(x.gather(axis, Indices::new(data, is)));
    }
    let a = resolve_axis("gather", axis, shape.len()).ok()?;
    if shape.contains(&0) {
        return None;
    }
    let is: Vec<usize> = (0..shape.len())
        .map(|d| if d == a { 1 + c.below(3) } else { 1 + c.below(shape[d]) })
        .collect();
    let data: Vec<usize> = (0..is.iter().product()).map(|_| c.below(shape[a])).collect();
    Some(x.gather(axis, Indices::new(data, is)))
}

/// Random programs' and the fuzzer's call of `scatter_add`. Tame: a source from the pool whose
/// shape fits the base off the axis (the base itself if no other does), indices in range; wild:
/// any base and source, an index of the source's shape or any small shape, values out of range.
fn scatter_add_recipe<'t, T: Float>(c: &mut Choice<'_>, v: &[Var<'t, T>]) -> Option<Var<'t, T>> {
    let base = c.pick(v);
    let shape = base.shape();
    let axis = c.axis(shape.len())?;
    if c.wild() {
        let src = c.pick(v);
        let is: Vec<usize> = if c.flag() { src.shape().to_vec() } else { c.any_shape() };
        let n = extent_of(&shape, axis).unwrap_or(3);
        let data: Vec<usize> = (0..is.iter().product()).map(|_| wild_index(c, n)).collect();
        return Some(base.scatter_add(axis, Indices::new(data, is), src));
    }
    let a = resolve_axis("scatter_add", axis, shape.len()).ok()?;
    if shape[a] == 0 {
        return None;
    }
    let start = c.below(v.len());
    let src = (0..v.len())
        .map(|k| v[(start + k) % v.len()])
        .find(|s| {
            let ss = s.shape();
            ss.len() == shape.len() && (0..ss.len()).all(|d| d == a || ss[d] <= shape[d])
        })
        .unwrap_or(base);
    let is = src.shape();
    let data: Vec<usize> = (0..is.iter().product()).map(|_| c.below(shape[a])).collect();
    Some(base.scatter_add(axis, Indices::new(data, is), src))
}

/// Random programs' and the fuzzer's call of `concat` (or `stack`). Tame: two or three values of
/// the pool that fit (a value joined with itself always does); wild: zero to three values of any
/// shapes and any small axis.
fn concat_recipe<'t, T: Float>(c: &mut Choice<'_>, v: &[Var<'t, T>]) -> Option<Var<'t, T>> {
    let x = c.pick(v);
    let shape = x.shape();
    let stack = c.flag();
    if c.wild() {
        let parts: Vec<Var<'t, T>> = (0..c.below(4)).map(|_| c.pick(v)).collect();
        let axis = (c.byte() as i8 % 5) as isize;
        return Some(if stack {
            Var::stack(axis, &parts)
        } else {
            Var::concat(axis, &parts)
        });
    }
    let start = c.below(v.len());
    let others = (0..v.len()).map(|k| v[(start + k) % v.len()]);
    if stack {
        let nd = shape.len();
        let p = c.below(nd + 1);
        let axis = position(c, p, nd + 1);
        let mut parts = vec![x];
        parts.extend(others.filter(|p| p.shape() == shape).take(2));
        return Some(Var::stack(axis, &parts));
    }
    let axis = c.axis(shape.len())?;
    let a = resolve_axis("concat", axis, shape.len()).ok()?;
    let fits = |p: &Var<'t, T>| {
        let s = p.shape();
        s.len() == shape.len() && (0..s.len()).all(|d| d == a || s[d] == shape[d])
    };
    let mut parts = vec![x];
    parts.extend(others.filter(fits).take(2));
    Some(Var::concat(axis, &parts))
}

/// Random programs' and the fuzzer's call of `pad`. Tame: 0–2 elements on each side of every
/// axis, an ordinary constant; wild: one pair too many or too few now and then, widths that
/// overflow, any constant (NaN, ±∞ included).
fn pad_recipe<'t, T: Float>(c: &mut Choice<'_>, v: &[Var<'t, T>]) -> Option<Var<'t, T>> {
    let x = c.pick(v);
    let nd = x.shape().len();
    if c.wild() {
        let k = match c.below(4) {
            0 => nd + 1,
            1 => nd.saturating_sub(1),
            _ => nd,
        };
        let mut width = || match c.below(8) {
            0 => usize::MAX,
            1 => usize::MAX / 2,
            _ => c.below(4),
        };
        let widths: Vec<(usize, usize)> = (0..k).map(|_| (width(), width())).collect();
        return Some(x.pad(widths, T::from_f64(c.scalar())));
    }
    let widths: Vec<(usize, usize)> = (0..nd).map(|_| (c.below(3), c.below(3))).collect();
    Some(x.pad(widths, T::from_f64(c.scalar())))
}

// ---------------------------------------------------------------------------------------------
// Registry entries.
// ---------------------------------------------------------------------------------------------

/// Indices of the samples (shared by the sample and its reference).
const SEL_A: [usize; 3] = [2, 0, 2];
const SEL_B: [usize; 5] = [3, 3, 1, 0, 3];
const EMB_A: [usize; 6] = [4, 0, 4, 1, 4, 0];
const EMB_B: [usize; 3] = [2, 2, 0];
const GATHER_A: [usize; 6] = [3, 0, 3, 1, 1, 1]; // [3, 2], axis 1 of [3, 4]
const GATHER_B: [usize; 8] = [2, 0, 0, 1, 2, 2, 1, 0]; // [2, 4], axis 0 of [3, 4]
const GATHER_C: [usize; 12] = [3, 0, 1, 1, 2, 3, 0, 0, 3, 2, 2, 1]; // [2, 2, 3], axis -1 of [2, 3, 4]
const SCATTER_A: [usize; 6] = [1, 1, 3, 0, 2, 1]; // [3, 2] into [3, 4], axis 1
const SCATTER_B: [usize; 6] = [3, 0, 3, 3, 1, 0]; // [3, 2] into [4, 2], axis 0
const SCATTER_C: [usize; 8] = [2, 0, 2, 1, 0, 0, 1, 2]; // [2, 4, 1] into [2, 3, 2], axis 1

/// A sample's recorded `slice_backward` through `slice`'s recorded rule: the gradient of
/// `⟨g, x[r]⟩` for a zero `x` of `shape`, `g` the sample's input.
fn through_slice<'t, T: Float>(g: Var<'t, T>, shape: &[usize], f: impl Fn(Var<'t, T>) -> Var<'t, T>) -> Var<'t, T> {
    let tape = g.tape();
    let x = tape.var(Tensor::zeros(shape));
    let y = f(x);
    tape.grad_graph(&[y], &[g], &[x])[0]
}

pub(crate) fn register(r: &mut Registry) {
    r.register(
        OpInfo::new(
            "slice",
            "x[start:end:step] along one axis, Python-style (also narrow, split, split_sizes, chunk)",
            || {
                let n = |s: &[usize], seed| Tensor::<f64>::rand_normal(s, 0.0, 1.0, seed);
                vec![
                    sample!("x[1:] of [5]", [n(&[5], 200)], |v| v[0].slice(0, 1..))
                        .with_reference(|x| reference::slice(&x[0], 0, Some(1), None, 1)),
                    sample!("x[:-1] of [5]", [n(&[5], 201)], |v| v[0].slice(0, ..-1))
                        .with_reference(|x| reference::slice(&x[0], 0, None, Some(-1), 1)),
                    sample!("x[1:-1] of [2,5] axis -1", [n(&[2, 5], 217)], |v| v[0]
                        .slice(-1, (1, -1)))
                    .with_reference(|x| reference::slice(&x[0], 1, Some(1), Some(-1), 1)),
                    sample!("x[1:] * x[:-1]² of [4]", [n(&[4], 202)], |v| {
                        let b = v[0].slice(0, ..-1);
                        v[0].slice(0, 1..) * b * b
                    })
                    .with_reference(|x| {
                        let (a, b) = (
                            reference::slice(&x[0], 0, Some(1), None, 1),
                            reference::slice(&x[0], 0, None, Some(-1), 1),
                        );
                        reference::zip(&a, &b, |a, b| a * b * b)
                    }),
                    sample!("[2,5,3] axis 1, -4::2", [n(&[2, 5, 3], 203)], |v| v[0].slice_step(
                        1,
                        -4..,
                        2
                    ))
                    .with_reference(|x| reference::slice(&x[0], 1, Some(-4), None, 2)),
                    sample!("[2,3,4] axis -1, 0..=2 step 3", [n(&[2, 3, 4], 204)], |v| v[0]
                        .slice_step(-1, 0..=2, 3))
                    .with_reference(|x| reference::slice(&x[0], -1, Some(0), Some(3), 3)),
                    sample!("[3,4] axis 1, -1:1 (empty)", [n(&[3, 4], 205)], |v| v[0]
                        .slice(1, -1..1))
                    .with_reference(|x| reference::slice(&x[0], 1, Some(-1), Some(1), 1)),
                    sample!("[3,2] axis 0, -9:9 (clamped)", [n(&[3, 2], 206)], |v| v[0]
                        .slice(0, -9..9))
                    .with_reference(|x| reference::slice(&x[0], 0, Some(-9), Some(9), 1)),
                    sample!("[1] whole", [n(&[1], 207)], |v| v[0].slice(0, ..))
                        .with_reference(|x| reference::slice(&x[0], 0, None, None, 1)),
                    sample!("narrow [4,3] axis 0, -3 len 2", [n(&[4, 3], 208)], |v| v[0]
                        .narrow(0, -3, 2))
                    .with_reference(|x| reference::slice(&x[0], 0, Some(1), Some(3), 1)),
                    sample!("split [2,5] axis 1 by 2, piece 2", [n(&[2, 5], 209)], |v| v[0]
                        .split(1, 2)[2])
                    .with_reference(|x| reference::slice(&x[0], 1, Some(4), None, 1)),
                    sample!("chunk [5,2] axis 0 in 2: product", [n(&[5, 2], 210)], |v| {
                        let p = v[0].chunk(0, 2);
                        p[0].slice(0, ..2) * p[1]
                    })
                    .with_reference(|x| {
                        let (a, b) = (
                            reference::slice(&x[0], 0, Some(0), Some(2), 1),
                            reference::slice(&x[0], 0, Some(3), None, 1),
                        );
                        reference::zip(&a, &b, |a, b| a * b)
                    }),
                    sample!("split_sizes [3,4] axis -1 [1,3], piece 1", [n(&[3, 4], 211)], |v| v[0]
                        .split_sizes(-1, [1, 3])[1])
                    .with_reference(|x| reference::slice(&x[0], 1, Some(1), None, 1)),
                ]
            },
        )
        .recipe(recipe!(|c, v| slice_recipe(c, v))),
    );
    r.register(OpInfo::new(
        "slice_backward",
        "the gradient of slice: values placed at the sliced positions, zeros elsewhere",
        || {
            let n = |s: &[usize], seed| Tensor::<f64>::rand_normal(s, 0.0, 1.0, seed);
            vec![
                sample!("x[1:] of [5], recorded", [n(&[4], 212)], |v| through_slice(
                    v[0],
                    &[5],
                    |x| x.slice(0, 1..)
                ))
                .with_reference(|x| reference::slice_backward(&x[0], 0, 1, 1, 5)),
                sample!("[2,5,3] axis 1, 1::3, recorded", [n(&[2, 2, 3], 213)], |v| {
                    through_slice(v[0], &[2, 5, 3], |x| x.slice_step(1, 1.., 3))
                })
                .with_reference(|x| reference::slice_backward(&x[0], 1, 1, 3, 5)),
                sample!("[3,2] axis -1, -1:1 (empty), recorded", [n(&[3, 0], 214)], |v| {
                    through_slice(v[0], &[3, 2], |x| x.slice(-1, -1..1))
                })
                .with_reference(|x| reference::slice_backward(&x[0], 1, 2, 1, 2)),
                sample!("[2,2] into [2,4] axis 1 at 0::2", [n(&[2, 2], 215)], |v| v[0]
                    .tape()
                    .apply(
                        SliceBackwardOp {
                            axis: 1,
                            start: 0,
                            step: 2,
                            extent: 4
                        },
                        &[v[0]]
                    ))
                .with_reference(|x| reference::slice_backward(&x[0], 1, 0, 2, 4)),
            ]
        },
    ));
    r.register(
        OpInfo::new(
            "index_select",
            "positions along one axis, repeats allowed (gradients accumulate)",
            || {
                let n = |s: &[usize], seed| Tensor::<f64>::rand_normal(s, 0.0, 1.0, seed);
                vec![
                    sample!("[4,3] axis 0, [2,0,2]", [n(&[4, 3], 220)], |v| v[0]
                        .index_select(0, SEL_A))
                    .with_reference(|x| reference::index_select(&x[0], 0, &SEL_A)),
                    sample!("[2,3,4] axis -1, [3,3,1,0,3]", [n(&[2, 3, 4], 221)], |v| v[0]
                        .index_select(-1, SEL_B))
                    .with_reference(|x| reference::index_select(&x[0], 2, &SEL_B)),
                    sample!("[3] no indices (empty)", [n(&[3], 222)], |v| v[0].index_select(0, []))
                        .with_reference(|x| reference::index_select(&x[0], 0, &[])),
                    sample!("[1] [0,0,0]", [n(&[1], 223)], |v| v[0].index_select(0, [0, 0, 0]))
                        .with_reference(|x| reference::index_select(&x[0], 0, &[0, 0, 0])),
                    sample!("[4,3] axis 0, [2,0,2] squared", [n(&[4, 3], 224)], |v| {
                        let y = v[0].index_select(0, SEL_A);
                        y * y
                    })
                    .with_reference(|x| {
                        let y = reference::index_select(&x[0], 0, &SEL_A);
                        reference::zip(&y, &y, |a, b| a * b)
                    }),
                ]
            },
        )
        .recipe(recipe!(|c, v| index_select_recipe(c, v))),
    );
    r.register(OpInfo::new(
        "index_select_backward",
        "the gradient of index_select and embedding: blocks added into their positions",
        || {
            let n = |s: &[usize], seed| Tensor::<f64>::rand_normal(s, 0.0, 1.0, seed);
            vec![
                sample!("[3,2] into [4,2] axis 0 at [2,0,2], recorded", [n(&[3, 2], 225)], |v| {
                    let tape = v[0].tape();
                    let x = tape.var(Tensor::zeros([4, 2]));
                    tape.grad_graph(&[x.index_select(0, SEL_A)], &[v[0]], &[x])[0]
                })
                .with_reference(|x| reference::index_select_backward(&x[0], 0, &SEL_A, 4)),
                sample!("[2,5,2] into [2,4,2] axis 1", [n(&[2, 5, 2], 226)], |v| v[0]
                    .tape()
                    .apply(
                        IndexSelectBackwardOp {
                            axis: 1,
                            indices: SEL_B.into(),
                            extent: 4
                        },
                        &[v[0]]
                    ))
                .with_reference(|x| reference::index_select_backward(&x[0], 1, &SEL_B, 4)),
            ]
        },
    ));
    r.register(
        OpInfo::new(
            "embedding",
            "rows of a table looked up by ids of any shape (gradients accumulate into repeated rows)",
            || {
                let n = |s: &[usize], seed| Tensor::<f64>::rand_normal(s, 0.0, 1.0, seed);
                vec![
                    sample!("table [5,3], ids [2,3] with repeats", [n(&[5, 3], 230)], |v| v[0]
                        .embedding(Indices::new(EMB_A.to_vec(), [2, 3])))
                    .with_reference(|x| reference::embedding(&x[0], &EMB_A, &[2, 3])),
                    sample!("table [4] (scalar rows), ids [3]", [n(&[4], 231)], |v| v[0]
                        .embedding(EMB_B))
                    .with_reference(|x| reference::embedding(&x[0], &EMB_B, &[3])),
                    sample!("table [3,2,2], one 0-d id", [n(&[3, 2, 2], 232)], |v| v[0]
                        .embedding(Indices::new(vec![1], [])))
                    .with_reference(|x| reference::embedding(&x[0], &[1], &[])),
                    sample!("table [2,3], no ids [0]", [n(&[2, 3], 233)], |v| v[0]
                        .embedding(Indices::new(vec![], [0])))
                    .with_reference(|x| reference::embedding(&x[0], &[], &[0])),
                ]
            },
        )
        .recipe(recipe!(|c, v| embedding_recipe(c, v))),
    );
    r.register(
        OpInfo::new(
            "gather",
            "torch.gather: out[p] = x[p with p[axis] = index[p]] (gradients accumulate)",
            || {
                let n = |s: &[usize], seed| Tensor::<f64>::rand_normal(s, 0.0, 1.0, seed);
                vec![
                    sample!("[3,4] axis 1, index [3,2]", [n(&[3, 4], 240)], |v| v[0]
                        .gather(1, Indices::new(GATHER_A.to_vec(), [3, 2])))
                    .with_reference(|x| reference::gather(&x[0], 1, &GATHER_A, &[3, 2])),
                    sample!("[3,4] axis 0, index [2,4]", [n(&[3, 4], 241)], |v| v[0]
                        .gather(0, Indices::new(GATHER_B.to_vec(), [2, 4])))
                    .with_reference(|x| reference::gather(&x[0], 0, &GATHER_B, &[2, 4])),
                    sample!("[2,3,4] axis -1, smaller index [2,2,3]", [n(&[2, 3, 4], 242)], |v| v[0]
                        .gather(-1, Indices::new(GATHER_C.to_vec(), [2, 2, 3])))
                    .with_reference(|x| reference::gather(&x[0], 2, &GATHER_C, &[2, 2, 3])),
                    sample!("[1] axis 0, [0,0]", [n(&[1], 243)], |v| v[0].gather(0, [0, 0]))
                        .with_reference(|x| reference::gather(&x[0], 0, &[0, 0], &[2])),
                    sample!("[2,2] axis 1, empty index [2,0]", [n(&[2, 2], 244)], |v| v[0]
                        .gather(1, Indices::new(vec![], [2, 0])))
                    .with_reference(|x| reference::gather(&x[0], 1, &[], &[2, 0])),
                ]
            },
        )
        .recipe(recipe!(|c, v| gather_recipe(c, v))),
    );
    r.register(
        OpInfo::new(
            "scatter_add",
            "torch.scatter_add: base with src[p] added at p with p[axis] = index[p] (repeats accumulate)",
            || {
                let n = |s: &[usize], seed| Tensor::<f64>::rand_normal(s, 0.0, 1.0, seed);
                vec![
                    sample!(
                        "base [3,4] axis 1, src [3,2]",
                        [n(&[3, 4], 250), n(&[3, 2], 251)],
                        |v| v[0].scatter_add(1, Indices::new(SCATTER_A.to_vec(), [3, 2]), v[1])
                    )
                    .with_reference(|x| reference::scatter_add(&x[0], 1, &SCATTER_A, &x[1])),
                    sample!(
                        "base [4,2] axis 0, src [3,2]",
                        [n(&[4, 2], 252), n(&[3, 2], 253)],
                        |v| v[0].scatter_add(0, Indices::new(SCATTER_B.to_vec(), [3, 2]), v[1])
                    )
                    .with_reference(|x| reference::scatter_add(&x[0], 0, &SCATTER_B, &x[1])),
                    sample!(
                        "base [2,3,2] axis -2, src [2,4,1]",
                        [n(&[2, 3, 2], 254), n(&[2, 4, 1], 255)],
                        |v| v[0].scatter_add(-2, Indices::new(SCATTER_C.to_vec(), [2, 4, 1]), v[1])
                    )
                    .with_reference(|x| reference::scatter_add(&x[0], 1, &SCATTER_C, &x[1])),
                    sample!("base [1], src [3] all into 0", [n(&[1], 256), n(&[3], 257)], |v| v[0]
                        .scatter_add(0, [0, 0, 0], v[1]))
                    .with_reference(|x| reference::scatter_add(&x[0], 0, &[0, 0, 0], &x[1])),
                    sample!("gathered back, [3,4] axis 1 (recorded)", [n(&[3, 2], 258)], |v| {
                        let tape = v[0].tape();
                        let x = tape.var(Tensor::zeros([3, 4]));
                        let y = x.gather(1, Indices::new(GATHER_A.to_vec(), [3, 2]));
                        tape.grad_graph(&[y], &[v[0]], &[x])[0]
                    })
                    .with_reference(|x| reference::scatter_add(&Tensor::zeros([3, 4]), 1, &GATHER_A, &x[0])),
                ]
            },
        )
        .recipe(recipe!(|c, v| scatter_add_recipe(c, v))),
    );
    r.register(
        OpInfo::new("concat", "parts joined along one axis (also stack)", || {
            let n = |s: &[usize], seed| Tensor::<f64>::rand_normal(s, 0.0, 1.0, seed);
            vec![
                sample!("[2,3] ++ [2,1] axis 1", [n(&[2, 3], 260), n(&[2, 1], 261)], |v| {
                    Var::concat(1, &[v[0], v[1]])
                })
                .with_reference(|x| reference::concat(&[&x[0], &x[1]], 1)),
                sample!(
                    "[1,3] ++ [2,3] ++ [1,3] axis 0",
                    [n(&[1, 3], 262), n(&[2, 3], 263), n(&[1, 3], 264)],
                    |v| Var::concat(0, &[v[0], v[1], v[2]])
                )
                .with_reference(|x| reference::concat(&[&x[0], &x[1], &x[2]], 0)),
                sample!(
                    "3-D axis -2, [2,1,2] ++ [2,3,2]",
                    [n(&[2, 1, 2], 265), n(&[2, 3, 2], 266)],
                    |v| { Var::concat(-2, &[v[0], v[1]]) }
                )
                .with_reference(|x| reference::concat(&[&x[0], &x[1]], 1)),
                sample!("x ++ x² (one input twice)", [n(&[3], 267)], |v| Var::concat(
                    0,
                    &[v[0], v[0] * v[0]]
                ))
                .with_reference(|x| reference::concat(&[&x[0], &reference::zip(&x[0], &x[0], |a, b| a * b)], 0)),
                sample!(
                    "[0,3] ++ [2,3] (an empty part)",
                    [n(&[0, 3], 268), n(&[2, 3], 269)],
                    |v| { Var::concat(0, &[v[0], v[1]]) }
                )
                .with_reference(|x| reference::concat(&[&x[0], &x[1]], 0)),
                sample!("stack [3], [3] axis 0", [n(&[3], 270), n(&[3], 271)], |v| Var::stack(
                    0,
                    &[v[0], v[1]]
                ))
                .with_reference(|x| {
                    let (a, b) = (reference::reshape(&x[0], &[1, 3]), reference::reshape(&x[1], &[1, 3]));
                    reference::concat(&[&a, &b], 0)
                }),
                sample!("stack [2,2] ×3 axis -1", [n(&[2, 2], 272), n(&[2, 2], 273)], |v| {
                    Var::stack(-1, &[v[0], v[1], v[0]])
                })
                .with_reference(|x| {
                    let (a, b) = (
                        reference::reshape(&x[0], &[2, 2, 1]),
                        reference::reshape(&x[1], &[2, 2, 1]),
                    );
                    reference::concat(&[&a, &b, &a], 2)
                }),
                sample!("stack 0-d values", [Tensor::scalar(0.3), Tensor::scalar(-1.2)], |v| {
                    Var::stack(0, &[v[0], v[1]])
                })
                .with_reference(|x| {
                    let (a, b) = (reference::reshape(&x[0], &[1]), reference::reshape(&x[1], &[1]));
                    reference::concat(&[&a, &b], 0)
                }),
            ]
        })
        .recipe(recipe!(|c, v| concat_recipe(c, v))),
    );
    r.register(
        OpInfo::new(
            "pad",
            "a constant border of (before, after) elements on every axis",
            || {
                let n = |s: &[usize], seed| Tensor::<f64>::rand_normal(s, 0.0, 1.0, seed);
                vec![
                    sample!("[2,3] by (1,0),(0,2) with 0", [n(&[2, 3], 280)], |v| v[0]
                        .pad([(1, 0), (0, 2)], crate::Float::from_f64(0.0)))
                    .with_reference(|x| reference::pad(&x[0], &[(1, 0), (0, 2)], 0.0)),
                    sample!("[2,3,2] by (0,1),(1,1),(0,0) with -1.5", [n(&[2, 3, 2], 281)], |v| v[0]
                        .pad([(0, 1), (1, 1), (0, 0)], crate::Float::from_f64(-1.5)))
                    .with_reference(|x| reference::pad(&x[0], &[(0, 1), (1, 1), (0, 0)], -1.5)),
                    sample!("[1] by (2,1) with 0.5, squared", [n(&[1], 282)], |v| {
                        let y = v[0].pad([(2, 1)], crate::Float::from_f64(0.5));
                        y * y
                    })
                    .with_reference(|x| {
                        let y = reference::pad(&x[0], &[(2, 1)], 0.5);
                        reference::zip(&y, &y, |a, b| a * b)
                    }),
                    sample!("0-d, no pairs", [Tensor::scalar(0.4)], |v| v[0]
                        .pad([], crate::Float::from_f64(9.0)))
                    .with_reference(|x| reference::pad(&x[0], &[], 9.0)),
                    sample!("[0,2] by (1,1),(0,1) (all padding)", [n(&[0, 2], 283)], |v| v[0]
                        .pad([(1, 1), (0, 1)], crate::Float::from_f64(2.0)))
                    .with_reference(|x| reference::pad(&x[0], &[(1, 1), (0, 1)], 2.0)),
                ]
            },
        )
        .recipe(recipe!(|c, v| pad_recipe(c, v))),
    );
}
