//! The matrix product: `matrixmultiply`'s `sgemm`/`dgemm` behind a bounds-checked safe wrapper,
//! and the batched, broadcasting `op(A) @ op(B)` built on it.

use crate::core::float::{Float, Slice, SliceMut};
use crate::core::shape::{broadcast_strides, numel};
use crate::tensor::parallel;
use smallvec::SmallVec;

/// Checks that strided gemm operands stay inside their buffers (panics otherwise). The arithmetic
/// is checked: sizes whose last index would overflow are out of bounds, never wrapped into range.
/// This is what makes the `unsafe` call in [`gemm`] sound.
#[allow(clippy::too_many_arguments)]
pub(crate) fn check_gemm_bounds(
    m: usize,
    k: usize,
    n: usize,
    alen: usize,
    rsa: isize,
    csa: isize,
    blen: usize,
    rsb: isize,
    csb: isize,
    clen: usize,
) {
    // One past the last index an r×c view with strides (rs, cs) touches; `None` on overflow.
    let end = |r: usize, c: usize, rs: isize, cs: isize| -> Option<usize> {
        assert!(rs >= 0 && cs >= 0, "gemm: negative strides are not supported");
        if r == 0 || c == 0 {
            return Some(0);
        }
        let row = (r - 1).checked_mul(rs as usize)?;
        let col = (c - 1).checked_mul(cs as usize)?;
        row.checked_add(col)?.checked_add(1)
    };
    let fits = |end: Option<usize>, len: usize| end.is_some_and(|e| e <= len);
    assert!(fits(end(m, k, rsa, csa), alen), "gemm: A out of bounds");
    assert!(fits(end(k, n, rsb, csb), blen), "gemm: B out of bounds");
    assert!(fits(m.checked_mul(n), clen), "gemm: C out of bounds");
}

/// Batched matrix product `op(A) @ op(B)` where `op` transposes the last two axes when its flag is
/// set. Leading (batch) axes broadcast; both operands have at least two axes.
pub(crate) fn matmul<T: Float>(
    a: &[T],
    a_shape: &[usize],
    ta: bool,
    b: &[T],
    b_shape: &[usize],
    tb: bool,
    batch: &[usize],
) -> Vec<T> {
    let (ra, ca) = (a_shape[a_shape.len() - 2], a_shape[a_shape.len() - 1]);
    let (rb, cb) = (b_shape[b_shape.len() - 2], b_shape[b_shape.len() - 1]);
    let (m, k) = if ta { (ca, ra) } else { (ra, ca) };
    let n = if tb { rb } else { cb };
    // Strides of op(A) and op(B) inside one matrix.
    let (rsa, csa) = if ta { (1, ca as isize) } else { (ca as isize, 1) };
    let (rsb, csb) = if tb { (1, cb as isize) } else { (cb as isize, 1) };
    let nb = numel(batch);
    // The caller checked the output shape; checked anyway so that a mistake there cannot wrap.
    let mn = m.checked_mul(n).expect("matmul: output size overflows");
    let len = nb.checked_mul(mn).expect("matmul: output size overflows");
    let mut out = crate::tensor::pool::buffer(len);
    if mn == 0 {
        return out;
    }
    if !ta && b_shape.len() == 2 && numel(&a_shape[..a_shape.len() - 2]) == nb {
        // A batch of row blocks times one matrix: the rows of all of A, contiguous, are one
        // (nb·m)×k matrix, so this is one product — B is packed once, not once per batch element.
        gemm_rows(nb * m, k, n, a, rsa, csa, b, rsb, csb, &mut out);
        return out;
    }
    let work = nb.saturating_mul(mn).saturating_mul(k) / GEMM_WORK_PER_ELEMENT;
    if nb > 1 && parallel::would_split(work) {
        // Many products: one task per chunk of whole output matrices.
        let a_batch = &a_shape[..a_shape.len() - 2];
        let b_batch = &b_shape[..b_shape.len() - 2];
        let (sa, sb) = (broadcast_strides(a_batch, batch), broadcast_strides(b_batch, batch));
        let (asz, bsz) = (ra * ca, rb * cb);
        let per = (GEMM_CHUNK_WORK / (mn * k.max(1))).max(1);
        parallel::chunks_mut(&mut out, per * mn, work, |i, c| {
            for (j, c_m) in c.chunks_exact_mut(mn).enumerate() {
                let (ia, ib) = batch_offsets(i * per + j, batch, &sa, &sb);
                let a_m = &a[ia * asz..ia * asz + asz];
                let b_m = &b[ib * bsz..ib * bsz + bsz];
                gemm(m, k, n, a_m, rsa, csa, b_m, rsb, csb, c_m);
            }
        });
        return out;
    }
    let a_batch = &a_shape[..a_shape.len() - 2];
    let b_batch = &b_shape[..b_shape.len() - 2];
    let sa = broadcast_strides(a_batch, batch);
    let sb = broadcast_strides(b_batch, batch);
    let (asz, bsz) = (ra * ca, rb * cb);
    let mut bi = 0;
    let mut off = [0usize; 2];
    let mut idx: SmallVec<[usize; 4]> = SmallVec::from_elem(0, batch.len());
    while bi < nb {
        let a_m = &a[off[0] * asz..off[0] * asz + asz];
        let b_m = &b[off[1] * bsz..off[1] * bsz + bsz];
        let c_m = &mut out[bi * mn..(bi + 1) * mn];
        gemm_rows(m, k, n, a_m, rsa, csa, b_m, rsb, csb, c_m);
        bi += 1;
        // Advance the batch odometer.
        for ax in (0..batch.len()).rev() {
            idx[ax] += 1;
            off[0] += sa[ax];
            off[1] += sb[ax];
            if idx[ax] < batch[ax] {
                break;
            }
            off[0] -= sa[ax] * batch[ax];
            off[1] -= sb[ax] * batch[ax];
            idx[ax] = 0;
        }
    }
    out
}

