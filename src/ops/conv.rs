//! Convolution and pooling: `conv2d` and `conv1d`, `max_pool2d`, `avg_pool2d`, the patch ops
//! `im2col` / `col2im` they are built on, and a seeded `dropout`.
//!
//! # Conventions (PyTorch's)
//!
//! * Layouts are **NCHW** (`[batch, channels, height, width]`) for 2-D and **NCL** for 1-D; a
//!   weight is `[out_channels, in_channels / groups, kh, kw]` (`[out, in / groups, k]` in 1-D), an
//!   optional bias is `[out_channels]`.
//! * [`ConvOptions`]: stride, zero padding (on both sides), dilation, groups. The output size along
//!   each spatial axis is `⌊(H + 2p − d(k − 1) − 1) / s⌋ + 1`, as PyTorch's; a kernel wider than
//!   the padded input, a stride or dilation of 0, channels that `groups` does not divide or a
//!   weight whose shape does not fit are errors naming the op, the shapes and your line.
//! * Pooling windows are `kernel` wide with `stride` (PyTorch's default stride is the kernel:
//!   pass the kernel again) and padding of at most half the kernel; the output size is
//!   floor-rounded (no `ceil_mode`) and there is no dilation.
//! * **`max_pool2d`**: padding never wins (it is −∞). On a tie the **first** maximal element of
//!   the window, in row-major order, is the maximum and gets the whole gradient; a NaN in a window
//!   makes that output NaN (the first NaN is then "the maximum" and gets the gradient).
//! * **`avg_pool2d`** divides by the full window `kh · kw`, padding zeros included
//!   (PyTorch's default `count_include_pad=True`).
//! * **`dropout(p, seed)`** zeroes each element with probability `p` and scales the kept ones by
//!   `1/(1 − p)` (inverted dropout); the mask is drawn from `seed` alone, so a replay (a
//!   gradient checkpoint) draws the same mask. Use a new seed per layer and per step.
//!
//! # The rules
//!
//! | op | its rule | whose rule is |
//! |---|---|---|
//! | `conv2d` (`conv1d`) | `col2im(Wᵀ · G)` for the input, `G · im2col(x)ᵀ` summed over the batch for the weight | — |
//! | `im2col` | `col2im` | `im2col` |
//! | `max_pool2d` | `max_pool2d_backward`: the gradient added at the first maximum of each window (positions from the input's value; `scatter_add`'s bits) | `gather` |
//! | `avg_pool2d` | the gradient spread over each window (`broadcast_to`, then `col2im`) | `im2col` |
//! | `dropout` | `dropout` with the same seed (it is linear and its own adjoint) | `dropout` |
//!
//! Every rule is written with `Value` methods and ops, so every op here is differentiable again.
//!
//! ```
//! use tapegrad::ops::conv::ConvOptions;
//! use tapegrad::{Tape, Tensor};
//! let tape = Tape::<f64>::new();
//! let x = tape.var(Tensor::rand_normal([2, 3, 8, 8], 0.0, 1.0, 1)); // NCHW
//! let w = tape.var(Tensor::rand_normal([4, 3, 3, 3], 0.0, 0.1, 2)); // [out, in, kh, kw]
//! let b = tape.var(Tensor::zeros([4]));
//! let y = x.conv2d(w, Some(b), ConvOptions::new().stride(2).padding(1));
//! assert_eq!(y.shape().as_slice(), &[2, 4, 4, 4]);                 // ⌊(8 + 2 − 2 − 1)/2⌋ + 1
//! let p = y.relu().max_pool2d(2, 2, 0);
//! assert_eq!(p.shape().as_slice(), &[2, 4, 2, 2]);
//! let g = p.sum().backward();
//! assert_eq!(g[w].shape(), &[4, 3, 3, 3]);
//! ```

use super::common::arity;
use super::index::GatherOp;
#[cfg(test)]
use super::index::ScatterAddOp;
use super::registry::{Choice, OpInfo, Registry, Sample};
use crate::autodiff::rule::{Cotangents, Op, Value, VjpCtx};
use crate::autodiff::tape::{OpRef, TruncateGuard, Var};
use crate::core::error::{Error, ErrorKind, Result, fail};
use crate::core::float::Float;
use crate::core::rng::Rng;
use crate::core::shape::{fmt_shape, shape_of};
use crate::ops::index::Indices;
use crate::tensor::kernels::conv::{ConvGeom, col2im, im2col};
use crate::tensor::pool;
use crate::tensor::{Tensor, checked_numel};
use crate::{recipe, sample};
use std::panic::Location;

// ---------------------------------------------------------------------------------------------
// Options.
// ---------------------------------------------------------------------------------------------

/// A size along the two spatial axes `[height, width]`: from one number (both axes), an array
/// `[h, w]` or a pair `(h, w)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hw(pub [usize; 2]);

impl From<usize> for Hw {
    fn from(n: usize) -> Self {
        Hw([n, n])
    }
}
impl From<[usize; 2]> for Hw {
    fn from(s: [usize; 2]) -> Self {
        Hw(s)
    }
}
impl From<(usize, usize)> for Hw {
    fn from((h, w): (usize, usize)) -> Self {
        Hw([h, w])
    }
}

/// The options of a convolution (PyTorch's `stride`, `padding`, `dilation`, `groups`), built with
/// methods: `ConvOptions::new().stride(2).padding(1)`. Defaults: stride 1, padding 0, dilation 1,
/// 1 group. Each spatial option takes one number or `[h, w]` (see [`Hw`]); `conv1d` uses the width
/// entries.
///
/// ```
/// use tapegrad::ops::conv::ConvOptions;
/// let o = ConvOptions::new().stride([2, 1]).padding(1).groups(2);
/// assert_eq!((o.stride, o.padding, o.dilation, o.groups), ([2, 1], [1, 1], [1, 1], 2));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvOptions {
    /// Steps between kernel positions `[h, w]`.
    pub stride: [usize; 2],
    /// Zeros added on both sides `[h, w]`.
    pub padding: [usize; 2],
    /// Spacing between kernel taps `[h, w]`.
    pub dilation: [usize; 2],
    /// Channel groups: input and output channels are split into `groups` independent parts.
    pub groups: usize,
}

impl Default for ConvOptions {
    fn default() -> Self {
        ConvOptions {
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
            groups: 1,
        }
    }
}

impl ConvOptions {
    /// The defaults: stride 1, padding 0, dilation 1, 1 group.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the stride.
    pub fn stride(mut self, s: impl Into<Hw>) -> Self {
        self.stride = s.into().0;
        self
    }
    /// Sets the zero padding (on both sides of each axis).
    pub fn padding(mut self, p: impl Into<Hw>) -> Self {
        self.padding = p.into().0;
        self
    }
    /// Sets the dilation.
    pub fn dilation(mut self, d: impl Into<Hw>) -> Self {
        self.dilation = d.into().0;
        self
    }
    /// Sets the number of channel groups.
    pub fn groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }
}

/// PyTorch's output size of one spatial axis: `⌊(n + 2p − d(k − 1) − 1)/s⌋ + 1`, or `None` when
/// the (dilated) kernel is wider than the padded input, or a size is 0 or overflows.
///
/// ```
/// use tapegrad::ops::conv::output_size;
/// assert_eq!(output_size(8, 3, 2, 1, 1), Some(4));
/// assert_eq!(output_size(5, 3, 1, 0, 2), Some(1));   // dilated kernel spans 5
/// assert_eq!(output_size(4, 3, 1, 0, 2), None);      // 5 > 4
/// ```
pub fn output_size(n: usize, kernel: usize, stride: usize, padding: usize, dilation: usize) -> Option<usize> {
    if kernel == 0 || stride == 0 || dilation == 0 {
        return None;
    }
    let padded = n.checked_add(padding.checked_mul(2)?)?;
    let span = dilation.checked_mul(kernel - 1)?.checked_add(1)?;
    (span <= padded).then(|| (padded - span) / stride + 1)
}

/// The geometry of a window op over `[n, c, h, w]`, or an error naming `op` and `what` (the
/// shapes, as the user gave them).
#[allow(clippy::too_many_arguments)]
fn geometry(op: &str, what: &str, x: &[usize], kernel: [usize; 2], o: &ConvOptions, axes: usize) -> Result<ConvGeom> {
    // For a 1-D op only the width entries are meaningful; name them alone.
    let show = |v: [usize; 2]| {
        if axes == 1 {
            format!("{}", v[1])
        } else {
            format!("{v:?}")
        }
    };
    let bad = |m: String| Err(Error::new(ErrorKind::Invalid, op, format!("{m} ({what})")));
    if kernel.contains(&0) {
        return bad(format!("a kernel of size {} is empty", show(kernel)));
    }
    if o.stride.contains(&0) {
        return bad(format!("stride {} must be at least 1", show(o.stride)));
    }
    if o.dilation.contains(&0) {
        return bad(format!("dilation {} must be at least 1", show(o.dilation)));
    }
    let (oh, ow) = match (
        output_size(x[2], kernel[0], o.stride[0], o.padding[0], o.dilation[0]),
        output_size(x[3], kernel[1], o.stride[1], o.padding[1], o.dilation[1]),
    ) {
        (Some(a), Some(b)) => (a, b),
        _ => {
            return Err(Error::shape(
                op,
                format!(
                    "the kernel {} with dilation {} spans more than the input padded by {} ({what}): \
                     d·(k − 1) + 1 must be at most the size + 2·padding",
                    show(kernel),
                    show(o.dilation),
                    show(o.padding)
                ),
            ));
        }
    };
    Ok(ConvGeom {
        n: x[0],
        c: x[1],
        h: x[2],
        w: x[3],
        groups: o.groups,
        kh: kernel[0],
        kw: kernel[1],
        sh: o.stride[0],
        sw: o.stride[1],
        ph: o.padding[0],
        pw: o.padding[1],
        dh: o.dilation[0],
        dw: o.dilation[1],
        oh,
        ow,
    })
}

/// Checks a convolution's input and weight (4-D, as `conv2d` sees them; `shown` are the user's
/// shapes) and returns its geometry.
fn conv_geometry(
    op: &str,
    xs: &[usize],
    ws: &[usize],
    o: &ConvOptions,
    shown: (&[usize], &[usize]),
) -> Result<ConvGeom> {
    let axes = if op == "conv1d" { 1 } else { 2 };
    let what = format!("input {}, weight {}", fmt_shape(shown.0), fmt_shape(shown.1));
    let layout = if axes == 1 {
        "input [batch, channels, length] and weight [out, in/groups, k]"
    } else {
        "input [batch, channels, height, width] and weight [out, in/groups, kh, kw]"
    };
    if xs.len() != 4 || ws.len() != 4 {
        return Err(Error::shape(op, format!("expects {layout}, got {what}")));
    }
    let g = o.groups;
    if g == 0 {
        return Err(Error::new(
            ErrorKind::Invalid,
            op,
            format!("groups must be at least 1 ({what})"),
        ));
    }
    let (c, out) = (xs[1], ws[0]);
    if !c.is_multiple_of(g) || !out.is_multiple_of(g) {
        return Err(Error::shape(
            op,
            format!("{g} groups must divide the {c} input channels and the {out} output channels ({what})"),
        ));
    }
    if ws[1] * g != c {
        return Err(Error::shape(
            op,
            format!(
                "the weight has {} input channels per group but the input has {c} channels in {g} \
                 group(s), {} per group ({what}; expects {layout})",
                ws[1],
                c / g
            ),
        ));
    }
    let geom = geometry(op, &what, xs, [ws[2], ws[3]], o, axes)?;
    checked_numel::<f64>(op, &[geom.n, geom.c, geom.kh, geom.kw, geom.oh, geom.ow])?;
    checked_numel::<f64>(op, &[geom.n, out, geom.oh, geom.ow])?;
    Ok(geom)
}

