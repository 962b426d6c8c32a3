//! Row kernels of layer normalisation: each works on contiguous rows of length `n` (the
//! normalised axis last). Rows are independent, so large inputs are cut into chunks of whole rows
//! across threads ([`crate::tensor::parallel`]); a row's result never depends on which chunk it is
//! in. Per row: the mean, then the variance of the centred values (two passes, so a large mean
//! does not cancel the variance away), then one pass writing the output.

use super::{dot, sum_slice};
use crate::core::float::Float;
use crate::tensor::parallel;

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

/// The mean of a row and `1/√(var + eps)`, its biased variance computed from the centred values.
/// A NaN anywhere in the row makes both NaN.
fn moments<T: Float>(x: &[T], eps: T) -> (T, T) {
    let n = T::from_usize(x.len());
    let mu = sum_slice(x) / n;
    let mut ss = T::ZERO;
    for &v in x {
        let d = v - mu;
        ss += d * d;
    }
    (mu, T::ONE / (ss / n + eps).sqrt())
}

/// `y = (x − mean) / √(var + eps) · w + b` row by row; `w` and `b` (length `n`) are optional.
pub(crate) fn layer_norm_rows<T: Float>(x: &[T], w: Option<&[T]>, b: Option<&[T]>, eps: T, n: usize) -> Vec<T> {
    let mut out = crate::tensor::pool::buffer(x.len());
    row_chunks(&mut out, n, 3 * x.len(), |r0, c| {
        let xc = &x[r0 * n..r0 * n + c.len()];
        for (xr, or) in xc.chunks_exact(n).zip(c.chunks_exact_mut(n)) {
            let (mu, r) = moments(xr, eps);
            for (j, (o, &v)) in or.iter_mut().zip(xr).enumerate() {
                let mut y = (v - mu) * r;
                if let Some(w) = w {
                    y *= w[j];
                }
                if let Some(b) = b {
                    y += b[j];
                }
                *o = y;
            }
        }
    });
    out
}

/// `dx = r · (h − mean(h) − x̂ · mean(h ⊙ x̂))` row by row, with `x̂ = (x − mean) · r` and
/// `r = 1/√(var + eps)` recomputed from `x`; `h` is the gradient with respect to `x̂`.
pub(crate) fn layer_norm_backward_rows<T: Float>(x: &[T], h: &[T], eps: T, n: usize) -> Vec<T> {
    let mut out = crate::tensor::pool::buffer(x.len());
    let nf = T::from_usize(n);
    row_chunks(&mut out, n, 4 * x.len(), |r0, c| {
        let (xc, hc) = (&x[r0 * n..r0 * n + c.len()], &h[r0 * n..r0 * n + c.len()]);
        for ((xr, hr), or) in xc.chunks_exact(n).zip(hc.chunks_exact(n)).zip(c.chunks_exact_mut(n)) {
            let (mu, r) = moments(xr, eps);
            // x̂ into the output row first, then overwritten by dx.
            or.iter_mut().zip(xr).for_each(|(o, &v)| *o = (v - mu) * r);
            let hbar = sum_slice(hr) / nf;
            let a = dot(hr, or) / nf;
            or.iter_mut().zip(hr).for_each(|(o, &g)| *o = r * (g - hbar - *o * a));
        }
    });
    out
}
