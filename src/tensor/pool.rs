//! A per-thread pool of large element buffers.
//!
//! A backward pass allocates and frees buffers of the same few sizes over and over. For buffers
//! of hundreds of kilobytes and more, the system allocator maps fresh pages each time and the
//! first touch of every page faults: at [1024, 4096] this cost more than the arithmetic (2–5×
//! measured on the softmax workloads). Tensors therefore take their large buffers from, and give
//! them back to, a small pool owned by the thread.
//!
//! Only buffers of at least [`MIN_POOLED`] elements are kept, at most [`MAX_BUFFERS`] of them and
//! [`MAX_BYTES`] in all per thread and element type; [`release_pooled_memory`] empties the pool.

use crate::float::Float;
use std::cell::RefCell;

/// Buffers with fewer elements than this go straight back to the system allocator.
pub const MIN_POOLED: usize = 16 * 1024;
/// The most buffers a thread keeps per element type.
pub const MAX_BUFFERS: usize = 32;
/// The most bytes a thread keeps per element type.
pub const MAX_BYTES: usize = 512 << 20;

/// Free buffers of one element type, owned by one thread.
#[doc(hidden)]
#[derive(Default)]
pub struct Pool<T> {
    free: Vec<Vec<T>>,
    bytes: usize,
}

#[doc(hidden)]
pub trait Pooled: Sized + 'static {
    /// Runs `f` on this thread's pool for `Self` (not at all while the thread is being torn down).
    fn with_pool<R>(f: impl FnOnce(&mut Pool<Self>) -> R) -> Option<R>;
}

macro_rules! impl_pooled {
    ($($t:ty),*) => {$(
        impl Pooled for $t {
            fn with_pool<R>(f: impl FnOnce(&mut Pool<Self>) -> R) -> Option<R> {
                thread_local! {
                    static POOL: RefCell<Pool<$t>> = RefCell::new(Pool::default());
                }
                POOL.try_with(|p| p.try_borrow_mut().ok().map(|mut p| f(&mut p))).ok().flatten()
            }
        }
    )*};
}
impl_pooled!(f32, f64);

/// An empty vector with room for at least `n` elements, reusing a pooled buffer when one fits
/// (capacity between `n` and `2n`).
pub(crate) fn alloc<T: Float>(n: usize) -> Vec<T> {
    if n >= MIN_POOLED {
        let reused = T::with_pool(|p| {
            let best = p
                .free
                .iter()
                .enumerate()
                .filter(|(_, v)| v.capacity() >= n && v.capacity() <= 2 * n)
                .min_by_key(|(_, v)| v.capacity())
                .map(|(i, _)| i)?;
            let v = p.free.swap_remove(best);
            p.bytes -= v.capacity() * std::mem::size_of::<T>();
            Some(v)
        })
        .flatten();
        if let Some(mut v) = reused {
            v.clear();
            return v;
        }
    }
    Vec::with_capacity(n)
}

/// Gives a buffer back (kept if large enough and the pool has room; freed otherwise).
pub(crate) fn recycle<T: Float>(v: Vec<T>) {
    let bytes = v.capacity() * std::mem::size_of::<T>();
    if v.capacity() < MIN_POOLED || bytes > MAX_BYTES {
        return;
    }
    T::with_pool(move |p| {
        // Make room by dropping the oldest buffers.
        while !p.free.is_empty() && (p.free.len() >= MAX_BUFFERS || p.bytes + bytes > MAX_BYTES) {
            let old = p.free.remove(0);
            p.bytes -= old.capacity() * std::mem::size_of::<T>();
        }
        p.bytes += bytes;
        p.free.push(v);
    });
}

/// `n` elements from an iterator, in a (possibly pooled) buffer.
pub(crate) fn collect<T: Float>(n: usize, it: impl Iterator<Item = T>) -> Vec<T> {
    let mut v = alloc(n);
    v.extend(it);
    v
}

/// `n` copies of `x`, in a (possibly pooled) buffer.
pub(crate) fn filled<T: Float>(n: usize, x: T) -> Vec<T> {
    let mut v = alloc(n);
    v.resize(n, x);
    v
}

/// A copy of a slice, in a (possibly pooled) buffer.
pub(crate) fn copy<T: Float>(s: &[T]) -> Vec<T> {
    let mut v = alloc(s.len());
    v.extend_from_slice(s);
    v
}

/// Frees every buffer this thread's pools hold (for `f32` and `f64`).
///
/// ```
/// let t = tapegrad::Tensor::<f32>::zeros([1 << 20]);
/// drop(t);                                   // its buffer goes to the pool
/// assert!(tapegrad::tensor::pool::pooled_bytes::<f32>() >= 4 << 20);
/// tapegrad::tensor::pool::release_pooled_memory();
/// assert_eq!(tapegrad::tensor::pool::pooled_bytes::<f32>(), 0);
/// ```
pub fn release_pooled_memory() {
    f32::with_pool(|p| *p = Pool::default());
    f64::with_pool(|p| *p = Pool::default());
}

/// The bytes this thread's pool for `T` holds.
pub fn pooled_bytes<T: Float>() -> usize {
    T::with_pool(|p| p.bytes).unwrap_or(0)
}

/// A vector whose buffer returns to the pool when dropped.
pub(crate) struct PoolVec<T: Float>(pub(crate) Vec<T>);

impl<T: Float> Drop for PoolVec<T> {
    fn drop(&mut self) {
        recycle(std::mem::take(&mut self.0));
    }
}

impl<T: Float> Clone for PoolVec<T> {
    fn clone(&self) -> Self {
        PoolVec(copy(&self.0))
    }
}
