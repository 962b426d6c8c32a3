//! Naive `f64` implementations of the ops, the independent side of the registry's reference
//! check ([`check_references`](crate::check::check_references)).
//!
//! Everything here is written the slow, obvious way — one output element at a time, multi-indices
//! unravelled by hand, broadcasting by clamping an index to 0 on an axis of extent 1, a triple loop
//! for the matrix product, `std`'s `exp`/`ln` for the softmax family — and calls none of the
//! library's kernels (`Tensor::map`, `zip_map`, `sum_to`, the gemm wrapper, the row kernels), so a
//! bug in a kernel cannot hide behind the same bug in its reference. Only the tensor constructor
//! and the raw data are used.

use crate::tensor::Tensor;

/// The number of elements of a shape (1 for a 0-d shape).
fn count(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// The multi-index of flat position `i` in a row-major tensor of `shape`.
fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for a in (0..shape.len()).rev() {
        idx[a] = i % shape[a];
        i /= shape[a];
    }
    idx
}

/// The flat position of `idx` (aligned at the last axis with `shape`, extra leading entries
/// ignored) in a row-major tensor of `shape`, reading an axis of extent 1 at index 0 whatever
/// `idx` says there: NumPy broadcasting, by hand.
fn flat_broadcast(idx: &[usize], shape: &[usize]) -> usize {
    let off = idx.len() - shape.len();
    let mut flat = 0;
    for (a, &n) in shape.iter().enumerate() {
        let i = if n == 1 { 0 } else { idx[off + a] };
        flat = flat * n + i;
    }
    flat
}

/// The broadcast of several shapes (panics when they do not broadcast: a reference is only
/// called on samples, which are valid).
fn broadcast_all(shapes: &[&[usize]]) -> Vec<usize> {
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut out = vec![1; rank];
    for s in shapes {
        for (a, &n) in s.iter().enumerate() {
            let o = &mut out[rank - s.len() + a];
            if *o == 1 {
                *o = n;
            } else {
                assert!(n == 1 || n == *o, "reference: shapes {shapes:?} do not broadcast");
            }
        }
    }
    out
}

/// `f` at every element.
pub(crate) fn map(x: &Tensor<f64>, f: impl Fn(f64) -> f64) -> Tensor<f64> {
    let mut out = Vec::with_capacity(x.numel());
    for i in 0..x.numel() {
        out.push(f(x.data()[i]));
    }
    Tensor::from_vec(out, x.shape())
}

/// `f` elementwise over `N` tensors broadcast together, by plain index arithmetic.
pub(crate) fn zip_n<const N: usize>(args: [&Tensor<f64>; N], f: impl Fn([f64; N]) -> f64) -> Tensor<f64> {
    let shapes: [&[usize]; N] = std::array::from_fn(|k| args[k].shape());
    let shape = broadcast_all(&shapes);
    let mut out = Vec::with_capacity(count(&shape));
    for i in 0..count(&shape) {
        let idx = unravel(i, &shape);
        out.push(f(std::array::from_fn(|k| {
            args[k].data()[flat_broadcast(&idx, args[k].shape())]
        })));
    }
    Tensor::from_vec(out, shape)
}

/// `f(a, b)` elementwise with the two broadcast together.
pub(crate) fn zip(a: &Tensor<f64>, b: &Tensor<f64>, f: impl Fn(f64, f64) -> f64) -> Tensor<f64> {
    zip_n([a, b], |[x, y]| f(x, y))
}

/// `f(a, b, c)` elementwise with the three broadcast together.
pub(crate) fn zip3(a: &Tensor<f64>, b: &Tensor<f64>, c: &Tensor<f64>, f: impl Fn(f64, f64, f64) -> f64) -> Tensor<f64> {
    zip_n([a, b, c], |[x, y, z]| f(x, y, z))
}

/// `axis` counted from the front (a negative axis counts from the end).
fn axis_of(axis: isize, ndim: usize) -> usize {
    if axis < 0 {
        (axis + ndim as isize) as usize
    } else {
        axis as usize
    }
}

