//! Row kernels of the fused softmax family: each works on contiguous rows of length `n` (the
//! reduced axis last; [`Tensor::along_axis`](crate::Tensor) moves another axis there and back).
//! One pass per row where the maths allows: the max, then `exp(x − max)` written straight into
//! the output with its sum, then one scale. Rows are independent, so large inputs are cut into
//! chunks of whole rows across threads ([`crate::tensor::parallel`]); a row's result never
//! depends on which chunk it is in.
//!
//! A row longer than [`BLOCK`] (beyond L1) makes `exp(x − max)` and its sum block by block
//! ([`exp_shifted_sum`]): each block is shifted, exponentiated and added while it is in L1, with
//! the lanes of [`sum_slice`] carried across blocks ([`SumStream`]), so the sum has `sum_slice`'s
//! bits and the row is not read again for it. Measured at 32×32768 `f32` (rows of 128 KiB, in
//! L2 only) the fused cross-entropy and softmax passes per row fall from 4–6 to 2–3.

use super::reduce::SumStream;
use super::{dot, exp_inplace, max_ignoring_nan, sum_slice};
use crate::core::float::Float;
use crate::tensor::parallel;

/// Rows are processed in blocks of about this many elements: the exponentials of a whole block
/// in one vectorised call (so short rows do not each pay its dispatch), the block still in cache.
const BLOCK: usize = 2048;

/// Rows per chunk handed to a thread: about this many elements, whole rows.
const ROW_CHUNK: usize = 1 << 14;

/// Calls `f(first_row, out_chunk)` on chunks of whole rows of `out` (rows of length `n`).
fn row_chunks<T: Float>(out: &mut [T], n: usize, work: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    if n == 0 {
        return;
    }
    let rows = (ROW_CHUNK / n).max(1);
    parallel::chunks_mut(out, rows * n, work, |i, c| f(i * rows, c));
}

/// `y = softmax(x)` row by row: max, exp(x − max) with the sum, scale by 1/sum.
///
/// A NaN in a row makes that whole row NaN (through the sum), without a separate check.
pub(crate) fn softmax_rows<T: Float>(x: &[T], n: usize) -> Vec<T> {
    let mut out = crate::tensor::pool::buffer(x.len());
    row_chunks(&mut out, n, parallel::EXP_WORK * x.len(), |r0, c| {
        softmax_rows_into(&x[r0 * n..r0 * n + c.len()], n, c, None)
    });
    out
}

crate::tensor::vmath::wide_fn! {
    /// [`softmax_rows`] of `x` into `out` (same length), each value then times `k` if given (in
    /// the same pass: `(e · (1/Σe)) · k`, the bits of the two products one after the other).
    fn softmax_rows_into(x: &[T], n: usize, out: &mut [T], k: Option<T>) -> () = softmax_rows_in
}

/// [`softmax_rows_into`]' loops, inlined into each of its wide copies.
#[inline(always)]
fn softmax_rows_in<T: Float>(x: &[T], n: usize, out: &mut [T], k: Option<T>) {
    let scale = |row: &mut [T], inv: T| match k {
        None => row.iter_mut().for_each(|v| *v *= inv),
        Some(k) => row.iter_mut().for_each(|v| *v = *v * inv * k),
    };
    if n > BLOCK {
        for (xr, or) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
            let m = max_ignoring_nan(xr);
            let inv = T::ONE / exp_shifted_sum(xr, m, or);
            scale(or, inv);
        }
        return;
    }
    let block = (BLOCK / n).max(1) * n;
    for (xb, ob) in x.chunks(block).zip(out.chunks_mut(block)) {
        for (xr, or) in xb.chunks_exact(n).zip(ob.chunks_exact_mut(n)) {
            let m = max_ignoring_nan(xr);
            or.iter_mut().zip(xr).for_each(|(o, &v)| *o = v - m);
        }
        exp_inplace(ob);
        for row in ob.chunks_exact_mut(n) {
            scale(row, T::ONE / sum_slice(row));
        }
    }
}

/// `out = exp(x − m)`, returning [`sum_slice`]`(out)` bit for bit: a block of [`BLOCK`] elements
/// at a time is shifted, exponentiated and added to a [`SumStream`] while it is in L1.
#[inline(always)]
fn exp_shifted_sum<T: Float>(x: &[T], m: T, out: &mut [T]) -> T {
    let mut s = SumStream::new();
    for (xb, ob) in x.chunks(BLOCK).zip(out.chunks_mut(BLOCK)) {
        ob.iter_mut().zip(xb).for_each(|(o, &v)| *o = v - m);
        exp_inplace(ob);
        s.push(ob);
    }
    s.finish()
}

