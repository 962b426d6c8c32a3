//! Shapes and NumPy broadcasting rules.
//!
//! ```
//! use tapegrad::shape::{broadcast_shapes, numel};
//! let s = broadcast_shapes(&[8, 1, 3], &[5, 1]).unwrap();   // aligned at the last axis
//! assert_eq!(&s[..], &[8, 5, 3]);
//! assert_eq!(numel(&s), 120);
//! ```

use crate::core::error::{Error, fail};
use smallvec::SmallVec;

/// A tensor shape: one extent per axis, outermost first. Up to four axes live inline (no allocation).
pub type Shape = SmallVec<[usize; 4]>;

/// Builds a [`Shape`] from anything that looks like a list of extents.
///
/// ```
/// let s = tapegrad::shape::shape_of([2, 3]);
/// assert_eq!(&s[..], &[2, 3]);
/// ```
pub fn shape_of(dims: impl AsRef<[usize]>) -> Shape {
    SmallVec::from_slice(dims.as_ref())
}

/// Number of elements of a shape (1 for a 0-d shape).
///
/// Panics when the shape is too large for any tensor (see [`try_numel`]); every tensor's shape
/// passed that check when the tensor was made, so this never panics on a tensor's shape.
///
/// ```
/// assert_eq!(tapegrad::shape::numel(&[2, 3, 4]), 24);
/// assert_eq!(tapegrad::shape::numel(&[]), 1);
/// ```
#[track_caller]
pub fn numel(shape: &[usize]) -> usize {
    try_numel(shape).unwrap_or_else(|| {
        fail(Error::shape(
            "numel",
            format!(
                "shape {} is too large: the product of its nonzero extents exceeds isize::MAX",
                fmt_shape(shape)
            ),
        ))
    })
}

/// Number of elements of a shape, or `None` when no tensor can have that shape: when the product
/// of its *nonzero* extents exceeds `isize::MAX` (the most elements any Rust buffer can hold).
///
/// Zero extents are left out of that product so that every sub-shape is countable too: an empty
/// `[0, 2^62, 4]` has no elements, but a sum over its first axis would have 2^64. Tensors enforce
/// a stricter bound that also counts bytes (`isize::MAX / size_of::<T>()` elements); this function
/// never wraps.
///
/// ```
/// use tapegrad::shape::try_numel;
/// assert_eq!(try_numel(&[2, 3, 4]), Some(24));
/// assert_eq!(try_numel(&[0, 1 << 40]), Some(0));
/// assert_eq!(try_numel(&[1 << 63, 2]), None);       // 2^64 would wrap to 0
/// assert_eq!(try_numel(&[0, 1 << 62, 4]), None);    // empty, but its sub-shape [2^62, 4] is not countable
/// ```
pub fn try_numel(shape: &[usize]) -> Option<usize> {
    numel_within(shape, isize::MAX as usize)
}

/// Number of elements of `shape` when the product of its nonzero extents is at most `max`.
pub(crate) fn numel_within(shape: &[usize], max: usize) -> Option<usize> {
    let mut nonzero: usize = 1;
    let mut empty = false;
    for &d in shape {
        if d == 0 {
            empty = true;
        } else {
            nonzero = nonzero.checked_mul(d).filter(|&p| p <= max)?;
        }
    }
    Some(if empty { 0 } else { nonzero })
}

/// Row-major (C-order) strides of a contiguous tensor with this shape. Panics (rather than wrap)
/// when they overflow, which no tensor's shape does (see [`try_numel`]).
///
/// ```
/// assert_eq!(&tapegrad::shape::strides(&[2, 3, 4])[..], &[12, 4, 1]);
/// ```
#[track_caller]
pub fn strides(shape: &[usize]) -> SmallVec<[usize; 4]> {
    let mut s: SmallVec<[usize; 4]> = SmallVec::from_elem(1, shape.len());
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1].checked_mul(shape[i + 1]).unwrap_or_else(|| {
            fail(Error::shape(
                "strides",
                format!("shape {} is too large: its strides overflow", fmt_shape(shape)),
            ))
        });
    }
    s
}

/// The NumPy broadcast of two shapes, or `None` when they are incompatible or when the result
/// would be too large for any tensor (see [`try_numel`]).
///
/// Shapes are aligned at their last axis; two extents are compatible when equal or when one is 1.
///
/// ```
/// use tapegrad::shape::broadcast_shapes;
/// assert_eq!(&broadcast_shapes(&[4, 1, 3], &[5, 1]).unwrap()[..], &[4, 5, 3]);
/// assert!(broadcast_shapes(&[2, 3], &[4]).is_none());
/// assert!(broadcast_shapes(&[1 << 40, 1], &[1 << 40]).is_none());   // 2^80 elements
/// ```
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Shape> {
    broadcast_extents(a, b).filter(|s| try_numel(s).is_some())
}

/// The NumPy broadcast of two shapes, or `None` when they are incompatible. The result's size is
/// not checked: callers check it with the element type in hand (`Tensor::checked_numel`), so that
/// an incompatible pair and a too-large result get different errors.
pub(crate) fn broadcast_extents(a: &[usize], b: &[usize]) -> Option<Shape> {
    let r = a.len().max(b.len());
    let mut out = Shape::with_capacity(r);
    for i in 0..r {
        let da = if i + a.len() >= r { a[i + a.len() - r] } else { 1 };
        let db = if i + b.len() >= r { b[i + b.len() - r] } else { 1 };
        out.push(if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return None;
        });
    }
    Some(out)
}

/// True when a tensor of shape `from` can be broadcast to `to` (`to` is the result's shape).
///
/// ```
/// use tapegrad::shape::broadcasts_to;
/// assert!(broadcasts_to(&[3, 1], &[2, 3, 4]));
/// assert!(!broadcasts_to(&[2, 3, 4], &[3, 4]));
/// ```
pub fn broadcasts_to(from: &[usize], to: &[usize]) -> bool {
    from.len() <= to.len() && from.iter().rev().zip(to.iter().rev()).all(|(&f, &t)| f == t || f == 1)
}

/// Strides that read a contiguous tensor of shape `from` as if it had the broadcast shape `to`
/// (stride 0 on broadcast axes). The caller checks [`broadcasts_to`] first.
pub(crate) fn broadcast_strides(from: &[usize], to: &[usize]) -> SmallVec<[usize; 4]> {
    let fs = strides(from);
    let off = to.len() - from.len();
    (0..to.len())
        .map(|i| if i < off || from[i - off] == 1 { 0 } else { fs[i - off] })
        .collect()
}

/// Formats a shape as `[2, 3]`.
pub(crate) fn fmt_shape(s: &[usize]) -> String {
    format!("{s:?}")
}

/// True when two shapes are equal — compared inline (shapes are short; a `memcmp` call costs
/// more than the comparison on the per-op path).
#[inline(always)]
pub(crate) fn same_shape(a: &[usize], b: &[usize]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}