/// Multiply-adds that count as one element of work when deciding whether a product splits across
/// threads ([`parallel::min_parallel_elements`] counts elements).
const GEMM_WORK_PER_ELEMENT: usize = 16;
/// About this many multiply-adds per task of a batch of products.
const GEMM_CHUNK_WORK: usize = 1 << 21;

/// The batch operands' matrix indices for output matrix `bi` (leading axes broadcast).
fn batch_offsets(mut bi: usize, batch: &[usize], sa: &[usize], sb: &[usize]) -> (usize, usize) {
    let (mut ia, mut ib) = (0, 0);
    for ax in (0..batch.len()).rev() {
        let i = bi % batch[ax];
        bi /= batch[ax];
        ia += i * sa[ax];
        ib += i * sb[ax];
    }
    (ia, ib)
}

/// [`gemm`], split across threads when the product is large: into one band of output rows per
/// thread, or — when `op(B)` is wider than `op(A)` is tall, so that packing all of `B` in every
/// task would cost more than packing all of `A` — one band of output columns per thread, each
/// computed into its own buffer and copied into place. Every element of `C` is the same dot
/// product, accumulated in the same order (the packing blocks `k` the same way for any band),
/// whatever the split and the thread count.
///
/// One band per thread, not more: each band repacks the whole other operand. Measured on the W6
/// MLP's products with two threads (medians of 200, this machine noisy): `xᵀ·dh`
/// (784×128·128×256) 331–342 µs with 7 row bands (m/8, the earlier split), 217–248 µs with 2.
#[allow(clippy::too_many_arguments)]
fn gemm_rows<T: Float>(
    m: usize,
    k: usize,
    n: usize,
    a: &[T],
    rsa: isize,
    csa: isize,
    b: &[T],
    rsb: isize,
    csb: isize,
    c: &mut [T],
) {
    let work = m.saturating_mul(n).saturating_mul(k) / GEMM_WORK_PER_ELEMENT;
    let parts = parallel::num_threads().max(1);
    // Bands of a multiple of 16 rows or columns (whole register tiles), at least 64.
    let band = |len: usize| len.div_ceil(parts).div_ceil(16).max(4) * 16;
    if parts == 1 || n == 0 || !parallel::would_split(work) || (m <= band(m) && n <= band(n)) {
        return gemm(m, k, n, a, rsa, csa, b, rsb, csb, c);
    }
    if n > m && n > band(n) {
        let cols = band(n);
        // The bands' buffers are allocated (and freed) by the calling thread, like every other
        // buffer of a kernel's.
        let jobs: Vec<(usize, Vec<T>)> = (0..n.div_ceil(cols))
            .map(|i| (i, vec![T::ZERO; m * cols.min(n - i * cols)]))
            .collect();
        let bands = parallel::map_owned(jobs, work, |(i, mut part)| {
            let (c0, nb) = (i * cols, part.len() / m);
            // Column c0 of op(B) starts at c0 · csb; the view ends inside `b` (checked in gemm).
            gemm(m, k, nb, a, rsa, csa, &b[c0 * csb as usize..], rsb, csb, &mut part);
            part
        });
        for (i, part) in bands.iter().enumerate() {
            let c0 = i * cols;
            let nb = part.len() / m;
            for (row, src) in c.chunks_exact_mut(n).zip(part.chunks_exact(nb)) {
                row[c0..c0 + nb].copy_from_slice(src);
            }
        }
        return;
    }
    // Here m > band(m): with two or more parts, m ≤ band(m) means m ≤ 64, and then n (≤ m, or
    // ≤ band(n) when wider) left with the first check.
    let rows = band(m);
    parallel::chunks_mut(c, rows * n, work, |i, band| {
        let r0 = i * rows;
        let mb = band.len() / n;
        // Row r0 of op(A) starts at r0 · rsa; the band's view ends inside `a` (checked in gemm).
        let start = r0 * rsa as usize;
        gemm(mb, k, n, &a[start..], rsa, csa, b, rsb, csb, band);
    });
}

