//! Fused ops (softmax, log-softmax, cross-entropy, layer norm): one kernel where the composition of primitives would make several passes, with a
//! closed-form rule. Each fused op's rule is itself an op (`softmax_backward`, …) with its own
//! rule, so even the fused path is differentiable twice; and each has a composed twin the checks
//! compare it with (see [`crate::softmax`] for the three ways side by side).
//!
//! The row kernels live in the tensor layer (`tensor::kernels::rows`); these files hold the ops,
//! their rules, their `Var` methods and their registry entries.

pub mod cross_entropy;
pub mod layer_norm;
pub mod log_softmax;
pub mod logsumexp;
pub mod softmax;

pub(crate) mod common;

use crate::ops::registry::Registry;

pub(crate) fn register(r: &mut Registry) {
    softmax::register(r);
    log_softmax::register(r);
    logsumexp::register(r);
    cross_entropy::register(r);
    layer_norm::register(r);
}
