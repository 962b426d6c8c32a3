//! Numeric kernels on contiguous row-major buffers: strided runs, broadcasting, reductions, matmul.
//!
//! Everything here works on plain slices and shapes; the [`Tensor`](super::Tensor) methods wrap it.

use crate::core::float::Float;
use crate::core::shape::{Shape, broadcast_strides, numel, strides};
use smallvec::SmallVec;

type Dims<const K: usize> = SmallVec<[(usize, [usize; K]); 4]>;

/// Calls `f(offsets, len, inner_strides)` once per innermost run of a strided walk over `shape`,
/// where operand `k` is read with `strides[k]`. Adjacent axes that are contiguous for every operand
/// are merged first, so a same-shape walk is a single run and a row broadcast is one run per row.
pub(crate) fn for_each_run<const K: usize>(
    shape: &[usize],
    strides: [&[usize]; K],
    mut f: impl FnMut([usize; K], usize, [usize; K]),
) {
    if shape.contains(&0) {
        return;
    }
    // Drop extent-1 axes, then merge contiguous neighbours.
    let mut dims: Dims<K> = SmallVec::new();
    for (i, &n) in shape.iter().enumerate() {
        if n == 1 {
            continue;
        }
        let st: [usize; K] = std::array::from_fn(|k| strides[k][i]);
        // Checked products: for a valid shape they cannot overflow, and must not wrap if it did.
        if let Some(last) = dims.last_mut()
            && (0..K).all(|k| st[k].checked_mul(n) == Some(last.1[k]))
        {
            last.0 = last.0.checked_mul(n).expect("for_each_run: extent overflow");
            last.1 = st;
            continue;
        }
        dims.push((n, st));
    }
    let Some(&(inner_len, inner_st)) = dims.last() else {
        f([0; K], 1, [0; K]);
        return;
    };
    let outer = &dims[..dims.len() - 1];
    let mut idx: SmallVec<[usize; 4]> = SmallVec::from_elem(0, outer.len());
    let mut off = [0usize; K];
    loop {
        f(off, inner_len, inner_st);
        // Advance the odometer over the outer axes.
        let mut ax = outer.len();
        loop {
            if ax == 0 {
                return;
            }
            ax -= 1;
            idx[ax] += 1;
            for (k, o) in off.iter_mut().enumerate() {
                *o += outer[ax].1[k];
            }
            if idx[ax] < outer[ax].0 {
                break;
            }
            for (k, o) in off.iter_mut().enumerate() {
                *o -= outer[ax].1[k] * outer[ax].0;
            }
            idx[ax] = 0;
        }
    }
}

/// `out[i] = f(a[i], b[i])` with `a` and `b` broadcast to `out_shape`.
pub(crate) fn binary<T: Float>(
    a: &[T],
    a_shape: &[usize],
    b: &[T],
    b_shape: &[usize],
    out_shape: &[usize],
    f: impl Fn(T, T) -> T,
) -> Vec<T> {
    let n = numel(out_shape);
    if a_shape == b_shape {
        return super::pool::collect(n, a.iter().zip(b).map(|(&x, &y)| f(x, y)));
    }
    if b.len() == 1 && a_shape == out_shape {
        let y = b[0];
        return super::pool::collect(n, a.iter().map(|&x| f(x, y)));
    }
    if a.len() == 1 && b_shape == out_shape {
        let x = a[0];
        return super::pool::collect(n, b.iter().map(|&y| f(x, y)));
    }
    let mut out = super::pool::alloc(n);
    let sa = broadcast_strides(a_shape, out_shape);
    let sb = broadcast_strides(b_shape, out_shape);
    for_each_run(out_shape, [&sa, &sb], |[oa, ob], len, [ia, ib]| match (ia, ib) {
        (1, 1) => out.extend(a[oa..oa + len].iter().zip(&b[ob..ob + len]).map(|(&x, &y)| f(x, y))),
        (1, 0) => {
            let y = b[ob];
            out.extend(a[oa..oa + len].iter().map(|&x| f(x, y)));
        }
        (0, 1) => {
            let x = a[oa];
            out.extend(b[ob..ob + len].iter().map(|&y| f(x, y)));
        }
        _ => out.extend((0..len).map(|j| f(a[oa + j * ia], b[ob + j * ib]))),
    });
    debug_assert_eq!(out.len(), n);
    out
}

