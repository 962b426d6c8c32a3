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

/// Declares a fused op along one axis: the struct (its `axis`), its name and parameters, its
/// forward — the arity and shape checks, then a row kernel run along the axis — and its rule,
/// whose body sees `axis` (the op's axis), `cx` and `g`.
macro_rules! row_op {
    ($(#[$doc:meta])* $ty:ident $name:literal, inputs $n:literal,
     kernel |$d:ident, $len:ident| $kernel:expr,
     $(#[$rdoc:meta])* rule |$axis:ident, $cx:ident, $g:ident| $rule:block) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug)]
        pub struct $ty {
            /// The axis (negative counts from the end).
            pub axis: isize,
        }

        impl<T: Float> Op<T> for $ty {
            fn name(&self) -> &'static str {
                $name
            }
            fn params(&self) -> String {
                format!("axis={}", self.axis)
            }
            fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
                arity($name, x, $n)?;
                if $n == 2 {
                    same_shape($name, x[0], x[1])?;
                }
                let a = softmax_axis($name, self.axis, x[0])?;
                Ok(along_axis(x, a, |$d, $len| $kernel))
            }
            $(#[$rdoc])*
            fn vjp<V: Value<T>>(&self, $cx: &VjpCtx<'_, V>, $g: &V) -> Result<Cotangents<V>> {
                let $axis = self.axis;
                $rule
            }
        }
    };
}
pub(crate) use row_op;
