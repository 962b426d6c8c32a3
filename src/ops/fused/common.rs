//! Helpers the fused ops share: axis checks, shapes of per-row sums, row counts, samples.

use crate::core::error::{Error, Result};
use crate::core::float::Float;
use crate::core::shape::{Shape, fmt_shape, shape_of};
use crate::ops::common::resolve_axis;
use crate::tensor::Tensor;

/// Resolves the axis of a softmax-family op; 0-d inputs are rejected with the op's name, and an
/// axis out of range with the op's name and the input's shape.
pub(crate) fn softmax_axis<T: Float>(op: &str, axis: isize, x: &Tensor<T>) -> Result<usize> {
    if x.ndim() == 0 {
        return Err(Error::shape(
            op,
            "needs at least one axis; got a 0-d value (reshape it to [1])",
        ));
    }
    resolve_axis(op, axis, x.ndim())
        .map_err(|e| Error::shape(op, format!("{} (shape {})", e.message(), fmt_shape(x.shape()))))
}

/// `shape` with `axis` kept as extent 1 (the shape of a per-row sum, ready to broadcast back).
pub(crate) fn keep_shape(shape: &[usize], axis: usize) -> Shape {
    let mut s = shape_of(shape);
    s[axis] = 1;
    s
}

/// The number of rows of `shape` along `axis`: the product of the other extents (0 when any of
/// them is 0, however long the axis).
pub(crate) fn row_count(shape: &[usize], axis: usize) -> usize {
    shape
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != axis)
        .map(|(_, &n)| n)
        .product()
}

pub(crate) fn same_shape<T: Float>(op: &str, a: &Tensor<T>, b: &Tensor<T>) -> Result<()> {
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

/// `x` and a weight `w` of the same shape: the loss `Σ w ⊙ op(x)` has a gradient that depends
/// on `w`, so recording it (grad_graph) puts the backward op on the tape with both of its inputs
/// tracked — and the gradcheck of that gradient checks the backward op's own rule.
pub(crate) fn x_and_w(s: &[usize], seed: u64) -> [Tensor<f64>; 2] {
    [
        Tensor::rand_normal(s, 0.0, 1.5, seed),
        Tensor::rand_normal(s, 0.0, 1.0, seed + 1),
    ]
}