/// [`exp_shifted_sum`] without keeping the exponentials: each block is made in `scratch` (at
/// least `min(x.len(), BLOCK)` long) and only its sum kept.
#[inline(always)]
fn exp_shifted_sum_only<T: Float>(x: &[T], m: T, scratch: &mut [T]) -> T {
    let mut s = SumStream::new();
    for xb in x.chunks(BLOCK) {
        let ob = &mut scratch[..xb.len()];
        ob.iter_mut().zip(xb).for_each(|(o, &v)| *o = v - m);
        exp_inplace(ob);
        s.push(ob);
    }
    s.finish()
}

/// `dx = y ⊙ (g − Σ g⊙y)` row by row.
pub(crate) fn softmax_backward_rows<T: Float>(y: &[T], g: &[T], n: usize) -> Vec<T> {
    let mut out = crate::tensor::pool::buffer(y.len());
    row_chunks(&mut out, n, 3 * y.len(), |r0, c| {
        softmax_backward_chunk(&y[r0 * n..r0 * n + c.len()], &g[r0 * n..r0 * n + c.len()], n, c)
    });
    out
}

crate::tensor::vmath::wide_fn! {
    /// [`softmax_backward_rows`] of the rows of `y` and `g` into `out`.
    fn softmax_backward_chunk(y: &[T], g: &[T], n: usize, out: &mut [T]) -> () = softmax_backward_in
}

/// [`softmax_backward_chunk`]'s loop.
#[inline(always)]
fn softmax_backward_in<T: Float>(y: &[T], g: &[T], n: usize, out: &mut [T]) {
    for ((yr, gr), or) in y.chunks_exact(n).zip(g.chunks_exact(n)).zip(out.chunks_exact_mut(n)) {
        let s = dot(yr, gr);
        or.iter_mut()
            .zip(yr.iter().zip(gr))
            .for_each(|(o, (&y, &g))| *o = y * (g - s));
    }
}

/// `x − m − log Σ exp(x − m)` row by row.
pub(crate) fn log_softmax_rows<T: Float>(x: &[T], n: usize) -> Vec<T> {
    let mut out = crate::tensor::pool::buffer(x.len());
    row_chunks(&mut out, n, parallel::EXP_WORK * x.len(), |r0, c| {
        log_softmax_chunk(&x[r0 * n..r0 * n + c.len()], n, c)
    });
    out
}

crate::tensor::vmath::wide_fn! {
    /// [`log_softmax_rows`] of the rows of `x` into `out`.
    fn log_softmax_chunk(x: &[T], n: usize, out: &mut [T]) -> () = log_softmax_in
}

/// [`log_softmax_chunk`]'s loop.
#[inline(always)]
fn log_softmax_in<T: Float>(x: &[T], n: usize, out: &mut [T]) {
    for (row, xr) in out.chunks_exact_mut(n).zip(x.chunks_exact(n)) {
        let lse = logsumexp(xr, row);
        row.iter_mut().zip(xr).for_each(|(o, &v)| *o = v - lse);
    }
}

/// `dx = g − exp(out) · Σg` row by row.
pub(crate) fn log_softmax_backward_rows<T: Float>(out: &[T], g: &[T], n: usize) -> Vec<T> {
    let mut dx = crate::tensor::pool::buffer(out.len());
    row_chunks(&mut dx, n, parallel::EXP_WORK * out.len(), |r0, c| {
        let (oc, gc) = (&out[r0 * n..r0 * n + c.len()], &g[r0 * n..r0 * n + c.len()]);
        c.copy_from_slice(oc);
        log_softmax_backward_chunk(gc, n, c)
    });
    dx
}

crate::tensor::vmath::wide_fn! {
    /// [`log_softmax_backward_rows`] of the rows of `g`, `d` holding the outputs on entry and
    /// the gradient on return.
    fn log_softmax_backward_chunk(g: &[T], n: usize, d: &mut [T]) -> () = log_softmax_backward_in
}