/// Folds every line of `x` along `axis` with `f` (given the line's values in order); the axis is
/// kept with extent 1 when `keepdim`, dropped otherwise.
fn along(x: &Tensor<f64>, axis: isize, keepdim: bool, f: impl Fn(&[f64]) -> f64) -> Tensor<f64> {
    let a = axis_of(axis, x.ndim());
    let mut kept: Vec<usize> = x.shape().to_vec();
    let n = kept[a];
    kept[a] = 1;
    let mut out = Vec::with_capacity(count(&kept));
    for i in 0..count(&kept) {
        let mut idx = unravel(i, &kept);
        let line: Vec<f64> = (0..n)
            .map(|k| {
                idx[a] = k;
                x.data()[flat_broadcast(&idx, x.shape())]
            })
            .collect();
        out.push(f(&line));
    }
    if !keepdim {
        kept.remove(a);
    }
    Tensor::from_vec(out, kept)
}

/// The sum of every element (a 0-d result).
pub(crate) fn sum_all(x: &Tensor<f64>) -> Tensor<f64> {
    let mut s = 0.0;
    for i in 0..x.numel() {
        s += x.data()[i];
    }
    Tensor::scalar(s)
}

/// The mean of every element (a 0-d result).
pub(crate) fn mean_all(x: &Tensor<f64>) -> Tensor<f64> {
    Tensor::scalar(sum_all(x).data()[0] / x.numel() as f64)
}

/// The sum along one axis.
pub(crate) fn sum_axis(x: &Tensor<f64>, axis: isize, keepdim: bool) -> Tensor<f64> {
    along(x, axis, keepdim, |l| l.iter().sum())
}

/// The mean along one axis.
pub(crate) fn mean_axis(x: &Tensor<f64>, axis: isize, keepdim: bool) -> Tensor<f64> {
    along(x, axis, keepdim, |l| l.iter().sum::<f64>() / l.len() as f64)
}

/// The maximum along one axis (NaN if the line holds one).
pub(crate) fn max_axis(x: &Tensor<f64>, axis: isize, keepdim: bool) -> Tensor<f64> {
    along(x, axis, keepdim, |l| {
        let mut m = f64::NEG_INFINITY;
        for &v in l {
            if v.is_nan() || v > m {
                m = v;
            }
            if m.is_nan() {
                break;
            }
        }
        m
    })
}

/// `x` summed down to `shape` (which broadcasts up to `x`'s shape): every element of `x` is added
/// into the output element it was broadcast from.
pub(crate) fn sum_to(x: &Tensor<f64>, shape: &[usize]) -> Tensor<f64> {
    let mut out = vec![0.0; count(shape)];
    for i in 0..x.numel() {
        let idx = unravel(i, x.shape());
        out[flat_broadcast(&idx, shape)] += x.data()[i];
    }
    Tensor::from_vec(out, shape)
}

/// The same elements in the same order with another shape.
pub(crate) fn reshape(x: &Tensor<f64>, shape: &[usize]) -> Tensor<f64> {
    assert_eq!(count(shape), x.numel(), "reference: reshape to another size");
    Tensor::from_vec(x.data().to_vec(), shape)
}

/// Axis `i` of the result is axis `perm[i]` of `x`.
pub(crate) fn permute(x: &Tensor<f64>, perm: &[usize]) -> Tensor<f64> {
    let shape: Vec<usize> = perm.iter().map(|&p| x.shape()[p]).collect();
    let mut out = Vec::with_capacity(x.numel());
    for i in 0..x.numel() {
        let idx = unravel(i, &shape);
        let mut src = vec![0; perm.len()];
        for (k, &p) in perm.iter().enumerate() {
            src[p] = idx[k];
        }
        out.push(x.data()[flat_broadcast(&src, x.shape())]);
    }
    Tensor::from_vec(out, shape)
}

/// The last two axes of `x` swapped.
fn swap_last(x: &Tensor<f64>) -> Tensor<f64> {
    let n = x.ndim();
    let mut perm: Vec<usize> = (0..n).collect();
    perm.swap(n - 2, n - 1);
    permute(x, &perm)
}

/// `x` repeated along the axes where it has extent 1 (or lacks them) up to `shape`.
pub(crate) fn broadcast_to(x: &Tensor<f64>, shape: &[usize]) -> Tensor<f64> {
    let mut out = Vec::with_capacity(count(shape));
    for i in 0..count(shape) {
        out.push(x.data()[flat_broadcast(&unravel(i, shape), x.shape())]);
    }
    Tensor::from_vec(out, shape)
}