// ---------------------------------------------------------------------------------------------
// conv2d.
// ---------------------------------------------------------------------------------------------

/// `conv2d(x, w)` without bias: `im2col`, one batched matrix product per group.
#[derive(Clone, Copy, Debug)]
struct Conv2dOp {
    opts: ConvOptions,
}

impl Conv2dOp {
    fn geom(&self, xs: &[usize], ws: &[usize]) -> Result<ConvGeom> {
        conv_geometry("conv2d", xs, ws, &self.opts, (xs, ws))
    }
}

impl<T: Float> Op<T> for Conv2dOp {
    fn name(&self) -> &'static str {
        "conv2d"
    }
    fn params(&self) -> String {
        let o = &self.opts;
        format!(
            "stride={:?}, padding={:?}, dilation={:?}, groups={}",
            o.stride, o.padding, o.dilation, o.groups
        )
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        arity("conv2d", x, 2)?;
        let (xs, ws) = (x[0].shape(), x[1].shape());
        let g = self.geom(xs, ws)?;
        let (gr, out) = (g.groups, ws[0]);
        let ck = ws[1] * g.kh * g.kw;
        let cols = Tensor::from_parts(shape_of([g.n, gr, ck, g.positions()]), im2col(x[0].data(), &g));
        let w = x[1].reshape([gr, out / gr, ck]);
        let y = w.try_matmul_t(&cols, false, false, "conv2d")?;
        Ok(y.reshape([g.n, out, g.oh, g.ow]))
    }
    /// With `G` the gradient as `[n, groups, out/groups, oh·ow]` and `W` the weight as
    /// `[groups, out/groups, (in/groups)·kh·kw]`: the input's is `col2im(Wᵀ G)`, the weight's is
    /// `G · im2col(x)ᵀ` summed over the batch.
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
        let (x, w) = (cx.input(0), cx.input(1));
        let (xs, ws) = (x.shape(), w.shape());
        let geom = self.geom(&xs, &ws)?;
        let (gr, out) = (geom.groups, ws[0]);
        let ck = ws[1] * geom.kh * geom.kw;
        let gm = g.reshape(&[geom.n, gr, out / gr, geom.positions()]);
        let dx = if cx.needs_grad(0) {
            let cols = w.reshape(&[gr, out / gr, ck]).matmul_t(&gm, true, false);
            Some(V::apply(Col2imOp { geom }, &[&cols])?)
        } else {
            None
        };
        let dw = if cx.needs_grad(1) {
            let cols = V::apply(Im2colOp { geom }, &[x])?;
            Some(gm.matmul_t(&cols, false, true).sum_to(&[gr, out / gr, ck]).reshape(&ws))
        } else {
            None
        };
        Ok(cx.grads([dx, dw]))
    }
}

// ---------------------------------------------------------------------------------------------
// im2col and col2im: each the other's rule.
// ---------------------------------------------------------------------------------------------

/// The patches of `[n, c, h, w]` as columns `[n, groups, (c/groups)·kh·kw, oh·ow]`.
#[derive(Clone, Copy, Debug)]
struct Im2colOp {
    geom: ConvGeom,
}

/// The shape of an `im2col` result.
fn cols_shape(g: &ConvGeom) -> [usize; 4] {
    [g.n, g.groups, g.c / g.groups * g.kh * g.kw, g.positions()]
}

fn fmt_geom(g: &ConvGeom) -> String {
    format!(
        "kernel=[{}, {}], stride=[{}, {}], padding=[{}, {}], dilation=[{}, {}], groups={}, image [{}, {}]",
        g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.dh, g.dw, g.groups, g.h, g.w
    )
}

impl<T: Float> Op<T> for Im2colOp {
    fn name(&self) -> &'static str {
        "im2col"
    }
    fn params(&self) -> String {
        fmt_geom(&self.geom)
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        arity("im2col", x, 1)?;
        let g = self.geom;
        let xs = x[0].shape();
        if xs != [g.n, g.c, g.h, g.w] {
            return Err(Error::shape(
                "im2col",
                format!(
                    "the input {} is not the [{}, {}, {}, {}] this geometry was made for",
                    fmt_shape(xs),
                    g.n,
                    g.c,
                    g.h,
                    g.w
                ),
            ));
        }
        Ok(Tensor::from_parts(shape_of(cols_shape(&g)), im2col(x[0].data(), &g)))
    }
    /// Columns added back into the image: `col2im`.
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
        Ok(cx.grads([Some(V::apply(Col2imOp { geom: self.geom }, &[g])?)]))
    }
}

/// The adjoint of `im2col`: columns `[n, groups, (c/groups)·kh·kw, oh·ow]` added into `[n, c, h, w]`.
#[derive(Clone, Copy, Debug)]
struct Col2imOp {
    geom: ConvGeom,
}

impl<T: Float> Op<T> for Col2imOp {
    fn name(&self) -> &'static str {
        "col2im"
    }
    fn params(&self) -> String {
        fmt_geom(&self.geom)
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        arity("col2im", x, 1)?;
        let g = self.geom;
        let s = x[0].shape();
        if s != cols_shape(&g) {
            return Err(Error::shape(
                "col2im",
                format!(
                    "the columns {} are not the {} this geometry makes ({})",
                    fmt_shape(s),
                    fmt_shape(&cols_shape(&g)),
                    fmt_geom(&g)
                ),
            ));
        }
        Ok(Tensor::from_parts(
            shape_of([g.n, g.c, g.h, g.w]),
            col2im(x[0].data(), &g),
        ))
    }
    /// Each column element gets the gradient of the image position it was added into: `im2col`.
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
        Ok(cx.grads([Some(V::apply(Im2colOp { geom: self.geom }, &[g])?)]))
    }
}

// ---------------------------------------------------------------------------------------------
// Pooling.
// ---------------------------------------------------------------------------------------------

/// A pooling window: its size, how far it moves, and the padding of the input.
#[derive(Clone, Copy, Debug)]
struct Window {
    kernel: Hw,
    stride: Hw,
    padding: Hw,
}

impl Window {
    /// A window of `kernel`, moved by `stride`, over an input padded by `padding`.
    fn new(kernel: impl Into<Hw>, stride: impl Into<Hw>, padding: impl Into<Hw>) -> Self {
        Window {
            kernel: kernel.into(),
            stride: stride.into(),
            padding: padding.into(),
        }
    }

    /// The op parameters the window makes.
    fn params(&self) -> String {
        format!(
            "kernel={:?}, stride={:?}, padding={:?}",
            self.kernel.0, self.stride.0, self.padding.0
        )
    }

    /// The geometry of the window over an input of shape `xs` (4-D), checked: padding at most half
    /// the kernel.
    fn geometry(&self, op: &str, xs: &[usize]) -> Result<ConvGeom> {
        let (k, s, p) = (self.kernel.0, self.stride.0, self.padding.0);
        let what = format!("input {}, kernel {k:?}, stride {s:?}, padding {p:?}", fmt_shape(xs));
        if xs.len() != 4 {
            return Err(Error::shape(
                op,
                format!("expects an input [batch, channels, height, width] ({what})"),
            ));
        }
        if (0..2).any(|a| p[a] > k[a] / 2) {
            return Err(Error::new(
                ErrorKind::Invalid,
                op,
                format!("padding must be at most half the kernel, so every window holds an input element ({what})"),
            ));
        }
        let o = ConvOptions {
            stride: s,
            padding: p,
            dilation: [1, 1],
            groups: xs[1].max(1),
        };
        let g = geometry(op, &what, xs, k, &o, 2)?;
        checked_numel::<f64>(op, &[g.n, g.c, g.oh, g.ow])?;
        Ok(g)
    }
}

/// For every output element of a max pool, the flat position within its `h·w` plane of the first
/// maximal element of its window (the first NaN, if the window holds one), windows scanned row by
/// row.
///
/// The input rows and columns each output row and column reads (the taps inside the input, in
/// kernel order) are listed once up front, so the scan over windows has no padding tests, and
/// the running maximum is a plain `>` with selects (NaN handled apart), which the compiler
/// keeps branch-free: on data in no order a branch mispredicts half the time (measured on W7's
/// `[128, 16, 8, 8]` 2×2 pool on one thread: forward 730–840 µs → 270 µs, forward + backward
/// 1.7–1.9 ms → 0.69 ms).
fn max_positions<T: Float>(x: &[T], g: &ConvGeom) -> Vec<usize> {
    if is_2x2(g) {
        return max_positions_2x2(x, g);
    }
    max_positions_scan(x, g)
}

/// The 2×2 pool with stride 2, no padding and no dilation, on a non-empty plane: the one
/// [`max_positions_2x2`] and [`max_values_2x2`] unroll.
fn is_2x2(g: &ConvGeom) -> bool {
    (g.kh, g.kw, g.ph, g.pw, g.sh, g.sw, g.dh, g.dw) == (2, 2, 0, 0, 2, 2, 1, 1) && g.h * g.w > 0
}

/// [`max_positions`] of any window: each window's taps scanned in order.
fn max_positions_scan<T: Float>(x: &[T], g: &ConvGeom) -> Vec<usize> {
    /// The taps of each of `outs` output positions: a flat list and where each position's starts.
    fn taps(
        outs: usize,
        k: usize,
        stride: usize,
        dilation: usize,
        pad: usize,
        extent: usize,
    ) -> (Vec<usize>, Vec<usize>) {
        let (mut flat, mut start) = (Vec::with_capacity(outs * k), Vec::with_capacity(outs + 1));
        for o in 0..outs {
            start.push(flat.len());
            flat.extend((0..k).filter_map(|i| (o * stride + i * dilation).checked_sub(pad).filter(|&y| y < extent)));
        }
        start.push(flat.len());
        (flat, start)
    }
    let (hw, l) = (g.h * g.w, g.positions());
    let mut out = Vec::with_capacity(g.n * g.c * l);
    if (g.kh, g.kw, g.ph, g.pw) == (2, 2, 0, 0) {
        // The common 2×2 window without padding, unrolled: its four positions in scan order.
        let (w, dy) = (g.w, g.dh * g.w);
        for plane in x.chunks_exact(hw.max(1)).take(g.n * g.c) {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let p = oy * g.sh * w + ox * g.sw;
                    out.push(first_max(plane, [p, p + g.dw, p + dy, p + dy + g.dw].into_iter()).unwrap_or(0));
                }
            }
        }
        return out;
    }
    let (ys, ystart) = taps(g.oh, g.kh, g.sh, g.dh, g.ph, g.h);
    let (xs, xstart) = taps(g.ow, g.kw, g.sw, g.dw, g.pw, g.w);
    for plane in x.chunks_exact(hw.max(1)).take(g.n * g.c) {
        for oy in 0..g.oh {
            let rows = &ys[ystart[oy]..ystart[oy + 1]];
            for ox in 0..g.ow {
                let cols = &xs[xstart[ox]..xstart[ox + 1]];
                let window = rows.iter().flat_map(|&y| cols.iter().map(move |&xx| y * g.w + xx));
                // Padding is at most half the kernel, so every window holds an element.
                out.push(first_max(plane, window).unwrap_or(0));
            }
        }
    }
    out
}

