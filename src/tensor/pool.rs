//! One process-wide pool of large element buffers, shared by every thread.
//!
//! A backward pass allocates and frees buffers of the same few sizes over and over. For buffers
//! of hundreds of kilobytes and more, the system allocator maps fresh pages each time and the
//! first touch of every page faults: at [1024, 4096] this cost more than the arithmetic (2–5×
//! measured on the softmax workloads). Tensors therefore take their large buffers from, and give
//! them back to, a small pool.
//!
//! # What is kept, and when it is returned
//!
//! * Only buffers of at least [`MIN_POOLED`] elements are kept. Smaller ones go straight back to
//!   the system allocator when their tensor is dropped, and never touch the pool.
//! * There is **one** pool for the whole process, for both element types. A buffer freed on any
//!   thread goes there, and any thread can reuse it: no thread keeps buffers of its own, and a
//!   thread ending frees nothing because it holds nothing.
//! * The pool holds at most [`MAX_BUFFERS`] buffers and [`MAX_BYTES`] bytes in total (`f32` and
//!   `f64` together). A buffer larger than `MAX_BYTES` is never kept; when keeping one would
//!   exceed either bound, the oldest kept buffers are freed first.
//! * A request for `n` elements reuses the smallest kept buffer of the same element type whose
//!   capacity is between `n` and `2n`; otherwise it allocates.
//! * [`release_pooled_memory`] frees every kept buffer (and the pool's own list). Until then, kept
//!   buffers stay allocated until reused or evicted — so after dropping every tensor and tape, what
//!   tapegrad still holds is exactly [`pooled_bytes_total`] (at most `MAX_BYTES`), and after
//!   `release_pooled_memory` it is nothing.
//!
//! # Why this module is public
//!
//! Only its memory controls are: the bounds ([`MIN_POOLED`], [`MAX_BUFFERS`], [`MAX_BYTES`]),
//! [`release_pooled_memory`] (for a program that must hand memory back, say between phases) and
//! the gauges [`pooled_bytes`], [`pooled_bytes_total`], [`pooled_buffers`] (for a program that
//! watches its memory, and for the memory tests). The pool itself and its buffers are private.
//!
//! The pool is a [`Mutex`], taken only for buffers of at least `MIN_POOLED` elements (whose
//! allocation, filling and page faults cost far more than an uncontended lock). It knows `f32` and
//! `f64` buffers apart by their [`TypeId`] (a safe type witness, resolved at compile time), so the
//! [`Float`] trait knows nothing of it.

use crate::core::float::Float;
use std::any::{Any, TypeId};
use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Buffers with fewer elements than this go straight back to the system allocator.
pub const MIN_POOLED: usize = 16 * 1024;
/// The most buffers the pool keeps (both element types together).
pub const MAX_BUFFERS: usize = 64;
/// The most bytes the pool keeps (both element types together, all threads).
pub const MAX_BYTES: usize = 256 << 20;

/// A kept buffer of either element type.
enum Free {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

impl Free {
    /// Wraps a buffer of `T` (`None` for an element type the pool does not keep).
    fn wrap<T: 'static>(v: Vec<T>) -> Option<Free> {
        let mut slot = Some(v);
        let any: &mut dyn Any = &mut slot;
        if let Some(v) = any.downcast_mut::<Option<Vec<f32>>>() {
            return v.take().map(Free::F32);
        }
        if let Some(v) = any.downcast_mut::<Option<Vec<f64>>>() {
            return v.take().map(Free::F64);
        }
        None
    }