/// `op(a) @ op(b)` over the last two axes (`op` transposes them when its flag is set), batch
/// axes broadcast: a triple loop per batch element.
pub(crate) fn matmul(a: &Tensor<f64>, b: &Tensor<f64>, ta: bool, tb: bool) -> Tensor<f64> {
    let a = if ta { swap_last(a) } else { a.clone() };
    let b = if tb { swap_last(b) } else { b.clone() };
    let (ra, rb) = (a.ndim(), b.ndim());
    let (m, k, n) = (a.shape()[ra - 2], a.shape()[ra - 1], b.shape()[rb - 1]);
    assert_eq!(k, b.shape()[rb - 2], "reference: matmul inner sizes differ");
    let batch = broadcast_all(&[&a.shape()[..ra - 2], &b.shape()[..rb - 2]]);
    let mut shape = batch.clone();
    shape.extend([m, n]);
    let mut out = Vec::with_capacity(count(&shape));
    for bi in 0..count(&batch) {
        let bidx = unravel(bi, &batch);
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0;
                for p in 0..k {
                    let mut ia = bidx.clone();
                    ia.extend([i, p]);
                    let mut ib = bidx.clone();
                    ib.extend([p, j]);
                    s += a.data()[flat_broadcast(&ia, a.shape())] * b.data()[flat_broadcast(&ib, b.shape())];
                }
                out.push(s);
            }
        }
    }
    Tensor::from_vec(out, shape)
}

/// Applies `f` to every line of `x` along `axis`, writing the line it returns back in place.
fn lines(x: &Tensor<f64>, axis: isize, f: impl Fn(&[f64]) -> Vec<f64>) -> Tensor<f64> {
    let a = axis_of(axis, x.ndim());
    let mut kept: Vec<usize> = x.shape().to_vec();
    let n = kept[a];
    kept[a] = 1;
    let mut out = vec![0.0; x.numel()];
    for i in 0..count(&kept) {
        let mut idx = unravel(i, &kept);
        let flat: Vec<usize> = (0..n)
            .map(|k| {
                idx[a] = k;
                flat_broadcast(&idx, x.shape())
            })
            .collect();
        let line: Vec<f64> = flat.iter().map(|&j| x.data()[j]).collect();
        for (&j, v) in flat.iter().zip(f(&line)) {
            out[j] = v;
        }
    }
    Tensor::from_vec(out, x.shape())
}

/// `log Σ exp(l)`, stably (the maximum taken out first).
fn logsumexp(l: &[f64]) -> f64 {
    let m = l.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
    m + l.iter().map(|&v| (v - m).exp()).sum::<f64>().ln()
}

/// Softmax along `axis`.
pub(crate) fn softmax(x: &Tensor<f64>, axis: isize) -> Tensor<f64> {
    lines(x, axis, |l| {
        let lse = logsumexp(l);
        l.iter().map(|&v| (v - lse).exp()).collect()
    })
}

/// Log-softmax along `axis`.
pub(crate) fn log_softmax(x: &Tensor<f64>, axis: isize) -> Tensor<f64> {
    lines(x, axis, |l| {
        let lse = logsumexp(l);
        l.iter().map(|&v| v - lse).collect()
    })
}

/// Softmax cross-entropy of logits `x` (classes along `axis`) against per-row class indices
/// (`classes`, rows in row-major order of the other axes) or per-row target weights (`probs`,
/// the logits' shape): `Σ_rows (Σt · lse(row) − ⟨t, row⟩)`, divided by the row count when `mean`.
pub(crate) fn cross_entropy(
    x: &Tensor<f64>,
    axis: isize,
    classes: Option<&[usize]>,
    probs: Option<&Tensor<f64>>,
    mean: bool,
) -> Tensor<f64> {
    let a = axis_of(axis, x.ndim());
    let mut kept: Vec<usize> = x.shape().to_vec();
    let n = kept[a];
    kept[a] = 1;
    let rows = count(&kept);
    let mut total = 0.0;
    for r in 0..rows {
        let mut idx = unravel(r, &kept);
        let mut logits = Vec::with_capacity(n);
        let mut t = Vec::with_capacity(n);
        for k in 0..n {
            idx[a] = k;
            let j = flat_broadcast(&idx, x.shape());
            logits.push(x.data()[j]);
            t.push(match (classes, probs) {
                (Some(c), _) => f64::from(u8::from(c[r] == k)),
                (None, Some(p)) => p.data()[j],
                (None, None) => panic!("reference: cross-entropy without targets"),
            });
        }
        let lse = logsumexp(&logits);
        for k in 0..n {
            total += t[k] * (lse - logits[k]);
        }
    }
    Tensor::scalar(if mean { total / rows as f64 } else { total })
}

