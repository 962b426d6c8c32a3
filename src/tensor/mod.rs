//! Dense row-major n-d arrays of `f32` or `f64`. Tensors know nothing of gradients.
//!
//! ```
//! use tapegrad::Tensor;
//! let a = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3]);
//! let b = Tensor::from_vec(vec![10.0, 20.0, 30.0], [3]);
//! let c = a.zip_map(&b, |x, y| x + y);          // NumPy broadcasting: [2,3] + [3]
//! assert_eq!(c.to_vec(), vec![11.0, 22.0, 33.0, 14.0, 25.0, 36.0]);
//! assert_eq!(a.transpose(0, 1).shape(), &[3, 2]);
//! println!("{c}");                               // [[11, 22, 33], [14, 25, 36]]
//! ```

pub(crate) mod axis;
pub(crate) mod kernels;
mod math;
#[cfg(feature = "ndarray")]
#[cfg_attr(docsrs, doc(cfg(feature = "ndarray")))]
pub mod ndarray;
pub mod parallel;
pub mod pool;
#[allow(dead_code)] // the full kernel set (scalar and forced-path variants) is kept with its tests
pub(crate) mod vmath;

use crate::core::error::{Error, ErrorKind, Result, fail};
use crate::core::float::Float;
use crate::core::rng::Rng;
use crate::core::shape::{self, Shape, broadcast_extents, broadcasts_to, fmt_shape, numel};
use std::fmt;
use std::panic::Location;
use std::sync::Arc;

/// The number of elements of `shape` in a tensor of `T`, or a `Shape` error from `op` when no
/// buffer of `T` could back the shape or any of its sub-shapes: the product of its nonzero extents
/// must not exceed `isize::MAX / size_of::<T>()`, the largest allocation Rust allows, in elements.
///
/// Every way of making a tensor goes through this check (or derives its shape from shapes that
/// passed it, such as a permutation or a reduction), so `numel` and the strides of a tensor's
/// shape, and every kernel's index arithmetic on it, never overflow.
pub(crate) fn checked_numel<T: Float>(op: &str, shape: &[usize]) -> Result<usize> {
    let max = isize::MAX as usize / std::mem::size_of::<T>();
    shape::numel_within(shape, max).ok_or_else(|| {
        Error::shape(
            op,
            format!(
                "shape {} is too large: the product of its nonzero extents exceeds {max}, the most {} elements a \
                 buffer can hold",
                fmt_shape(shape),
                T::NAME
            ),
        )
    })
}

/// The element buffer: a single value lives inline (no allocation, so 0-d and one-element values
/// are cheap to record); anything larger is a reference-counted vector shared by clones, or a
/// value not yet made ([`Lazy`]: a broadcast, or a product a sum may read without making).
#[derive(Clone)]
enum Buf<T: Float> {
    One(T),
    Many(Arc<pool::PoolVec<T>>),
    Lazy(Arc<Lazy<T>>),
}

/// A value of a shape made only when its elements are read; anything that reads them gets them
/// made once, shared by clones. What it is:
///
/// - [`Unmade::Broadcast`]: a smaller tensor broadcast to the shape. The first-order backward
///   makes these for the gradient of a sum (`g` spread over the summed axes): the elementwise
///   kernels read the source through stride-0 walks instead (no pass over memory to write the
///   broadcast, none to read it back).
/// - [`Unmade::Product`]: `a · b` of two tensors of the shape, the forward of a large `mul`. A
///   sum over all of it ([`Tensor::sum_all`], the forward of `sum` and `mean`) is a dot product
///   of the two with the made product's bits, so `sum(y · g)` makes one pass over `y` and `g`
///   and keeps no product (the product rule needs only `a` and `b`). Once made, the product
///   lets go of `a` and `b`, so a made product costs what a plain one does.
struct Lazy<T: Float> {
    what: Unmade<T>,
    shape: Shape,
    full: std::sync::OnceLock<pool::PoolVec<T>>,
}

/// What a [`Lazy`] value is.
enum Unmade<T: Float> {
    /// This tensor broadcast to the lazy value's shape.
    Broadcast(Tensor<T>),
    /// The elementwise product of two plain tensors of the lazy value's shape; `None` once made.
    Product(std::sync::Mutex<Option<[Tensor<T>; 2]>>),
}

/// The operands of an unmade product (`None` once it is made). A panic cannot leave them half
/// changed (they are only taken), so a poisoned lock is still good.
fn product_operands<T: Float>(
    ops: &std::sync::Mutex<Option<[Tensor<T>; 2]>>,
) -> std::sync::MutexGuard<'_, Option<[Tensor<T>; 2]>> {
    ops.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<T: Float> Lazy<T> {
    fn elements(&self) -> &[T] {
        &self
            .full
            .get_or_init(|| {
                pool::PoolVec(match &self.what {
                    Unmade::Broadcast(src) => kernels::broadcast_to(&src.data, &src.shape, &self.shape),
                    Unmade::Product(ops) => {
                        // Taken: the made product no longer keeps its operands alive.
                        let [a, b] = product_operands(ops)
                            .take()
                            .expect("an unmade product holds its operands");
                        kernels::map_n(
                            [(&a.data[..], &a.shape[..]), (&b.data[..], &b.shape[..])],
                            &self.shape,
                            |[x, y]| x * y,
                        )
                    }
                })
            })
            .0
    }

    /// The source of an unmade broadcast.
    fn broadcast_source(&self) -> Option<&Tensor<T>> {
        match &self.what {
            Unmade::Broadcast(src) if self.full.get().is_none() => Some(src),
            _ => None,
        }
    }
}

