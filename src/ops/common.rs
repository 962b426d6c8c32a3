//! Helpers the op families share: arity checks, broadcasting binary forwards, axis resolution.

use crate::core::error::{Error, Result};
use crate::core::float::Float;
use crate::tensor::Tensor;

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

/// Broadcasts two tensors together and applies `f` elementwise; the error names the op and shapes
/// (the forward of every broadcasting binary op: [`Tensor::try_zip_broadcast`], which the
/// operators on plain tensors run too).
pub(crate) fn broadcast_zip<T: Float>(
    op: &str,
    a: &Tensor<T>,
    b: &Tensor<T>,
    f: impl Fn(T, T) -> T + Sync,
) -> Result<Tensor<T>> {
    a.try_zip_broadcast(b, op, f)
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

/// Declares broadcasting binary ops, one row each: the op type and name, the forward at one pair
/// of elements, and the rule for each input (an expression over the rule's context `cx`, the
/// cotangent `g`, the inputs `a`, `b` and the output `y`, computed only when that input needs a
/// gradient). Each op is also a [`Binary`](crate::autodiff::Binary) elementwise function, usable
/// in other rules. An ident after the name marks the op: `mask` (its result is a 0/1 mask), or
/// `product` (its forward is `a · b`, left unmade when large; see `Tensor::product_unmade`).
macro_rules! binary_ops {
    ($($(#[$doc:meta])* $ty:ident $name:literal $($mask:ident)?, |$fa:ident, $fb:ident| $fwd:expr,
       rule |$cx:ident, $g:ident, $a:ident, $b:ident, $y:ident| [$da:expr, $db:expr];)*) => {$(
        $(#[$doc])*
        #[derive(Clone, Copy, Debug)]
        pub struct $ty;

        impl<T: Float> Binary<T> for $ty {
            #[inline(always)]
            fn f(&self, $fa: T, $fb: T) -> T {
                $fwd
            }
            fn as_static(&self) -> Option<&'static Self> {
                Some(&$ty)
            }
            fn is_mask(&self) -> bool {
                false $(|| stringify!($mask) == "mask")?
            }
            fn is_product(&self) -> bool {
                false $(|| stringify!($mask) == "product")?
            }
        }

        impl<T: Float> Op<T> for $ty {
            fn name(&self) -> &'static str {
                $name
            }
            fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
                arity($name, x, 2)?;
                // The product is left unmade when large: a `sum` of it then reads its operands
                // instead (see `Tensor::product_unmade`).
                $(if stringify!($mask) == "product"
                    && let Some(y) = $crate::tensor::Tensor::product_unmade(x[0], x[1])
                {
                    return Ok(y);
                })?
                broadcast_zip($name, x[0], x[1], |a, b| Binary::f(self, a, b))
            }
            #[allow(unused_variables)]
            fn vjp<V: Value<T>>(&self, $cx: &VjpCtx<'_, V>, $g: &V) -> Result<Cotangents<V>> {
                let ($a, $b, $y) = ($cx.input(0), $cx.input(1), $cx.output());
                Ok($cx.grads([$cx.needs_grad(0).then(|| $da), $cx.needs_grad(1).then(|| $db)]))
            }
            fn elementwise(&self) -> Option<$crate::autodiff::rule::Elementwise<'_, T>> {
                Some($crate::autodiff::rule::Elementwise::Binary(self))
            }
        }
    )*};
}
pub(crate) use binary_ops;
