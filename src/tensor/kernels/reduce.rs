//! Reductions: sums and dot products with independent accumulators (so they vectorise and
//! pipeline, in a fixed order: results do not depend on the machine), maxima, sums and arg-maxima
//! along one axis.

use crate::core::float::Float;
use crate::core::shape::numel;

/// Lanes of the reductions below: 32 independent accumulators, i.e. several vector registers,
/// so the loop is bound by load throughput rather than by the latency of one chain of adds.
const LANES: usize = 32;

/// Sums `acc` pairwise (a fixed order, so results do not depend on the machine).
fn fold_lanes<T: Float>(mut acc: [T; LANES], op: impl Fn(T, T) -> T) -> T {
    let mut n = LANES;
    while n > 1 {
        n /= 2;
        for k in 0..n {
            acc[k] = op(acc[k], acc[k + n]);
        }
    }
    acc[0]
}

/// Sum of a slice with independent accumulators (so the loop vectorises and pipelines).
pub(crate) fn sum_slice<T: Float>(x: &[T]) -> T {
    let mut acc = [T::ZERO; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
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

/// `Σ a_i b_i` with independent accumulators.
pub(crate) fn dot<T: Float>(a: &[T], b: &[T]) -> T {
    let mut acc = [T::ZERO; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
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

/// Maximum of a slice, ignoring NaN (−∞ for an empty or all-NaN slice). Callers whose result
/// must be NaN when the input has one get it from later arithmetic (see softmax).
pub(crate) fn max_ignoring_nan<T: Float>(x: &[T]) -> T {
    let pick = |a: T, b: T| if b > a { b } else { a };
    let mut acc = [T::NEG_INFINITY; LANES];
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
    let m = max_ignoring_nan(x);
    if x.iter().any(|v| v.is_nan()) { T::NAN } else { m }
}

/// Splits `shape` around `axis` into (outer, extent, inner) sizes.
pub(crate) fn split_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (numel(&shape[..axis]), shape[axis], numel(&shape[axis + 1..]))
}

/// Sum over one axis; the result has that axis removed (callers reshape for `keepdim`).
pub(crate) fn sum_axis<T: Float>(a: &[T], shape: &[usize], axis: usize) -> Vec<T> {
    let (outer, n, inner) = split_axis(shape, axis);
    if n == 0 {
        return vec![T::ZERO; outer * inner]; // an empty sum is 0
    }
    if inner == 1 {
        return a.chunks_exact(n).take(outer).map(sum_slice).collect::<Vec<_>>();
    }
    let mut out = crate::tensor::pool::filled(outer * inner, T::ZERO);
    for o in 0..outer {
        let dst = &mut out[o * inner..(o + 1) * inner];
        for j in 0..n {
            let src = &a[(o * n + j) * inner..(o * n + j + 1) * inner];
            for (d, &s) in dst.iter_mut().zip(src) {
                *d += s;
            }
        }
    }
    out
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