/// [`max_positions`] of the 2×2 pool with stride 2 (no padding, no dilation), by far the most
/// used: each output row reads two input rows as pairs, and each window's first maximum (its
/// first NaN if it holds one) is picked by [`first_max_2x2`], with no loop. Measured on W7's
/// `[128, 16, 8, 8]` pool on one thread, when the forward and the rule both ran it: the CNN
/// step's time in this scan fell from ~26% to ~14% (perf). Now only the recorded rule's
/// `gather` and pools other than 2×2 need positions.
fn max_positions_2x2<T: Float>(x: &[T], g: &ConvGeom) -> Vec<usize> {
    let (w, hw, l) = (g.w, g.h * g.w, g.positions());
    let mut out = vec![0usize; g.n * g.c * l];
    for (plane, o) in x.chunks_exact(hw).zip(out.chunks_exact_mut(l.max(1))) {
        for (oy, orow) in o.chunks_exact_mut(g.ow.max(1)).enumerate() {
            let y0 = 2 * oy * w;
            let (r0, r1) = (&plane[y0..y0 + w], &plane[y0 + w..y0 + 2 * w]);
            let pairs = r0.chunks_exact(2).zip(r1.chunks_exact(2));
            for (ox, (o, (p0, p1))) in orow.iter_mut().zip(pairs).enumerate() {
                let (tap, _) = first_max_2x2::<T, true>(p0[0], p0[1], p1[0], p1[1]);
                // Taps 0, 1 in the first row, 2, 3 (offsets w, w + 1) in the second.
                *o = y0 + 2 * ox + (tap & 1) + (tap >> 1) * w;
            }
        }
    }
    out
}

/// The values [`max_positions_2x2`] picks, without the positions (the forward of the 2×2 pool):
/// [`first_max_2x2`]'s value, so no index arithmetic — `x[max_positions_2x2(x)[k]]`'s bits.
/// Measured on W7's `[128, 16, 8, 8]` pool, one thread (profiler, fastest of 50, old and new
/// builds alternated 3×): the forward 185–192 → 74–78 µs.
fn max_values_2x2<T: Float>(x: &[T], g: &ConvGeom) -> Vec<T> {
    let (hw, l) = (g.h * g.w, g.positions());
    let mut out = pool::buffer(g.n * g.c * l);
    for (plane, o) in x.chunks_exact(hw).zip(out.chunks_exact_mut(l.max(1))) {
        max_values_2x2_plane(plane, g.w, g.ow, o);
    }
    out
}

crate::tensor::vmath::wide_fn! {
    /// [`max_values_2x2`] of one plane (rows of `w`) into its `oh × ow` outputs, compiled for the
    /// widest vectors this CPU has (the same compares and selects, so the same bits).
    fn max_values_2x2_plane(plane: &[T], w: usize, ow: usize, out: &mut [T]) -> () = max_values_2x2_in
}

/// [`max_values_2x2_plane`]'s loop.
#[inline(always)]
fn max_values_2x2_in<T: Float>(plane: &[T], w: usize, ow: usize, out: &mut [T]) {
    match holds_nan(plane) {
        true => max_values_2x2_loop::<T, true>(plane, w, ow, out),
        false => max_values_2x2_loop::<T, false>(plane, w, ow, out),
    }
}

/// [`max_values_2x2_in`]'s loop; `NAN`: the plane may hold a NaN (else the first-NaN selects
/// are left out).
#[inline(always)]
fn max_values_2x2_loop<T: Float, const NAN: bool>(plane: &[T], w: usize, ow: usize, out: &mut [T]) {
    for (oy, orow) in out.chunks_exact_mut(ow.max(1)).enumerate() {
        let y0 = 2 * oy * w;
        let (r0, r1) = (&plane[y0..y0 + 2 * ow], &plane[y0 + w..y0 + w + 2 * ow]);
        for (ox, o) in orow.iter_mut().enumerate() {
            *o = first_max_2x2::<T, NAN>(r0[2 * ox], r0[2 * ox + 1], r1[2 * ox], r1[2 * ox + 1]).1;
        }
    }
}

/// True when `x` holds a NaN (one pass, no early exit, so it vectorises). A plane without NaN
/// runs the 2×2 loops without the first-NaN selects: on W7's `[128, 16, 8, 8]` pool, one thread,
/// the forward 59.5 → 45.8 µs and the backward step (pool rule and the loss's product) 129.8 →
/// 96.6 µs (fastest of 2000, 3 runs each).
#[inline(always)]
fn holds_nan<T: Float>(x: &[T]) -> bool {
    x.iter().fold(false, |n, v| n | v.is_nan())
}

/// The first maximum of a 2×2 window `a b / c d` in scan order, as its tap (0–3) and value: a
/// small tree of strict `>` (each pair's first maximum, the second pair only when greater),
/// then the first NaN of a window holding one (the tree's compares are false there), as
/// selects from the last tap back, so a loop calling it has no branch.
/// `NAN = false` leaves out the NaN selects, for a plane known to hold none.
#[inline(always)]
fn first_max_2x2<T: Float, const NAN: bool>(a: T, b: T, c: T, d: T) -> (usize, T) {
    let (top, tv) = if b > a { (1, b) } else { (0, a) };
    let (bot, bv) = if d > c { (3, d) } else { (2, c) };
    let m = if bv > tv { (bot, bv) } else { (top, tv) };
    if !NAN {
        return m;
    }
    let m = if d.is_nan() { (3, d) } else { m };
    let m = if c.is_nan() { (2, c) } else { m };
    let m = if b.is_nan() { (1, b) } else { m };
    if a.is_nan() { (0, a) } else { m }
}

/// The first of the positions `ps` (in scan order) holding the maximum of `plane` over them, or
/// the first holding a NaN (`None` for no positions): [`max_positions`]' scan of one window.
/// Without NaN the first maximum is the first `v > best`; a window holding a NaN (rare) is
/// scanned again for its first NaN.
#[inline(always)]
fn first_max<T: Float>(plane: &[T], ps: impl Iterator<Item = usize> + Clone) -> Option<usize> {
    let first = ps.clone().next()?;
    let (mut bp, mut bv, mut nan) = (first, plane[first], false);
    for p in ps.clone() {
        let v = plane[p];
        let better = v > bv;
        bp = if better { p } else { bp };
        bv = if better { v } else { bv };
        nan |= v.is_nan();
    }
    if nan {
        bp = ps.into_iter().find(|&p| plane[p].is_nan()).unwrap_or(bp);
    }
    Some(bp)
}

/// The maximum of each window (see the module docs for ties and NaN).
#[derive(Clone, Copy, Debug)]
struct MaxPool2dOp(Window);

impl<T: Float> Op<T> for MaxPool2dOp {
    fn name(&self) -> &'static str {
        "max_pool2d"
    }
    fn params(&self) -> String {
        self.0.params()
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        arity("max_pool2d", x, 1)?;
        let g = self.0.geometry("max_pool2d", x[0].shape())?;
        let (hw, l) = (g.h * g.w, g.positions());
        let d = x[0].data();
        if is_2x2(&g) {
            return Ok(Tensor::from_parts(
                shape_of([g.n, g.c, g.oh, g.ow]),
                max_values_2x2(d, &g),
            ));
        }
        let pos = max_positions(d, &g);
        let mut data = pool::alloc(pos.len());
        for (plane, ps) in d.chunks_exact(hw.max(1)).zip(pos.chunks_exact(l.max(1))) {
            data.extend(ps.iter().map(|&p| plane[p]));
        }
        Ok(Tensor::from_parts(shape_of([g.n, g.c, g.oh, g.ow]), data))
    }
    /// The gradient of each window goes to its first maximum (positions read from the input's
    /// value): the op `max_pool2d_backward`, which holds that value.
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
        let back = MaxPool2dBackwardOp {
            window: self.0,
            x: cx.input(0).value().clone(),
        };
        Ok(cx.grads([Some(V::apply(back, &[g])?)]))
    }
}

/// `max_pool2d`'s gradient for its input as an op, `max_pool2d_backward(g)`: each window's
/// gradient added at the first maximum of that window in `x` (its first NaN if it holds one),
/// zeros elsewhere — `scatter_add` of `g` into zeros at [`max_positions`]`(x)`, the same bits.
/// `x` is a value the op holds, not an input: the positions are piecewise constant in it, so no
/// gradient flows to it (as none flows to `scatter_add`'s index). Its rule is a `gather` of the
/// cotangent at the same positions.
///
/// The 2×2 pool with stride 2 writes `dx` in one pass, each window's four elements at once
/// ([`first_max_2x2`]'s tap picks which one gets the gradient), with no positions, no zero fill
/// and no index checks. Measured on W7's `[128, 16, 8, 8]` pool, one thread (profiler): the
/// rule took 357 µs of the CNN's 612 µs backward as positions then `scatter_add`, 129 µs so.
#[derive(Clone, Debug)]
struct MaxPool2dBackwardOp<T: Float> {
    window: Window,
    x: Tensor<T>,
}

impl<T: Float> Op<T> for MaxPool2dBackwardOp<T> {
    fn name(&self) -> &'static str {
        "max_pool2d_backward"
    }
    fn params(&self) -> String {
        format!("{}, input {}", self.window.params(), fmt_shape(self.x.shape()))
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        arity("max_pool2d_backward", x, 1)?;
        let geom = self.window.geometry("max_pool2d_backward", self.x.shape())?;
        let out = [geom.n, geom.c, geom.oh, geom.ow];
        if x[0].shape() != out {
            return Err(Error::shape(
                "max_pool2d_backward",
                format!(
                    "the gradient {} must have the pool's output shape {} (input {})",
                    fmt_shape(x[0].shape()),
                    fmt_shape(&out),
                    fmt_shape(self.x.shape())
                ),
            ));
        }
        let (hw, l) = (geom.h * geom.w, geom.positions());
        let (xd, gd) = (self.x.data(), x[0].data());
        let planes = xd.chunks_exact(hw.max(1)).zip(gd.chunks_exact(l.max(1)));
        let dx = if is_2x2(&geom) {
            let mut dx = pool::buffer(geom.n * geom.c * hw);
            for ((plane, gp), dp) in planes.zip(dx.chunks_exact_mut(hw)) {
                max_pool_backward_2x2_plane(plane, gp, geom.w, geom.ow, dp);
            }
            dx
        } else {
            let mut dx = pool::filled(geom.n * geom.c * hw, T::ZERO);
            let pos = max_positions(xd, &geom);
            let planes = dx.chunks_exact_mut(hw.max(1)).zip(pos.chunks_exact(l.max(1)));
            for ((dp, ps), gp) in planes.zip(gd.chunks_exact(l.max(1))) {
                for (&p, &v) in ps.iter().zip(gp) {
                    dp[p] += v;
                }
            }
            dx
        };
        Ok(Tensor::from_parts(shape_of([geom.n, geom.c, geom.h, geom.w]), dx))
    }
    /// Linear in the gradient: its adjoint picks the cotangent at each window's first maximum,
    /// a `gather` (whose rule is `scatter_add`).
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
        let geom = self.window.geometry("max_pool2d_backward", self.x.shape())?;
        let (planes, hw, l) = (geom.n * geom.c, geom.h * geom.w, geom.positions());
        let op = GatherOp {
            axis: 1,
            index: Indices::new(max_positions(self.x.data(), &geom), [planes, l]),
        };
        let picked = V::apply(op, &[&g.reshape(&[planes, hw])])?;
        Ok(cx.grads([Some(picked.reshape(&[geom.n, geom.c, geom.oh, geom.ow]))]))
    }
}

crate::tensor::vmath::wide_fn! {
    /// [`MaxPool2dBackwardOp`]'s 2×2 kernel on one plane (rows of `w`, gradient rows of `ow`),
    /// compiled for the widest vectors this CPU has (the same compares and selects).
    fn max_pool_backward_2x2_plane(plane: &[T], g: &[T], w: usize, ow: usize, dx: &mut [T]) -> () = max_pool_backward_2x2_in
}

