//! Numeric kernels on contiguous row-major buffers. Everything here works on plain slices and
//! shapes; the [`Tensor`](super::Tensor) methods wrap it.
//!
//! This file: strided walks, broadcasting, `sum_to`, permutation, and the per-type dispatch of the
//! vectorised `exp`/`ln` ([`super::vmath`]). [`reduce`]: sums, dot products, maxima along axes.
//! [`gemm`]: the matrix product (`matrixmultiply`).

use crate::core::float::{Float, SliceMut};
use crate::core::shape::{Shape, broadcast_strides, numel, strides};
use crate::tensor::parallel;
use smallvec::SmallVec;

pub(crate) mod conv;
pub(crate) mod gemm;
pub(crate) mod norm;
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

/// Output elements per chunk of an elementwise kernel (whole leading-axis rows are kept together
/// when an operand broadcasts). Chunks only decide which thread writes which elements, never a
/// value, so this is free to tune.
const ELEM_CHUNK: usize = 1 << 14;

/// An operand of an elementwise kernel: its elements and its shape (broadcast to the output's).
type Arg<'a, T> = (&'a [T], &'a [usize]);

/// `out[i] = f([a₀[i], a₁[i], …])` with every operand broadcast to `out_shape`: the one loop an
/// elementwise expression (a forward, or a rule on values) runs as. Operands already of the
/// output's shape are read straight through; broadcast ones through stride-0 walks, never
/// materialised in full (a run of a broadcast operand is splatted into a short buffer, so the
/// inner loop always reads unit-stride slices and vectorises). Large outputs are written in
/// chunks across threads ([`super::parallel`]); every element is computed the same way whichever
/// thread writes it.
pub(crate) fn map_n<T: Float, const N: usize>(
    args: [Arg<'_, T>; N],
    out_shape: &[usize],
    f: impl Fn([T; N]) -> T + Sync,
) -> Vec<T> {
    let n = numel(out_shape);
    let mut out = crate::tensor::pool::buffer(n);
    if args.iter().all(|(_, s)| *s == out_shape) {
        parallel::chunks_mut(&mut out, ELEM_CHUNK, n * (N + 1), |i, c| {
            let s = i * ELEM_CHUNK;
            let d = std::array::from_fn(|k| &args[k].0[s..s + c.len()]);
            // Widest lanes (same bits): a first-order rule such as `d gelu_tanh` runs here.
            write_contiguous_wide(c, d, &f);
        });
        return out;
    }
    split_leading(&mut out, args, out_shape, |o, a, s| broadcast_into(o, a, s, &f));
    out
}

/// Runs `serial(out_chunk, operands, shape)` on chunks of whole rows of the output's first axis
/// (in parallel when the output is large), each with its operands cut to those rows: an operand
/// that broadcasts along the first axis is passed whole, with extent 1 there.
fn split_leading<T: Float, const N: usize>(
    out: &mut [T],
    args: [Arg<'_, T>; N],
    out_shape: &[usize],
    serial: impl Fn(&mut [T], [Arg<'_, T>; N], &[usize]) + Sync,
) {
    let n = out.len();
    if out_shape.is_empty() || out_shape[0] <= 1 || !parallel::would_split(n) {
        serial(out, args, out_shape);
        return;
    }
    let rank = out_shape.len();
    // Operand shapes aligned to the output's rank (leading 1s), and the elements per first-axis row.
    let padded: [Shape; N] = std::array::from_fn(|k| {
        let s = args[k].1;
        let mut p: Shape = std::iter::repeat_n(1, rank - s.len()).collect();
        p.extend_from_slice(s);
        p
    });
    let row_len: [usize; N] = std::array::from_fn(|k| numel(&padded[k][1..]));
    let inner = n / out_shape[0];
    let rows = (ELEM_CHUNK / inner.max(1)).max(1);
    parallel::chunks_mut(out, rows * inner, n * (N + 1), |i, c| {
        let (r0, nr) = (i * rows, c.len() / inner);
        let mut sub_out: Shape = Shape::from_slice(out_shape);
        sub_out[0] = nr;
        let shapes: [Shape; N] = std::array::from_fn(|k| {
            let mut s = padded[k].clone();
            if s[0] != 1 {
                s[0] = nr;
            }
            s
        });
        let sub: [Arg<'_, T>; N] = std::array::from_fn(|k| {
            let d = if padded[k][0] == 1 {
                args[k].0
            } else {
                &args[k].0[r0 * row_len[k]..(r0 + nr) * row_len[k]]
            };
            (d, &shapes[k][..])
        });
        serial(c, sub, &sub_out);
    });
}

/// The serial broadcasting loop of [`map_n`], writing all of `out`.
fn broadcast_into<T: Float, const N: usize>(
    out: &mut [T],
    args: [Arg<'_, T>; N],
    out_shape: &[usize],
    f: &impl Fn([T; N]) -> T,
) {
    if N == 2 {
        // Two operands: the binary kernel's row-broadcast loops (no splat buffers; short rows
        // pay nothing per run).
        return binary_into(out, args[0], args[1], out_shape, |a, b| {
            f(std::array::from_fn(|k| [a, b][k]))
        });
    }
    let strides: [SmallVec<[usize; 4]>; N] = std::array::from_fn(|k| broadcast_strides(args[k].1, out_shape));
    let st: [&[usize]; N] = std::array::from_fn(|k| &strides[k][..]);
    /// Elements per chunk of a run: splat and gather buffers stay in L1.
    const CHUNK: usize = 256;
    let mut bufs: [Vec<T>; N] = std::array::from_fn(|_| Vec::new());
    let mut pos = 0;
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
            write_contiguous(&mut out[pos..pos + m], slices, f);
            pos += m;
            done += m;
        }
    });
    debug_assert_eq!(pos, out.len());
}

/// Writes `f` of the operands' elements, all slices of `out`'s length, zipped (so the loop has
/// no bounds checks and vectorises: up to four operands are zipped explicitly).
#[inline(always)]
fn write_contiguous<T: Float, const N: usize>(out: &mut [T], d: [&[T]; N], f: &impl Fn([T; N]) -> T) {
    match d.as_slice() {
        [a] => out
            .iter_mut()
            .zip(*a)
            .for_each(|(o, &x)| *o = f(std::array::from_fn(|_| x))),
        [a, b] => out
            .iter_mut()
            .zip(a.iter().zip(*b))
            .for_each(|(o, (&x, &y))| *o = f(std::array::from_fn(|k| [x, y][k]))),
        [a, b, c] => out
            .iter_mut()
            .zip(a.iter().zip(*b).zip(*c))
            .for_each(|(o, ((&x, &y), &z))| *o = f(std::array::from_fn(|k| [x, y, z][k]))),
        [a, b, c, e] => out
            .iter_mut()
            .zip(a.iter().zip(*b).zip(*c).zip(*e))
            .for_each(|(o, (((&x, &y), &z), &w))| *o = f(std::array::from_fn(|k| [x, y, z, w][k]))),
        _ => out
            .iter_mut()
            .enumerate()
            .for_each(|(i, o)| *o = f(std::array::from_fn(|k| d[k][i]))),
    }
}

/// [`write_contiguous`] as a plain index loop (no iterator adaptors left to inline, so the whole
/// loop, `f` included, compiles in the wide copy).
#[inline(always)]
fn write_indexed<T: Float, const N: usize, F: Fn([T; N]) -> T>(out: &mut [T], d: [&[T]; N], f: &F) {
    let n = out.len();
    let d: [&[T]; N] = std::array::from_fn(|k| &d[k][..n]);
    for i in 0..n {
        out[i] = f(std::array::from_fn(|k| d[k][i]));
    }
}

crate::tensor::vmath::wide_fn! {
    /// [`write_indexed`] compiled for the widest vectors this CPU has (same bits: see
    /// `vmath::wide`). The loop is a direct call in each `#[target_feature]` copy, not a closure
    /// handed to one, so it is inlined there whatever the size of `f`'s body (a first-order rule
    /// such as `d gelu_tanh`, measured: 4.1 ms -> 1.1 ms on 1M f32).
    fn write_contiguous_wide[T: Float, const N: usize, F: Fn([T; N]) -> T](out: &mut [T], d: [&[T]; N], f: &F) -> () = write_indexed
}

/// `out[i] = f(a[i], b[i])` with `a` and `b` broadcast to `out_shape`.
pub(crate) fn binary<T: Float>(
    a: &[T],
    a_shape: &[usize],
    b: &[T],
    b_shape: &[usize],
    out_shape: &[usize],
    f: impl Fn(T, T) -> T + Sync,
) -> Vec<T> {
    map_n([(a, a_shape), (b, b_shape)], out_shape, |[x, y]| f(x, y))
}

/// The serial loop of [`binary`], writing all of `out`.
fn binary_into<T: Float>(
    out: &mut [T],
    (a, a_shape): Arg<'_, T>,
    (b, b_shape): Arg<'_, T>,
    out_shape: &[usize],
    f: impl Fn(T, T) -> T,
) {
    if a_shape == b_shape && a_shape == out_shape {
        out.iter_mut()
            .zip(a.iter().zip(b))
            .for_each(|(o, (&x, &y))| *o = f(x, y));
        return;
    }
    if b.len() == 1 && a_shape == out_shape {
        let y = b[0];
        out.iter_mut().zip(a).for_each(|(o, &x)| *o = f(x, y));
        return;
    }
    if a.len() == 1 && b_shape == out_shape {
        let x = a[0];
        out.iter_mut().zip(b).for_each(|(o, &y)| *o = f(x, y));
        return;
    }
    let sa = broadcast_strides(a_shape, out_shape);
    let sb = broadcast_strides(b_shape, out_shape);
    let mut pos = 0;
    for_each_run(out_shape, [&sa, &sb], |[oa, ob], len, [ia, ib]| {
        let o = &mut out[pos..pos + len];
        pos += len;
        match (ia, ib) {
            (1, 1) => o
                .iter_mut()
                .zip(a[oa..oa + len].iter().zip(&b[ob..ob + len]))
                .for_each(|(o, (&x, &y))| *o = f(x, y)),
            (1, 0) => {
                let y = b[ob];
                o.iter_mut().zip(&a[oa..oa + len]).for_each(|(o, &x)| *o = f(x, y));
            }
            (0, 1) => {
                let x = a[oa];
                o.iter_mut().zip(&b[ob..ob + len]).for_each(|(o, &y)| *o = f(x, y));
            }
            _ => o
                .iter_mut()
                .enumerate()
                .for_each(|(j, o)| *o = f(a[oa + j * ia], b[ob + j * ib])),
        }
    });
    debug_assert_eq!(pos, out.len());
}

/// `f` applied to every element of `a`, in chunks across threads when large.
pub(crate) fn map<T: Float>(a: &[T], f: impl Fn(T) -> T + Sync) -> Vec<T> {
    let mut out = crate::tensor::pool::buffer(a.len());
    parallel::chunks_mut(&mut out, ELEM_CHUNK, 2 * a.len(), |i, c| {
        let s = i * ELEM_CHUNK;
        let src = &a[s..s + c.len()];
        // Under `wide` the element function (a table op's forward: `sigmoid`, `gelu_tanh`, …,
        // inlined) vectorises with the widest lanes; the bits are those of the plain loop.
        crate::tensor::vmath::wide(|| c.iter_mut().zip(src).for_each(|(o, &x)| *o = f(x)));
    });
    out
}

/// A copy of `a` with the slice kernel `f` applied in place, chunk by chunk (`f` must treat
/// elements independently, as the vectorised `exp`/`ln` do).
pub(crate) fn map_slices<T: Float>(a: &[T], f: impl Fn(&mut [T]) + Sync) -> Vec<T> {
    let mut out = crate::tensor::pool::buffer(a.len());
    parallel::chunks_mut(&mut out, ELEM_CHUNK, parallel::EXP_WORK * a.len(), |i, c| {
        let s = i * ELEM_CHUNK;
        c.copy_from_slice(&a[s..s + c.len()]);
        f(c);
    });
    out
}

/// `out += a` elementwise (same lengths), in chunks across threads when large.
pub(crate) fn add_assign<T: Float>(out: &mut [T], a: &[T]) {
    let n = out.len();
    parallel::chunks_mut(out, ELEM_CHUNK, 2 * n, |i, c| {
        let s = i * ELEM_CHUNK;
        let src = &a[s..s + c.len()];
        c.iter_mut().zip(src).for_each(|(o, &x)| *o += x);
    });
}

/// Materialises `a` (shape `from`) broadcast to `to`.
pub(crate) fn broadcast_to<T: Float>(a: &[T], from: &[usize], to: &[usize]) -> Vec<T> {
    let mut out = crate::tensor::pool::buffer(numel(to));
    split_leading(&mut out, [(a, from)], to, |out, [(a, from)], to| {
        let sa = broadcast_strides(from, to);
        let mut pos = 0;
        for_each_run(to, [&sa], |[oa], len, [ia]| {
            let o = &mut out[pos..pos + len];
            pos += len;
            if ia == 1 {
                o.copy_from_slice(&a[oa..oa + len]);
            } else if ia == 0 {
                o.fill(a[oa]);
            } else {
                o.iter_mut().enumerate().for_each(|(j, o)| *o = a[oa + j * ia]);
            }
        });
    });
    out
}

/// Sums `a` (shape `from`) down to shape `to`, the inverse of broadcasting `to` up to `from`.
///
/// Split across threads in two cases, each output element summed in the same order either way:
/// when the first axis is kept (chunks of its rows), and when only leading axes are summed away
/// (a bias gradient: chunks of the output's elements, each summing down the rows in order).
pub(crate) fn sum_to<T: Float>(a: &[T], from: &[usize], to: &[usize]) -> Vec<T> {
    let n_out = numel(to);
    if n_out == 1 {
        return vec![sum_slice(a)];
    }
    let mut out = crate::tensor::pool::buffer(n_out);
    let rank = from.len();
    let mut padded: Shape = std::iter::repeat_n(1, rank - to.len()).collect();
    padded.extend_from_slice(to);
    // Leading axes summed away, and whether the rest is kept whole. (The choice of loop depends
    // on the shapes only, never on the thread count: the two loops may round differently.)
    let lead = padded.iter().take_while(|&&t| t == 1).count();
    if lead > 0 && padded[lead..] == from[lead..] {
        let rows = numel(&from[..lead]);
        if rows == 0 {
            out.fill(T::ZERO);
            return out;
        }
        parallel::chunks_mut(&mut out, ELEM_CHUNK, a.len(), |i, c| {
            let s = i * ELEM_CHUNK;
            c.copy_from_slice(&a[s..s + c.len()]);
            for r in 1..rows {
                let src = &a[r * n_out + s..r * n_out + s + c.len()];
                c.iter_mut().zip(src).for_each(|(o, &x)| *o += x);
            }
        });
        return out;
    }
    split_leading(&mut out, [(a, from)], &padded, |out, [(a, from)], to| {
        sum_to_into(out, a, from, to)
    });
    out
}

/// Columns (elements per leading-axis row) per task of [`map_n_sum_to`]'s sum over leading
/// axes: a row's values are made in an L1-sized buffer and added at once.
const FUSED_COLS: usize = 2048;

/// [`map_n`] of operands that all have shape `from`, summed down to `to` in the same pass with
/// no temporary of `from`'s size — the bits of `sum_to(map_n(args, from, f), from, to)`: over
/// the last axis each row's values are made a block at a time in an L1 buffer and streamed into
/// [`SumStream`] (which adds as `sum_slice` of the whole row does); over leading axes each
/// chunk of columns is the first row's values plus each later row's, in row order, as
/// [`sum_to`] adds. `None` for any other reduction (several trailing axes, a middle one, all of
/// them), which the caller does in two steps.
pub(crate) fn map_n_sum_to<T: Float, const N: usize>(
    args: [&[T]; N],
    from: &[usize],
    to: &[usize],
    f: impl Fn([T; N]) -> T + Sync,
) -> Option<Vec<T>> {
    let rank = from.len();
    if to.len() > rank || rank == 0 {
        return None;
    }
    let mut padded: Shape = std::iter::repeat_n(1, rank - to.len()).collect();
    padded.extend_from_slice(to);
    let (total, n_out) = (numel(from), numel(to));
    if n_out <= 1 || total == 0 || n_out == total {
        return None;
    }
    let mut out = crate::tensor::pool::buffer(n_out);
    if padded[rank - 1] == 1 && padded[..rank - 1] == from[..rank - 1] {
        // The last axis, of length n, summed away: one output per row.
        let n = from[rank - 1];
        let per = (parallel::REDUCE_CHUNK / n).max(1);
        parallel::chunks_mut(&mut out, per, total * (N + 1), |i, c| {
            let mut scratch = [T::ZERO; FUSED_COLS];
            for (j, o) in c.iter_mut().enumerate() {
                let row = (i * per + j) * n;
                let mut sum = SumStream::new();
                for b0 in (0..n).step_by(FUSED_COLS) {
                    let len = FUSED_COLS.min(n - b0);
                    let d = std::array::from_fn(|k| &args[k][row + b0..row + b0 + len]);
                    write_contiguous_wide(&mut scratch[..len], d, &f);
                    sum.push(&scratch[..len]);
                }
                // `sum_to` adds each row's sum into a zeroed output.
                *o = T::ZERO + sum.finish();
            }
        });
        return Some(out);
    }
    let lead = padded.iter().take_while(|&&t| t == 1).count();
    if lead == 0 || padded[lead..] != from[lead..] {
        return None;
    }
    let rows = total / n_out;
    parallel::chunks_mut(&mut out, FUSED_COLS, total * (N + 1), |i, c| {
        let (s, len) = (i * FUSED_COLS, c.len());
        write_contiguous_wide(c, std::array::from_fn(|k| &args[k][s..s + len]), &f);
        let mut scratch = [T::ZERO; FUSED_COLS];
        for r in 1..rows {
            let at = r * n_out + s;
            let d = std::array::from_fn(|k| &args[k][at..at + len]);
            write_contiguous_wide(&mut scratch[..len], d, &f);
            c.iter_mut().zip(&scratch[..len]).for_each(|(o, &x)| *o += x);
        }
    });
    Some(out)
}

/// The serial loop of [`sum_to`] (`to` has `from`'s rank), writing all of `out`.
fn sum_to_into<T: Float>(out: &mut [T], a: &[T], from: &[usize], to: &[usize]) {
    out.fill(T::ZERO);
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
        SliceMut::F32([v]) => *v = super::vmath::exp_f32_one(*v),
        SliceMut::F64([v]) => *v = super::vmath::exp_f64_one(*v),
        SliceMut::F32(x) => super::vmath::exp_f32_inplace(x),
        SliceMut::F64(x) => super::vmath::exp_f64_inplace(x),
    }
}