impl<T: Float> Buf<T> {
    fn from_vec(v: Vec<T>) -> Self {
        if v.len() == 1 {
            Buf::One(v[0])
        } else {
            Buf::Many(Arc::new(pool::PoolVec(v)))
        }
    }
    fn make_mut(&mut self) -> &mut [T] {
        if let Buf::Lazy(l) = self {
            *self = Buf::Many(Arc::new(pool::PoolVec(l.elements().to_vec())));
        }
        match self {
            Buf::One(x) => std::slice::from_mut(x),
            Buf::Many(v) => Arc::make_mut(v).0.as_mut_slice(),
            Buf::Lazy(_) => unreachable!("made above"),
        }
    }
    fn into_vec(self) -> Vec<T> {
        match self {
            Buf::One(x) => vec![x],
            Buf::Many(v) => match Arc::try_unwrap(v) {
                Ok(mut p) => std::mem::take(&mut p.0),
                Err(shared) => shared.0.to_vec(),
            },
            Buf::Lazy(l) => l.elements().to_vec(),
        }
    }
    fn ptr_eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Buf::Many(a), Buf::Many(b)) => Arc::ptr_eq(a, b),
            (Buf::Lazy(a), Buf::Lazy(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl<T: Float> std::ops::Deref for Buf<T> {
    type Target = [T];
    #[inline]
    fn deref(&self) -> &[T] {
        match self {
            Buf::One(x) => std::slice::from_ref(x),
            Buf::Many(v) => &v.0,
            Buf::Lazy(l) => l.elements(),
        }
    }
}

/// A dense, row-major n-dimensional array of `f32` or `f64`.
///
/// The buffer is reference-counted: cloning a tensor, reshaping it or recording it on a tape does
/// not copy the data. Mutation (`data_mut`) copies only when the buffer is shared.
#[must_use = "a tensor is a value: computing one and dropping it does nothing"]
pub struct Tensor<T: Float> {
    shape: Shape,
    data: Buf<T>,
}

/// The fewest elements a broadcast must have to be left unmade ([`Tensor::broadcast_lazily`]).
const LAZY_MIN: usize = 1 << 12;

impl<T: Float> Tensor<T> {
    /// A tensor of `shape` holding `data` in row-major order. Panics when the sizes differ or the
    /// shape is too large for a tensor (its element count would overflow).
    ///
    /// ```
    /// let t = tapegrad::Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], [2, 2]);
    /// assert_eq!(t.get(&[1, 0]), 3.0);
    /// ```
    #[track_caller]
    pub fn from_vec(data: Vec<T>, shape: impl AsRef<[usize]>) -> Self {
        Self::try_from_vec(data, shape).unwrap_or_else(|e| fail(e))
    }

    /// Like [`from_vec`](Self::from_vec), returning an error (of kind `Shape`) when the sizes
    /// differ or the shape is too large.
    #[track_caller]
    pub fn try_from_vec(data: Vec<T>, shape: impl AsRef<[usize]>) -> Result<Self> {
        Self::with_data("from_vec", data, shape.as_ref())
    }

    /// `data` with `shape`, checked; errors are raised by `op` at the caller's location.
    #[track_caller]
    pub(crate) fn with_data(op: &str, data: Vec<T>, shape: &[usize]) -> Result<Self> {
        let here = Location::caller();
        let n = checked_numel::<T>(op, shape).map_err(|e| e.at(here))?;
        if n != data.len() {
            return Err(Error::shape(
                op,
                format!(
                    "{} elements cannot fill shape {} ({n} elements)",
                    data.len(),
                    fmt_shape(shape),
                ),
            )
            .at(here));
        }
        Ok(Tensor {
            shape: shape::shape_of(shape),
            data: Buf::from_vec(data),
        })
    }

    /// A 0-d tensor holding one value.
    pub fn scalar(x: T) -> Self {
        Tensor {
            shape: Shape::new(),
            data: Buf::One(x),
        }
    }

    /// A tensor of `shape` with every element `x`. Panics when the shape is too large.
    #[track_caller]
    pub fn full(shape: impl AsRef<[usize]>, x: T) -> Self {
        Self::filled("full", shape.as_ref(), x).unwrap_or_else(|e| fail(e))
    }

    /// Like [`full`](Self::full), returning an error (of kind `Shape`) when the shape is too large.
    ///
    /// ```
    /// use tapegrad::{ErrorKind, Tensor};
    /// assert_eq!(Tensor::try_full([2], 0.5f32).unwrap().to_vec(), vec![0.5, 0.5]);
    /// let e = Tensor::try_full([1 << 63, 2], 0.0f64).unwrap_err();   // 2^64 elements
    /// assert_eq!(e.kind(), ErrorKind::Shape);
    /// ```
    #[track_caller]
    pub fn try_full(shape: impl AsRef<[usize]>, x: T) -> Result<Self> {
        Self::filled("full", shape.as_ref(), x)
    }

    /// A tensor of zeros. Panics when the shape is too large.
    #[track_caller]
    pub fn zeros(shape: impl AsRef<[usize]>) -> Self {
        Self::filled("zeros", shape.as_ref(), T::ZERO).unwrap_or_else(|e| fail(e))
    }

    /// Like [`zeros`](Self::zeros), returning an error (of kind `Shape`) when the shape is too large.
    #[track_caller]
    pub fn try_zeros(shape: impl AsRef<[usize]>) -> Result<Self> {
        Self::filled("zeros", shape.as_ref(), T::ZERO)
    }

    /// A tensor of ones. Panics when the shape is too large.
    #[track_caller]
    pub fn ones(shape: impl AsRef<[usize]>) -> Self {
        Self::filled("ones", shape.as_ref(), T::ONE).unwrap_or_else(|e| fail(e))
    }

    /// `shape` filled with `x`, checked; errors are raised by `op` at the caller's location.
    #[track_caller]
    fn filled(op: &str, shape: &[usize], x: T) -> Result<Self> {
        let here = Location::caller();
        let n = checked_numel::<T>(op, shape).map_err(|e| e.at(here))?;
        Ok(Tensor {
            data: Buf::from_vec(pool::filled(n, x)),
            shape: shape::shape_of(shape),
        })
    }

    /// Uniform random values in `[lo, hi)`, reproducible from `seed`. Panics when the shape is
    /// too large.
    ///
    /// ```
    /// let t = tapegrad::Tensor::<f64>::rand_uniform([3, 4], -1.0, 1.0, 42);
    /// assert!(t.data().iter().all(|&x| (-1.0..1.0).contains(&x)));
    /// assert_eq!(t, tapegrad::Tensor::rand_uniform([3, 4], -1.0, 1.0, 42));
    /// ```
    #[track_caller]
    pub fn rand_uniform(shape: impl AsRef<[usize]>, lo: T, hi: T, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let (lo, hi) = (lo.to_f64(), hi.to_f64());
        Self::generated("rand_uniform", shape.as_ref(), |_| {
            T::from_f64(lo + (hi - lo) * rng.uniform())
        })
    }

    /// Normal random values with the given mean and standard deviation, reproducible from `seed`.
    /// Panics when the shape is too large.
    #[track_caller]
    pub fn rand_normal(shape: impl AsRef<[usize]>, mean: T, std: T, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let (m, s) = (mean.to_f64(), std.to_f64());
        Self::generated("rand_normal", shape.as_ref(), |_| T::from_f64(m + s * rng.normal()))
    }

    /// A tensor whose element at flat (row-major) index `i` is `f(i)`. Panics when the shape is
    /// too large.
    #[track_caller]
    pub fn from_fn(shape: impl AsRef<[usize]>, f: impl FnMut(usize) -> T) -> Self {
        Self::generated("from_fn", shape.as_ref(), f)
    }

    /// `shape` filled with `f(i)`; panics (raised by `op`, at the caller's location) when the
    /// shape is too large.
    #[track_caller]
    fn generated(op: &str, shape: &[usize], f: impl FnMut(usize) -> T) -> Self {
        let here = Location::caller();
        let n = checked_numel::<T>(op, shape).unwrap_or_else(|e| fail(e.at(here)));
        Tensor {
            data: Buf::from_vec((0..n).map(f).collect()),
            shape: shape::shape_of(shape),
        }
    }

    /// The shape, outermost axis first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The number of axes.
    pub fn ndim(&self) -> usize {
        self.shape.len()
    }

    /// The number of elements.
    pub fn numel(&self) -> usize {
        // From the shape, not the buffer: reading an unmade value's length would make it.
        match &self.data {
            Buf::Lazy(_) => numel(&self.shape),
            data => data.len(),
        }
    }

    /// The elements in row-major order.
    pub fn data(&self) -> &[T] {
        &self.data
    }

    /// Mutable access to the elements (copies the buffer first if it is shared).
    pub fn data_mut(&mut self) -> &mut [T] {
        self.data.make_mut()
    }

    /// The elements as a new `Vec`.
    pub fn to_vec(&self) -> Vec<T> {
        self.data.to_vec()
    }

    /// The elements as a `Vec`, without copying when the buffer is not shared.
    pub fn into_vec(self) -> Vec<T> {
        self.data.into_vec()
    }

    /// True when two tensors share one heap buffer (no copy was made between them). One-element
    /// tensors hold their value inline, so they never share.
    pub fn shares_buffer(&self, other: &Self) -> bool {
        self.data.ptr_eq(&other.data)
    }

    /// The heap buffer behind this tensor, as an address (for counting shared buffers once) and a
    /// size in bytes; `None` for a one-element tensor, whose value lives inline.
    pub(crate) fn heap_buffer(&self) -> Option<(usize, usize)> {
        match &self.data {
            Buf::One(_) => None,
            Buf::Many(v) => Some((Arc::as_ptr(v) as usize, v.0.len() * std::mem::size_of::<T>())),
            // An unmade product holds no buffer of its own (its operands are counted where they
            // live); a broadcast is counted as made (what it holds once anything reads it).
            Buf::Lazy(l) if l.full.get().is_none() && matches!(l.what, Unmade::Product(..)) => None,
            Buf::Lazy(l) => Some((Arc::as_ptr(l) as usize, numel(&l.shape) * std::mem::size_of::<T>())),
        }
    }

    /// The flat row-major offset of a multi-index. Panics when out of range.
    #[track_caller]
    fn offset(&self, index: &[usize]) -> usize {
        if index.len() != self.ndim() || index.iter().zip(&self.shape).any(|(&i, &n)| i >= n) {
            fail(
                Error::new(
                    ErrorKind::Invalid,
                    "index",
                    format!("index {index:?} is out of range for shape {}", fmt_shape(&self.shape)),
                )
                .at(Location::caller()),
            );
        }
        index.iter().zip(shape::strides(&self.shape)).map(|(i, s)| i * s).sum()
    }

    /// The element at a multi-index. Panics when out of range.
    #[track_caller]
    pub fn get(&self, index: &[usize]) -> T {
        self.data[self.offset(index)]
    }

    /// Sets the element at a multi-index. Panics when out of range.
    #[track_caller]
    pub fn set(&mut self, index: &[usize], value: T) {
        let o = self.offset(index);
        self.data_mut()[o] = value;
    }

    /// The only element of a one-element tensor. Panics otherwise.
    #[track_caller]
    pub fn item(&self) -> T {
        if self.numel() != 1 {
            fail(
                Error::new(
                    ErrorKind::NonScalar,
                    "item",
                    format!(
                        "tensor of shape {} has {} elements, not 1",
                        fmt_shape(&self.shape),
                        self.numel()
                    ),
                )
                .at(Location::caller()),
            );
        }
        self.data[0]
    }

    /// The same data seen with another shape of the same size (no copy). Panics on a size mismatch
    /// or when the shape is too large.
    #[track_caller]
    pub fn reshape(&self, shape: impl AsRef<[usize]>) -> Self {
        self.try_reshape(shape).unwrap_or_else(|e| fail(e))
    }

    /// Like [`reshape`](Self::reshape), returning an error (of kind `Shape`) on a size mismatch or
    /// when the shape is too large.
    #[track_caller]
    pub fn try_reshape(&self, shape: impl AsRef<[usize]>) -> Result<Self> {
        let here = Location::caller();
        let shape = shape::shape_of(shape);
        let n = checked_numel::<T>("reshape", &shape).map_err(|e| e.at(here))?;
        if n != self.numel() {
            return Err(Error::shape(
                "reshape",
                format!(
                    "cannot reshape {} ({} elements) to {} ({n} elements)",
                    fmt_shape(&self.shape),
                    self.numel(),
                    fmt_shape(&shape),
                ),
            )
            .at(here));
        }
        Ok(Tensor {
            shape,
            data: self.data.clone(),
        })
    }

    /// The axes reordered: axis `i` of the result is axis `perm[i]` of `self` (copies).
    #[track_caller]
    pub fn permute(&self, perm: impl AsRef<[usize]>) -> Self {
        self.try_permute(perm).unwrap_or_else(|e| fail(e))
    }

    /// Like [`permute`](Self::permute), returning an error when `perm` is not a permutation.
    #[track_caller]
    pub fn try_permute(&self, perm: impl AsRef<[usize]>) -> Result<Self> {
        let here = Location::caller();
        let perm = perm.as_ref();
        let mut seen = vec![false; self.ndim()];
        let ok = perm.len() == self.ndim()
            && perm
                .iter()
                .all(|&p| p < seen.len() && !std::mem::replace(&mut seen[p], true));
        if !ok {
            return Err(Error::new(
                ErrorKind::Invalid,
                "permute",
                format!(
                    "{perm:?} is not a permutation of the axes of {}",
                    fmt_shape(&self.shape)
                ),
            )
            .at(here));
        }
        if perm.iter().enumerate().all(|(i, &p)| i == p) {
            return Ok(self.clone());
        }
        // A permutation of a valid shape is valid: no size check needed.
        let shape: Shape = perm.iter().map(|&p| self.shape[p]).collect();
        Ok(Tensor {
            data: Buf::from_vec(kernels::permute(&self.data, &self.shape, perm)),
            shape,
        })
    }

    /// Swaps axes `a` and `b` (copies); a negative axis counts from the end (`-1` is the last).
    /// Panics with a `Shape` error naming `transpose`, the axes and the shape when either axis is
    /// out of range.
    ///
    /// ```
    /// let a = tapegrad::Tensor::<f64>::zeros([2, 3, 4]);
    /// assert_eq!(a.transpose(-1, 0).shape(), &[4, 3, 2]);
    /// ```
    #[track_caller]
    pub fn transpose(&self, a: isize, b: isize) -> Self {
        self.try_transpose(a, b).unwrap_or_else(|e| fail(e))
    }

    /// Like [`transpose`](Self::transpose), returning the error instead of panicking.
    #[track_caller]
    pub fn try_transpose(&self, a: isize, b: isize) -> Result<Self> {
        let loc = std::panic::Location::caller(); // here, not in the closure
        let perm = transpose_perm(&self.shape, a, b).map_err(|e| e.at(loc))?;
        Ok(self.permute(perm))
    }

    /// The tensor broadcast (materialised) to a larger shape, by NumPy rules. Panics when the
    /// shapes are incompatible or `shape` is too large.
    #[track_caller]
    pub fn broadcast_to(&self, shape: impl AsRef<[usize]>) -> Self {
        self.try_broadcast_to(shape).unwrap_or_else(|e| fail(e))
    }

    /// Like [`broadcast_to`](Self::broadcast_to), returning an error (of kind `Shape`) when the
    /// shapes are incompatible or `shape` is too large.
    ///
    /// ```
    /// let t = tapegrad::Tensor::from_vec(vec![1.0, 2.0], [2]);
    /// assert_eq!(t.try_broadcast_to([2, 2]).unwrap().to_vec(), vec![1.0, 2.0, 1.0, 2.0]);
    /// assert!(t.try_broadcast_to([3]).is_err());
    /// assert!(t.try_broadcast_to([1 << 63, 2]).is_err());   // 2^64 elements
    /// ```
    #[track_caller]
    pub fn try_broadcast_to(&self, shape: impl AsRef<[usize]>) -> Result<Self> {
        let here = Location::caller();
        let to = shape.as_ref();
        if !broadcasts_to(&self.shape, to) {
            return Err(Error::shape(
                "broadcast_to",
                format!("cannot broadcast {} to {}", fmt_shape(&self.shape), fmt_shape(to)),
            )
            .at(here));
        }
        if self.shape[..] == *to {
            return Ok(self.clone());
        }
        checked_numel::<T>("broadcast_to", to).map_err(|e| e.at(here))?;
        Ok(Tensor {
            data: Buf::from_vec(kernels::broadcast_to(&self.data, &self.shape, to)),
            shape: shape::shape_of(to),
        })
    }

    /// `self` broadcast to `shape` without making the broadcast: the elements are made when
    /// something reads them, while the elementwise kernels ([`zip_n`](Self::zip_n)) and gradient
    /// accumulation read `self` with stride-0 walks. Small results are made at once. The caller
    /// checked that the shapes broadcast.
    pub(crate) fn broadcast_lazily(&self, shape: &[usize]) -> Self {
        if shape::same_shape(&self.shape, shape) || numel(shape) < LAZY_MIN {
            return self.broadcast_to(shape);
        }
        let src = match &self.data {
            Buf::Lazy(l) if let Some(src) = l.broadcast_source() => src.clone(),
            _ => self.clone(),
        };
        Tensor {
            data: Buf::Lazy(Arc::new(Lazy {
                what: Unmade::Broadcast(src),
                shape: shape::shape_of(shape),
                full: std::sync::OnceLock::new(),
            })),
            shape: shape::shape_of(shape),
        }
    }

    /// What an elementwise kernel reads for this operand: the source of a lazy broadcast (with
    /// its own shape, which broadcasts to this one's), else the tensor itself.
    fn operand(&self) -> &Self {
        match &self.data {
            Buf::Lazy(l) if l.shape == self.shape => l.broadcast_source().unwrap_or(self),
            _ => self,
        }
    }

    /// An unmade broadcast read with the shape it was made for (a reshape shares the buffer
    /// under another shape: that one reads the made elements).
    fn is_lazy(&self) -> bool {
        matches!(&self.data, Buf::Lazy(l) if l.shape == self.shape && l.broadcast_source().is_some())
    }

    /// An unmade broadcast of a single `1` (the gradient `sum`'s rule hands down for a seed of
    /// one), read with the shape it was made for.
    pub(crate) fn is_unit_broadcast(&self) -> bool {
        let src = self.is_lazy().then(|| self.operand());
        src.is_some_and(|s| s.numel() == 1 && s.data[0] == T::ONE)
    }

    /// This tensor with its elements made (an unmade value is made once and lets go of what it
    /// was made from): for a value kept past its tape, so that it holds what it reports.
    pub(crate) fn made(self) -> Self {
        let _ = &self.data[..];
        self
    }

    /// Whether the elements are yet to be made (a lazy value nothing has read).
    fn is_unmade(&self) -> bool {
        matches!(&self.data, Buf::Lazy(l) if l.full.get().is_none())
    }

    /// `a · b` left unmade, for two plain tensors of one shape with at least [`LAZY_MIN`]
    /// elements (`None` otherwise: the caller multiplies). Its elements are `a · b`'s when
    /// read; [`sum_all`](Self::sum_all) reads `a` and `b` instead (see [`Lazy`]).
    pub(crate) fn product_unmade(a: &Self, b: &Self) -> Option<Self> {
        // (At LAZY_MIN elements neither is an inline value.)
        let plain = !a.is_unmade() && !b.is_unmade();
        (shape::same_shape(&a.shape, &b.shape) && a.numel() >= LAZY_MIN && plain).then(|| Tensor {
            data: Buf::Lazy(Arc::new(Lazy {
                what: Unmade::Product(std::sync::Mutex::new(Some([a.clone(), b.clone()]))),
                shape: a.shape.clone(),
                full: std::sync::OnceLock::new(),
            })),
            shape: a.shape.clone(),
        })
    }

    /// A copy with `f` applied to the whole buffer in place (for vectorised slice kernels).
    pub(crate) fn map_slice(&self, f: impl Fn(&mut [T]) + Sync) -> Self {
        if let Buf::One(x) = self.data {
            let mut one = [x];
            f(&mut one);
            return Tensor::one_of_shape(Shape::from_slice(&self.shape), one[0]);
        }
        Tensor::from_parts(Shape::from_slice(&self.shape), kernels::map_slices(&self.data, f))
    }

    /// `f` applied to every element (large tensors in chunks across threads, so `f` is `Sync`;
    /// see [`parallel`]).
    pub fn map(&self, f: impl Fn(T) -> T + Sync) -> Self {
        Tensor {
            shape: Shape::from_slice(&self.shape),
            data: match &self.data {
                Buf::One(x) => Buf::One(f(*x)),
                Buf::Many(v) => Buf::from_vec(kernels::map(&v.0, f)),
                Buf::Lazy(l) => Buf::from_vec(kernels::map(l.elements(), f)),
            },
        }
    }

    /// `f` applied elementwise to two tensors broadcast together. Panics when they do not
    /// broadcast, or when their broadcast shape is too large.
    #[track_caller]
    pub fn zip_map(&self, other: &Self, f: impl Fn(T, T) -> T + Sync) -> Self {
        let here = Location::caller();
        let out = broadcast_extents(&self.shape, &other.shape).unwrap_or_else(|| {
            fail(
                Error::shape(
                    "zip_map",
                    format!(
                        "shapes {} and {} do not broadcast",
                        fmt_shape(&self.shape),
                        fmt_shape(&other.shape)
                    ),
                )
                .at(here),
            )
        });
        checked_numel::<T>("zip_map", &out).unwrap_or_else(|e| fail(e.at(here)));
        let data = kernels::binary(&self.data, &self.shape, &other.data, &other.shape, &out, f);
        Tensor {
            shape: out,
            data: Buf::from_vec(data),
        }
    }

    /// The elements converted to another float type.
    ///
    /// ```
    /// let a = tapegrad::Tensor::from_vec(vec![0.5f64, 1.5], [2]);
    /// let b: tapegrad::Tensor<f32> = a.cast();
    /// assert_eq!(b.to_vec(), vec![0.5f32, 1.5]);
    /// ```
    pub fn cast<U: Float>(&self) -> Tensor<U> {
        Tensor {
            shape: Shape::from_slice(&self.shape),
            data: Buf::from_vec(self.data.iter().map(|x| U::from_f64(x.to_f64())).collect()),
        }
    }

    /// Sum of all elements.
    pub fn sum_all(&self) -> T {
        if let Buf::Lazy(l) = &self.data
            && l.full.get().is_none()
            && let Unmade::Product(ops) = &l.what
            && let Some([a, b]) = &*product_operands(ops)
        {
            // `sum_slice` of the made product, bit for bit: `dot` cuts the same chunks and adds
            // each rounded product into the same lanes.
            return kernels::dot(&a.data, &b.data);
        }
        kernels::sum_slice(&self.data)
    }

    /// The largest absolute difference between two tensors of the same shape (NaN if any is NaN).
    #[track_caller]
    pub fn max_abs_diff(&self, other: &Self) -> T {
        if self.shape != other.shape {
            fail(
                Error::shape(
                    "max_abs_diff",
                    format!(
                        "shapes {} and {} differ",
                        fmt_shape(&self.shape),
                        fmt_shape(&other.shape)
                    ),
                )
                .at(Location::caller()),
            );
        }
        self.data
            .iter()
            .zip(other.data.iter())
            .map(|(&a, &b)| (a - b).abs())
            .fold(T::ZERO, |m, d| if d > m || d.is_nan() { d } else { m })
    }

    /// True when every element is finite.
    pub fn all_finite(&self) -> bool {
        self.data.iter().all(|x| x.is_finite())
    }

    /// Sums down to `shape`, the inverse of broadcasting `shape` up to this tensor's shape (shares
    /// the buffer when the shapes are equal). The caller checks that `shape` broadcasts up.
    pub(crate) fn sum_to(&self, shape: &[usize]) -> Self {
        if shape::same_shape(&self.shape, shape) {
            return self.clone();
        }
        if numel(shape) == 1 {
            return Self::one_of_shape(shape::shape_of(shape), self.sum_all());
        }
        Tensor::from_parts(shape::shape_of(shape), kernels::sum_to(&self.data, &self.shape, shape))
    }

    /// [`zip_n`](Self::zip_n) summed down to `to` (a shape that broadcasts to the result's): in
    /// one pass with no temporary of the result's size when every operand has one shape and the
    /// sum runs over the last axis or over leading axes (the same bits as the two steps), else
    /// the two steps. The rule of a broadcasting op for its broadcast operand (`−g·y` summed
    /// over a softmax row, `g·x` over a batch for a gain).
    #[track_caller]
    pub(crate) fn zip_n_sum_to<const N: usize>(
        op: &str,
        args: [&Self; N],
        to: &[usize],
        f: impl Fn([T; N]) -> T + Sync,
    ) -> Self {
        let first = &args[0].shape;
        if !shape::same_shape(first, to)
            && args.iter().all(|a| shape::same_shape(&a.shape, first) && !a.is_lazy())
            && let Some(data) = kernels::map_n_sum_to(std::array::from_fn(|k| &args[k].data[..]), first, to, &f)
        {
            return Tensor::from_parts(shape::shape_of(to), data);
        }
        let y = Tensor::zip_n(op, args, f);
        if shape::same_shape(&y.shape, to) {
            y
        } else {
            y.sum_to(to)
        }
    }

    /// `f` elementwise over `N` tensors broadcast together, in one loop (the kernel every
    /// elementwise rule on values runs as). Panics with a shape error naming `op` when they do not
    /// broadcast.
    #[track_caller]
    pub(crate) fn zip_n<const N: usize>(op: &str, args: [&Self; N], f: impl Fn([T; N]) -> T + Sync) -> Self {
        if args.iter().any(|a| a.is_lazy()) {
            // The result has the shapes' broadcast; lazy operands are read as their sources.
            let out = Self::broadcast_shape(op, &args);
            let ops: [&Self; N] = std::array::from_fn(|k| args[k].operand());
            let data = kernels::map_n(std::array::from_fn(|k| (&ops[k].data[..], &ops[k].shape[..])), &out, f);
            return Tensor::from_parts(out, data);
        }
        let first = &args[0].shape;
        if args.iter().all(|a| shape::same_shape(&a.shape, first)) {
            if args.iter().all(|a| matches!(a.data, Buf::One(_))) {
                return Tensor::one_of_shape(Shape::from_slice(first), f(std::array::from_fn(|k| args[k].data[0])));
            }
            let data = kernels::map_n(
                std::array::from_fn(|k| (&args[k].data[..], &args[k].shape[..])),
                first,
                f,
            );
            return Tensor::from_parts(Shape::from_slice(first), data);
        }
        let out = Self::broadcast_shape(op, &args);
        checked_numel::<T>(op, &out).unwrap_or_else(|e| fail(e.at(Location::caller())));
        if numel(&out) == 1 {
            return Tensor::one_of_shape(out, f(std::array::from_fn(|k| args[k].data[0])));
        }
        let data = kernels::map_n(
            std::array::from_fn(|k| (&args[k].data[..], &args[k].shape[..])),
            &out,
            f,
        );
        Tensor::from_parts(out, data)
    }

    /// The shape `args` broadcast to; panics with a shape error naming `op` (and the caller's
    /// line) when they do not.
    #[track_caller]
    fn broadcast_shape<const N: usize>(op: &str, args: &[&Self; N]) -> Shape {
        let mut out = Shape::from_slice(&args[0].shape);
        for a in &args[1..] {
            out = broadcast_extents(&out, &a.shape).unwrap_or_else(|| {
                let shapes: Vec<String> = args.iter().map(|a| fmt_shape(&a.shape)).collect();
                fail(
                    Error::shape(op, format!("shapes {} do not broadcast together", shapes.join(", ")))
                        .at(Location::caller()),
                )
            });
        }
        out
    }

    /// `self += other` for tensors of one shape, in place when the buffer is not shared (the
    /// accumulation of a gradient used more than once).
    pub(crate) fn add_assign_same(&mut self, other: &Self) {
        debug_assert_eq!(self.shape, other.shape);
        if self.is_lazy() || other.is_lazy() {
            // One pass reading the made operand (the same sums: `a + b` elementwise).
            *self = Tensor::zip_n("add", [&*self, other], |[a, b]| a + b);
            return;
        }
        kernels::add_assign(self.data_mut(), other.data());
    }

    /// `op(self) @ op(b)` over the last two axes (`op` transposes when its flag is set), batched
    /// over the leading axes with broadcasting. `op` names the caller in errors.
    pub(crate) fn try_matmul_t(&self, b: &Self, ta: bool, tb: bool, op: &str) -> Result<Self> {
        let (sa, sb) = (&self.shape[..], &b.shape[..]);
        if sa.len() < 2 || sb.len() < 2 {
            return Err(Error::shape(
                op,
                format!(
                    "needs at least 2-D operands, got {} and {} (reshape a vector to [1, n] or [n, 1])",
                    fmt_shape(sa),
                    fmt_shape(sb)
                ),
            ));
        }
        let (ra, ca) = (sa[sa.len() - 2], sa[sa.len() - 1]);
        let (rb, cb) = (sb[sb.len() - 2], sb[sb.len() - 1]);
        let (m, ka) = if ta { (ca, ra) } else { (ra, ca) };
        let (kb, n) = if tb { (cb, rb) } else { (rb, cb) };
        if ka != kb {
            return Err(Error::shape(
                op,
                format!(
                    "inner sizes differ: {} @ {} multiplies [.., {m}, {ka}] by [.., {kb}, {n}]",
                    fmt_shape(sa),
                    fmt_shape(sb)
                ),
            ));
        }
        let batch = broadcast_extents(&sa[..sa.len() - 2], &sb[..sb.len() - 2]).ok_or_else(|| {
            Error::shape(
                op,
                format!("batch axes of {} and {} do not broadcast", fmt_shape(sa), fmt_shape(sb)),
            )
        })?;
        let mut shape: Shape = batch.clone();
        shape.push(m);
        shape.push(n);
        checked_numel::<T>(op, &shape)?;
        let data = kernels::matmul(&self.data, sa, ta, &b.data, sb, tb, &batch);
        Ok(Tensor::from_parts(shape, data))
    }

    /// `f` elementwise over two tensors of the same shape (no broadcasting work).
    pub(crate) fn zip_same(&self, other: &Self, f: impl Fn(T, T) -> T + Sync) -> Self {
        debug_assert_eq!(self.shape, other.shape);
        match (&self.data, &other.data) {
            (Buf::One(a), Buf::One(b)) => Tensor::one_of_shape(Shape::from_slice(&self.shape), f(*a, *b)),
            _ => Tensor::from_parts(
                Shape::from_slice(&self.shape),
                kernels::binary(&self.data, &self.shape, &other.data, &other.shape, &self.shape, f),
            ),
        }
    }

    /// A one-element tensor of the given shape (no allocation).
    pub(crate) fn one_of_shape(shape: Shape, x: T) -> Self {
        debug_assert_eq!(numel(&shape), 1);
        Tensor {
            shape,
            data: Buf::One(x),
        }
    }

    pub(crate) fn from_parts(shape: Shape, data: Vec<T>) -> Self {
        debug_assert_eq!(numel(&shape), data.len());
        Tensor {
            shape,
            data: Buf::from_vec(data),
        }
    }
}

impl<T: Float> Clone for Tensor<T> {
    fn clone(&self) -> Self {
        // `from_slice` copies the inline shape in one move (SmallVec's `clone` pushes one by one).
        Tensor {
            shape: Shape::from_slice(&self.shape),
            data: self.data.clone(),
        }
    }
}

impl<T: Float> PartialEq for Tensor<T> {
    fn eq(&self, other: &Self) -> bool {
        self.shape == other.shape && self.data[..] == other.data[..]
    }
}

impl<T: Float> From<Vec<T>> for Tensor<T> {
    /// A 1-d tensor.
    fn from(v: Vec<T>) -> Self {
        let n = v.len();
        Tensor::from_parts(shape::shape_of([n]), v)
    }
}

impl<T: Float> From<T> for Tensor<T> {
    /// A 0-d tensor.
    fn from(x: T) -> Self {
        Tensor::scalar(x)
    }
}

impl<T: Float> From<Tensor<T>> for Vec<T> {
    fn from(t: Tensor<T>) -> Self {
        t.into_vec()
    }
}

fn fmt_rec<T: Float>(f: &mut fmt::Formatter<'_>, shape: &[usize], data: &[T], depth: usize) -> fmt::Result {
    if shape.is_empty() {
        return fmt::Display::fmt(&data[0], f);
    }
    let n = shape[0];
    let step = numel(&shape[1..]);
    const EDGE: usize = 3;
    write!(f, "[")?;
    for i in 0..n {
        if n > 2 * EDGE + 1 && i == EDGE {
            write!(f, "...")?;
            if shape.len() > 1 {
                write!(f, ",\n{:width$}", "", width = depth + 1)?;
            } else {
                write!(f, ", ")?;
            }
            continue;
        }
        if n > 2 * EDGE + 1 && i > EDGE && i < n - EDGE {
            continue;
        }
        fmt_rec(f, &shape[1..], &data[i * step..(i + 1) * step], depth + 1)?;
        if i + 1 < n {
            if shape.len() > 1 {
                write!(f, ",\n{:width$}", "", width = depth + 1)?;
            } else {
                write!(f, ", ")?;
            }
        }
    }
    write!(f, "]")
}

/// The permutation that swaps axes `a` and `b` of `shape` (negative axes count from the end), or
/// a `Shape` error from `transpose` naming the axes and the shape (no location: callers add theirs).
pub(crate) fn transpose_perm(shape: &[usize], a: isize, b: isize) -> Result<Vec<usize>> {
    let n = shape.len();
    let resolve = |axis: isize| {
        let r = if axis < 0 { axis + n as isize } else { axis };
        (0..n as isize).contains(&r).then_some(r as usize)
    };
    match (resolve(a), resolve(b)) {
        (Some(i), Some(j)) => {
            let mut perm: Vec<usize> = (0..n).collect();
            perm.swap(i, j);
            Ok(perm)
        }
        (i, _) => {
            let bad = if i.is_none() { a } else { b };
            let valid = if n == 0 {
                "a 0-d value has no axes".to_string()
            } else {
                format!("{n} {}: -{n}..={}", if n == 1 { "axis" } else { "axes" }, n - 1)
            };
            Err(Error::shape(
                "transpose",
                format!(
                    "axes ({a}, {b}) of shape {}: axis {bad} is out of range ({valid})",
                    fmt_shape(shape)
                ),
            ))
        }
    }
}

impl<T: Float> fmt::Display for Tensor<T> {
    /// Prints like a nested array (NumPy style); long axes are elided with `...`.
    /// The precision flag applies to every element: `format!("{t:.3}")`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.numel() == 0 {
            return write!(f, "[] (shape {})", fmt_shape(&self.shape));
        }
        fmt_rec(f, &self.shape, &self.data, 0)
    }
}