/// [`max_pool_backward_2x2_plane`]'s loop: every element of `dx` written once, the gradient
/// added into a zero (as `scatter_add` does: a `−0` gradient lands as `+0`) at each window's
/// first maximum, zeros at the window's other three taps and in a last odd row or column.
#[inline(always)]
fn max_pool_backward_2x2_in<T: Float>(plane: &[T], g: &[T], w: usize, ow: usize, dx: &mut [T]) {
    match holds_nan(plane) {
        true => max_pool_backward_2x2_loop::<T, true>(plane, g, w, ow, dx),
        false => max_pool_backward_2x2_loop::<T, false>(plane, g, w, ow, dx),
    }
}

/// [`max_pool_backward_2x2_in`]'s loop (`NAN` as in [`max_values_2x2_loop`]).
#[inline(always)]
fn max_pool_backward_2x2_loop<T: Float, const NAN: bool>(plane: &[T], g: &[T], w: usize, ow: usize, dx: &mut [T]) {
    let z = T::ZERO;
    let oh = g.len() / ow.max(1);
    for (oy, grow) in g.chunks_exact(ow.max(1)).enumerate() {
        let y0 = 2 * oy * w;
        let (r0, r1) = (&plane[y0..y0 + w], &plane[y0 + w..y0 + 2 * w]);
        let (d0, d1) = dx[y0..y0 + 2 * w].split_at_mut(w);
        for (ox, &gv) in grow.iter().enumerate() {
            let (i, j) = (2 * ox, 2 * ox + 1);
            let (tap, _) = first_max_2x2::<T, NAN>(r0[i], r0[j], r1[i], r1[j]);
            let v = z + gv;
            d0[i] = if tap == 0 { v } else { z };
            d0[j] = if tap == 1 { v } else { z };
            d1[i] = if tap == 2 { v } else { z };
            d1[j] = if tap == 3 { v } else { z };
        }
        d0[2 * ow..].fill(z);
        d1[2 * ow..].fill(z);
    }
    dx[2 * oh * w..].fill(z);
}

/// The mean of each window, padding zeros included (`count_include_pad`).
#[derive(Clone, Copy, Debug)]
struct AvgPool2dOp(Window);

impl<T: Float> Op<T> for AvgPool2dOp {
    fn name(&self) -> &'static str {
        "avg_pool2d"
    }
    fn params(&self) -> String {
        format!("{}, count_include_pad", self.0.params())
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        arity("avg_pool2d", x, 1)?;
        let g = self.0.geometry("avg_pool2d", x[0].shape())?;
        let hw = g.h * g.w;
        let scale = T::ONE / T::from_f64((g.kh * g.kw) as f64);
        let mut data = pool::alloc(g.n * g.c * g.positions());
        for plane in x[0].data().chunks_exact(hw.max(1)).take(g.n * g.c) {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let mut s = T::ZERO;
                    for i in 0..g.kh {
                        let Some(y) = g.in_y(oy, i) else { continue };
                        for j in 0..g.kw {
                            if let Some(xx) = g.in_x(ox, j) {
                                s += plane[y * g.w + xx];
                            }
                        }
                    }
                    data.push(s * scale);
                }
            }
        }
        Ok(Tensor::from_parts(shape_of([g.n, g.c, g.oh, g.ow]), data))
    }
    /// Each window's gradient divided by `kh·kw` and spread over the window: `broadcast_to` the
    /// columns of a depthwise `im2col`, then `col2im` (padding positions dropped).
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
        let xs = cx.input(0).shape();
        let geom = self.0.geometry("avg_pool2d", &xs)?;
        if geom.c == 0 {
            // No channels, so no element, and no depthwise geometry to spread over.
            return Ok(cx.grads([Some(g.reshape(&[geom.n, 0, geom.h, geom.w]))]));
        }
        let (kk, l) = (geom.kh * geom.kw, geom.positions());
        let spread = g
            .reshape(&[geom.n, geom.c, 1, l])
            .broadcast_to(&[geom.n, geom.c, kk, l])
            .scale(T::ONE / T::from_f64(kk as f64));
        Ok(cx.grads([Some(V::apply(Col2imOp { geom }, &[&spread])?)]))
    }
}

// ---------------------------------------------------------------------------------------------
// dropout.
// ---------------------------------------------------------------------------------------------

/// Inverted dropout with a mask drawn from `seed`.
#[derive(Clone, Copy, Debug)]
struct DropoutOp {
    p: f64,
    seed: u64,
}

/// Checks a dropout probability.
fn check_p(p: f64) -> Result<()> {
    if (0.0..=1.0).contains(&p) {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::Invalid,
            "dropout",
            format!("the drop probability {p} is not in [0, 1]"),
        ))
    }
}

/// Whether each of `n` elements is kept: element `k` is kept when the `k`-th uniform draw of
/// `Rng::new(seed)` is at least `p`.
fn keep_mask(n: usize, p: f64, seed: u64) -> Vec<bool> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| rng.uniform() >= p).collect()
}

impl<T: Float> Op<T> for DropoutOp {
    fn name(&self) -> &'static str {
        "dropout"
    }
    fn params(&self) -> String {
        format!("p={}, seed={}", self.p, self.seed)
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        arity("dropout", x, 1)?;
        check_p(self.p)?;
        let x = x[0];
        if self.p == 0.0 {
            return Ok(x.clone());
        }
        let scale = if self.p < 1.0 {
            T::from_f64(1.0 / (1.0 - self.p))
        } else {
            T::ZERO
        };
        let keep = keep_mask(x.numel(), self.p, self.seed);
        let mut data = pool::alloc(x.numel());
        data.extend(
            x.data()
                .iter()
                .zip(&keep)
                .map(|(&v, &k)| if k { v * scale } else { T::ZERO }),
        );
        Ok(Tensor::from_parts(shape_of(x.shape()), data))
    }
    /// Linear, and its own adjoint: the same dropout (same seed, same mask) of the gradient; a
    /// dropped element gets exactly 0 (selected, never multiplied by 0).
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
        Ok(cx.grads([Some(V::apply(*self, &[g])?)]))
    }
}

// ---------------------------------------------------------------------------------------------
// The methods.
// ---------------------------------------------------------------------------------------------

impl<'t, T: Float> Var<'t, T> {
    /// Records `op` on `inputs` at `loc`, panicking with its error.
    fn record_conv(self, op: impl Op<T>, inputs: &[Var<'t, T>], loc: &'static Location<'static>) -> Var<'t, T> {
        self.tape
            .record(OpRef::new(op), inputs, loc)
            .unwrap_or_else(|e| fail(e))
    }

    /// Checks that a bias is `[out]`.
    fn check_bias(bias: Option<Var<'t, T>>, op: &str, out: usize, loc: &'static Location<'static>) -> Result<()> {
        if let Some(b) = bias
            && b.shape().as_slice() != [out]
        {
            return Err(Error::shape(
                op,
                format!(
                    "the bias {} must be [{out}], one value per output channel",
                    fmt_shape(&b.shape())
                ),
            )
            .at(loc));
        }
        Ok(())
    }

    /// 2-D convolution (cross-correlation, as PyTorch's `conv2d`) of this `[n, c, h, w]` input
    /// with `weight: [out, c/groups, kh, kw]` and an optional `bias: [out]`, giving
    /// `[n, out, oh, ow]` with `oh = ⌊(h + 2p − d(kh − 1) − 1)/s⌋ + 1` (likewise `ow`). Recorded
    /// as one `conv2d` node (and an `add` for the bias). Panics with an error naming `conv2d`, the
    /// shapes and your line when the shapes or options do not fit (see the module docs); nothing
    /// is recorded then.
    ///
    /// ```
    /// use tapegrad::ops::conv::ConvOptions;
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::from_vec((0..9).map(f64::from).collect(), [1, 1, 3, 3]));
    /// let w = tape.var(Tensor::ones([1, 1, 2, 2]));
    /// let y = x.conv2d(w, None, ConvOptions::new());
    /// assert_eq!(y.value().to_vec(), vec![8.0, 12.0, 20.0, 24.0]);   // sums of 2×2 windows
    /// assert!(tapegrad::attempt(|| x.conv2d(w, None, ConvOptions::new().groups(2))).is_err());
    /// ```
    #[track_caller]
    pub fn conv2d(self, weight: Var<'t, T>, bias: Option<Var<'t, T>>, opts: ConvOptions) -> Var<'t, T> {
        let loc = Location::caller();
        let (xs, ws) = (self.shape(), weight.shape());
        conv_geometry("conv2d", &xs, &ws, &opts, (&xs, &ws)).unwrap_or_else(|e| fail(e.at(loc)));
        Self::check_bias(bias, "conv2d", ws[0], loc).unwrap_or_else(|e| fail(e));
        let guard = TruncateGuard::new(self.tape);
        let mut y = self.record_conv(Conv2dOp { opts }, &[self, weight], loc);
        if let Some(b) = bias {
            y = y + b.reshape([1, ws[0], 1, 1]);
        }
        guard.disarm();
        y
    }