/// `x ← tanh x` elementwise: for `f32` vectorised (within 1 ulp; see
/// [`super::vmath::tanh_f32_scalar`]), for `f64` the C library's.
pub(crate) fn tanh_inplace<T: Float>(x: &mut [T]) {
    match T::slice_mut(x) {
        SliceMut::F32([v]) => *v = super::vmath::tanh_f32_one(*v),
        SliceMut::F32(x) => super::vmath::tanh_f32_inplace(x),
        SliceMut::F64(x) => x.iter_mut().for_each(|v| *v = v.tanh()),
    }
}

/// `x ← ln x` elementwise, vectorised (≤ ~1 ulp; see [`super::vmath`]).
pub(crate) fn ln_inplace<T: Float>(x: &mut [T]) {
    match T::slice_mut(x) {
        SliceMut::F32([v]) => *v = super::vmath::ln_f32_one(*v),
        SliceMut::F64([v]) => *v = super::vmath::ln_f64_one(*v),
        SliceMut::F32(x) => super::vmath::ln_f32_inplace(x),
        SliceMut::F64(x) => super::vmath::ln_f64_inplace(x),
    }
}

#[cfg(test)]
mod wide_tests {
    use super::*;
    use crate::autodiff::rule::{Pointwise, Scalar, Unary};
    use crate::ops::elementwise::{GeluTanh, Sigmoid};

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut r = crate::rng::Rng::new(seed);
        (0..n)
            .map(|i| match i % 13 {
                0 => -0.0,
                4 => f32::MIN_POSITIVE / 3.0,
                7 => f32::INFINITY,
                8 => f32::NAN,
                10 => (r.normal() * 30.0) as f32,
                _ => r.normal() as f32,
            })
            .collect()
    }

    /// The bits of each value, every NaN as one (a NaN's sign and payload may differ between a
    /// vector and a scalar instruction; any NaN stays NaN).
    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter()
            .map(|x| if x.is_nan() { u32::MAX } else { x.to_bits() })
            .collect()
    }

    /// The elementwise loops compiled wide (a table op's forward through `map`, a first-order
    /// rule through `map_n`'s contiguous loop) give the plain loop's bits (NaN as NaN).
    #[test]
    fn the_wide_elementwise_loops_are_the_plain_ones() {
        let rule = |v: [f32; 3]| GeluTanh.eval(v.map(Scalar)).0;
        for n in [0, 1, 15, 16, 17, 255, 1000, 70_000] {
            let (g, x, y) = (values(n, 4), values(n, 5), values(n, 6));
            let plain: Vec<f32> = x.iter().map(|&v| Unary::f(&Sigmoid, v)).collect();
            assert_eq!(bits(&map(&x, |v| Unary::f(&Sigmoid, v))), bits(&plain), "sigmoid, {n}");
            let plain: Vec<f32> = x.iter().map(|&v| Unary::f(&GeluTanh, v)).collect();
            assert_eq!(
                bits(&map(&x, |v| Unary::f(&GeluTanh, v))),
                bits(&plain),
                "gelu_tanh, {n}"
            );
            let mut wide = vec![0.0; n];
            write_contiguous_wide(&mut wide, [&g[..], &x[..], &y[..]], &rule);
            let mut plain = vec![0.0; n];
            write_contiguous(&mut plain, [&g[..], &x[..], &y[..]], &rule);
            assert_eq!(bits(&wide), bits(&plain), "d gelu_tanh, {n}");
            let shape = [n];
            let through = map_n(
                [(&g[..], &shape[..]), (&x[..], &shape[..]), (&y[..], &shape[..])],
                &shape,
                rule,
            );
            assert_eq!(bits(&through), bits(&plain), "map_n d gelu_tanh, {n}");
        }
    }

    /// The fused elementwise-then-sum gives the two steps' bits (`map_n`, then `sum_to`) over the
    /// last axis (rows shorter and longer than a block and than a reduction chunk, with zeros,
    /// subnormals and infinities) and over leading axes (more columns than one task's), and the
    /// f64 sum within rounding; every other reduction is left to the caller (`None`).
    #[test]
    fn map_n_sum_to_is_the_two_steps() {
        let rule = |[g, y]: [f32; 2]| -(g * y);
        let cases: [(&[usize], &[usize]); 9] = [
            (&[5, 3], &[5, 1]),
            (&[3, 4097], &[3, 1]),
            (&[2, 40_000], &[2, 1]),
            (&[4, 6, 33], &[4, 6, 1]),
            (&[7, 3000], &[3000]),
            (&[7, 3000], &[1, 3000]),
            (&[3, 5, 130], &[130]),
            (&[3, 5, 130], &[5, 130]),
            (&[300, 17], &[17]),
        ];
        for (from, to) in cases {
            let n: usize = from.iter().product();
            let (g, y) = (values(n, 8), values(n, 9));
            let two = sum_to(&map_n([(&g[..], from), (&y[..], from)], from, rule), from, to);
            let one = map_n_sum_to([&g[..], &y[..]], from, to, rule).expect("a fused case");
            assert_eq!(bits(&one), bits(&two), "{from:?} -> {to:?}");
            // Independent arithmetic, on finite values.
            let mut r = crate::rng::Rng::new(10);
            let (g, y): (Vec<f32>, Vec<f32>) = (0..n).map(|_| (r.normal() as f32, r.normal() as f32)).unzip();
            let one = map_n_sum_to([&g[..], &y[..]], from, to, rule).expect("a fused case");
            let n_out = one.len();
            let mut want = vec![0.0f64; n_out];
            let mut size = vec![0.0f64; n_out];
            let last = from.len() - 1;
            for i in 0..n {
                // Over the last axis: output = row; over leading axes: output = column.
                let o = if to.len() == from.len() && to[last] == 1 {
                    i / from[last]
                } else {
                    i % n_out
                };
                let v = -(f64::from(g[i]) * f64::from(y[i]));
                want[o] += v;
                size[o] += v.abs();
            }
            for o in 0..n_out {
                assert!(
                    (f64::from(one[o]) - want[o]).abs() <= 1e-5 * size[o] + 1e-30,
                    "{from:?} -> {to:?} at {o}: {} vs {}",
                    one[o],
                    want[o]
                );
            }
        }
        let x = values(60, 11);
        for (from, to) in [
            (&[3usize, 4, 5][..], &[3usize, 1, 1][..]),
            (&[3, 4, 5], &[1, 4, 1]),
            (&[3, 4, 5], &[1, 1, 1]),
            (&[3, 4, 5], &[3, 4, 5]),
            (&[60], &[1]),
        ] {
            assert!(
                map_n_sum_to([&x[..], &x[..]], from, to, rule).is_none(),
                "{from:?} -> {to:?}"
            );
        }
    }
}
