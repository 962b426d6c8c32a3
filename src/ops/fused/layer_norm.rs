//! Fused layer normalisation over the last axis: `y = (x − mean) / √(var + eps) · w + b` in one
//! row kernel (biased variance, as PyTorch's `nn.LayerNorm`), with the closed-form VJP
//!
//! * `∂x = r · (h − mean(h) − x̂ · mean(h ⊙ x̂))`, `h = g ⊙ w`, `r = 1/√(var + eps)`: the op
//!   `layer_norm_backward` (one kernel recomputing the row statistics from `x`, so nothing but the
//!   inputs is kept);
//! * `∂w = Σ_rows g ⊙ x̂`, `∂b = Σ_rows g`.
//!
//! `layer_norm_backward` has its own rule (written in the rule vocabulary), so the fused path is
//! differentiable twice. [`Var::layer_norm_composed`] is the same function from primitives.

use super::common::x_and_w;
use crate::autodiff::rule::{Cotangents, Elem, Op, Pointwise, Value, VjpCtx};
use crate::autodiff::tape::{OpRef, Var};
use crate::core::error::{Error, Result, fail};
use crate::core::float::Float;
use crate::core::shape::fmt_shape;
use crate::ops::elementwise::Math;
use crate::ops::registry::{Choice, OpInfo, Registry};
use crate::tensor::Tensor;
use crate::tensor::kernels::norm::{layer_norm_backward_rows, layer_norm_rows};
use crate::{recipe, sample};
use std::panic::Location;

/// Checks the input of a layer norm (at least one axis) and its optional weight and bias (each
/// of shape `[D]`, `D` the last extent); returns `D`.
fn check<T: Float>(op: &str, x: &Tensor<T>, affine: &[(&str, Option<&Tensor<T>>)]) -> Result<usize> {
    if x.ndim() == 0 {
        return Err(Error::shape(
            op,
            "normalises over the last axis and needs at least one; got a 0-d value (reshape it to [1])",
        ));
    }
    let d = x.shape()[x.ndim() - 1];
    for (what, t) in affine {
        if let Some(t) = t
            && t.shape() != [d]
        {
            return Err(Error::shape(
                op,
                format!(
                    "the {what} must have shape [{d}] (the last extent of the input {}), got {}",
                    fmt_shape(x.shape()),
                    fmt_shape(t.shape())
                ),
            ));
        }
    }
    Ok(d)
}

/// `(x − mean) / √(var + eps) · w + b` over the last axis. Inputs: `x`, then the weight `[D]`
/// when `weight`, then the bias `[D]` when `bias`.
#[derive(Clone, Copy, Debug)]
pub struct LayerNormOp {
    /// Added to the variance before the square root.
    pub eps: f64,
    /// Whether a weight (scale) is the second input.
    pub weight: bool,
    /// Whether a bias (shift) is the last input.
    pub bias: bool,
}

impl LayerNormOp {
    fn plain(eps: f64) -> Self {
        LayerNormOp {
            eps,
            weight: false,
            bias: false,
        }
    }
}

impl<T: Float> Op<T> for LayerNormOp {
    fn name(&self) -> &'static str {
        "layer_norm"
    }
    fn params(&self) -> String {
        format!(
            "eps={}{}{}",
            self.eps,
            if self.weight { ", weight" } else { "" },
            if self.bias { ", bias" } else { "" }
        )
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        crate::ops::common::arity("layer_norm", x, 1 + self.weight as usize + self.bias as usize)?;
        let w = self.weight.then(|| x[1]);
        let b = self.bias.then(|| x[1 + self.weight as usize]);
        let d = check("layer_norm", x[0], &[("weight", w), ("bias", b)])?;
        let data = match d {
            0 => Vec::new(),
            _ => layer_norm_rows(
                x[0].data(),
                w.map(|t| t.data()),
                b.map(|t| t.data()),
                T::from_f64(self.eps),
                d,
            ),
        };
        Tensor::try_from_vec(data, x[0].shape())
    }
    /// `∂x = layer_norm_backward(x, g ⊙ w)`, `∂w = Σ_rows g ⊙ x̂` (`x̂` the plain layer norm of
    /// `x`, the same op without weight and bias), `∂b = Σ_rows g`.
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
        let x = cx.input(0);
        let shape = x.shape();
        let d = [shape[shape.len() - 1]];
        let h = match self.weight {
            true => g.mul(cx.input(1)),
            false => g.clone(),
        };
        let dx = match cx.needs_grad(0) {
            true => Some(V::apply(LayerNormBackwardOp { eps: self.eps }, &[x, &h])?),
            false => None,
        };
        let mut out = Cotangents::new();
        out.push(dx);
        if self.weight {
            let dw = match cx.needs_grad(1) {
                true => Some(g.mul(&V::apply(LayerNormOp::plain(self.eps), &[x])?).sum_to(&d)),
                false => None,
            };
            out.push(dw);
        }
        if self.bias {
            let i = 1 + self.weight as usize;
            out.push(cx.needs_grad(i).then(|| g.sum_to(&d)));
        }
        Ok(out)
    }
}

