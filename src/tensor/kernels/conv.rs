//! The convolution kernels: `im2col` (the patches of an image laid out as columns, so a
//! convolution is one matrix product) and its adjoint `col2im` (columns added back into the image).
//!
//! Both split their output into chunks whose boundaries depend only on the shapes (whole rows of
//! the column matrix, whole image planes), and every output element is written by exactly one
//! chunk, in a fixed order: results never depend on the thread count (see
//! [`parallel`](crate::tensor::parallel)).

use crate::core::float::Float;
use crate::tensor::parallel;
use crate::tensor::pool;

/// The geometry of a 2-D convolution (or pooling window) over `[n, c, h, w]` inputs: kernel
/// `kh × kw`, strides, zero padding, dilations, `groups` channel groups, and the output size
/// `oh × ow` (PyTorch's `⌊(h + 2p − d(k−1) − 1)/s⌋ + 1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ConvGeom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub groups: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub ph: usize,
    pub pw: usize,
    pub dh: usize,
    pub dw: usize,
    pub oh: usize,
    pub ow: usize,
}

impl ConvGeom {
    /// The number of output positions of one plane, `oh · ow`.
    pub fn positions(&self) -> usize {
        self.oh * self.ow
    }

    /// The number of elements of the column matrix `[n, groups, (c/groups)·kh·kw, oh·ow]`.
    pub fn cols_len(&self) -> usize {
        self.n * self.c * self.kh * self.kw * self.positions()
    }

    /// The input row of output row `oy` at kernel row `i`, or `None` in the padding.
    #[inline]
    pub fn in_y(&self, oy: usize, i: usize) -> Option<usize> {
        (oy * self.sh + i * self.dh)
            .checked_sub(self.ph)
            .filter(|&y| y < self.h)
    }

    /// The input column of output column `ox` at kernel column `j`, or `None` in the padding.
    #[inline]
    pub fn in_x(&self, ox: usize, j: usize) -> Option<usize> {
        (ox * self.sw + j * self.dw)
            .checked_sub(self.pw)
            .filter(|&x| x < self.w)
    }

    /// The output columns whose kernel column `j` falls inside the input, as `(lo, hi)`: the
    /// columns `lo..hi` are those for which [`in_x`](Self::in_x) is `Some` (a run, as the input
    /// column grows with `ox`), and on it `in_x(ox, j) = ox·sw + j·dw − pw`.
    #[inline]
    pub fn x_run(&self, j: usize) -> (usize, usize) {
        let off = j * self.dw;
        let lo = if off >= self.pw {
            0
        } else {
            (self.pw - off).div_ceil(self.sw)
        };
        let hi = if self.w + self.pw <= off {
            0
        } else {
            (self.w + self.pw - off).div_ceil(self.sw).min(self.ow)
        };
        (lo, hi.max(lo))
    }
}

/// Rows per chunk for a matrix whose rows have `len` elements: about 4096 elements a chunk.
fn rows_per_chunk(len: usize) -> usize {
    (4096 / len.max(1)).max(1)
}

/// The column matrix of `x: [n, c, h, w]`: `[n, groups, (c/groups)·kh·kw, oh·ow]`, row
/// `(ci·kh + i)·kw + j` of group `g` holding `x[., g·(c/groups) + ci, oy·sh − ph + i·dh,
/// ox·sw − pw + j·dw]` at column `oy·ow + ox` (zero in the padding). In memory this is
/// `[n, c, kh, kw, oh·ow]`.
pub(crate) fn im2col<T: Float>(x: &[T], g: &ConvGeom) -> Vec<T> {
    let l = g.positions();
    let mut out = pool::filled(g.cols_len(), T::ZERO);
    if out.is_empty() {
        return out;
    }
    let kk = g.kh * g.kw;
    let rows = rows_per_chunk(l);
    let work = out.len();
    parallel::chunks_mut(&mut out, rows * l, work, |chunk, dst| {
        for (k, row) in dst.chunks_exact_mut(l).enumerate() {
            let r = chunk * rows + k;
            let plane = r / kk; // n·c + channel
            let (i, j) = ((r % kk) / g.kw, r % g.kw);
            let src = &x[plane * g.h * g.w..(plane + 1) * g.h * g.w];
            // The columns inside the input: a run, copied (contiguous at stride 1).
            let (lo, hi) = g.x_run(j);
            if lo == hi {
                continue;
            }
            for oy in 0..g.oh {
                let Some(y) = g.in_y(oy, i) else { continue };
                let line = &src[y * g.w..(y + 1) * g.w];
                let dst = &mut row[oy * g.ow + lo..oy * g.ow + hi];
                let x0 = lo * g.sw + j * g.dw - g.pw;
                match g.sw {
                    1 => dst.copy_from_slice(&line[x0..x0 + dst.len()]),
                    s => dst.iter_mut().enumerate().for_each(|(k, d)| *d = line[x0 + k * s]),
                }
            }
        }
    });
    out
}