impl<T: Float> fmt::Debug for Tensor<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor<{}>{} ", T::NAME, fmt_shape(&self.shape))?;
        fmt::Display::fmt(self, f)
    }
}

impl<T: Float + approx::AbsDiffEq<Epsilon = T>> approx::AbsDiffEq for Tensor<T> {
    type Epsilon = T;
    fn default_epsilon() -> T {
        T::default_epsilon()
    }
    fn abs_diff_eq(&self, other: &Self, epsilon: T) -> bool {
        self.shape == other.shape
            && self
                .data
                .iter()
                .zip(other.data.iter())
                .all(|(a, b)| a.abs_diff_eq(b, epsilon))
    }
}

impl<T: Float + approx::RelativeEq<Epsilon = T>> approx::RelativeEq for Tensor<T> {
    fn default_max_relative() -> T {
        T::default_max_relative()
    }
    fn relative_eq(&self, other: &Self, epsilon: T, max_relative: T) -> bool {
        self.shape == other.shape
            && self
                .data
                .iter()
                .zip(other.data.iter())
                .all(|(a, b)| a.relative_eq(b, epsilon, max_relative))
    }
}

#[cfg(test)]
mod lazy_tests {
    use super::Tensor;

    fn bits(t: &Tensor<f32>) -> Vec<u32> {
        t.data().iter().map(|x| x.to_bits()).collect()
    }