/// `∂x` of a layer norm: inputs `x` and `h` (the gradient with respect to `x̂`, same shape);
/// output `r · (h − mean(h) − x̂ · mean(h ⊙ x̂))`, the row statistics recomputed from `x`.
#[derive(Clone, Copy, Debug)]
pub struct LayerNormBackwardOp {
    /// The layer norm's `eps`.
    pub eps: f64,
}

/// `∂/∂x` of `⟨u, layer_norm_backward(x, h)⟩`, per element (the row statistics broadcast):
/// `r² · ((3ab − k) · x̂ − b (h − h̄) − a (u − ū))` with `a = mean(h⊙x̂)`, `b = mean(u⊙x̂)`,
/// `k = mean(u⊙h) − ū·h̄`.
struct DxRule;
impl<T: Float> Pointwise<T, 9> for DxRule {
    #[inline(always)]
    fn eval<E: Elem<T>>(&self, [r2, xh, h, u, a, b, hbar, ubar, k]: [E; 9]) -> E {
        r2 * ((a * b * T::from_f64(3.0) - k) * xh - b * (h - hbar) - a * (u - ubar))
    }
}

/// `1 / (v + eps)`.
struct InvPlus(f64);
impl<T: Float> Pointwise<T, 1> for InvPlus {
    #[inline(always)]
    fn eval<E: Elem<T>>(&self, [v]: [E; 1]) -> E {
        v.lit(T::ONE) / (v + T::from_f64(self.0))
    }
}

/// `(x − m) · √r2`.
struct Normalise;
impl<T: Float> Pointwise<T, 3> for Normalise {
    #[inline(always)]
    fn eval<E: Elem<T>>(&self, [x, m, r2]: [E; 3]) -> E {
        (x - m) * r2.sqrt()
    }
}

/// `a − b`.
struct Minus;
impl<T: Float> Pointwise<T, 2> for Minus {
    #[inline(always)]
    fn eval<E: Elem<T>>(&self, [a, b]: [E; 2]) -> E {
        a - b
    }
}

/// `m − a·b`.
struct MinusProd;
impl<T: Float> Pointwise<T, 3> for MinusProd {
    #[inline(always)]
    fn eval<E: Elem<T>>(&self, [m, a, b]: [E; 3]) -> E {
        m - a * b
    }
}

impl<T: Float> Op<T> for LayerNormBackwardOp {
    fn name(&self) -> &'static str {
        "layer_norm_backward"
    }
    fn params(&self) -> String {
        format!("eps={}", self.eps)
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        crate::ops::common::arity("layer_norm_backward", x, 2)?;
        super::common::same_shape("layer_norm_backward", x[0], x[1])?;
        let d = check("layer_norm_backward", x[0], &[])?;
        let data = match d {
            0 => Vec::new(),
            _ => layer_norm_backward_rows(x[0].data(), x[1].data(), T::from_f64(self.eps), d),
        };
        Tensor::try_from_vec(data, x[0].shape())
    }
    /// The map `h ↦ ∂x` is a symmetric projection scaled by `r`, so `∂/∂h` is
    /// `layer_norm_backward(x, u)` again; `∂/∂x` is a closed form (`r²·((3ab − k)·x̂ − b(h − h̄)
    /// − a(u − ū))`, `a = mean(h⊙x̂)`, `b = mean(u⊙x̂)`, `k = mean(u⊙h) − ū·h̄`) whose row
    /// statistics are computed from `x` in the rule vocabulary (so it is differentiable once more).
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, u: &V) -> Result<Cotangents<V>> {
        let (x, h) = (cx.input(0), cx.input(1));
        let shape = x.shape();
        let n = shape[shape.len() - 1];
        let mut keep = shape.clone();
        keep[shape.len() - 1] = 1;
        let inv_n = T::ONE / T::from_usize(n.max(1));
        let mean = |v: &V| v.sum_to(&keep).scale(inv_n);
        let dx = cx.needs_grad(0).then(|| {
            let mu = mean(x);
            let xc = V::pointwise(&Minus, [x, &mu]);
            let r2 = V::pointwise(&InvPlus(self.eps), [&mean(&xc.mul(&xc))]);
            let xh = V::pointwise(&Normalise, [x, &mu, &r2]);
            let (a, b) = (mean(&h.mul(&xh)), mean(&u.mul(&xh)));
            let (hbar, ubar) = (mean(h), mean(u));
            let k = V::pointwise(&MinusProd, [&mean(&u.mul(h)), &ubar, &hbar]);
            V::pointwise(&DxRule, [&r2, &xh, h, u, &a, &b, &hbar, &ubar, &k])
        });
        let dh = match cx.needs_grad(1) {
            true => Some(V::apply(*self, &[x, u])?),
            false => None,
        };
        Ok(cx.grads([dx, dh]))
    }
}

