//! Reductions: sums and dot products with independent accumulators (so they vectorise and
//! pipeline, in a fixed order: results do not depend on the machine), maxima, sums and arg-maxima
//! along one axis.

use crate::core::float::Float;
use crate::core::shape::numel;
use crate::tensor::parallel::{self, REDUCE_CHUNK};
use smallvec::SmallVec;

/// Lanes of the reductions below: 32 independent accumulators, i.e. several vector registers,
/// so the loop is bound by load throughput rather than by the latency of one chain of adds.
const LANES: usize = 32;

/// Sums `acc` pairwise (a fixed order, so results do not depend on the machine).
///
/// `acc` passes through [`std::hint::black_box`] first: without that barrier LLVM's SLP
/// vectoriser, seeing the pairwise fold right after the loop, splits the 32 accumulators into
/// scalars and compiles the loop two lanes at a time (`xmm`, measured with `--emit asm`, rustc
/// 1.95) instead of in whole vector registers (`zmm`/`ymm`); one 32-element store and reload per
/// call is the price.
#[inline(always)]
fn fold_lanes<T: Float>(acc: [T; LANES], op: impl Fn(T, T) -> T) -> T {
    let mut acc = std::hint::black_box(acc);
    let mut n = LANES;
    while n > 1 {
        n /= 2;
        for k in 0..n {
            acc[k] = op(acc[k], acc[k + n]);
        }
    }
    acc[0]
}

/// Sum of a slice with independent accumulators (so the loop vectorises and pipelines). A slice
/// longer than [`REDUCE_CHUNK`] is summed in chunks of that many elements (across threads when
/// large), then the chunks' sums in order: the same additions at any thread count.
pub(crate) fn sum_slice<T: Float>(x: &[T]) -> T {
    if x.len() <= REDUCE_CHUNK {
        return sum_lanes(x);
    }
    let parts = parallel::map_collect(x.len().div_ceil(REDUCE_CHUNK), x.len(), |i| {
        sum_lanes(&x[i * REDUCE_CHUNK..((i + 1) * REDUCE_CHUNK).min(x.len())])
    });
    sum_lanes(&parts)
}

crate::tensor::vmath::wide_fn! {
    /// [`sum_slice`] of one chunk: 32 lanes, folded pairwise, then the tail.
    fn sum_lanes(x: &[T]) -> T = sum_lanes_in
}

/// [`sum_lanes`]' loop: `LANES` independent accumulators, so the order of the additions (and
/// the bits) are the same at any vector width.
#[inline(always)]
fn sum_lanes_in<T: Float>(x: &[T]) -> T {
    let mut acc = [T::ZERO; LANES];
    let (chunks, rest) = x.as_chunks::<LANES>();
    for c in chunks {
        for k in 0..LANES {
            acc[k] += c[k];
        }
    }
    let mut s = fold_lanes(acc, |a, b| a + b);
    for &r in rest {
        s += r;
    }
    s
}

/// [`sum_slice`] of a slice that arrives block by block, with the same bits: the same `LANES`
/// accumulators carried from one block to the next, folded at the same [`REDUCE_CHUNK`]
/// boundaries, the chunks' sums added as `sum_slice` adds them.
///
/// So a row kernel can make each block of a long row (`exp(x − m)`, say) and add it while it
/// is still in L1, instead of writing the whole row and reading it again for the sum. Every
/// block but the last must be a whole number of `LANES` elements (the tail is added last, as
/// `sum_lanes` adds it); one stream is one thread's.
pub(crate) struct SumStream<T> {
    acc: [T; LANES],
    /// Elements added to `acc` since the last fold.
    in_chunk: usize,
    /// The sums of the completed chunks of `REDUCE_CHUNK` elements.
    parts: SmallVec<[T; 8]>,
    /// The last block's elements past its last whole `LANES`.
    tail: SmallVec<[T; LANES]>,
}