    /// A lazy broadcast reads as the made one everywhere: its elements, the elementwise kernels
    /// (as an operand of either side, beside a made tensor of its shape and beside another
    /// broadcast operand), a fused sum, accumulation into it and from it, mutation (which
    /// leaves its clones alone) and the size it reports.
    #[test]
    fn a_lazy_broadcast_is_the_made_one() {
        let shape = [64usize, 130];
        let row = Tensor::from_fn([1, 130], |i| i as f32 * 0.25 - 7.0);
        let one = Tensor::from_vec(vec![-1.5f32], [1, 1]);
        let full = Tensor::from_fn(shape, |i| ((i * 37) % 101) as f32 / 9.0 - 5.0);
        for src in [&row, &one] {
            let made = src.broadcast_to(shape);
            let lazy = src.broadcast_lazily(&shape);
            assert!(lazy.is_lazy());
            assert_eq!(lazy.shape(), &shape[..]);
            let f = |[a, b]: [f32; 2]| a * b - a;
            assert_eq!(
                bits(&Tensor::zip_n("t", [&lazy, &full], f)),
                bits(&Tensor::zip_n("t", [&made, &full], f))
            );
            assert_eq!(
                bits(&Tensor::zip_n("t", [&full, &lazy], f)),
                bits(&Tensor::zip_n("t", [&full, &made], f))
            );
            assert_eq!(
                bits(&Tensor::zip_n("t", [&lazy, &row], f)),
                bits(&Tensor::zip_n("t", [&made, &row], f))
            );
            let to = [64usize, 1];
            assert_eq!(
                bits(&Tensor::zip_n_sum_to("t", [&lazy, &full], &to, f)),
                bits(&Tensor::zip_n_sum_to("t", [&made, &full], &to, f))
            );
            let (mut acc, mut want) = (full.clone(), full.clone());
            acc.add_assign_same(&lazy);
            want.add_assign_same(&made);
            assert_eq!(bits(&acc), bits(&want));
            let mut acc = src.broadcast_lazily(&shape);
            acc.add_assign_same(&full);
            assert_eq!(bits(&acc), bits(&want));
            assert_eq!(lazy.heap_buffer().map(|b| b.1), Some(64 * 130 * 4));
            let mut m = lazy.clone();
            m.data_mut()[0] = 99.0;
            assert_eq!(m.data()[0], 99.0);
            assert_eq!(bits(&lazy), bits(&made), "a clone keeps its values; reading makes them");
            assert!(!lazy.is_lazy());
        }
        // A reshape of an unmade broadcast reads the made elements under its own shape.
        let lazy = row.broadcast_lazily(&shape);
        let turned = lazy.reshape([130, 64]);
        assert!(!turned.is_lazy());
        let f = |[a, b]: [f32; 2]| a - b;
        let other = Tensor::from_fn([130, 64], |i| i as f32);
        let want = Tensor::zip_n("t", [&row.broadcast_to(shape).reshape([130, 64]), &other], f);
        assert_eq!(bits(&Tensor::zip_n("t", [&turned, &other], f)), bits(&want));
        // Small results are made at once.
        assert!(!one.broadcast_lazily(&[2, 3]).is_lazy());
    }

