//! Conversions between [`Tensor`] and [`ndarray`] arrays (cargo feature `ndarray`).
//!
//! Both are row-major, so an owned array in standard layout becomes a tensor without copying its
//! elements, and a tensor whose buffer is not shared becomes an array without copying. Views,
//! slices and transposed arrays are copied in logical (row-major) order.
//!
//! ```
//! use ndarray::{array, ArrayD, IxDyn};
//! use tapegrad::Tensor;
//!
//! let a = array![[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]];
//! let t = Tensor::from_ndarray(&a.t());               // a transposed view: copied in order
//! assert_eq!(t.shape(), &[3, 2]);
//! assert_eq!(t.to_vec(), vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
//!
//! let back: ArrayD<f64> = t.to_ndarray();
//! assert_eq!(back, a.t().into_dyn());
//! let owned = Tensor::from(ArrayD::<f32>::zeros(IxDyn(&[2, 2])));  // no copy
//! assert_eq!(owned.shape(), &[2, 2]);
//! ```

use crate::core::error::fail;
use crate::core::float::Float;
use crate::tensor::Tensor;
use ndarray::{ArrayBase, ArrayD, Data, Dimension, IxDyn};

impl<T: Float> Tensor<T> {
    /// A tensor with the array's shape and elements (in logical, row-major order; copied).
    ///
    /// Panics when the shape is too large for a tensor: ndarray bounds the element count by
    /// `isize::MAX`, tapegrad by `isize::MAX` *bytes* (see [`try_numel`](crate::core::shape::try_numel)),
    /// which only an empty array with huge other axes can exceed.
    #[track_caller]
    pub fn from_ndarray<S, D>(a: &ArrayBase<S, D>) -> Self
    where
        S: Data<Elem = T>,
        D: Dimension,
    {
        let data: Vec<T> = match a.as_slice() {
            Some(s) => s.to_vec(),
            None => a.iter().copied().collect(),
        };
        Tensor::with_data("from_ndarray", data, a.shape()).unwrap_or_else(|e| fail(e))
    }

    /// The tensor as a dynamic-rank array (copies the elements; see `ArrayD::from(tensor)` to
    /// move them).
    pub fn to_ndarray(&self) -> ArrayD<T> {
        ArrayD::from_shape_vec(IxDyn(self.shape()), self.to_vec()).expect("a tensor's shape matches its data")
    }
}

impl<T: Float> From<ArrayD<T>> for Tensor<T> {
    /// Moves the elements when the array is in standard layout and owns exactly them; copies
    /// otherwise. Panics when the shape is too large for a tensor (see
    /// [`Tensor::from_ndarray`]).
    #[track_caller]
    fn from(a: ArrayD<T>) -> Self {
        if a.is_standard_layout() {
            let shape = a.shape().to_vec();
            let n = a.len();
            let (v, off) = a.into_raw_vec_and_offset();
            let off = off.unwrap_or(0);
            let v = if off == 0 && v.len() == n {
                v
            } else {
                v[off..off + n].to_vec()
            };
            return Tensor::with_data("from_ndarray", v, &shape).unwrap_or_else(|e| fail(e));
        }
        Tensor::from_ndarray(&a)
    }
}

impl<T: Float> From<Tensor<T>> for ArrayD<T> {
    /// Moves the elements when the tensor's buffer is not shared; copies otherwise.
    fn from(t: Tensor<T>) -> Self {
        let shape = t.shape().to_vec();
        ArrayD::from_shape_vec(IxDyn(&shape), t.into_vec()).expect("a tensor's shape matches its data")
    }
}