/// [`log_softmax_backward_chunk`]'s loop.
#[inline(always)]
fn log_softmax_backward_in<T: Float>(g: &[T], n: usize, d: &mut [T]) {
    for (d, gr) in d.chunks_exact_mut(n).zip(g.chunks_exact(n)) {
        let s = sum_slice(gr);
        exp_inplace(d);
        d.iter_mut().zip(gr).for_each(|(d, &g)| *d = g - *d * s);
    }
}

/// `log Σ exp(x)` of one row, using `scratch` (same length) for the exponentials.
pub(crate) fn logsumexp<T: Float>(x: &[T], scratch: &mut [T]) -> T {
    // A NaN is ignored here but reaches the result through exp and the sum.
    let m = max_ignoring_nan(x);
    if !m.is_finite() {
        // All −∞ (log 0 = −∞), or a +∞ that must propagate.
        return m;
    }
    m + exp_shifted_sum(x, m, scratch).ln()
}

/// `dx = (softmax(x)·S − t)·k` row by row for class targets (`t` one-hot at `class[r]`, `S = 1`),
/// recomputing the softmax from the logits (the cross-entropy op keeps nothing).
pub(crate) fn cross_entropy_backward_rows<T: Float>(x: &[T], classes: &[usize], k: T, n: usize) -> Vec<T> {
    let mut out = crate::tensor::pool::buffer(x.len());
    row_chunks(&mut out, n, parallel::EXP_WORK * x.len(), |r0, c| {
        softmax_rows_into(&x[r0 * n..r0 * n + c.len()], n, c, Some(k));
        for (row, &cl) in c.chunks_exact_mut(n).zip(&classes[r0..]) {
            row[cl] -= k;
        }
    });
    out
}

/// `dx = (softmax(x)·Σt − t)·k` row by row for probability targets (rows of `t` need not sum to 1).
pub(crate) fn cross_entropy_backward_probs_rows<T: Float>(x: &[T], t: &[T], k: T, n: usize) -> Vec<T> {
    let mut out = crate::tensor::pool::buffer(x.len());
    row_chunks(&mut out, n, parallel::EXP_WORK * x.len(), |r0, c| {
        softmax_rows_into(&x[r0 * n..r0 * n + c.len()], n, c, None);
        probs_rows_gradient(c, &t[r0 * n..r0 * n + c.len()], k, n);
    });
    out
}

crate::tensor::vmath::wide_fn! {
    /// `p ← (p·Σt − t)·k` for each row `p` of `c` and its target row `t`.
    fn probs_rows_gradient(c: &mut [T], t: &[T], k: T, n: usize) -> () = probs_rows_gradient_in
}

/// [`probs_rows_gradient`]'s loop.
#[inline(always)]
fn probs_rows_gradient_in<T: Float>(c: &mut [T], t: &[T], k: T, n: usize) {
    for (row, tr) in c.chunks_exact_mut(n).zip(t.chunks_exact(n)) {
        let st = sum_slice(tr);
        row.iter_mut().zip(tr).for_each(|(p, &t)| *p = (*p * st - t) * k);
    }
}

/// The cross-entropy loss summed over rows: `Σ_r (lse(x_r)·S_r − ⟨t_r, x_r⟩)` (class targets:
/// `lse(x_r) − x_r[class_r]`), computed stably, rows in blocks (see [`softmax_rows`]). Each chunk
/// of rows sums its own rows; the chunks' sums are added in order, at any thread count.
pub(crate) fn cross_entropy_total<T: Float>(x: &[T], classes: Option<&[usize]>, t: Option<&[T]>, n: usize) -> T {
    if n == 0 {
        return T::ZERO;
    }
    let rows = x.len() / n;
    let per = (ROW_CHUNK / n).max(1);
    let parts = parallel::map_collect(rows.div_ceil(per), parallel::EXP_WORK * x.len(), |i| {
        let (r0, r1) = (i * per, ((i + 1) * per).min(rows));
        cross_entropy_chunk(&x[r0 * n..r1 * n], r0, classes, t, n)
    });
    parts.into_iter().fold(T::ZERO, |a, b| a + b)
}

crate::tensor::vmath::wide_fn! {
    /// [`cross_entropy_total`] of the rows in `x`, the first being row `row0` of the whole input.
    fn cross_entropy_chunk(x: &[T], row0: usize, classes: Option<&[usize]>, t: Option<&[T]>, n: usize) -> T = cross_entropy_chunk_in
}