    /// A large `mul` leaves its product unmade: a sum or mean over all of it has the made
    /// product's bits (and the f64 sum's value to rounding) at lengths around the reduction's
    /// chunk and lane boundaries, holds no buffer until read, is made by reading its elements
    /// (not by asking its size or shape), and reads like a made product through a reshape.
    /// Small products, and products with an unmade operand, are made at once.
    #[test]
    fn a_large_product_is_summed_without_being_made() {
        use crate::Tape;
        use crate::tensor::parallel::REDUCE_CHUNK;
        for n in [
            4096,
            4097,
            REDUCE_CHUNK - 1,
            REDUCE_CHUNK,
            REDUCE_CHUNK + 33,
            3 * REDUCE_CHUNK + 5,
        ] {
            let a = Tensor::<f32>::rand_normal([n], 0.0, 1.0, 1);
            let mut b = Tensor::<f32>::rand_normal([n], 0.0, 1.0, 2);
            b.data_mut()[n / 2] = -0.0;
            let tape = Tape::<f32>::new();
            let (av, bv) = (tape.var(a.clone()), tape.constant(b.clone()));
            let p = av * bv;
            let (sum, mean) = (p.sum(), p.mean());
            let node = tape.node(p.index);
            assert!(node.value.is_unmade() && node.value.heap_buffer().is_none(), "n = {n}");
            assert_eq!((node.value.numel(), node.value.shape()), (n, &[n][..]));
            assert!(node.value.is_unmade(), "numel and shape do not make it");
            drop(node);
            let made = Tensor::from_fn([n], |i| a.data()[i] * b.data()[i]);
            let want = crate::tensor::kernels::sum_slice(made.data());
            assert_eq!(sum.item().to_bits(), want.to_bits(), "n = {n}");
            assert_eq!(mean.item().to_bits(), (want * (1.0 / n as f32)).to_bits(), "n = {n}");
            let exact: f64 = a
                .data()
                .iter()
                .zip(b.data())
                .map(|(&x, &y)| f64::from(x) * f64::from(y))
                .sum();
            assert!((f64::from(want) - exact).abs() < 1e-4 * (n as f64).sqrt(), "n = {n}");
            let turned = p.value().reshape([1, n]);
            assert!(turned.is_unmade());
            assert_eq!(turned.sum_all().to_bits(), want.to_bits());
            assert_eq!(bits(&turned.reshape([n])), bits(&made), "read, it is the product");
            assert!(!p.value().is_unmade() && p.value().heap_buffer().map(|b| b.1) == Some(4 * n));
            // The gradients are the product rule's, on the made operands.
            let ga = &tape.grad(&[sum], &[Tensor::scalar(1.0)], &[av])[0];
            assert_eq!(bits(ga), bits(&b));
        }
        // Made, a product lets go of its operands; a checkpointed segment's output is made.
        let refs = |t: &Tensor<f32>| match &t.data {
            super::Buf::Many(v) => std::sync::Arc::strong_count(v),
            _ => unreachable!("a plain tensor"),
        };
        let (a, b) = (Tensor::<f32>::ones([64, 64]), Tensor::<f32>::full([64, 64], 3.0));
        let p = Tensor::product_unmade(&a, &b).unwrap();
        assert_eq!((refs(&a), refs(&b)), (2, 2));
        assert_eq!(p.sum_all(), 3.0 * 4096.0);
        assert_eq!((refs(&a), refs(&b)), (2, 2), "a sum does not make it");
        assert_eq!(p.data()[7], 3.0);
        assert_eq!((refs(&a), refs(&b)), (1, 1));
        assert_eq!(p.sum_all(), 3.0 * 4096.0);
        let tape = Tape::<f32>::new();
        let x = tape.var(a.clone());
        let y = tape.checkpoint(&[x], |v| v[0] * v[0]);
        assert!(!tape.node(y.index).value.is_unmade());
        let small = Tensor::<f32>::ones([4095]);
        assert!(Tensor::product_unmade(&small, &small).is_none());
        let big = Tensor::<f32>::ones([64, 64]);
        let unmade = Tensor::product_unmade(&big, &big).unwrap();
        assert!(Tensor::product_unmade(&unmade, &big).is_none());
        assert!(Tensor::product_unmade(&big, &Tensor::ones([64, 1])).is_none());
        let lazy = Tensor::<f32>::ones([1, 64]).broadcast_lazily(&[64, 64]);
        assert!(Tensor::product_unmade(&lazy, &big).is_none());
    }

