//! Running a row kernel along any axis: the axis is moved last (a copy, unless it already is),
//! the kernel runs on contiguous rows, and the result is moved back.

use crate::core::float::Float;
use crate::core::shape::shape_of;
use crate::tensor::Tensor;

/// The permutation that moves `axis` to the end, keeping the other axes in order (so rows come
/// in the row-major order of the remaining axes), and its inverse.
pub(crate) fn axis_to_end(ndim: usize, axis: usize) -> (Vec<usize>, Vec<usize>) {
    let mut perm: Vec<usize> = (0..ndim).filter(|&a| a != axis).collect();
    perm.push(axis);
    let mut inv = vec![0; ndim];
    for (i, &p) in perm.iter().enumerate() {
        inv[p] = i;
    }
    (perm, inv)
}

/// Moves `axis` to the end (a copy, unless it already is last).
pub(crate) fn to_last<T: Float>(x: &Tensor<T>, axis: usize) -> Tensor<T> {
    if axis + 1 == x.ndim() {
        x.clone()
    } else {
        x.permute(axis_to_end(x.ndim(), axis).0)
    }
}

/// Moves the last axis back to position `axis` (the inverse of [`to_last`]).
pub(crate) fn from_last<T: Float>(x: Tensor<T>, axis: usize) -> Tensor<T> {
    if axis + 1 == x.ndim() {
        x
    } else {
        x.permute(axis_to_end(x.ndim(), axis).1)
    }
}

/// Runs a row kernel along `axis` of same-shaped inputs and returns the result in the input layout.
pub(crate) fn along_axis<T: Float>(
    inputs: &[&Tensor<T>],
    axis: usize,
    f: impl Fn(&[&[T]], usize) -> Vec<T>,
) -> Tensor<T> {
    let n = inputs[0].shape()[axis];
    let moved: Vec<Tensor<T>> = inputs.iter().map(|t| to_last(t, axis)).collect();
    let data: Vec<&[T]> = moved.iter().map(|t| t.data()).collect();
    let out = Tensor::from_parts(
        shape_of(moved[0].shape()),
        if n == 0 { Vec::new() } else { f(&data, n) },
    );
    from_last(out, axis)
}
