//! Numeric kernels on contiguous row-major buffers. Everything here works on plain slices and
//! shapes; the [`Tensor`](super::Tensor) methods wrap it.
//!
//! This file: strided walks, broadcasting, `sum_to`, permutation, and the per-type dispatch of the
//! vectorised `exp`/`ln` ([`super::vmath`]). [`reduce`]: sums, dot products, maxima along axes.
//! [`gemm`]: the matrix product (`matrixmultiply`).

use crate::core::float::{Float, SliceMut};
use crate::core::shape::{Shape, broadcast_strides, numel, strides};
use smallvec::SmallVec;

pub(crate) mod gemm;
pub(crate) mod reduce;
pub(crate) mod rows;

pub(crate) use gemm::matmul;
pub(crate) use reduce::*;

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

/// `out[i] = f([a₀[i], a₁[i], …])` with every operand broadcast to `out_shape`: the one loop an
/// elementwise expression (a forward, or a rule on values) runs as. Operands already of the
/// output's shape are read straight through; broadcast ones through stride-0 walks, never
/// materialised in full (a run of a broadcast operand is splatted into a short buffer, so the
/// inner loop always reads unit-stride slices and vectorises).
pub(crate) fn map_n<T: Float, const N: usize>(
    args: [(&[T], &[usize]); N],
    out_shape: &[usize],
    f: impl Fn([T; N]) -> T,
) -> Vec<T> {
    let n = numel(out_shape);
    if args.iter().all(|(_, s)| *s == out_shape) {
        let mut out = crate::tensor::pool::alloc(n);
        extend_contiguous(&mut out, std::array::from_fn(|k| &args[k].0[..n]), &f);
        return out;
    }
    if N == 2 {
        // Two operands: the binary kernel's row-broadcast loops (no splat buffers; short rows
        // pay nothing per run).
        return binary(args[0].0, args[0].1, args[1].0, args[1].1, out_shape, |a, b| {
            f(std::array::from_fn(|k| [a, b][k]))
        });
    }
    let mut out = crate::tensor::pool::alloc(n);
    let strides: [SmallVec<[usize; 4]>; N] = std::array::from_fn(|k| broadcast_strides(args[k].1, out_shape));
    let st: [&[usize]; N] = std::array::from_fn(|k| &strides[k][..]);
    /// Elements per chunk of a run: splat and gather buffers stay in L1.
    const CHUNK: usize = 256;
    let mut bufs: [Vec<T>; N] = std::array::from_fn(|_| Vec::new());
    for_each_run(out_shape, st, |offs: [usize; N], len, inner: [usize; N]| {
        let mut done = 0;
        while done < len {
            let m = CHUNK.min(len - done);
            // Unit-stride operands are read in place; the others are splatted or gathered.
            for k in 0..N {
                if inner[k] != 1 {
                    let b = &mut bufs[k];
                    b.clear();
                    let base = offs[k] + done * inner[k];
                    if inner[k] == 0 {
                        b.resize(m, args[k].0[base]);
                    } else {
                        b.extend((0..m).map(|j| args[k].0[base + j * inner[k]]));
                    }
                }
            }
            let slices: [&[T]; N] = std::array::from_fn(|k| {
                if inner[k] == 1 {
                    &args[k].0[offs[k] + done..offs[k] + done + m]
                } else {
                    &bufs[k][..m]
                }
            });
            extend_contiguous(&mut out, slices, &f);
            done += m;
        }
    });
    debug_assert_eq!(out.len(), n);
    out
}

/// Appends `f` of the operands' elements, all slices of one length, zipped (so the loop has no
/// bounds checks and vectorises: up to four operands are zipped explicitly).
#[inline(always)]
fn extend_contiguous<T: Float, const N: usize>(out: &mut Vec<T>, d: [&[T]; N], f: &impl Fn([T; N]) -> T) {
    match d.as_slice() {
        [a] => out.extend(a.iter().map(|&x| f(std::array::from_fn(|_| x)))),
        [a, b] => out.extend(a.iter().zip(*b).map(|(&x, &y)| f(std::array::from_fn(|k| [x, y][k])))),
        [a, b, c] => out.extend(
            a.iter()
                .zip(*b)
                .zip(*c)
                .map(|((&x, &y), &z)| f(std::array::from_fn(|k| [x, y, z][k]))),
        ),
        [a, b, c, e] => out.extend(
            a.iter()
                .zip(*b)
                .zip(*c)
                .zip(*e)
                .map(|(((&x, &y), &z), &w)| f(std::array::from_fn(|k| [x, y, z, w][k]))),
        ),
        _ => {
            let n = d[0].len();
            out.extend((0..n).map(|i| f(std::array::from_fn(|k| d[k][i]))));
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
        return crate::tensor::pool::collect(n, a.iter().zip(b).map(|(&x, &y)| f(x, y)));
    }
    if b.len() == 1 && a_shape == out_shape {
        let y = b[0];
        return crate::tensor::pool::collect(n, a.iter().map(|&x| f(x, y)));
    }
    if a.len() == 1 && b_shape == out_shape {
        let x = a[0];
        return crate::tensor::pool::collect(n, b.iter().map(|&y| f(x, y)));
    }
    let mut out = crate::tensor::pool::alloc(n);
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
    let mut out = crate::tensor::pool::alloc(numel(to));
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
    let mut out = crate::tensor::pool::filled(numel(to), T::ZERO);
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
    let mut out = crate::tensor::pool::alloc(a.len());
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

/// `x ← eˣ` elementwise, vectorised (≤ ~1 ulp; see [`super::vmath`]).
pub(crate) fn exp_inplace<T: Float>(x: &mut [T]) {
    match T::slice_mut(x) {
        SliceMut::F32(x) => super::vmath::exp_f32_inplace(x),
        SliceMut::F64(x) => super::vmath::exp_f64_inplace(x),
    }
}

/// `x ← ln x` elementwise, vectorised (≤ ~1 ulp; see [`super::vmath`]).
pub(crate) fn ln_inplace<T: Float>(x: &mut [T]) {
    match T::slice_mut(x) {
        SliceMut::F32(x) => super::vmath::ln_f32_inplace(x),
        SliceMut::F64(x) => super::vmath::ln_f64_inplace(x),
    }
}