    /// `g · d` with `g` an unmade broadcast of one `1` is `d` itself (its buffer, no pass), for
    /// a product and for the product rule, summed down to a broadcast operand or not; any
    /// other broadcast value, or a `d` of another shape, is multiplied as before. End to end:
    /// the gradient of `sum(x · c)` for `x` is `c`'s bits (NaN, ±∞, −0 included) and for a
    /// broadcast `c` is `x` summed over the batch, as the recorded backward gives.
    #[test]
    fn a_product_with_an_unmade_one_is_the_other_operand() {
        use crate::autodiff::rule::Value;
        use crate::ops::select::ByD;
        use crate::{Tape, autodiff::rule::pointwise};
        let shape = [64usize, 130];
        let mut d = Tensor::from_fn(shape, |i| ((i * 37) % 101) as f32 / 9.0 - 5.0);
        d.data_mut()[..4].copy_from_slice(&[f32::NAN, f32::INFINITY, -0.0, f32::NEG_INFINITY]);
        let unit = Tensor::scalar(1.0f32).broadcast_lazily(&shape);
        let same_buffer = |a: &Tensor<f32>, b: &Tensor<f32>| std::ptr::eq(a.data().as_ptr(), b.data().as_ptr());
        for y in [
            <Tensor<f32> as Value<f32>>::mul(&unit, &d),
            pointwise(&ByD, [&unit, &d]),
            Value::pointwise_sum_to_like(&ByD, [&unit, &d], &d),
        ] {
            assert!(same_buffer(&y, &d) && y.shape() == d.shape());
        }
        let made = Tensor::scalar(1.0f32).broadcast_to(shape);
        let to_row = Value::pointwise_sum_to_like(&ByD, [&unit, &d], &Tensor::zeros([1, 130]));
        let want = Value::pointwise_sum_to_like(&ByD, [&made, &d], &Tensor::zeros([1, 130]));
        assert_eq!(to_row.shape(), &[1, 130]);
        assert_eq!(bits(&to_row)[4..], bits(&want)[4..]);
        let two = Tensor::scalar(2.0f32).broadcast_lazily(&shape);
        let twice = pointwise(&ByD, [&two, &d]);
        assert!(!same_buffer(&twice, &d) && twice.data()[5] == 2.0 * d.data()[5]);
        let row = Tensor::from_fn([1, 130], |i| i as f32);
        let at_row = pointwise(&ByD, [&unit, &row]);
        assert_eq!(at_row.shape(), &shape[..]);
        assert_eq!(bits(&at_row), bits(&row.broadcast_to(shape)));

        let x = Tensor::from_fn(shape, |i| (i % 13) as f32 - 6.0);
        let tape = Tape::<f32>::new();
        let (xv, cv) = (tape.var(x.clone()), tape.var(d.clone()));
        let gx = &tape.grad(&[(xv * cv).sum()], &[Tensor::scalar(1.0)], &[xv])[0];
        assert_eq!(bits(gx), bits(&d));
        let c = Tensor::from_fn([130], |i| i as f32 * 0.5 - 3.0);
        let tape = Tape::<f32>::new();
        let (xv, cv) = (tape.var(x.clone()), tape.var(c));
        let loss = (xv * cv).sum();
        let eager = &tape.grad(&[loss], &[Tensor::scalar(1.0)], &[cv])[0];
        let recorded = tape.grad_graph(&[loss], &[tape.scalar(1.0)], &[cv])[0].value();
        assert_eq!(bits(eager), bits(&recorded));
        for j in 0..130 {
            let s: f64 = (0..64).map(|i| f64::from(x.data()[i * 130 + j])).sum();
            assert_eq!(f64::from(eager.data()[j]), s, "column {j}");
        }
    }
}