/// Materialises `a` (shape `from`) broadcast to `to`.
pub(crate) fn broadcast_to<T: Float>(a: &[T], from: &[usize], to: &[usize]) -> Vec<T> {
    let mut out = super::pool::alloc(numel(to));
    let sa = broadcast_strides(from, to);
    for_each_run(to, [&sa], |[oa], len, [ia]| {
        if ia == 1 {
            out.extend_from_slice(&a[oa..oa + len]);
        } else if ia == 0 {
            out.extend(std::iter::repeat_n(a[oa], len));
        } else {
            out.extend((0..len).map(|j| a[oa + j * ia]));
        }
    });
    out
}

/// Sums `a` (shape `from`) down to shape `to`, the inverse of broadcasting `to` up to `from`.
pub(crate) fn sum_to<T: Float>(a: &[T], from: &[usize], to: &[usize]) -> Vec<T> {
    let mut out = super::pool::filled(numel(to), T::ZERO);
    // Walk the input contiguously; the output is read with broadcast (0) strides.
    let so = broadcast_strides(to, from);
    let si = strides(from);
    for_each_run(from, [&si, &so], |[ii, oo], len, [_, io]| {
        let src = &a[ii..ii + len];
        if io == 0 {
            out[oo] += sum_slice(src);
        } else if io == 1 {
            for (o, &x) in out[oo..oo + len].iter_mut().zip(src) {
                *o += x;
            }
        } else {
            for (j, &x) in src.iter().enumerate() {
                out[oo + j * io] += x;
            }
        }
    });
    out
}

/// Copies `a` (shape `shape`) into the layout of its axes permuted by `perm`.
pub(crate) fn permute<T: Float>(a: &[T], shape: &[usize], perm: &[usize]) -> Vec<T> {
    let st = strides(shape);
    let new_shape: Shape = perm.iter().map(|&p| shape[p]).collect();
    let new_st: SmallVec<[usize; 4]> = perm.iter().map(|&p| st[p]).collect();
    let mut out = super::pool::alloc(a.len());
    if new_shape.len() == 2 {
        // Plain 2-D transpose: walk in tiles so both sides stay in cache.
        let (r, c) = (new_shape[0], new_shape[1]);
        out.resize(a.len(), T::ZERO);
        const TILE: usize = 32;
        for i0 in (0..r).step_by(TILE) {
            for j0 in (0..c).step_by(TILE) {
                for i in i0..(i0 + TILE).min(r) {
                    for j in j0..(j0 + TILE).min(c) {
                        out[i * c + j] = a[i * new_st[0] + j * new_st[1]];
                    }
                }
            }
        }
        return out;
    }
    for_each_run(&new_shape, [&new_st], |[o], len, [s]| {
        if s == 1 {
            out.extend_from_slice(&a[o..o + len]);
        } else {
            out.extend((0..len).map(|j| a[o + j * s]));
        }
    });
    out
}

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
    let mut out = super::pool::filled(outer * inner, T::ZERO);
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

/// Checks that strided gemm operands stay inside their buffers (panics otherwise). The arithmetic
/// is checked: sizes whose last index would overflow are out of bounds, never wrapped into range.
/// This is what makes the `unsafe` call in `Float::gemm` sound.
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
    let mut out = super::pool::filled(len, T::ZERO);
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
        T::gemm(m, k, n, a_m, rsa, csa, b_m, rsb, csb, c_m, T::ZERO);
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

/// `x ← eˣ` elementwise (the one place softmax-like kernels exponentiate a slice).
pub(crate) fn exp_inplace<T: Float>(x: &mut [T]) {
    T::exp_inplace(x)
}
