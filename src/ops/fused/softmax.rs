//! Fused softmax: one pass per row forward, the closed-form VJP `y ⊙ (g − Σ g⊙y)` backward
//! (saving only `y`). That VJP is the op `softmax_backward`, whose own rule makes the fused path
//! differentiable twice.

use super::common::{keep_shape, row_op, same_shape, softmax_axis, x_and_w};
use crate::autodiff::rule::{Cotangents, Op, VjpCtx};
use crate::autodiff::rule::{Elem, Pointwise, Value};
use crate::autodiff::tape::{OpRef, Var};
use crate::core::error::Result;
use crate::core::float::Float;
use crate::ops::common::arity;
use crate::ops::reference;
use crate::ops::registry::{Domain, NanRule, OpInfo, Registry};
use crate::tensor::Tensor;
use crate::tensor::axis::along_axis;
use crate::tensor::kernels::rows::{softmax_backward_rows, softmax_rows};
use crate::{recipe, sample};

row_op! {
    /// `y = softmax(x)` along `axis`.
    SoftmaxOp "softmax", inputs 1,
    kernel |d, n| softmax_rows(d[0], n),
    /// `y ⊙ (g − Σ g⊙y)` from the saved output: the `softmax_backward` op (one kernel on values,
    /// a recorded node — with its own rule — on `Var`s).
    rule |axis, cx, g| {
        let dx = V::apply(SoftmaxBackwardOp { axis }, &[cx.output(), g])?;
        Ok(cx.grads([Some(dx)]))
    }
}

/// `∂/∂y` of `y ⊙ (g − s)`, `s = Σ g⊙y`, against an upstream `u`: `u ⊙ (g − s) − g · Σ u⊙y`
/// (with `s` and `su = Σ u⊙y` per row, broadcast).
struct DyRule;
impl<T: Float> Pointwise<T, 4> for DyRule {
    #[inline(always)]
    fn eval<E: Elem<T>>(&self, [u, g, s, su]: [E; 4]) -> E {
        u * (g - s) - g * su
    }
}

row_op! {
    /// `dx = y ⊙ (g − Σ g⊙y)`: the VJP of softmax as an op of its own, so it can be differentiated.
    SoftmaxBackwardOp "softmax_backward", inputs 2,
    kernel |d, n| softmax_backward_rows(d[0], d[1], n),
    /// With `dx_i = y_i g_i − y_i s`, `s = Σ g⊙y`, and an upstream `u`:
    /// `∂/∂g = y ⊙ (u − Σ u⊙y)` (softmax_backward again) and `∂/∂y = u ⊙ (g − s) − g · Σ u⊙y`.
    rule |axis, cx, u| {
        let (y, g) = (cx.input(0), cx.input(1));
        let shape = y.shape();
        let keep = keep_shape(&shape, crate::ops::common::resolve_axis("softmax_backward", axis, shape.len())?);
        let dy = cx.needs_grad(0).then(|| {
            let s = g.mul(y).sum_to(&keep);
            let su = u.mul(y).sum_to(&keep);
            V::pointwise(&DyRule, [u, g, &s, &su])
        });
        let dg = match cx.needs_grad(1) {
            true => Some(V::apply(SoftmaxBackwardOp { axis }, &[y, u])?),
            false => None,
        };
        Ok(cx.grads([dy, dg]))
    }
}

impl<'t, T: Float> Var<'t, T> {
    /// Softmax along `axis`, fused: one pass per row forward, the closed-form VJP
    /// `y ⊙ (g − Σ g⊙y)` backward (saving only `y`). Stable for any finite logits.
    #[track_caller]
    pub fn softmax(self, axis: isize) -> Var<'t, T> {
        self.tape.op(OpRef::new(SoftmaxOp { axis }), &[self])
    }
}

pub(crate) fn register(r: &mut Registry) {
    r.register(OpInfo {
        name: "softmax",
        summary: "fused softmax along an axis; VJP y ⊙ (g − Σ g⊙y)",
        differentiable_twice: true,
        nan: NanRule::Propagates,
        domain: Domain::Real,
        // Tame: an axis in range (`None` for a 0-d value); wild: any small axis, 0-d values too.
        recipe: Some(recipe!(|c, v| {
            let x = c.pick(v);
            let axis = c.axis(x.shape().len())?;
            Some(x.softmax(axis))
        })),
        samples: || {
            let n = |s: &[usize], seed| Tensor::<f64>::rand_normal(s, 0.0, 1.5, seed);
            vec![
                sample!("[3,5] axis 1", [n(&[3, 5], 80)], |v| v[0].softmax(1))
                    .with_reference(|x| reference::softmax(&x[0], 1)),
                sample!("[3,5] axis 0", [n(&[3, 5], 81)], |v| v[0].softmax(0))
                    .with_reference(|x| reference::softmax(&x[0], 0)),
                sample!("[2,3,4] axis 1", [n(&[2, 3, 4], 82)], |v| v[0].softmax(1))
                    .with_reference(|x| reference::softmax(&x[0], 1)),
                sample!("[1,1]", [n(&[1, 1], 83)], |v| v[0].softmax(-1))
                    .with_reference(|x| reference::softmax(&x[0], -1)),
                sample!("[1,2]", [n(&[1, 2], 84)], |v| v[0].softmax(-1))
                    .with_reference(|x| reference::softmax(&x[0], -1)),
                sample!("[4] (1-D)", [n(&[4], 85)], |v| v[0].softmax(0))
                    .with_reference(|x| reference::softmax(&x[0], 0)),
            ]
        },
    });
    r.register(OpInfo {
        name: "softmax_backward",
        summary: "y ⊙ (g − Σ g⊙y), the VJP of softmax as an op (checked through a recorded gradient)",
        differentiable_twice: true,
        nan: NanRule::Propagates,
        domain: Domain::Real,
        recipe: None,
        samples: || {
            vec![
                sample!("[3,4] axis 1", x_and_w(&[3, 4], 86), |v| {
                    let t = v[0].tape();
                    let l = (v[0].softmax(1) * v[1]).sum();
                    t.grad_graph(&[l], &[t.scalar(1.0)], &[v[0]])[0]
                }),
                sample!("[3,4] axis 0", x_and_w(&[3, 4], 88), |v| {
                    let t = v[0].tape();
                    let l = (v[0].softmax(0) * v[1]).sum();
                    t.grad_graph(&[l], &[t.scalar(1.0)], &[v[0]])[0]
                }),
            ]
        },
    });
}