    /// 1-D convolution (PyTorch's `conv1d`) of this `[n, c, l]` input with
    /// `weight: [out, c/groups, k]` and an optional `bias: [out]`, giving `[n, out, ol]`,
    /// `ol = ⌊(l + 2p − d(k − 1) − 1)/s⌋ + 1`; the width entries of `opts` are used (the height
    /// ones must be the defaults, or a single number was given). Recorded as a `conv2d` over a
    /// height of 1 between reshapes. Errors as [`conv2d`](Self::conv2d)'s, naming `conv1d`.
    ///
    /// ```
    /// use tapegrad::ops::conv::ConvOptions;
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0], [1, 1, 5]));
    /// let w = tape.var(Tensor::from_vec(vec![1.0, -1.0], [1, 1, 2]));
    /// let y = x.conv1d(w, None, ConvOptions::new().stride(2).padding(1));
    /// assert_eq!(y.value().to_vec(), vec![-1.0, -1.0, -1.0]);    // [0,1], [2,3], [4,5]
    /// ```
    #[track_caller]
    pub fn conv1d(self, weight: Var<'t, T>, bias: Option<Var<'t, T>>, opts: ConvOptions) -> Var<'t, T> {
        let loc = Location::caller();
        let (xs, ws) = (self.shape(), weight.shape());
        if xs.len() != 3 || ws.len() != 3 {
            fail(
                Error::shape(
                    "conv1d",
                    format!(
                        "expects input [batch, channels, length] and weight [out, in/groups, k], got input \
                         {}, weight {}",
                        fmt_shape(&xs),
                        fmt_shape(&ws)
                    ),
                )
                .at(loc),
            );
        }
        let o = ConvOptions {
            stride: [1, opts.stride[1]],
            padding: [0, opts.padding[1]],
            dilation: [1, opts.dilation[1]],
            groups: opts.groups,
        };
        let (x4, w4) = ([xs[0], xs[1], 1, xs[2]], [ws[0], ws[1], 1, ws[2]]);
        let heights_ok = (opts.stride[0] == opts.stride[1] || opts.stride[0] == 1)
            && (opts.padding[0] == opts.padding[1] || opts.padding[0] == 0)
            && (opts.dilation[0] == opts.dilation[1] || opts.dilation[0] == 1);
        if !heights_ok {
            fail(
                Error::new(
                    ErrorKind::Invalid,
                    "conv1d",
                    format!(
                        "options {opts:?} differ between height and width; conv1d has one axis: give single numbers"
                    ),
                )
                .at(loc),
            );
        }
        conv_geometry("conv1d", &x4, &w4, &o, (&xs, &ws)).unwrap_or_else(|e| fail(e.at(loc)));
        Self::check_bias(bias, "conv1d", ws[0], loc).unwrap_or_else(|e| fail(e));
        let guard = TruncateGuard::new(self.tape);
        let (x2, w2) = (self.reshape(x4), weight.reshape(w4));
        let y = x2.record_conv(Conv2dOp { opts: o }, &[x2, w2], loc);
        let s = y.shape();
        let mut y = y.reshape([s[0], s[1], s[3]]);
        if let Some(b) = bias {
            y = y + b.reshape([1, ws[0], 1]);
        }
        guard.disarm();
        y
    }

    /// The patches of this `[n, c, h, w]` input as columns `[n, groups, (c/groups)·kh·kw, oh·ow]`
    /// (row `(ci·kh + i)·kw + j` of group `g`, column `oy·ow + ox`; zero in the padding): a
    /// convolution is a matrix product with them. Its gradient is [`col2im`](Self::col2im).
    /// Errors as [`conv2d`](Self::conv2d)'s, naming `im2col`.
    ///
    /// ```
    /// use tapegrad::ops::conv::ConvOptions;
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::from_vec(vec![1.0, 2.0, 3.0], [1, 1, 1, 3]));
    /// let c = x.im2col([1, 2], ConvOptions::new());
    /// assert_eq!(c.shape().as_slice(), &[1, 1, 2, 2]);
    /// assert_eq!(c.value().to_vec(), vec![1.0, 2.0, 2.0, 3.0]);
    /// ```
    #[track_caller]
    pub fn im2col(self, kernel: impl Into<Hw>, opts: ConvOptions) -> Var<'t, T> {
        let loc = Location::caller();
        let geom = self
            .patch_geometry("im2col", kernel.into().0, &opts)
            .unwrap_or_else(|e| fail(e.at(loc)));
        self.record_conv(Im2colOp { geom }, &[self], loc)
    }

    /// The adjoint of [`im2col`](Self::im2col): these columns `[n, groups, (c/groups)·kh·kw, oh·ow]`
    /// added back into an `[n, c, h, w]` image of size `image = [h, w]` (positions that fall in the
    /// padding are dropped; overlapping patches accumulate). Its gradient is `im2col`. Panics with
    /// an error naming `col2im` when the columns do not fit the geometry.
    ///
    /// ```
    /// use tapegrad::ops::conv::ConvOptions;
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let c = tape.var(Tensor::ones([1, 1, 2, 2]));
    /// let x = c.col2im([1, 2], [1, 3], ConvOptions::new());
    /// assert_eq!(x.value().to_vec(), vec![1.0, 2.0, 1.0]);        // the middle is in two patches
    /// ```
    #[track_caller]
    pub fn col2im(self, kernel: impl Into<Hw>, image: impl Into<Hw>, opts: ConvOptions) -> Var<'t, T> {
        let loc = Location::caller();
        let (k, [h, w]) = (kernel.into().0, image.into().0);
        let s = self.shape();
        let geom = (|| {
            if s.len() != 4
                || opts.groups == 0
                || s[1] != opts.groups
                || k[0]
                    .checked_mul(k[1])
                    .is_none_or(|kk| kk == 0 || !s[2].is_multiple_of(kk))
            {
                return Err(Error::shape(
                    "col2im",
                    format!(
                        "columns {} do not fit kernel {k:?} in {} group(s): expects [n, groups, \
                         (c/groups)·kh·kw, oh·ow]",
                        fmt_shape(&s),
                        opts.groups
                    ),
                ));
            }
            let c = s[2] / (k[0] * k[1]) * opts.groups;
            let g = geometry(
                "col2im",
                &format!("columns {}", fmt_shape(&s)),
                &[s[0], c, h, w],
                k,
                &opts,
                2,
            )?;
            checked_numel::<f64>("col2im", &[s[0], c, h, w])?;
            if s[3] != g.positions() {
                return Err(Error::shape(
                    "col2im",
                    format!(
                        "columns {} have {} positions but kernel {k:?} over an image [{h}, {w}] makes \
                         {} × {}",
                        fmt_shape(&s),
                        s[3],
                        g.oh,
                        g.ow
                    ),
                ));
            }
            Ok(g)
        })()
        .unwrap_or_else(|e| fail(e.at(loc)));
        self.record_conv(Col2imOp { geom }, &[self], loc)
    }

    /// The geometry of `im2col` over this value, checked.
    fn patch_geometry(self, op: &str, k: [usize; 2], opts: &ConvOptions) -> Result<ConvGeom> {
        let s = self.shape();
        let what = format!("input {}", fmt_shape(&s));
        if s.len() != 4 {
            return Err(Error::shape(
                op,
                format!("expects an input [batch, channels, height, width] ({what})"),
            ));
        }
        if opts.groups == 0 || !s[1].is_multiple_of(opts.groups) {
            return Err(Error::shape(
                op,
                format!("{} groups must divide the {} channels ({what})", opts.groups, s[1]),
            ));
        }
        let g = geometry(op, &what, &s, k, opts, 2)?;
        checked_numel::<f64>(op, &[g.n, g.c, g.kh, g.kw, g.oh, g.ow])?;
        Ok(g)
    }

    /// 2-D max pooling (PyTorch's `max_pool2d`) of this `[n, c, h, w]` input: the maximum of each
    /// `kernel` window, moved by `stride`, over an input padded by `padding` (at most half the
    /// kernel; padding never wins). Output `[n, c, oh, ow]`, `oh = ⌊(h + 2p − kh)/sh⌋ + 1`. **Ties:**
    /// the first maximal element of a window in row-major order is its maximum and gets all of
    /// its gradient; a NaN in a window makes that output NaN. Panics with an error naming
    /// `max_pool2d`, the shapes and your line when they do not fit.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::from_vec(vec![1.0, 3.0, 3.0, 2.0], [1, 1, 2, 2]));
    /// let y = x.max_pool2d(2, 2, 0);
    /// assert_eq!(y.value().to_vec(), vec![3.0]);
    /// assert_eq!(y.sum().backward()[x].to_vec(), vec![0.0, 1.0, 0.0, 0.0]);  // the first 3
    /// ```
    #[track_caller]
    pub fn max_pool2d(self, kernel: impl Into<Hw>, stride: impl Into<Hw>, padding: impl Into<Hw>) -> Var<'t, T> {
        let w = Window::new(kernel, stride, padding);
        self.record_pool("max_pool2d", MaxPool2dOp(w), w, Location::caller())
    }

    /// 2-D average pooling (PyTorch's `avg_pool2d` with its default `count_include_pad=True`):
    /// each window's sum divided by `kh · kw`, padding zeros counted. Shapes and errors as
    /// [`max_pool2d`](Self::max_pool2d)'s, naming `avg_pool2d`.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::from_vec(vec![4.0, 8.0], [1, 1, 1, 2]));
    /// assert!(tapegrad::attempt(|| x.avg_pool2d(2, 2, 0)).is_err());   // 2 rows do not fit in 1
    /// let y = x.avg_pool2d([1, 2], 1, [0, 1]);                      // windows [0,4] [4,8] [8,0]
    /// assert_eq!(y.value().to_vec(), vec![2.0, 6.0, 4.0]);
    /// ```
    #[track_caller]
    pub fn avg_pool2d(self, kernel: impl Into<Hw>, stride: impl Into<Hw>, padding: impl Into<Hw>) -> Var<'t, T> {
        let w = Window::new(kernel, stride, padding);
        self.record_pool("avg_pool2d", AvgPool2dOp(w), w, Location::caller())
    }

    /// Records the pooling `op` (named `name`) over the window `w`, after checking that `w` fits
    /// this value.
    fn record_pool(self, name: &str, op: impl Op<T>, w: Window, loc: &'static Location<'static>) -> Var<'t, T> {
        w.geometry(name, &self.shape()).unwrap_or_else(|e| fail(e.at(loc)));
        self.record_conv(op, &[self], loc)
    }

    /// Inverted dropout: each element is zeroed with probability `p` and the others are scaled by
    /// `1/(1 − p)`, so the expected value is unchanged (`p = 0` is the identity, `p = 1` gives
    /// zeros). The mask is drawn from `seed` alone (element `k` is kept when the `k`-th uniform
    /// draw of [`Rng::new(seed)`](crate::rng::Rng) is at least `p`), so replaying the same call —
    /// a gradient checkpoint does — draws the same mask; use a new seed per layer and step. The
    /// gradient goes through the same mask. Panics with an `Invalid` error naming `dropout` when
    /// `p` is not in `[0, 1]`.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::ones([1000]));
    /// let y = x.dropout(0.25, 7);
    /// let kept = y.value().data().iter().filter(|&&v| v != 0.0).count();
    /// assert!((700..800).contains(&kept));
    /// assert!(y.value().data().iter().all(|&v| v == 0.0 || v == 1.0 / 0.75));
    /// assert_eq!(x.dropout(0.25, 7).value().to_vec(), y.value().to_vec()); // same seed, same mask
    /// ```
    #[track_caller]
    pub fn dropout(self, p: f64, seed: u64) -> Var<'t, T> {
        let loc = Location::caller();
        check_p(p).unwrap_or_else(|e| fail(e.at(loc)));
        self.record_conv(DropoutOp { p, seed }, &[self], loc)
    }
}

// ---------------------------------------------------------------------------------------------
// Naive f64 references (direct loops, none of the library's kernels).
// ---------------------------------------------------------------------------------------------

/// Naive references for the registry.
pub(crate) mod naive {
    use super::ConvOptions;
    use crate::tensor::Tensor;

    /// Input position `o·s − p + k·d` if inside `0..n`.
    fn at(o: usize, k: usize, s: usize, p: usize, d: usize, n: usize) -> Option<usize> {
        let v = (o * s + k * d) as isize - p as isize;
        (v >= 0 && (v as usize) < n).then_some(v as usize)
    }

    fn out(n: usize, k: usize, s: usize, p: usize, d: usize) -> usize {
        (n + 2 * p - d * (k - 1) - 1) / s + 1
    }