/// `C ← op(A)·op(B)` for strided `m×k` and `k×n` views and a contiguous row-major `m×n` `C`
/// (overwritten). Panics when a view would reach outside its slice.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm<T: Float>(
    m: usize,
    k: usize,
    n: usize,
    a: &[T],
    rsa: isize,
    csa: isize,
    b: &[T],
    rsb: isize,
    csb: isize,
    c: &mut [T],
) {
    check_gemm_bounds(m, k, n, a.len(), rsa, csa, b.len(), rsb, csb, c.len());
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY (both arms): `check_gemm_bounds` asserted that every index the strided m×k, k×n and
    // m×n (row-major, contiguous) views touch lies inside the three slices, and `c` is borrowed
    // mutably so it cannot alias `a` or `b`.
    macro_rules! call {
        ($gemm:path, $a:expr, $b:expr, $c:expr) => {
            unsafe {
                $gemm(
                    m,
                    k,
                    n,
                    1.0,
                    $a.as_ptr(),
                    rsa,
                    csa,
                    $b.as_ptr(),
                    rsb,
                    csb,
                    0.0,
                    $c.as_mut_ptr(),
                    n as isize,
                    1,
                )
            }
        };
    }
    match (T::slice(a), T::slice(b), T::slice_mut(c)) {
        (Slice::F32(a), Slice::F32(b), SliceMut::F32(c)) => call!(matrixmultiply::sgemm, a, b, c),
        (Slice::F64(a), Slice::F64(b), SliceMut::F64(c)) => call!(matrixmultiply::dgemm, a, b, c),
        _ => unreachable!("a, b and c have one element type"),
    }
}

#[cfg(test)]
mod tests {
    use super::gemm;

    #[test]
    fn gemm_bounds_checks_do_not_wrap() {
        // m = 2^62 + 1 with a row stride of 4: (m − 1) · 4 wraps to 0, so a one-element A passed
        // the old bounds check (and m · n wrapped to 4, so did C); in release gemm then went far
        // out of bounds. The check must refuse instead.
        let (a, b, mut c) = ([1.0f64], [1.0f64; 4], [0.0f64; 4]);
        let r = std::panic::catch_unwind(move || gemm((1 << 62) + 1, 1, 4, &a, 4, 1, &b, 4, 1, &mut c));
        let msg = r
            .unwrap_err()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .unwrap_or_default();
        assert!(msg.contains("gemm: A out of bounds"), "{msg}");
    }

    #[test]
    fn gemm_multiplies_strided_views() {
        // [[1, 2], [3, 4]] · [[5, 6], [7, 8]]ᵀ (B read transposed through its strides)
        let (a, b, mut c) = ([1.0f32, 2.0, 3.0, 4.0], [5.0f32, 6.0, 7.0, 8.0], [0.0f32; 4]);
        gemm(2, 2, 2, &a, 2, 1, &b, 1, 2, &mut c);
        assert_eq!(c, [17.0, 23.0, 39.0, 53.0]);
    }
}