// ---------------------------------------------------------------------------------------------
// Indexing and joining (ops/index.rs): every output element found by index arithmetic.
// ---------------------------------------------------------------------------------------------

/// The flat position of an in-range multi-index in a row-major tensor of `shape`.
fn flat_of(idx: &[usize], shape: &[usize]) -> usize {
    let mut flat = 0;
    for (a, &n) in shape.iter().enumerate() {
        assert!(idx[a] < n, "reference: index {idx:?} out of range for {shape:?}");
        flat = flat * n + idx[a];
    }
    flat
}

/// `x[start:end:step]` along `axis` (step > 0), with Python's rules: negative positions count
/// from the end, positions beyond either end are clamped.
pub(crate) fn slice(
    x: &Tensor<f64>,
    axis: isize,
    start: Option<isize>,
    end: Option<isize>,
    step: usize,
) -> Tensor<f64> {
    let a = axis_of(axis, x.ndim());
    let n = x.shape()[a] as isize;
    let fix = |i: isize| {
        let i = if i < 0 { i + n } else { i };
        i.max(0).min(n)
    };
    let (s, e) = (start.map_or(0, fix), end.map_or(n, fix));
    let mut picked = Vec::new();
    let mut i = s;
    while i < e {
        picked.push(i as usize);
        i += step as isize;
    }
    index_select(x, a as isize, &picked)
}

/// The positions `idx` of `x` along `axis`, in order.
pub(crate) fn index_select(x: &Tensor<f64>, axis: isize, idx: &[usize]) -> Tensor<f64> {
    let a = axis_of(axis, x.ndim());
    let mut shape = x.shape().to_vec();
    shape[a] = idx.len();
    let mut out = Vec::with_capacity(count(&shape));
    for i in 0..count(&shape) {
        let mut m = unravel(i, &shape);
        m[a] = idx[m[a]];
        out.push(x.data()[flat_of(&m, x.shape())]);
    }
    Tensor::from_vec(out, shape)
}

/// `g`'s element `k` along `axis` added into position `idx[k]` of zeros of extent `extent` there.
pub(crate) fn index_select_backward(g: &Tensor<f64>, axis: isize, idx: &[usize], extent: usize) -> Tensor<f64> {
    let a = axis_of(axis, g.ndim());
    let mut shape = g.shape().to_vec();
    shape[a] = extent;
    let mut out = vec![0.0; count(&shape)];
    for i in 0..g.numel() {
        let mut m = unravel(i, g.shape());
        m[a] = idx[m[a]];
        out[flat_of(&m, &shape)] += g.data()[i];
    }
    Tensor::from_vec(out, shape)
}

/// `g`'s element `k` along `axis` placed at position `start + k·step` of zeros of extent `extent`.
pub(crate) fn slice_backward(g: &Tensor<f64>, axis: isize, start: usize, step: usize, extent: usize) -> Tensor<f64> {
    let m = g.shape()[axis_of(axis, g.ndim())];
    let positions: Vec<usize> = (0..m).map(|k| start + k * step).collect();
    index_select_backward(g, axis, &positions, extent)
}

/// Rows `ids` (of shape `ids_shape`) of `table`: shape `ids_shape ++ table.shape[1..]`.
pub(crate) fn embedding(table: &Tensor<f64>, ids: &[usize], ids_shape: &[usize]) -> Tensor<f64> {
    let mut shape = ids_shape.to_vec();
    shape.extend_from_slice(&table.shape()[1..]);
    let mut out = Vec::with_capacity(count(&shape));
    for i in 0..count(&shape) {
        let m = unravel(i, &shape);
        let id = ids[flat_of(&m[..ids_shape.len()], ids_shape)];
        let mut src = vec![id];
        src.extend_from_slice(&m[ids_shape.len()..]);
        out.push(table.data()[flat_of(&src, table.shape())]);
    }
    Tensor::from_vec(out, shape)
}

/// torch's `gather`: `out[p] = x[p with p[axis] = idx[p]]`, `out` of shape `idx_shape`.
pub(crate) fn gather(x: &Tensor<f64>, axis: isize, idx: &[usize], idx_shape: &[usize]) -> Tensor<f64> {
    let a = axis_of(axis, x.ndim());
    let mut out = Vec::with_capacity(count(idx_shape));
    for (p, &i) in idx.iter().enumerate() {
        let mut m = unravel(p, idx_shape);
        m[a] = i;
        out.push(x.data()[flat_of(&m, x.shape())]);
    }
    Tensor::from_vec(out, idx_shape)
}