/// [`cross_entropy_chunk`]'s loops.
#[inline(always)]
fn cross_entropy_chunk_in<T: Float>(x: &[T], row0: usize, classes: Option<&[usize]>, t: Option<&[T]>, n: usize) -> T {
    let row_total = |row: usize, xr: &[T], lse: T| match (classes, t) {
        (Some(c), _) => lse - xr[c[row]],
        (None, Some(t)) => {
            let tr = &t[row * n..(row + 1) * n];
            lse * sum_slice(tr) - dot(tr, xr)
        }
        (None, None) => unreachable!("cross-entropy needs targets"),
    };
    let mut total = T::ZERO;
    if n > BLOCK {
        let mut scratch = vec![T::ZERO; BLOCK];
        for (r, xr) in x.chunks_exact(n).enumerate() {
            let m = max_ignoring_nan(xr);
            // As below: the shifted exponentials' sum has `sum_slice`'s bits.
            let lse = if m.is_finite() {
                m + exp_shifted_sum_only(xr, m, &mut scratch).ln()
            } else {
                m
            };
            total += row_total(row0 + r, xr, lse);
        }
        return total;
    }
    let rows_per_block = (BLOCK / n).max(1);
    let mut scratch = vec![T::ZERO; rows_per_block * n];
    let mut maxima = vec![T::ZERO; rows_per_block];
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
            total += row_total(row0 + b * rows_per_block + r, xr, lse);
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows longer than [`BLOCK`] (made block by block) give the bits of the whole-row recipe
    /// written out here — shift the row, exponentiate it, `sum_slice` it, scale — for softmax,
    /// log-softmax, the cross-entropy total and its backward, in `f32` and `f64`, at lengths
    /// around the block and the reduction chunk; and the softmax is the f64 softmax within
    /// rounding (an independent check of the recipe itself).
    #[test]
    fn long_rows_keep_the_whole_row_bits() {
        fn whole_row<T: Float>(xr: &[T]) -> (Vec<T>, T, T) {
            let m = max_ignoring_nan(xr);
            let mut e: Vec<T> = xr.iter().map(|&v| v - m).collect();
            exp_inplace(&mut e);
            let s = sum_slice(&e);
            (e, m, s)
        }
        fn check<T: Float>(n: usize, seed: u64) {
            let rows = 3;
            let mut r = crate::rng::Rng::new(seed);
            let x: Vec<T> = (0..rows * n).map(|_| T::from_f64(r.normal() * 4.0)).collect();
            let classes: Vec<usize> = (0..rows).map(|i| (i * 7919) % n).collect();
            let k = T::from_f64(0.375);
            let y = softmax_rows(&x, n);
            let ls = log_softmax_rows(&x, n);
            let dx = cross_entropy_backward_rows(&x, &classes, k, n);
            let mut total = T::ZERO;
            for (i, xr) in x.chunks_exact(n).enumerate() {
                let (e, m, s) = whole_row(xr);
                let inv = T::ONE / s;
                let lse = m + s.ln();
                total += lse - xr[classes[i]];
                let f64_sum: f64 = xr.iter().map(|&v| (v.to_f64() - m.to_f64()).exp()).sum();
                for j in 0..n {
                    let (at, want) = (i * n + j, e[j] * inv);
                    assert_eq!(y[at].to_f64().to_bits(), want.to_f64().to_bits(), "softmax {n} {at}");
                    let mut d = want * k;
                    if j == classes[i] {
                        d -= k;
                    }
                    assert_eq!(dx[at].to_f64().to_bits(), d.to_f64().to_bits(), "ce backward {n} {at}");
                    let l = xr[j] - lse;
                    assert_eq!(ls[at].to_f64().to_bits(), l.to_f64().to_bits(), "log_softmax {n} {at}");
                    let exact = (xr[j].to_f64() - m.to_f64()).exp() / f64_sum;
                    assert!(
                        (y[at].to_f64() - exact).abs() <= 1e-5 * exact + 1e-12,
                        "softmax {n} {at}"
                    );
                }
            }
            let got = cross_entropy_total(&x, Some(&classes), None, n);
            assert_eq!(got.to_f64().to_bits(), total.to_f64().to_bits(), "ce total {n}");
        }
        let c = crate::tensor::parallel::REDUCE_CHUNK;
        for (i, n) in [BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK + 37, c, c + 33, 2 * c + 5]
            .into_iter()
            .enumerate()
        {
            check::<f32>(n, 40 + i as u64);
            check::<f64>(n, 60 + i as u64);
        }
    }
}