    /// The buffer, if its element type is `T`.
    fn unwrap<T: 'static>(self) -> Option<Vec<T>> {
        let mut out: Option<Vec<T>> = None;
        let any: &mut dyn Any = &mut out;
        match self {
            Free::F32(v) => {
                if let Some(o) = any.downcast_mut::<Option<Vec<f32>>>() {
                    *o = Some(v);
                }
            }
            Free::F64(v) => {
                if let Some(o) = any.downcast_mut::<Option<Vec<f64>>>() {
                    *o = Some(v);
                }
            }
        }
        out
    }

    /// The index of the buffer's element type in [`Pool::bytes`].
    fn kind(&self) -> usize {
        match self {
            Free::F32(_) => 0,
            Free::F64(_) => 1,
        }
    }

    fn capacity(&self) -> usize {
        match self {
            Free::F32(v) => v.capacity(),
            Free::F64(v) => v.capacity(),
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Free::F32(v) => v.capacity() * size_of::<f32>(),
            Free::F64(v) => v.capacity() * size_of::<f64>(),
        }
    }
}

/// The index of `T` in [`Pool::bytes`] (`None` for an element type the pool does not keep).
fn kind_of<T: 'static>() -> Option<usize> {
    let t = TypeId::of::<T>();
    if t == TypeId::of::<f32>() {
        Some(0)
    } else if t == TypeId::of::<f64>() {
        Some(1)
    } else {
        None
    }
}

/// The kept buffers, oldest first, and the bytes they hold per element type.
struct Pool {
    free: VecDeque<Free>,
    bytes: [usize; 2],
}

impl Pool {
    const fn new() -> Self {
        Pool {
            free: VecDeque::new(),
            bytes: [0; 2],
        }
    }

    fn total(&self) -> usize {
        self.bytes[0] + self.bytes[1]
    }

    /// Removes and returns the oldest buffer.
    fn pop_oldest(&mut self) -> Option<Free> {
        let f = self.free.pop_front()?;
        self.bytes[f.kind()] -= f.bytes();
        Some(f)
    }

    /// Takes the smallest kept buffer of type `T` whose capacity is between `n` and `2n`.
    fn take<T: 'static>(&mut self, n: usize) -> Option<Vec<T>> {
        let kind = kind_of::<T>()?;
        let best = self
            .free
            .iter()
            .enumerate()
            .filter(|(_, f)| f.kind() == kind && f.capacity() >= n && f.capacity() <= n.saturating_mul(2))
            .min_by_key(|(_, f)| f.capacity())
            .map(|(i, _)| i)?;
        let f = self.free.remove(best)?;
        self.bytes[kind] -= f.bytes();
        f.unwrap()
    }

    /// Keeps `f` (at most `MAX_BYTES`, checked by the caller), freeing the oldest buffers first
    /// while either bound would be exceeded.
    fn put(&mut self, f: Free) {
        let bytes = f.bytes();
        while self.free.len() >= MAX_BUFFERS || self.total() + bytes > MAX_BYTES {
            if self.pop_oldest().is_none() {
                break;
            }
        }
        self.bytes[f.kind()] += bytes;
        self.free.push_back(f);
    }
}

static POOL: Mutex<Pool> = Mutex::new(Pool::new());

/// The pool. Nothing panics while holding it, but a poisoned lock would still hold a consistent
/// pool, so it is used as is.
fn lock() -> MutexGuard<'static, Pool> {
    POOL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An empty vector with room for at least `n` elements, reusing a pooled buffer when one fits
/// (capacity between `n` and `2n`).
pub(crate) fn alloc<T: Float>(n: usize) -> Vec<T> {
    if n >= MIN_POOLED {
        let reused = lock().take::<T>(n); // the lock is released at the end of this statement
        if let Some(mut v) = reused {
            v.clear();
            return v;
        }
    }
    Vec::with_capacity(n)
}

/// A buffer of exactly `n` elements whose values are unspecified, for a kernel that writes every
/// one of them: a reused buffer keeps what it held (no pass over memory to clear it), a new one
/// is zeroed (lazily, by the system: a fresh large allocation is mapped zero pages).
pub(crate) fn buffer<T: Float>(n: usize) -> Vec<T> {
    if n >= MIN_POOLED {
        let reused = lock().take::<T>(n); // the lock is released at the end of this statement
        if let Some(mut v) = reused {
            if v.len() >= n {
                v.truncate(n);
            } else {
                v.resize(n, T::ZERO);
            }
            return v;
        }
    }
    vec![T::ZERO; n]
}