/// The adjoint of [`im2col`]: every element of the column matrix added into the image position
/// it was taken from (padding positions dropped), giving `[n, c, h, w]`. Each image plane is
/// summed by one chunk, kernel positions and output positions in order.
pub(crate) fn col2im<T: Float>(cols: &[T], g: &ConvGeom) -> Vec<T> {
    let hw = g.h * g.w;
    let mut out = pool::filled(g.n * g.c * hw, T::ZERO);
    if out.is_empty() {
        return out;
    }
    let (l, kk) = (g.positions(), g.kh * g.kw);
    let planes = rows_per_chunk(hw);
    parallel::chunks_mut(&mut out, planes * hw, cols.len(), |chunk, dst| {
        for (k, plane) in dst.chunks_exact_mut(hw).enumerate() {
            let p = chunk * planes + k;
            let src = &cols[p * kk * l..(p + 1) * kk * l];
            for i in 0..g.kh {
                for j in 0..g.kw {
                    let row = &src[(i * g.kw + j) * l..(i * g.kw + j + 1) * l];
                    let (lo, hi) = g.x_run(j);
                    if lo == hi {
                        continue;
                    }
                    for oy in 0..g.oh {
                        let Some(y) = g.in_y(oy, i) else { continue };
                        let x0 = y * g.w + lo * g.sw + j * g.dw - g.pw;
                        let src = &row[oy * g.ow + lo..oy * g.ow + hi];
                        src.iter().enumerate().for_each(|(k, &v)| plane[x0 + k * g.sw] += v);
                    }
                }
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`ConvGeom::x_run`] is exactly the set of output columns where [`ConvGeom::in_x`] is
    /// inside the input, with `in_x = ox·sw + j·dw − pw` on it, over widths, kernels, strides,
    /// dilations and paddings (including kernels wider than the input, whose runs are empty).
    #[test]
    fn x_runs_are_the_columns_inside_the_input() {
        for w in 1..9 {
            for kw in 1..5 {
                for sw in 1..4 {
                    for dw in 1..3 {
                        for pw in 0..4 {
                            let span = dw * (kw - 1) + 1;
                            if w + 2 * pw < span {
                                continue;
                            }
                            let ow = (w + 2 * pw - span) / sw + 1;
                            let g = ConvGeom {
                                n: 1,
                                c: 1,
                                h: 1,
                                w,
                                groups: 1,
                                kh: 1,
                                kw,
                                sh: 1,
                                sw,
                                ph: 0,
                                pw,
                                dh: 1,
                                dw,
                                oh: 1,
                                ow,
                            };
                            for j in 0..kw {
                                let (lo, hi) = g.x_run(j);
                                for ox in 0..ow {
                                    let inside = (lo..hi).contains(&ox);
                                    assert_eq!(
                                        g.in_x(ox, j).is_some(),
                                        inside,
                                        "w {w} k {kw} s {sw} d {dw} p {pw} j {j} ox {ox}"
                                    );
                                    if inside {
                                        assert_eq!(g.in_x(ox, j), Some(ox * sw + j * dw - pw));
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