/// torch's `scatter_add`: `base` with `src[p]` added at `p with p[axis] = idx[p]` (`src` of the
/// index's shape).
pub(crate) fn scatter_add(base: &Tensor<f64>, axis: isize, idx: &[usize], src: &Tensor<f64>) -> Tensor<f64> {
    let a = axis_of(axis, base.ndim());
    let mut out = base.data().to_vec();
    for (p, &i) in idx.iter().enumerate() {
        let mut m = unravel(p, src.shape());
        m[a] = i;
        out[flat_of(&m, base.shape())] += src.data()[p];
    }
    Tensor::from_vec(out, base.shape())
}

/// The parts joined along `axis`: each output element read from the part its position falls in.
pub(crate) fn concat(parts: &[&Tensor<f64>], axis: isize) -> Tensor<f64> {
    let a = axis_of(axis, parts[0].ndim());
    let mut shape = parts[0].shape().to_vec();
    shape[a] = parts.iter().map(|p| p.shape()[a]).sum();
    let mut out = Vec::with_capacity(count(&shape));
    for i in 0..count(&shape) {
        let mut m = unravel(i, &shape);
        let mut k = 0;
        while m[a] >= parts[k].shape()[a] {
            m[a] -= parts[k].shape()[a];
            k += 1;
        }
        out.push(parts[k].data()[flat_of(&m, parts[k].shape())]);
    }
    Tensor::from_vec(out, shape)
}

/// `x` with `widths[d] = (before, after)` elements of `value` around axis `d`.
pub(crate) fn pad(x: &Tensor<f64>, widths: &[(usize, usize)], value: f64) -> Tensor<f64> {
    let shape: Vec<usize> = x.shape().iter().zip(widths).map(|(&n, &(b, a))| n + b + a).collect();
    let mut out = Vec::with_capacity(count(&shape));
    for i in 0..count(&shape) {
        let m = unravel(i, &shape);
        let inside: Option<Vec<usize>> = m
            .iter()
            .zip(widths)
            .zip(x.shape())
            .map(|((&p, &(b, _)), &n)| (p >= b && p - b < n).then(|| p - b))
            .collect();
        out.push(inside.map_or(value, |src| x.data()[flat_of(&src, x.shape())]));
    }
    Tensor::from_vec(out, shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f64], s: &[usize]) -> Tensor<f64> {
        Tensor::from_vec(v.to_vec(), s)
    }

    #[test]
    fn broadcasting_by_hand() {
        let a = t(&[1.0, 2.0], &[2, 1]);
        let b = t(&[10.0, 20.0, 30.0], &[3]);
        assert_eq!(zip(&a, &b, |x, y| x + y).to_vec(), [11.0, 21.0, 31.0, 12.0, 22.0, 32.0]);
        assert_eq!(zip(&a, &b, |x, y| x + y).shape(), &[2, 3]);
        assert_eq!(sum_to(&broadcast_to(&b, &[2, 3]), &[3]).to_vec(), [20.0, 40.0, 60.0]);
    }

    #[test]
    fn reductions_layout_and_matmul_by_hand() {
        let x = t(&[1.0, 5.0, 3.0, 4.0, 2.0, 6.0], &[2, 3]);
        assert_eq!(sum_axis(&x, 0, false).to_vec(), [5.0, 7.0, 9.0]);
        assert_eq!(max_axis(&x, -1, true).to_vec(), [5.0, 6.0]);
        assert_eq!(max_axis(&x, -1, true).shape(), &[2, 1]);
        assert_eq!(permute(&x, &[1, 0]).to_vec(), [1.0, 4.0, 5.0, 2.0, 3.0, 6.0]);
        // [[1,5,3],[4,2,6]] @ [[1,5,3],[4,2,6]]ᵀ = [[35, 32], [32, 56]]
        assert_eq!(matmul(&x, &x, false, true).to_vec(), [35.0, 32.0, 32.0, 56.0]);
        let s = softmax(&t(&[0.0, 0.0], &[2]), 0);
        assert_eq!(s.to_vec(), [0.5, 0.5]);
        let ce = cross_entropy(&t(&[0.0, 0.0], &[1, 2]), -1, Some(&[1]), None, true);
        assert!((ce.data()[0] - std::f64::consts::LN_2).abs() < 1e-15);
    }
}