impl<'t, T: Float> Var<'t, T> {
    /// Layer normalisation over the last axis, fused (PyTorch's `layer_norm` with
    /// `normalized_shape = [D]`): `(x − mean) / √(var + eps) · weight + bias`, the variance biased
    /// (divided by `D`), `weight` and `bias` optional, each of shape `[D]`. One row kernel forward;
    /// the closed-form VJP (the op `layer_norm_backward` for `x`) backward, keeping nothing but the
    /// inputs.
    ///
    /// Panics with a `Shape` error naming `layer_norm`, the shapes and the caller's line for a
    /// 0-d input or a weight or bias whose shape is not `[D]`.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0, 4.0, 4.0], [2, 3]));
    /// let b = tape.var(Tensor::from_vec(vec![0.0, 0.0, 1.0], [3]));
    /// let y = x.layer_norm(None, Some(b), 1e-5);
    /// let v = y.value();
    /// assert!((v.get(&[0, 0]) + 1.2247).abs() < 1e-4 && v.get(&[0, 1]).abs() < 1e-12);
    /// assert_eq!(v.get(&[1, 2]), 1.0);                        // a constant row: just the bias
    /// let g = y.sum().backward();
    /// assert_eq!(g[b].to_vec(), vec![2.0, 2.0, 2.0]);         // Σ over rows
    /// assert!(g[x].to_vec().iter().all(|d| d.abs() < 1e-9));  // Σ of a normalised row is 0
    /// ```
    #[track_caller]
    pub fn layer_norm(self, weight: Option<Var<'t, T>>, bias: Option<Var<'t, T>>, eps: f64) -> Var<'t, T> {
        let op = LayerNormOp {
            eps,
            weight: weight.is_some(),
            bias: bias.is_some(),
        };
        let inputs: Vec<Var<'t, T>> = std::iter::once(self).chain(weight).chain(bias).collect();
        self.tape.op(OpRef::new(op), &inputs)
    }

    /// Layer normalisation over the last axis composed from primitives: `m = mean(x)`,
    /// `c = x − m`, `c · (mean(c²) + eps)^(−½)`, then `· weight` and `+ bias` — the composed twin
    /// of the fused [`layer_norm`](Self::layer_norm), with the same checks (made before anything
    /// is recorded; errors name `layer_norm_composed`).
    #[track_caller]
    pub fn layer_norm_composed(self, weight: Option<Var<'t, T>>, bias: Option<Var<'t, T>>, eps: f64) -> Var<'t, T> {
        let loc = Location::caller();
        let (wv, bv) = (weight.map(|w| w.peek()), bias.map(|b| b.peek()));
        check(
            "layer_norm_composed",
            &self.peek(),
            &[("weight", wv.as_ref()), ("bias", bv.as_ref())],
        )
        .unwrap_or_else(|e| fail(e.at(loc)));
        let m = self.mean_keepdim(-1);
        let c = self - m;
        let mut y = c * ((c * c).mean_keepdim(-1) + T::from_f64(eps)).powf(T::from_f64(-0.5));
        if let Some(w) = weight {
            y = y * w;
        }
        if let Some(b) = bias {
            y = y + b;
        }
        y
    }
}

/// The naive `f64` layer norm over the last axis (plain loops), the reference of the samples.
pub(crate) fn reference(x: &Tensor<f64>, w: Option<&Tensor<f64>>, b: Option<&Tensor<f64>>, eps: f64) -> Tensor<f64> {
    let d = x.shape()[x.ndim() - 1];
    let xs = x.data();
    let mut out = vec![0.0; xs.len()];
    for r in 0..xs.len() / d.max(1) {
        let row = &xs[r * d..(r + 1) * d];
        let mut mean = 0.0;
        for &v in row {
            mean += v;
        }
        mean /= d as f64;
        let mut var = 0.0;
        for &v in row {
            var += (v - mean) * (v - mean);
        }
        var /= d as f64;
        for j in 0..d {
            let mut y = (row[j] - mean) / (var + eps).sqrt();
            if let Some(w) = w {
                y *= w.data()[j];
            }
            if let Some(b) = b {
                y += b.data()[j];
            }
            out[r * d + j] = y;
        }
    }
    Tensor::from_vec(out, x.shape())
}

