//! Helpers the op families share: arity checks, broadcasting binary forwards, axis resolution.

use crate::core::error::{Error, Result};
use crate::core::float::Float;
use crate::core::shape::{broadcast_extents, fmt_shape};
use crate::tensor::{Tensor, checked_numel, kernels};

/// Checks the input count of an op.
pub(crate) fn arity<T: Float>(op: &str, inputs: &[&Tensor<T>], n: usize) -> Result<()> {
    if inputs.len() == n {
        Ok(())
    } else {
        Err(Error::new(
            crate::ErrorKind::Invalid,
            op,
            format!("expects {n} input(s), got {}", inputs.len()),
        ))
    }
}

/// Broadcasts two tensors together and applies `f` elementwise; the error names the op and shapes.
pub(crate) fn broadcast_zip<T: Float>(
    op: &str,
    a: &Tensor<T>,
    b: &Tensor<T>,
    f: impl Fn(T, T) -> T,
) -> Result<Tensor<T>> {
    if a.shape() == b.shape() {
        return Ok(a.zip_same(b, f));
    }
    let out = broadcast_extents(a.shape(), b.shape()).ok_or_else(|| {
        Error::shape(
            op,
            format!(
                "shapes {} and {} do not broadcast (extents must match or be 1, aligned at the last axis)",
                fmt_shape(a.shape()),
                fmt_shape(b.shape())
            ),
        )
    })?;
    checked_numel::<T>(op, &out)?;
    if a.numel() == 1 && b.numel() == 1 {
        return Ok(Tensor::one_of_shape(out, f(a.data()[0], b.data()[0])));
    }
    let data = kernels::binary(a.data(), a.shape(), b.data(), b.shape(), &out, f);
    Ok(Tensor::from_parts(out, data))
}

/// Resolves an axis (negative counts from the end, as in NumPy) or reports it out of range.
pub(crate) fn resolve_axis(op: &str, axis: isize, ndim: usize) -> Result<usize> {
    let a = if axis < 0 { axis + ndim as isize } else { axis };
    if a < 0 || a as usize >= ndim {
        Err(Error::shape(
            op,
            format!("axis {axis} is out of range for a tensor with {ndim} axes"),
        ))
    } else {
        Ok(a as usize)
    }
}
