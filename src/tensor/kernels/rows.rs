//! Row kernels of the fused softmax family: each works on contiguous rows of length `n` (the
//! reduced axis last; [`Tensor::along_axis`](crate::Tensor) moves another axis there and back).
//! One pass per row where the maths allows: the max, then `exp(x − max)` written straight into
//! the output with its sum, then one scale.

use super::{dot, exp_inplace, max_ignoring_nan, sum_slice};
use crate::core::float::Float;

/// Rows are processed in blocks of about this many elements: the exponentials of a whole block
/// in one vectorised call (so short rows do not each pay its dispatch), the block still in cache.
const BLOCK: usize = 2048;

/// `y = softmax(x)` row by row: max, exp(x − max) with the sum, scale by 1/sum.
///
/// A NaN in a row makes that whole row NaN (through the sum), without a separate check.
pub(crate) fn softmax_rows<T: Float>(x: &[T], n: usize) -> Vec<T> {
    let mut out = crate::tensor::pool::alloc(x.len());
    for xb in x.chunks((BLOCK / n).max(1) * n) {
        let start = out.len();
        for xr in xb.chunks_exact(n) {
            let m = max_ignoring_nan(xr);
            out.extend(xr.iter().map(|&v| v - m));
        }
        let block = &mut out[start..];
        exp_inplace(block);
        for row in block.chunks_exact_mut(n) {
            let inv = T::ONE / sum_slice(row);
            row.iter_mut().for_each(|v| *v *= inv);
        }
    }
    out
}

/// `dx = y ⊙ (g − Σ g⊙y)` row by row.
pub(crate) fn softmax_backward_rows<T: Float>(y: &[T], g: &[T], n: usize) -> Vec<T> {
    let mut out = crate::tensor::pool::alloc(y.len());
    for (yr, gr) in y.chunks_exact(n).zip(g.chunks_exact(n)) {
        let s = dot(yr, gr);
        out.extend(yr.iter().zip(gr).map(|(&y, &g)| y * (g - s)));
    }
    out
}

/// `x − m − log Σ exp(x − m)` row by row.
pub(crate) fn log_softmax_rows<T: Float>(x: &[T], n: usize) -> Vec<T> {
    let mut out = crate::tensor::pool::copy(x);
    for (row, xr) in out.chunks_exact_mut(n).zip(x.chunks_exact(n)) {
        let lse = logsumexp(xr, row);
        row.iter_mut().zip(xr).for_each(|(o, &v)| *o = v - lse);
    }
    out
}

/// `dx = g − exp(out) · Σg` row by row.
pub(crate) fn log_softmax_backward_rows<T: Float>(out: &[T], g: &[T], n: usize) -> Vec<T> {
    let mut dx = crate::tensor::pool::copy(out);
    for (d, gr) in dx.chunks_exact_mut(n).zip(g.chunks_exact(n)) {
        let s = sum_slice(gr);
        exp_inplace(d);
        d.iter_mut().zip(gr).for_each(|(d, &g)| *d = g - *d * s);
    }
    dx
}

/// `log Σ exp(x)` of one row, using `scratch` (same length) for the exponentials.
pub(crate) fn logsumexp<T: Float>(x: &[T], scratch: &mut [T]) -> T {
    // A NaN is ignored here but reaches the result through exp and the sum.
    let m = max_ignoring_nan(x);
    if !m.is_finite() {
        // All −∞ (log 0 = −∞), or a +∞ that must propagate.
        return m;
    }
    scratch.iter_mut().zip(x).for_each(|(s, &v)| *s = v - m);
    exp_inplace(scratch);
    m + sum_slice(scratch).ln()
}

/// `dx = (softmax(x)·S − t)·k` row by row for class targets (`t` one-hot at `class[r]`, `S = 1`),
/// recomputing the softmax from the logits (the cross-entropy op keeps nothing).
pub(crate) fn cross_entropy_backward_rows<T: Float>(x: &[T], classes: &[usize], k: T, n: usize) -> Vec<T> {
    let mut out = softmax_rows(x, n);
    for (row, &c) in out.chunks_exact_mut(n).zip(classes) {
        row.iter_mut().for_each(|v| *v *= k);
        row[c] -= k;
    }
    out
}

/// `dx = (softmax(x)·Σt − t)·k` row by row for probability targets (rows of `t` need not sum to 1).
pub(crate) fn cross_entropy_backward_probs_rows<T: Float>(x: &[T], t: &[T], k: T, n: usize) -> Vec<T> {
    let mut out = softmax_rows(x, n);
    for (row, tr) in out.chunks_exact_mut(n).zip(t.chunks_exact(n)) {
        let st = sum_slice(tr);
        row.iter_mut().zip(tr).for_each(|(p, &t)| *p = (*p * st - t) * k);
    }
    out
}

/// The cross-entropy loss summed over rows: `Σ_r (lse(x_r)·S_r − ⟨t_r, x_r⟩)` (class targets:
/// `lse(x_r) − x_r[class_r]`), computed stably, rows in blocks (see [`softmax_rows`]).
pub(crate) fn cross_entropy_total<T: Float>(x: &[T], classes: Option<&[usize]>, t: Option<&[T]>, n: usize) -> T {
    let rows_per_block = (BLOCK / n).max(1);
    let mut scratch = vec![T::ZERO; rows_per_block * n];
    let mut maxima = vec![T::ZERO; rows_per_block];
    let mut total = T::ZERO;
    for (b, xb) in x.chunks(rows_per_block * n).enumerate() {
        let k = xb.len() / n;
        for (r, xr) in xb.chunks_exact(n).enumerate() {
            let m = max_ignoring_nan(xr);
            maxima[r] = m;
            scratch[r * n..(r + 1) * n]
                .iter_mut()
                .zip(xr)
                .for_each(|(s, &v)| *s = v - m);
        }
        exp_inplace(&mut scratch[..k * n]);
        for (r, xr) in xb.chunks_exact(n).enumerate() {
            let m = maxima[r];
            // All −∞ (log 0 = −∞), or a +∞ that must propagate; a NaN reaches lse through the sum.
            let lse = if m.is_finite() {
                m + sum_slice(&scratch[r * n..(r + 1) * n]).ln()
            } else {
                m
            };
            let row = b * rows_per_block + r;
            total += match (classes, t) {
                (Some(c), _) => lse - xr[c[row]],
                (None, Some(t)) => {
                    let tr = &t[row * n..(row + 1) * n];
                    lse * sum_slice(tr) - dot(tr, xr)
                }
                (None, None) => unreachable!("cross-entropy needs targets"),
            };
        }
    }
    total
}