impl<T: Float> SumStream<T> {
    /// An empty stream (its sum is 0).
    #[inline(always)]
    pub(crate) fn new() -> Self {
        SumStream {
            acc: [T::ZERO; LANES],
            in_chunk: 0,
            parts: SmallVec::new(),
            tail: SmallVec::new(),
        }
    }

    /// Adds the next `block` of the slice.
    #[inline(always)]
    pub(crate) fn push(&mut self, mut block: &[T]) {
        debug_assert!(
            self.tail.is_empty(),
            "only the last block may end in a partial lane group"
        );
        while !block.is_empty() {
            if self.in_chunk == REDUCE_CHUNK {
                // A chunk is complete and more follow: fold it as `sum_lanes` of it would.
                self.parts.push(fold_lanes(self.acc, |a, b| a + b));
                self.acc = [T::ZERO; LANES];
                self.in_chunk = 0;
            }
            let take = block.len().min(REDUCE_CHUNK - self.in_chunk);
            let (now, later) = block.split_at(take);
            let (chunks, rest) = now.as_chunks::<LANES>();
            let mut acc = self.acc;
            for c in chunks {
                for k in 0..LANES {
                    acc[k] += c[k];
                }
            }
            self.acc = acc;
            self.in_chunk += take;
            self.tail.extend_from_slice(rest);
            block = later;
        }
    }

    /// The sum: bit for bit [`sum_slice`] of the blocks pushed, in order.
    #[inline(always)]
    pub(crate) fn finish(mut self) -> T {
        let mut s = fold_lanes(self.acc, |a, b| a + b);
        for &r in &self.tail {
            s += r;
        }
        if self.parts.is_empty() {
            return s;
        }
        self.parts.push(s);
        sum_lanes(&self.parts)
    }
}

/// `Σ a_i b_i` with independent accumulators, chunked like [`sum_slice`].
pub(crate) fn dot<T: Float>(a: &[T], b: &[T]) -> T {
    if a.len() <= REDUCE_CHUNK {
        return dot_lanes(a, b);
    }
    let parts = parallel::map_collect(a.len().div_ceil(REDUCE_CHUNK), 2 * a.len(), |i| {
        let r = i * REDUCE_CHUNK..((i + 1) * REDUCE_CHUNK).min(a.len());
        dot_lanes(&a[r.clone()], &b[r])
    });
    sum_lanes(&parts)
}

crate::tensor::vmath::wide_fn! {
    /// [`dot`] of one chunk, compiled for the widest vectors this CPU has (the same lanes, so the
    /// same bits, at any width).
    fn dot_lanes(a: &[T], b: &[T]) -> T = dot_lanes_in
}