    /// `conv2d` by seven nested loops, with an optional bias.
    pub(crate) fn conv2d(x: &Tensor<f64>, w: &Tensor<f64>, b: Option<&Tensor<f64>>, o: ConvOptions) -> Tensor<f64> {
        let (xs, ws) = (x.shape(), w.shape());
        let (n, c, h, wd) = (xs[0], xs[1], xs[2], xs[3]);
        let (oc, cg, kh, kw) = (ws[0], ws[1], ws[2], ws[3]);
        let og = oc / o.groups;
        let oh = out(h, kh, o.stride[0], o.padding[0], o.dilation[0]);
        let ow = out(wd, kw, o.stride[1], o.padding[1], o.dilation[1]);
        let (xd, wdat) = (x.data(), w.data());
        let mut y = vec![0.0; n * oc * oh * ow];
        for bi in 0..n {
            for co in 0..oc {
                let grp = co / og;
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut s = b.map_or(0.0, |b| b.data()[co]);
                        for ci in 0..cg {
                            let cin = grp * cg + ci;
                            for i in 0..kh {
                                let Some(iy) = at(oy, i, o.stride[0], o.padding[0], o.dilation[0], h) else {
                                    continue;
                                };
                                for j in 0..kw {
                                    let Some(ix) = at(ox, j, o.stride[1], o.padding[1], o.dilation[1], wd) else {
                                        continue;
                                    };
                                    s += xd[((bi * c + cin) * h + iy) * wd + ix]
                                        * wdat[((co * cg + ci) * kh + i) * kw + j];
                                }
                            }
                        }
                        y[((bi * oc + co) * oh + oy) * ow + ox] = s;
                    }
                }
            }
        }
        Tensor::from_vec(y, [n, oc, oh, ow])
    }

    /// `conv1d` as the 2-D reference over a height of 1.
    pub(crate) fn conv1d(x: &Tensor<f64>, w: &Tensor<f64>, b: Option<&Tensor<f64>>, o: ConvOptions) -> Tensor<f64> {
        let (xs, ws) = (x.shape(), w.shape());
        let x4 = Tensor::from_vec(x.data().to_vec(), [xs[0], xs[1], 1, xs[2]]);
        let w4 = Tensor::from_vec(w.data().to_vec(), [ws[0], ws[1], 1, ws[2]]);
        let o2 = ConvOptions {
            stride: [1, o.stride[1]],
            padding: [0, o.padding[1]],
            dilation: [1, o.dilation[1]],
            groups: o.groups,
        };
        let y = conv2d(&x4, &w4, b, o2);
        let s = y.shape().to_vec();
        Tensor::from_vec(y.data().to_vec(), [s[0], s[1], s[3]])
    }

    /// `im2col` element by element.
    pub(crate) fn im2col(x: &Tensor<f64>, k: [usize; 2], o: ConvOptions) -> Tensor<f64> {
        let xs = x.shape();
        let (n, c, h, w) = (xs[0], xs[1], xs[2], xs[3]);
        let oh = out(h, k[0], o.stride[0], o.padding[0], o.dilation[0]);
        let ow = out(w, k[1], o.stride[1], o.padding[1], o.dilation[1]);
        let cg = c / o.groups;
        let rows = cg * k[0] * k[1];
        let mut y = vec![0.0; n * o.groups * rows * oh * ow];
        for bi in 0..n {
            for g in 0..o.groups {
                for ci in 0..cg {
                    for i in 0..k[0] {
                        for j in 0..k[1] {
                            let r = (ci * k[0] + i) * k[1] + j;
                            for oy in 0..oh {
                                for ox in 0..ow {
                                    let iy = at(oy, i, o.stride[0], o.padding[0], o.dilation[0], h);
                                    let ix = at(ox, j, o.stride[1], o.padding[1], o.dilation[1], w);
                                    if let (Some(iy), Some(ix)) = (iy, ix) {
                                        let dst = (((bi * o.groups + g) * rows + r) * oh + oy) * ow + ox;
                                        y[dst] = x.data()[((bi * c + g * cg + ci) * h + iy) * w + ix];
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        Tensor::from_vec(y, [n, o.groups, rows, oh * ow])
    }

    /// `col2im` element by element: every column entry added where `im2col` took it from.
    pub(crate) fn col2im(cols: &Tensor<f64>, k: [usize; 2], image: [usize; 2], o: ConvOptions) -> Tensor<f64> {
        let s = cols.shape();
        let (n, groups, rows) = (s[0], s[1], s[2]);
        let cg = rows / (k[0] * k[1]);
        let (h, w) = (image[0], image[1]);
        let c = cg * groups;
        let oh = out(h, k[0], o.stride[0], o.padding[0], o.dilation[0]);
        let ow = out(w, k[1], o.stride[1], o.padding[1], o.dilation[1]);
        let mut y = vec![0.0; n * c * h * w];
        for bi in 0..n {
            for g in 0..groups {
                for ci in 0..cg {
                    for i in 0..k[0] {
                        for j in 0..k[1] {
                            let r = (ci * k[0] + i) * k[1] + j;
                            for oy in 0..oh {
                                for ox in 0..ow {
                                    let iy = at(oy, i, o.stride[0], o.padding[0], o.dilation[0], h);
                                    let ix = at(ox, j, o.stride[1], o.padding[1], o.dilation[1], w);
                                    if let (Some(iy), Some(ix)) = (iy, ix) {
                                        let src = (((bi * groups + g) * rows + r) * oh + oy) * ow + ox;
                                        y[((bi * c + g * cg + ci) * h + iy) * w + ix] += cols.data()[src];
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        Tensor::from_vec(y, [n, c, h, w])
    }

    /// Max or average pooling by nested loops: `max` keeps the first maximum (NaN wins), the
    /// average divides by the whole window.
    pub(crate) fn pool(x: &Tensor<f64>, k: [usize; 2], s: [usize; 2], p: [usize; 2], max: bool) -> Tensor<f64> {
        let xs = x.shape();
        let (n, c, h, w) = (xs[0], xs[1], xs[2], xs[3]);
        let oh = out(h, k[0], s[0], p[0], 1);
        let ow = out(w, k[1], s[1], p[1], 1);
        let mut y = Vec::new();
        for plane in 0..n * c {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc: Option<f64> = None;
                    let mut sum = 0.0;
                    for i in 0..k[0] {
                        for j in 0..k[1] {
                            let (Some(iy), Some(ix)) = (at(oy, i, s[0], p[0], 1, h), at(ox, j, s[1], p[1], 1, w))
                            else {
                                continue;
                            };
                            let v = x.data()[(plane * h + iy) * w + ix];
                            sum += v;
                            acc = match acc {
                                None => Some(v),
                                Some(a) if a.is_nan() => Some(a),
                                Some(a) => Some(if v.is_nan() || v > a { v } else { a }),
                            };
                        }
                    }
                    y.push(if max {
                        acc.unwrap_or(f64::NEG_INFINITY)
                    } else {
                        sum / (k[0] * k[1]) as f64
                    });
                }
            }
        }
        Tensor::from_vec(y, [n, c, oh, ow])
    }

    /// The gradient of `⟨u, max_pool2d(x)⟩` for `x`: each window's `u` added at its first
    /// maximal element in row-major order (the first NaN if it holds one), windows in order.
    pub(crate) fn max_pool_backward(
        x: &Tensor<f64>,
        u: &Tensor<f64>,
        k: [usize; 2],
        s: [usize; 2],
        p: [usize; 2],
    ) -> Tensor<f64> {
        let xs = x.shape();
        let (n, c, h, w) = (xs[0], xs[1], xs[2], xs[3]);
        let oh = out(h, k[0], s[0], p[0], 1);
        let ow = out(w, k[1], s[1], p[1], 1);
        let mut dx = vec![0.0; x.numel()];
        for plane in 0..n * c {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut best: Option<(usize, f64)> = None;
                    for i in 0..k[0] {
                        for j in 0..k[1] {
                            let (Some(iy), Some(ix)) = (at(oy, i, s[0], p[0], 1, h), at(ox, j, s[1], p[1], 1, w))
                            else {
                                continue;
                            };
                            let at = (plane * h + iy) * w + ix;
                            let v = x.data()[at];
                            best = match best {
                                Some((b, a)) if a.is_nan() || !(v.is_nan() || v > a) => Some((b, a)),
                                _ => Some((at, v)),
                            };
                        }
                    }
                    if let Some((b, _)) = best {
                        dx[b] += u.data()[(plane * oh + oy) * ow + ox];
                    }
                }
            }
        }
        Tensor::from_vec(dx, xs)
    }

    /// Dropout with its own mask drawn from the seed.
    pub(crate) fn dropout(x: &Tensor<f64>, p: f64, seed: u64) -> Tensor<f64> {
        let mut rng = crate::core::rng::Rng::new(seed);
        let y: Vec<f64> = x
            .data()
            .iter()
            .map(|&v| {
                let u = rng.uniform();
                if u < p { 0.0 } else { v / (1.0 - p) }
            })
            .collect();
        Tensor::from_vec(y, x.shape())
    }
}

// ---------------------------------------------------------------------------------------------
// Recipes.
// ---------------------------------------------------------------------------------------------

/// A wild size: usually small, sometimes 0 or huge.
fn wild_size(c: &mut Choice<'_>) -> usize {
    match c.below(8) {
        0 => 0,
        1 => usize::MAX / 2,
        _ => c.below(4),
    }
}

/// Wild options: any small (or zero, or huge) stride, padding, dilation and groups.
fn wild_opts(c: &mut Choice<'_>) -> ConvOptions {
    ConvOptions {
        stride: [wild_size(c), wild_size(c)],
        padding: [wild_size(c), wild_size(c)],
        dilation: [wild_size(c), wild_size(c)],
        groups: wild_size(c),
    }
}

/// A pool value as an image `[1, c, rows, cols]`: a 0-d or 1-D value becomes one row, else the
/// last axis is the width and the others flatten into `channels × rows` (`channels` chosen when
/// `rows_as_channels`). `None` for an empty value.
fn as_image<'t, T: Float>(x: Var<'t, T>, rows_as_channels: bool) -> Option<(Var<'t, T>, [usize; 4])> {
    let s = x.shape();
    let n = x.numel();
    if n == 0 {
        return None;
    }
    let cols = s.last().copied().unwrap_or(1);
    let rows = n / cols;
    let shape = if rows_as_channels {
        [1, rows, 1, cols]
    } else {
        [1, 1, rows, cols]
    };
    Some((x.reshape(shape), shape))
}

/// The first `shape.product()` elements of a pool value (`x` itself if none is large enough),
/// reshaped: a weight for a tame convolution.
fn weight_from<'t, T: Float>(c: &mut Choice<'_>, v: &[Var<'t, T>], x: Var<'t, T>, shape: [usize; 4]) -> Var<'t, T> {
    let need: usize = shape.iter().product();
    let start = c.below(v.len());
    let src = (0..v.len())
        .map(|k| v[(start + k) % v.len()])
        .find(|s| s.numel() >= need)
        .unwrap_or(x);
    let n = src.numel();
    src.reshape([n]).slice(0, 0..need).reshape(shape)
}

/// Tame convolution options for an image of `[rows, cols]` and a kernel: padding 0–1, stride
/// 1–2, dilation 1–2 (1 where the dilated kernel would not fit).
fn tame_opts(c: &mut Choice<'_>, hw: [usize; 2], k: [usize; 2], groups: usize) -> ConvOptions {
    let mut o = ConvOptions::new().groups(groups);
    for a in 0..2 {
        o.padding[a] = c.below(2);
        o.stride[a] = 1 + c.below(2);
        o.dilation[a] = 1 + c.below(2);
        if output_size(hw[a], k[a], 1, o.padding[a], o.dilation[a]).is_none() {
            o.dilation[a] = 1;
        }
    }
    o
}

/// Random programs' and the fuzzer's call of `conv2d` (or `conv1d`). Tame: a pool value as an
/// image (channels = rows, or one channel), a kernel that fits, a weight cut from a pool value,
/// groups 1 or depthwise, an optional bias; wild: any two values and any options.
fn conv_recipe<'t, T: Float>(c: &mut Choice<'_>, v: &[Var<'t, T>]) -> Option<Var<'t, T>> {
    let x = c.pick(v);
    let one_d = c.flag();
    if c.wild() {
        let (w, o) = (c.pick(v), wild_opts(c));
        let b = c.flag().then(|| c.pick(v));
        return Some(if one_d { x.conv1d(w, b, o) } else { x.conv2d(w, b, o) });
    }
    let (img, s) = as_image(x, one_d || c.flag())?;
    let (ch, rows, cols) = (s[1], s[2], s[3]);
    let kw = 1 + c.below(cols.min(3));
    let kh = 1 + c.below(rows.min(2));
    let depthwise = ch > 1 && c.flag();
    let (groups, mut out) = if depthwise { (ch, ch) } else { (1, 1 + c.below(2)) };
    // `x` itself holds enough elements for one output channel; two need a larger pool value.
    let fits = |need: usize| v.iter().any(|s| s.numel() >= need);
    if !fits(out * ch / groups * kh * kw) {
        out = 1;
    }
    let w = weight_from(c, v, x, [out, ch / groups, kh, kw]);
    let o = tame_opts(c, [rows, cols], [kh, kw], groups);
    let b = (c.flag() && fits(out)).then(|| weight_from(c, v, x, [1, 1, 1, out]).reshape([out]));
    Some(if one_d {
        let x1 = img.reshape([1, ch, cols]);
        let o1 = ConvOptions::new()
            .stride(o.stride[1])
            .padding(o.padding[1])
            .dilation(o.dilation[1])
            .groups(groups);
        x1.conv1d(w.reshape([out, ch / groups, kw]), b, o1)
    } else {
        img.conv2d(w, b, o)
    })
}

/// Random programs' and the fuzzer's call of `im2col` or `col2im` (`col2im` of an `im2col`, so
/// the columns fit). Tame: a pool value as a one-channel image and a kernel that fits; wild: any
/// value, kernel and options.
fn patches_recipe<'t, T: Float>(c: &mut Choice<'_>, v: &[Var<'t, T>], back: bool) -> Option<Var<'t, T>> {
    let x = c.pick(v);
    if c.wild() {
        let (k, o) = ([wild_size(c), wild_size(c)], wild_opts(c));
        return Some(if back {
            x.col2im(k, [wild_size(c), wild_size(c)], o)
        } else {
            x.im2col(k, o)
        });
    }
    let (img, s) = as_image(x, false)?;
    let k = [1 + c.below(s[2].min(2)), 1 + c.below(s[3].min(3))];
    let o = tame_opts(c, [s[2], s[3]], k, 1);
    let cols = img.im2col(k, o);
    Some(if back { cols.col2im(k, [s[2], s[3]], o) } else { cols })
}

/// Random programs' and the fuzzer's call of `max_pool2d` / `avg_pool2d`. Tame: a pool value as
/// an image, a window that fits, padding at most half of it; for the maximum the input is made
/// tie-free first (`tanh(x)/4` plus a shuffled ramp of distinct integers, as `max`'s recipe);
/// wild: any value, kernel, stride and padding.
fn pool_recipe<'t, T: Float>(c: &mut Choice<'_>, v: &[Var<'t, T>], max: bool) -> Option<Var<'t, T>> {
    let x = c.pick(v);
    if c.wild() {
        let (k, s, p) = (
            [wild_size(c), wild_size(c)],
            [wild_size(c), wild_size(c)],
            [wild_size(c), wild_size(c)],
        );
        return Some(pool(x, max, k, s, p));
    }
    let (img, s) = as_image(x, c.flag())?;
    let k = [1 + c.below(s[2].min(2)), 1 + c.below(s[3].min(3))];
    let st = [1 + c.below(2), 1 + c.below(2)];
    let p = [c.below(k[0] / 2 + 1), c.below(k[1] / 2 + 1)];
    Some(if max {
        let order = c.permutation(img.numel());
        let ramp = Tensor::from_fn(s, |k| T::from_f64(order[k] as f64));
        let tie_free = img.tanh().mul_scalar(T::from_f64(0.25)) + x.tape().constant(ramp);
        tie_free.max_pool2d(k, st, p)
    } else {
        img.avg_pool2d(k, st, p)
    })
}

/// Random programs' and the fuzzer's call of `dropout`. Tame: `p` of 0, ¼ or ½ and a seed from
/// the choices; wild: any number as `p` (NaN, negative, above 1 included).
fn dropout_recipe<'t, T: Float>(c: &mut Choice<'_>, v: &[Var<'t, T>]) -> Option<Var<'t, T>> {
    let x = c.pick(v);
    let p = if c.wild() {
        c.scalar()
    } else {
        c.one_of(&[0.0, 0.25, 0.5])
    };
    let seed = c.byte() as u64;
    Some(x.dropout(p, seed))
}

// ---------------------------------------------------------------------------------------------
// Registry entries.
// ---------------------------------------------------------------------------------------------

/// The options of the registry's convolution samples (shared by a sample and its reference).
const fn opts(stride: [usize; 2], padding: [usize; 2], dilation: [usize; 2], groups: usize) -> ConvOptions {
    ConvOptions {
        stride,
        padding,
        dilation,
        groups,
    }
}
const O_PLAIN: ConvOptions = opts([1, 1], [0, 0], [1, 1], 1);
const O_S2P1: ConvOptions = opts([2, 2], [1, 1], [1, 1], 1);
const O_G2: ConvOptions = opts([1, 1], [1, 0], [1, 1], 2);
const O_DIL: ConvOptions = opts([1, 1], [2, 2], [2, 2], 2);
const O_RECT: ConvOptions = opts([2, 1], [1, 0], [1, 2], 1);
const O_1D: ConvOptions = opts([2, 2], [1, 1], [1, 1], 1);
const O_1D_DIL: ConvOptions = opts([1, 1], [1, 1], [2, 2], 2);

/// Distinct values spread evenly over `[−2.4, 2.4)` in a seeded order: no two elements of a
/// max-pool sample are closer than `4.8/n` (0.1 for the largest sample), so finite differences
/// (in `f32` too) never cross a tie.
fn tie_free(shape: &[usize], seed: u64) -> Tensor<f64> {
    let n: usize = shape.iter().product();
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = Rng::new(seed);
    for i in (1..n).rev() {
        order.swap(i, rng.below(i + 1));
    }
    Tensor::from_fn(shape, |k| 4.8 * order[k] as f64 / n as f64 - 2.4)
}

/// Standard normal samples of `shape` (the registry's convolution samples).
fn normal(shape: &[usize], seed: u64) -> Tensor<f64> {
    Tensor::rand_normal(shape, 0.0, 1.0, seed)
}

/// `y ⊙ y`: the reference of a sample that squares the op's output.
fn squared(y: Tensor<f64>) -> Tensor<f64> {
    Tensor::from_vec(y.data().iter().map(|a| a * a).collect(), y.shape())
}

/// `max_pool2d` when `max`, else `avg_pool2d`.
#[track_caller]
fn pool<'t, T: Float>(x: Var<'t, T>, max: bool, k: impl Into<Hw>, s: impl Into<Hw>, p: impl Into<Hw>) -> Var<'t, T> {
    if max {
        x.max_pool2d(k, s, p)
    } else {
        x.avg_pool2d(k, s, p)
    }
}

/// The samples of `max_pool2d` (`MAX`: tie-free inputs, seeds from 640) or `avg_pool2d` (normal
/// inputs, seeds from 650): a 2×2 window, overlapping or strided windows with padding, and a
/// rectangular window, squared.
fn pool_samples<const MAX: bool>() -> Vec<Sample> {
    let n: fn(&[usize], u64) -> Tensor<f64> = if MAX { tie_free } else { normal };
    let seed = if MAX { 640 } else { 650 };
    let padded = if MAX {
        sample!(
            "batch 2, [2,2,4,3] kernel 3 stride 1 padding 1 (overlapping)",
            [n(&[2, 2, 4, 3], seed + 1)],
            |v| v[0].max_pool2d(3, 1, 1)
        )
        .with_reference(|x| naive::pool(&x[0], [3, 3], [1, 1], [1, 1], true))
    } else {
        sample!(
            "batch 2, [2,3,5,4] kernel 3 stride 2 padding 1",
            [n(&[2, 3, 5, 4], seed + 1)],
            |v| v[0].avg_pool2d(3, 2, 1)
        )
        .with_reference(|x| naive::pool(&x[0], [3, 3], [2, 2], [1, 1], false))
    };
    vec![
        sample!("[1,1,4,4] kernel 2 stride 2", [n(&[1, 1, 4, 4], seed)], |v| pool(
            v[0], MAX, 2, 2, 0
        ))
        .with_reference(|x| naive::pool(&x[0], [2, 2], [2, 2], [0, 0], MAX)),
        padded,
        sample!(
            "[1,2,3,5] kernel [2,3] stride [1,2] padding [1,1], squared",
            [n(&[1, 2, 3, 5], seed + 2)],
            |v| {
                let y = pool(v[0], MAX, [2, 3], [1, 2], [1, 1]);
                y * y
            }
        )
        .with_reference(|x| squared(naive::pool(&x[0], [2, 3], [1, 2], [1, 1], MAX))),
    ]
}

pub(crate) fn register(r: &mut Registry) {
    r.register(
        OpInfo::new(
            "conv2d",
            "2-D convolution NCHW (also conv1d): stride, zero padding, dilation, groups",
            || {
                let n = normal;
                vec![
                    sample!(
                        "[1,1,4,4] * [1,1,3,3]",
                        [n(&[1, 1, 4, 4], 600), n(&[1, 1, 3, 3], 601)],
                        |v| v[0].conv2d(v[1], None, O_PLAIN)
                    )
                    .with_reference(|x| naive::conv2d(&x[0], &x[1], None, O_PLAIN)),
                    sample!(
                        "batch 2, [2,2,5,5] * [3,2,3,3] stride 2 padding 1, bias",
                        [n(&[2, 2, 5, 5], 602), n(&[3, 2, 3, 3], 603), n(&[3], 604)],
                        |v| v[0].conv2d(v[1], Some(v[2]), O_S2P1)
                    )
                    .with_reference(|x| naive::conv2d(&x[0], &x[1], Some(&x[2]), O_S2P1)),
                    sample!(
                        "groups 2, [1,4,3,4] * [4,2,2,2] padding [1,0]",
                        [n(&[1, 4, 3, 4], 605), n(&[4, 2, 2, 2], 606)],
                        |v| v[0].conv2d(v[1], None, O_G2)
                    )
                    .with_reference(|x| naive::conv2d(&x[0], &x[1], None, O_G2)),
                    sample!(
                        "depthwise dilation 2 padding 2, [1,2,4,4] * [2,1,3,3]",
                        [n(&[1, 2, 4, 4], 607), n(&[2, 1, 3, 3], 608)],
                        |v| v[0].conv2d(v[1], None, O_DIL)
                    )
                    .with_reference(|x| naive::conv2d(&x[0], &x[1], None, O_DIL)),
                    sample!(
                        "rectangular stride [2,1] dilation [1,2], [2,3,4,5] * [2,3,2,2], squared",
                        [n(&[2, 3, 4, 5], 609), n(&[2, 3, 2, 2], 610)],
                        |v| {
                            let y = v[0].conv2d(v[1], None, O_RECT);
                            y * y
                        }
                    )
                    .with_reference(|x| squared(naive::conv2d(&x[0], &x[1], None, O_RECT))),
                    sample!(
                        "conv1d batch 2, [2,2,7] * [3,2,3] stride 2 padding 1, bias",
                        [n(&[2, 2, 7], 611), n(&[3, 2, 3], 612), n(&[3], 613)],
                        |v| v[0].conv1d(v[1], Some(v[2]), O_1D)
                    )
                    .with_reference(|x| naive::conv1d(&x[0], &x[1], Some(&x[2]), O_1D)),
                    sample!(
                        "conv1d groups 2 dilation 2 padding 1, [1,4,6] * [2,2,2]",
                        [n(&[1, 4, 6], 614), n(&[2, 2, 2], 615)],
                        |v| v[0].conv1d(v[1], None, O_1D_DIL)
                    )
                    .with_reference(|x| naive::conv1d(&x[0], &x[1], None, O_1D_DIL)),
                ]
            },
        )
        .recipe(recipe!(|c, v| conv_recipe(c, v))),
    );
    r.register(
        OpInfo::new(
            "im2col",
            "the patches of an NCHW image as columns [n, groups, (c/groups)·kh·kw, oh·ow]",
            || {
                let n = normal;
                vec![
                    sample!("[1,1,3,4] kernel 2", [n(&[1, 1, 3, 4], 620)], |v| v[0]
                        .im2col(2, O_PLAIN))
                    .with_reference(|x| naive::im2col(&x[0], [2, 2], O_PLAIN)),
                    sample!(
                        "[2,2,4,3] kernel [3,2] stride 2 padding 1",
                        [n(&[2, 2, 4, 3], 621)],
                        |v| v[0].im2col([3, 2], O_S2P1)
                    )
                    .with_reference(|x| naive::im2col(&x[0], [3, 2], O_S2P1)),
                    sample!(
                        "[1,2,4,4] kernel 3 dilation 2 groups 2, squared",
                        [n(&[1, 2, 4, 4], 622)],
                        |v| {
                            let y = v[0].im2col(3, O_DIL);
                            y * y
                        }
                    )
                    .with_reference(|x| squared(naive::im2col(&x[0], [3, 3], O_DIL))),
                ]
            },
        )
        .recipe(recipe!(|c, v| patches_recipe(c, v, false))),
    );
    r.register(
        OpInfo::new(
            "col2im",
            "the adjoint of im2col: columns added back into an NCHW image",
            || {
                let n = normal;
                vec![
                    sample!("[1,1,4,6] into [3,4] kernel 2", [n(&[1, 1, 4, 6], 630)], |v| v[0]
                        .col2im(2, [3, 4], O_PLAIN))
                    .with_reference(|x| naive::col2im(&x[0], [2, 2], [3, 4], O_PLAIN)),
                    sample!(
                        "[2,1,12,4] into [2,2,4,3] kernel [3,2] stride 2 padding 1",
                        [n(&[2, 1, 12, 4], 631)],
                        |v| v[0].col2im([3, 2], [4, 3], O_S2P1)
                    )
                    .with_reference(|x| naive::col2im(&x[0], [3, 2], [4, 3], O_S2P1)),
                    sample!(
                        "[1,2,9,16] into [1,2,4,4] kernel 3 dilation 2 groups 2",
                        [n(&[1, 2, 9, 16], 632)],
                        |v| v[0].col2im(3, [4, 4], O_DIL)
                    )
                    .with_reference(|x| naive::col2im(&x[0], [3, 3], [4, 4], O_DIL)),
                    sample!("through conv2d's rule, recorded", [n(&[1, 2, 2, 2], 633)], |v| {
                        let tape = v[0].tape();
                        let x = tape.var(Tensor::zeros([1, 1, 3, 3]));
                        let w = [1.0, -2.0, 0.5, 3.0, 0.25, -1.0, 2.0, 1.5];
                        let w = Tensor::from_vec(w.into_iter().map(crate::Float::from_f64).collect(), [2, 1, 2, 2]);
                        let w = tape.constant(w);
                        tape.grad_graph(&[x.conv2d(w, None, O_PLAIN)], &[v[0]], &[x])[0]
                    }),
                ]
            },
        )
        .recipe(recipe!(|c, v| patches_recipe(c, v, true))),
    );
    r.register(
        OpInfo::new(
            "max_pool2d",
            "the maximum of each window (the first maximal element gets the gradient; NaN propagates)",
            pool_samples::<true>,
        )
        .recipe(recipe!(|c, v| pool_recipe(c, v, true))),
    );
    r.register(
        OpInfo::new(
            "max_pool2d_backward",
            "max_pool2d's gradient for its input as an op (checked through a recorded gradient)",
            || {
                // Through max_pool2d's recorded rule: ∂⟨u, max_pool2d(x)⟩/∂x, a function of u.
                // `two`: the 2×2 pool with stride 2, else kernel 3, stride 1, padding 1 (overlapping).
                let through = |label: &str, x: Tensor<f64>, u: Tensor<f64>, two: bool| {
                    if two {
                        sample!(label, [x, u], |v| {
                            let t = v[0].tape();
                            t.grad_graph(&[v[0].max_pool2d(2, 2, 0)], &[v[1]], &[v[0]])[0]
                        })
                        .with_reference(|x| naive::max_pool_backward(&x[0], &x[1], [2, 2], [2, 2], [0, 0]))
                    } else {
                        sample!(label, [x, u], |v| {
                            let t = v[0].tape();
                            t.grad_graph(&[v[0].max_pool2d(3, 1, 1)], &[v[1]], &[v[0]])[0]
                        })
                        .with_reference(|x| naive::max_pool_backward(&x[0], &x[1], [3, 3], [1, 1], [1, 1]))
                    }
                };
                vec![
                    through(
                        "[2,2,4,4] kernel 2 stride 2",
                        tie_free(&[2, 2, 4, 4], 670),
                        normal(&[2, 2, 2, 2], 671),
                        true,
                    ),
                    through(
                        "[1,2,5,3] kernel 2 stride 2 (odd: a last row and column no window reads)",
                        tie_free(&[1, 2, 5, 3], 672),
                        normal(&[1, 2, 2, 1], 673),
                        true,
                    ),
                    through(
                        "[1,2,4,3] kernel 3 stride 1 padding 1 (overlapping)",
                        tie_free(&[1, 2, 4, 3], 674),
                        normal(&[1, 2, 4, 3], 675),
                        false,
                    ),
                ]
            },
        )
        .absorbs_nan(
            "x only picks where each window's gradient goes: a NaN in x is its window's maximum and gets the \
         gradient, as in max_pool2d's rule, rather than making it NaN (a NaN in the gradient propagates)",
        ),
    );
    r.register(
        OpInfo::new(
            "avg_pool2d",
            "the mean of each window, padding zeros counted (count_include_pad)",
            pool_samples::<false>,
        )
        .recipe(recipe!(|c, v| pool_recipe(c, v, false))),
    );
    r.register(
        OpInfo::new(
            "dropout",
            "inverted dropout with a mask drawn from a seed (p = 0: identity, p = 1: zeros)",
            || {
                let n = normal;
                vec![
                    sample!("[4,5] p 0.5 seed 3", [n(&[4, 5], 660)], |v| v[0].dropout(0.5, 3))
                        .with_reference(|x| naive::dropout(&x[0], 0.5, 3)),
                    sample!("[2,3,2] p 0.25 seed 11, squared", [n(&[2, 3, 2], 661)], |v| {
                        let y = v[0].dropout(0.25, 11);
                        y * y
                    })
                    .with_reference(|x| squared(naive::dropout(&x[0], 0.25, 11))),
                    sample!("[3] p 0 (identity)", [n(&[3], 662)], |v| v[0].dropout(0.0, 5))
                        .with_reference(|x| naive::dropout(&x[0], 0.0, 5)),
                    sample!("[3] p 1 (zeros)", [n(&[3], 663)], |v| v[0].dropout(1.0, 5))
                        .with_reference(|x| Tensor::zeros(x[0].shape())),
                ]
            },
        )
        .recipe(recipe!(|c, v| dropout_recipe(c, v))),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value for the 2×2 pool tests: many ties (four small integers), NaNs of several signs
    /// and payloads (the first NaN of a window is the one kept), infinities and signed zeros.
    fn awkward(r: &mut crate::rng::Rng) -> f32 {
        match r.below(12) {
            0 => f32::NAN,
            1 => f32::INFINITY,
            2 => f32::NEG_INFINITY,
            3 => -0.0,
            4 => 0.0,
            5 => f32::from_bits(0xffc0_0123),
            6 => f32::from_bits(0x7fc0_0456),
            _ => r.below(4) as f32 - 1.5,
        }
    }

    /// [`awkward`] without NaN (a NaN-free plane takes the kernels' path without NaN selects).
    fn awkward_no_nan(r: &mut crate::rng::Rng) -> f32 {
        let v = awkward(r);
        if v.is_nan() { r.below(4) as f32 - 1.5 } else { v }
    }

    /// The 2×2 stride-2 pool's unrolled scan picks the windows' positions the general scan picks
    /// — the first maximum in scan order, the first NaN in a window holding one — on values with
    /// many ties, NaNs, infinities and signed zeros, at even and odd plane sizes; and each picked
    /// value is the window's maximum by a plain comparison (an independent check of the scan).
    #[test]
    fn the_unrolled_2x2_pool_scan_is_the_general_scan() {
        let mut r = crate::rng::Rng::new(21);
        let shapes = [(1, 1, 2, 2), (2, 3, 8, 8), (1, 2, 5, 7), (3, 1, 9, 4), (1, 1, 3, 3)];
        for (nan, (n, c, h, w)) in [true, false].into_iter().flat_map(|nan| shapes.map(|s| (nan, s))) {
            let value = if nan { awkward } else { awkward_no_nan };
            let x: Vec<f32> = (0..n * c * h * w).map(|_| value(&mut r)).collect();
            let g = ConvGeom {
                n,
                c,
                h,
                w,
                groups: c,
                kh: 2,
                kw: 2,
                sh: 2,
                sw: 2,
                ph: 0,
                pw: 0,
                dh: 1,
                dw: 1,
                oh: h / 2,
                ow: w / 2,
            };
            let (fast, scan) = (max_positions_2x2(&x, &g), max_positions_scan(&x, &g));
            assert_eq!(fast, scan, "[{n}, {c}, {h}, {w}]");
            // The forward's values are the picked positions' values, bit for bit.
            let values = max_values_2x2(&x, &g);
            assert_eq!(values.len(), fast.len());
            for (k, (&v, &p)) in values.iter().zip(&fast).enumerate() {
                let plane = &x[(k / g.positions()) * h * w..][..h * w];
                assert_eq!(v.to_bits(), plane[p].to_bits(), "[{n}, {c}, {h}, {w}] window {k}");
            }
            for (k, &p) in fast.iter().enumerate() {
                let plane = &x[(k / g.positions()) * h * w..][..h * w];
                let (oy, ox) = ((k % g.positions()) / g.ow, k % g.ow);
                let window: Vec<f32> = [0, 1, w, w + 1]
                    .iter()
                    .map(|d| plane[2 * oy * w + 2 * ox + d])
                    .collect();
                match window.iter().any(|v| v.is_nan()) {
                    true => assert!(plane[p].is_nan()),
                    false => assert!(window.iter().all(|&v| v <= plane[p])),
                }
            }
        }
    }

    /// The 2×2 pool's one-pass backward writes the bits of `scatter_add` of the gradient into
    /// zeros at the general scan's positions — ties, NaNs (in `x` and in the gradient),
    /// infinities and signed zeros (a `−0` gradient lands as `+0`), odd plane sizes whose last
    /// row or column no window reads.
    #[test]
    fn the_2x2_pool_backward_is_scatter_add_at_the_scan_positions() {
        let mut r = crate::rng::Rng::new(22);
        let shapes = [(1, 1, 2, 2), (2, 3, 8, 8), (1, 2, 5, 7), (3, 1, 9, 4), (1, 1, 3, 3)];
        for (nan, (n, c, h, w)) in [true, false].into_iter().flat_map(|nan| shapes.map(|s| (nan, s))) {
            let value = if nan { awkward } else { awkward_no_nan };
            let x: Vec<f32> = (0..n * c * h * w).map(|_| value(&mut r)).collect();
            let x = Tensor::from_vec(x, [n, c, h, w]);
            let window = Window::new(2, 2, 0);
            let g = window.geometry("test", x.shape()).unwrap();
            let u: Vec<f32> = (0..n * c * g.positions()).map(|_| value(&mut r)).collect();
            let u = Tensor::from_vec(u, [n, c, g.oh, g.ow]);
            let back = MaxPool2dBackwardOp { window, x: x.clone() };
            let fast = Op::<f32>::forward(&back, &[&u]).unwrap();
            let (planes, l) = (n * c, g.positions());
            let scatter = ScatterAddOp {
                axis: 1,
                index: Indices::new(max_positions_scan(x.data(), &g), [planes, l]),
                shape: shape_of([planes, h * w]),
            };
            let reference = Op::<f32>::forward(&scatter, &[&u.reshape([planes, l])]).unwrap();
            assert_eq!(fast.shape(), x.shape());
            let bits = |t: &Tensor<f32>| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&fast), bits(&reference), "[{n}, {c}, {h}, {w}]");
        }
        // A gradient of the wrong shape is refused, naming the op.
        let x = Tensor::<f32>::zeros([1, 1, 4, 4]);
        let back = MaxPool2dBackwardOp {
            window: Window::new(2, 2, 0),
            x,
        };
        let err = Op::<f32>::forward(&back, &[&Tensor::zeros([1, 1, 3, 2])]).unwrap_err();
        assert!(err.to_string().contains("max_pool2d_backward"), "{err}");
    }
}
