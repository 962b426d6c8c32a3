//! Fused log-softmax: `x − log Σ exp(x)` computed stably in one kernel, VJP `g − softmax(x)·Σg`
//! from the saved output — the op `log_softmax_backward`, with its own rule.

use super::common::{keep_shape, row_op, same_shape, softmax_axis, x_and_w};
use crate::autodiff::rule::{Cotangents, Op, VjpCtx};
use crate::autodiff::rule::{Elem, Pointwise, Value};
use crate::autodiff::tape::{OpRef, Var};
use crate::core::error::Result;
use crate::core::float::Float;
use crate::ops::common::{arity, resolve_axis};
use crate::ops::elementwise::Math;
use crate::ops::reference;
use crate::ops::registry::{Domain, NanRule, OpInfo, Registry};
use crate::tensor::Tensor;
use crate::tensor::axis::along_axis;
use crate::tensor::kernels::rows::{log_softmax_backward_rows, log_softmax_rows};
use crate::{recipe, sample};

row_op! {
    /// `log softmax(x)` along `axis`.
    LogSoftmaxOp "log_softmax", inputs 1,
    kernel |d, n| log_softmax_rows(d[0], n),
    /// `g − softmax(x)·Σg`, from the saved output: the `log_softmax_backward` op.
    rule |axis, cx, g| {
        let dx = V::apply(LogSoftmaxBackwardOp { axis }, &[cx.output(), g])?;
        Ok(cx.grads([Some(dx)]))
    }
}

/// `−u ⊙ exp(out) · Σg`: the gradient of `log_softmax_backward` for `out`.
struct DOut;
impl<T: Float> Pointwise<T, 3> for DOut {
    #[inline(always)]
    fn eval<E: Elem<T>>(&self, [u, out, sg]: [E; 3]) -> E {
        -(u * out.exp() * sg)
    }
}
/// `u ⊙ exp(out)`.
struct UP;
impl<T: Float> Pointwise<T, 2> for UP {
    #[inline(always)]
    fn eval<E: Elem<T>>(&self, [u, out]: [E; 2]) -> E {
        u * out.exp()
    }
}
/// `u − s`.
struct Minus;
impl<T: Float> Pointwise<T, 2> for Minus {
    #[inline(always)]
    fn eval<E: Elem<T>>(&self, [u, s]: [E; 2]) -> E {
        u - s
    }
}

row_op! {
    /// `dx = g − exp(out) · Σg` with `out = log_softmax(x)`.
    LogSoftmaxBackwardOp "log_softmax_backward", inputs 2,
    kernel |d, n| log_softmax_backward_rows(d[0], d[1], n),
    /// With `p = exp(out)` and an upstream `u`: `∂/∂g = u − Σ u⊙p`, `∂/∂out = −u ⊙ p · Σg`.
    rule |axis, cx, u| {
        let (out, g) = (cx.input(0), cx.input(1));
        let shape = out.shape();
        let keep = keep_shape(&shape, resolve_axis("log_softmax_backward", axis, shape.len())?);
        let d_out = cx.needs_grad(0).then(|| V::pointwise(&DOut, [u, out, &g.sum_to(&keep)]));
        let d_g = cx.needs_grad(1).then(|| {
            let su = V::pointwise(&UP, [u, out]).sum_to(&keep);
            V::pointwise(&Minus, [u, &su])
        });
        Ok(cx.grads([d_out, d_g]))
    }
}

impl<'t, T: Float> Var<'t, T> {
    /// Log-softmax along `axis`, fused: `x − log Σ exp(x)` computed stably, VJP `g − softmax(x)·Σg`.
    #[track_caller]
    pub fn log_softmax(self, axis: isize) -> Var<'t, T> {
        self.tape.op(OpRef::new(LogSoftmaxOp { axis }), &[self])
    }
}

pub(crate) fn register(r: &mut Registry) {
    r.register(OpInfo {
        name: "log_softmax",
        summary: "fused log-softmax along an axis; VJP g − softmax(x)·Σg",
        differentiable_twice: true,
        nan: NanRule::Propagates,
        domain: Domain::Real,
        // Tame: an axis in range (`None` for a 0-d value); wild: any small axis, 0-d values too.
        recipe: Some(recipe!(|c, v| {
            let x = c.pick(v);
            let axis = c.axis(x.shape().len())?;
            Some(x.log_softmax(axis))
        })),
        samples: || {
            let n = |s: &[usize], seed| Tensor::<f64>::rand_normal(s, 0.0, 1.5, seed);
            vec![
                sample!("[3,5] axis 1", [n(&[3, 5], 90)], |v| v[0].log_softmax(1))
                    .with_reference(|x| reference::log_softmax(&x[0], 1)),
                sample!("[2,3,4] axis 0", [n(&[2, 3, 4], 91)], |v| v[0].log_softmax(0))
                    .with_reference(|x| reference::log_softmax(&x[0], 0)),
                sample!("[1,1]", [n(&[1, 1], 92)], |v| v[0].log_softmax(-1))
                    .with_reference(|x| reference::log_softmax(&x[0], -1)),
            ]
        },
    });
    r.register(OpInfo {
        name: "log_softmax_backward",
        summary: "g − exp(out)·Σg, the VJP of log-softmax as an op (checked through a recorded gradient)",
        differentiable_twice: true,
        nan: NanRule::Propagates,
        domain: Domain::Real,
        recipe: None,
        samples: || {
            vec![sample!("[3,4] axis 1", x_and_w(&[3, 4], 93), |v| {
                let t = v[0].tape();
                let l = (v[0].log_softmax(1) * v[1]).sum();
                t.grad_graph(&[l], &[t.scalar(1.0)], &[v[0]])[0]
            })]
        },
    });
}