/// Random programs' and the fuzzer's call of `layer_norm`. Tame: a value with at least one axis,
/// `eps = 0.1` (so rows of nearly equal values keep the function smooth at the finite-difference
/// step), and a weight and a bias taken from the pool when it holds values of shape `[D]`; `None`
/// for a 0-d value. Wild: any value, any pool values as weight and bias, any `eps` (NaN, ±∞,
/// negative).
fn layer_norm_recipe<'t, T: Float>(c: &mut Choice<'_>, v: &[Var<'t, T>]) -> Option<Var<'t, T>> {
    let x = c.pick(v);
    let shape = x.shape();
    if c.wild() {
        let w = c.flag().then(|| c.pick(v));
        let b = c.flag().then(|| c.pick(v));
        return Some(x.layer_norm(w, b, c.scalar()));
    }
    let d = *shape.last()?;
    let start = c.below(v.len());
    let mut of_d = (0..v.len())
        .map(|k| v[(start + k) % v.len()])
        .filter(|t| t.shape().as_slice() == [d]);
    let w = if c.flag() { of_d.next() } else { None };
    let b = if c.flag() { of_d.next() } else { None };
    Some(x.layer_norm(w, b, 0.1))
}

pub(crate) fn register(r: &mut Registry) {
    r.register(
        OpInfo::new(
            "layer_norm",
            "fused layer norm over the last axis (optional weight and bias); VJP r·(h − h̄ − x̂·mean(h⊙x̂))",
            || {
                let n = |s: &[usize], seed| Tensor::<f64>::rand_normal(s, 0.0, 1.5, seed);
                vec![
                    sample!(
                        "[2,3,4] weight, bias",
                        [n(&[2, 3, 4], 720), n(&[4], 721), n(&[4], 722)],
                        |v| { v[0].layer_norm(Some(v[1]), Some(v[2]), 1e-5) }
                    )
                    .with_reference(|x| reference(&x[0], Some(&x[1]), Some(&x[2]), 1e-5)),
                    sample!("[3,5] plain", [n(&[3, 5], 723)], |v| v[0].layer_norm(None, None, 1e-5))
                        .with_reference(|x| reference(&x[0], None, None, 1e-5)),
                    sample!("[4] (1-D) weight, eps 0.5", [n(&[4], 724), n(&[4], 725)], |v| {
                        v[0].layer_norm(Some(v[1]), None, 0.5)
                    })
                    .with_reference(|x| reference(&x[0], Some(&x[1]), None, 0.5)),
                    sample!("[3,2] bias", [n(&[3, 2], 726), n(&[2], 727)], |v| {
                        v[0].layer_norm(None, Some(v[1]), 1e-3)
                    })
                    .with_reference(|x| reference(&x[0], None, Some(&x[1]), 1e-3)),
                    sample!(
                        "[1,1] weight, bias",
                        [n(&[1, 1], 728), n(&[1], 729), n(&[1], 730)],
                        |v| { v[0].layer_norm(Some(v[1]), Some(v[2]), 1e-5) }
                    )
                    .with_reference(|x| reference(&x[0], Some(&x[1]), Some(&x[2]), 1e-5)),
                    sample!("[2,0] empty rows", [Tensor::zeros([2, 0]), Tensor::zeros([0])], |v| {
                        v[0].layer_norm(Some(v[1]), None, 1e-5)
                    })
                    .with_reference(|x| reference(&x[0], Some(&x[1]), None, 1e-5)),
                ]
            },
        )
        .recipe(recipe!(|c, v| layer_norm_recipe(c, v))),
    );
    r.register(OpInfo::new(
        "layer_norm_backward",
        "r·(h − h̄ − x̂·mean(h⊙x̂)), the VJP of layer norm for x as an op (checked through a recorded gradient)",
        || {
            vec![
                sample!("[3,4]", x_and_w(&[3, 4], 731), |v| {
                    let t = v[0].tape();
                    let l = (v[0].layer_norm(None, None, 1e-5) * v[1]).sum();
                    t.grad_graph(&[l], &[t.scalar(1.0)], &[v[0]])[0]
                }),
                sample!(
                    "[2,2,3] weight",
                    [
                        Tensor::rand_normal([2, 2, 3], 0.0, 1.5, 732),
                        Tensor::rand_normal([3], 1.0, 0.5, 733),
                        Tensor::rand_normal([2, 2, 3], 0.0, 1.0, 734)
                    ],
                    |v| {
                        let t = v[0].tape();
                        let l = (v[0].layer_norm(Some(v[1]), None, 1e-3) * v[2]).sum();
                        t.grad_graph(&[l], &[t.scalar(1.0)], &[v[0]])[0]
                    }
                ),
            ]
        },
    ));
}