/// [`dot_lanes`]' loop.
#[inline(always)]
fn dot_lanes_in<T: Float>(a: &[T], b: &[T]) -> T {
    let n = a.len().min(b.len());
    let mut acc = [T::ZERO; LANES];
    let (ca, ra) = a[..n].as_chunks::<LANES>();
    let (cb, rb) = b[..n].as_chunks::<LANES>();
    for (x, y) in ca.iter().zip(cb) {
        for k in 0..LANES {
            acc[k] += x[k] * y[k];
        }
    }
    let mut s = fold_lanes(acc, |a, b| a + b);
    for (&x, &y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

crate::tensor::vmath::wide_fn! {
    /// Maximum of a slice, ignoring NaN (−∞ for an empty or all-NaN slice). Callers whose result
    /// must be NaN when the input has one get it from later arithmetic (see softmax). Compiled
    /// for the widest vectors this CPU has (a comparison picks one of its operands: the same
    /// result at any width).
    pub(crate) fn max_ignoring_nan(x: &[T]) -> T = max_ignoring_nan_in
}

/// [`max_ignoring_nan`]'s loop.
#[inline(always)]
fn max_ignoring_nan_in<T: Float>(x: &[T]) -> T {
    fold_slice_lanes(x, T::NEG_INFINITY, |a: T, b: T| if b > a { b } else { a })
}

/// `pick` folded over a slice: `LANES` accumulators from `init` across the whole lane groups,
/// folded together, then the tail in order. One pass with no early exit, so it vectorises.
#[inline(always)]
fn fold_slice_lanes<T: Float>(x: &[T], init: T, pick: impl Fn(T, T) -> T + Copy) -> T {
    let mut acc = [init; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for k in 0..LANES {
            acc[k] = pick(acc[k], c[k]);
        }
    }
    let mut m = fold_lanes(acc, pick);
    for &r in rest {
        m = pick(m, r);
    }
    m
}

/// Maximum of a non-empty slice (NaN propagates).
pub(crate) fn max_slice<T: Float>(x: &[T]) -> T {
    let m = max_or_nan(x);
    if m.is_nan() { T::NAN } else { m }
}

/// `b` when it beats `a` (is greater, or `MIN`: smaller) or is NaN, else `a`: once a NaN is
/// picked it stays (no comparison with it is true). Without NaN it picks what
/// [`max_ignoring_nan`]'s comparison picks, and the minimum picks the negated maximum of the
/// negated values (negation is exact and reverses every comparison).
#[inline(always)]
fn pick_extreme<T: Float, const MIN: bool>(a: T, b: T) -> T {
    let beats = if MIN { b < a } else { b > a };
    if beats || b.is_nan() { b } else { a }
}

/// The lane loop of [`max_or_nan`] and [`min_or_nan`]: a compare, a NaN test and a blend per
/// vector.
#[inline(always)]
fn extreme_or_nan_in<T: Float, const MIN: bool>(x: &[T]) -> T {
    let init = if MIN { T::INFINITY } else { T::NEG_INFINITY };
    fold_slice_lanes(x, init, pick_extreme::<T, MIN>)
}

#[inline(always)]
fn max_or_nan_in<T: Float>(x: &[T]) -> T {
    extreme_or_nan_in::<T, false>(x)
}

#[inline(always)]
fn min_or_nan_in<T: Float>(x: &[T]) -> T {
    extreme_or_nan_in::<T, true>(x)
}

crate::tensor::vmath::wide_fn! {
    /// Maximum of a slice in one vectorised pass, a NaN when it holds one (−∞ when empty); the
    /// same value as [`max_ignoring_nan`] on a slice without NaN.
    pub(crate) fn max_or_nan(x: &[T]) -> T = max_or_nan_in
}

crate::tensor::vmath::wide_fn! {
    /// Minimum of a slice in one vectorised pass, a NaN when it holds one (+∞ when empty).
    pub(crate) fn min_or_nan(x: &[T]) -> T = min_or_nan_in
}

/// The maxima (`min`: minima) along one axis, which is removed (callers reshape for
/// `keepdim`); NaN propagates (returned as `T::NAN`). The axis must not be empty. Split across
/// threads by output elements as [`sum_axis`] is; each is the same comparison sequence at any
/// thread count. Values only: the arg-max for a gradient is [`argmax_axis`]'s, which picks the
/// same value.
pub(crate) fn extreme_axis<T: Float>(a: &[T], shape: &[usize], axis: usize, min: bool) -> Vec<T> {
    let (outer, n, inner) = split_axis(shape, axis);
    assert!(n > 0, "extreme_axis: the axis is empty");
    let mut out = if min {
        reduce_axis(a, (outer, n, inner), min_or_nan, |d, s| {
            d.iter_mut()
                .zip(s)
                .for_each(|(d, &s)| *d = pick_extreme::<T, true>(*d, s))
        })
    } else {
        reduce_axis(a, (outer, n, inner), max_or_nan, |d, s| {
            d.iter_mut()
                .zip(s)
                .for_each(|(d, &s)| *d = pick_extreme::<T, false>(*d, s))
        })
    };
    out.iter_mut().filter(|v| v.is_nan()).for_each(|v| *v = T::NAN);
    out
}

/// One axis of extent `n > 0` reduced away, split across threads by output elements: with
/// `inner == 1` each output is `row` of its contiguous row; otherwise chunks of whole `inner`
/// rows of the output (or of one row) start as the first slice along the axis and `fold` each
/// later slice into them, in axis order. The same values at any thread count.
fn reduce_axis<T: Float>(
    a: &[T],
    (outer, n, inner): (usize, usize, usize),
    row: impl Fn(&[T]) -> T + Sync,
    fold: impl Fn(&mut [T], &[T]) + Sync,
) -> Vec<T> {
    let mut out = crate::tensor::pool::buffer(outer * inner);
    if outer * inner == 0 {
        return out;
    }
    if inner == 1 {
        let per = (REDUCE_CHUNK / n).max(1);
        parallel::chunks_mut(&mut out, per, a.len(), |i, c| {
            for (j, o) in c.iter_mut().enumerate() {
                let r = i * per + j;
                *o = row(&a[r * n..(r + 1) * n]);
            }
        });
        return out;
    }
    // Chunks of whole `inner` rows of the output when there are several, else of one row.
    let per = if outer > 1 {
        (REDUCE_CHUNK / (n * inner)).max(1) * inner
    } else {
        REDUCE_CHUNK
    };
    parallel::chunks_mut(&mut out, per, a.len(), |i, c| {
        let start = i * per;
        let mut done = 0;
        while done < c.len() {
            let (o, i0) = ((start + done) / inner, (start + done) % inner);
            let len = (inner - i0).min(c.len() - done);
            let dst = &mut c[done..done + len];
            let base = o * n * inner + i0;
            dst.copy_from_slice(&a[base..base + len]);
            for j in 1..n {
                fold(dst, &a[base + j * inner..base + j * inner + len]);
            }
            done += len;
        }
    });
    out
}

/// Splits `shape` around `axis` into (outer, extent, inner) sizes.
pub(crate) fn split_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (numel(&shape[..axis]), shape[axis], numel(&shape[axis + 1..]))
}

/// Sum over one axis; the result has that axis removed (callers reshape for `keepdim`). Split
/// across threads by output elements (each summed in the same order at any thread count).
pub(crate) fn sum_axis<T: Float>(a: &[T], shape: &[usize], axis: usize) -> Vec<T> {
    let (outer, n, inner) = split_axis(shape, axis);
    if n == 0 {
        return vec![T::ZERO; outer * inner]; // an empty sum is 0
    }
    reduce_axis(a, (outer, n, inner), sum_slice, |d, s| {
        d.iter_mut().zip(s).for_each(|(d, &s)| *d += s)
    })
}

/// Index (within the axis) of the first maximal element along one axis, and the maxima.
/// A NaN counts as maximal, so it propagates to the output.
pub(crate) fn argmax_axis<T: Float>(a: &[T], shape: &[usize], axis: usize) -> (Vec<usize>, Vec<T>) {
    let (outer, n, inner) = split_axis(shape, axis);
    let mut idx = vec![0usize; outer * inner];
    let mut val = vec![T::NEG_INFINITY; outer * inner];
    if n == 0 {
        return (idx, val);
    }
    if inner == 1 {
        for (o, row) in a.chunks_exact(n).enumerate() {
            let m = max_slice(row);
            let i = if m.is_nan() {
                row.iter().position(|x| x.is_nan()).unwrap_or(0)
            } else {
                row.iter().position(|&x| x == m).unwrap_or(0)
            };
            idx[o] = i;
            val[o] = m;
        }
        return (idx, val);
    }
    for o in 0..outer {
        val[o * inner..(o + 1) * inner].copy_from_slice(&a[o * n * inner..(o * n + 1) * inner]);
        for j in 1..n {
            for i in 0..inner {
                let x = a[(o * n + j) * inner + i];
                let k = o * inner + i;
                if (x > val[k] || x.is_nan()) && !val[k].is_nan() {
                    val[k] = x;
                    idx[k] = j;
                }
            }
        }
    }
    (idx, val)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wide copies of the lane sum, dot product and maximum compute in the same order as the
    /// plain loops: the same bits, for lengths around the lane count and with signed zeros,
    /// subnormals and infinities; and they agree with f64 arithmetic and a plain scan.
    #[test]
    fn the_wide_lane_reductions_are_the_plain_ones() {
        let mut r = crate::rng::Rng::new(11);
        for n in [0, 1, 31, 32, 33, 100, 4097] {
            let x: Vec<f32> = (0..n)
                .map(|i| match i % 13 {
                    0 => -0.0,
                    5 => f32::MIN_POSITIVE / 5.0,
                    _ => (r.normal() * 1e3) as f32,
                })
                .collect();
            assert_eq!(sum_lanes(&x).to_bits(), sum_lanes_in(&x).to_bits(), "{n} elements");
            let y: Vec<f64> = x.iter().map(|&v| f64::from(v) * 1.25).collect();
            assert_eq!(sum_lanes(&y).to_bits(), sum_lanes_in(&y).to_bits(), "{n} elements");
            // Against independent arithmetic: the sum and the dot product in f64 (the inputs'
            // magnitudes bound the rounding), the maximum by a plain scan.
            let exact: f64 = x.iter().map(|&v| f64::from(v)).sum();
            let size: f64 = x.iter().map(|&v| f64::from(v).abs()).sum();
            assert!(
                (f64::from(sum_lanes(&x)) - exact).abs() <= 1e-6 * size + 1e-30,
                "{n} elements"
            );
            let exact_dot: f64 = x.iter().zip(&y).map(|(&a, &b)| f64::from(a) * b).sum();
            let size_dot: f64 = x.iter().zip(&y).map(|(&a, &b)| (f64::from(a) * b).abs()).sum();
            let yf: Vec<f32> = y.iter().map(|&v| v as f32).collect();
            assert_eq!(
                dot_lanes(&x, &yf).to_bits(),
                dot_lanes_in(&x, &yf).to_bits(),
                "{n} elements"
            );
            assert_eq!(
                dot_lanes(&y, &y).to_bits(),
                dot_lanes_in(&y, &y).to_bits(),
                "{n} elements"
            );
            assert!((f64::from(dot_lanes(&x, &yf)) - exact_dot).abs() <= 1e-6 * size_dot + 1e-30);
            let mut with_nan = x.clone();
            if n > 3 {
                with_nan[n / 2] = f32::NAN;
            }
            let plain = with_nan
                .iter()
                .filter(|v| !v.is_nan())
                .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            assert_eq!(max_ignoring_nan(&with_nan), plain, "{n} elements");
            assert_eq!(
                max_ignoring_nan(&with_nan).to_bits(),
                max_ignoring_nan_in(&with_nan).to_bits()
            );
        }
        let inf = [1.0f32, f32::INFINITY, 2.0];
        assert_eq!(sum_lanes(&inf), f32::INFINITY);
        assert!(sum_lanes(&[f32::INFINITY, f32::NEG_INFINITY]).is_nan());
    }

    /// A slice summed block by block through [`SumStream`] gives `sum_slice`'s bits, for lengths
    /// around the lane count and the chunk boundaries, blocks of several sizes (the last one
    /// ragged), values whose order of addition shows in the bits; and the sum is the f64 sum
    /// within rounding (an independent check that both are a sum at all).
    #[test]
    fn a_streamed_sum_is_sum_slice_bit_for_bit() {
        let mut r = crate::rng::Rng::new(12);
        let c = REDUCE_CHUNK;
        for n in [
            0,
            1,
            31,
            33,
            2047,
            2048,
            4100,
            c - 1,
            c,
            c + 1,
            c + 40,
            2 * c,
            2 * c + 31,
            3 * c + 97,
        ] {
            let x: Vec<f32> = (0..n)
                .map(|i| match i % 17 {
                    0 => -0.0,
                    3 => (r.normal() * 1e7) as f32,
                    _ => (r.normal() * 1e-2) as f32,
                })
                .collect();
            for block in [32, 64, 2048, 3 * 32 * 41] {
                let mut s = SumStream::new();
                for b in x.chunks(block) {
                    s.push(b);
                }
                let got = s.finish();
                assert_eq!(
                    got.to_bits(),
                    sum_slice(&x).to_bits(),
                    "{n} elements, blocks of {block}"
                );
                let exact: f64 = x.iter().map(|&v| f64::from(v)).sum();
                let size: f64 = x.iter().map(|&v| f64::from(v).abs()).sum();
                assert!((f64::from(got) - exact).abs() <= 1e-6 * size + 1e-30, "{n}, {block}");
            }
        }
        let mut s = SumStream::new();
        s.push(&[-0.0f64]);
        assert_eq!(s.finish().to_bits(), sum_slice(&[-0.0f64]).to_bits());
        let mut s = SumStream::<f32>::new();
        s.push(&[f32::NAN; 40]);
        assert!(s.finish().is_nan());
    }

    /// The one-pass maxima and minima along an axis against a plain index scan (NaN wins), for
    /// the last axis and inner ones, rows around the lane count, with and without NaN, with
    /// infinities and both zeros (a tie of +0 and −0 may keep either: compared as numbers).
    #[test]
    fn extreme_axis_is_a_plain_scan() {
        let mut r = crate::rng::Rng::new(13);
        let scan = |a: &[f32], shape: &[usize], axis: usize, min: bool| -> Vec<f32> {
            let (outer, n, inner) = split_axis(shape, axis);
            let mut out = Vec::new();
            for o in 0..outer {
                for i in 0..inner {
                    let mut m = a[o * n * inner + i];
                    for j in 1..n {
                        let x = a[(o * n + j) * inner + i];
                        if m.is_nan() {
                            break;
                        }
                        if x.is_nan() || (if min { x < m } else { x > m }) {
                            m = x;
                        }
                    }
                    out.push(m);
                }
            }
            out
        };
        for shape in [
            vec![3, 1],
            vec![5, 31],
            vec![4, 33],
            vec![2, 100],
            vec![3, 7, 5],
            vec![1, 70, 3],
        ] {
            for nan in [false, true] {
                let len: usize = shape.iter().product();
                let x: Vec<f32> = (0..len)
                    .map(|i| match i % 11 {
                        0 => -0.0,
                        1 => 0.0,
                        4 if nan && i % 3 == 0 => f32::NAN,
                        7 => f32::NEG_INFINITY,
                        _ => (r.normal() * 10.0) as f32,
                    })
                    .collect();
                for axis in 0..shape.len() {
                    for min in [false, true] {
                        let want = scan(&x, &shape, axis, min);
                        let got = extreme_axis(&x, &shape, axis, min);
                        assert_eq!(got.len(), want.len());
                        for (g, w) in got.iter().zip(&want) {
                            assert!(
                                g == w || (g.is_nan() && w.is_nan()),
                                "{shape:?} axis {axis} min {min}: {g} vs {w}"
                            );
                        }
                    }
                }
            }
        }
        // The slice forms: the NaN-free value is max_ignoring_nan's, a NaN anywhere wins.
        let x: Vec<f32> = (0..100).map(|i| ((i * 37 % 100) as f32) - 50.0).collect();
        assert_eq!(max_or_nan(&x), max_ignoring_nan(&x));
        assert_eq!(max_or_nan(&x), 49.0);
        assert_eq!(min_or_nan(&x), -50.0);
        let mut y = x.clone();
        y[97] = f32::NAN;
        assert!(max_or_nan(&y).is_nan() && min_or_nan(&y).is_nan() && max_slice(&y).is_nan());
    }
}