/// Gives a buffer back (kept if large enough and it fits the bounds; freed otherwise).
pub(crate) fn recycle<T: Float>(v: Vec<T>) {
    if v.capacity() < MIN_POOLED || v.capacity() * size_of::<T>() > MAX_BYTES {
        return;
    }
    if let Some(f) = Free::wrap(v) {
        lock().put(f);
    }
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

/// Frees every buffer the pool keeps (both element types, whichever threads freed them), and
/// the pool's own list. Buffers of live tensors are not affected.
///
/// ```
/// use tapegrad::tensor::pool::{pooled_bytes, pooled_bytes_total, release_pooled_memory};
/// let t = tapegrad::Tensor::<f32>::zeros([1 << 20]);
/// drop(t);                                   // its 4 MiB buffer goes to the pool
/// assert!(pooled_bytes::<f32>() >= 4 << 20);
/// release_pooled_memory();
/// assert_eq!(pooled_bytes_total(), 0);
/// ```
pub fn release_pooled_memory() {
    let kept = std::mem::replace(&mut *lock(), Pool::new());
    drop(kept); // freed after the lock is released
}

/// The bytes the pool keeps in buffers of `T`.
pub fn pooled_bytes<T: Float>() -> usize {
    kind_of::<T>().map_or(0, |k| lock().bytes[k])
}

/// The bytes the pool keeps in all (at most [`MAX_BYTES`]).
pub fn pooled_bytes_total() -> usize {
    lock().total()
}

/// The number of buffers the pool keeps (at most [`MAX_BUFFERS`]).
pub fn pooled_buffers() -> usize {
    lock().free.len()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_element_types_round_trip_through_the_type_witness() {
        let f = Free::wrap(vec![1.0f32; 3]).unwrap();
        assert_eq!((f.kind(), f.capacity()), (kind_of::<f32>().unwrap(), 3));
        assert_eq!(f.unwrap::<f32>(), Some(vec![1.0f32; 3]));
        let d = Free::wrap(vec![2.0f64; 2]).unwrap();
        assert_eq!((d.kind(), d.bytes()), (kind_of::<f64>().unwrap(), 16));
        assert!(Free::wrap(vec![2.0f64]).unwrap().unwrap::<f32>().is_none());
        assert!(Free::wrap(vec![1u8]).is_none() && kind_of::<u8>().is_none());
    }

    #[test]
    fn put_evicts_the_oldest_first_and_take_picks_the_smallest_fit() {
        // A private pool, so the process-wide one (used by concurrent tests) is not involved.
        let mut p = Pool::new();
        for i in 0..MAX_BUFFERS + 3 {
            p.put(Free::wrap(Vec::<f32>::with_capacity(MIN_POOLED + i)).unwrap());
        }
        assert_eq!(p.free.len(), MAX_BUFFERS);
        assert_eq!(
            p.free.front().unwrap().capacity(),
            MIN_POOLED + 3,
            "the 3 oldest were evicted"
        );
        // Requests pick the smallest capacity in [n, 2n] of the right type.
        assert_eq!(p.take::<f32>(MIN_POOLED + 10).unwrap().capacity(), MIN_POOLED + 10);
        assert!(p.take::<f64>(MIN_POOLED).is_none(), "no f64 buffers kept");
        assert!(p.take::<f32>(4 * MIN_POOLED).is_none(), "nothing within 2n");
        let bytes: usize = p.free.iter().map(Free::bytes).sum();
        assert_eq!(p.total(), bytes);
        // The byte bound, across element types.
        let big = MAX_BYTES / 8 / 2 + 1; // f64 elements: a bit over half of MAX_BYTES each
        p.put(Free::wrap(Vec::<f64>::with_capacity(big)).unwrap());
        p.put(Free::wrap(Vec::<f64>::with_capacity(big)).unwrap());
        assert!(p.total() <= MAX_BYTES);
        assert_eq!(
            (p.free.len(), p.bytes[0]),
            (1, 0),
            "the second big buffer evicted everything else"
        );
    }
}
