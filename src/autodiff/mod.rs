//! Reverse mode, in four files read top to bottom:
//!
//! * [`rule`] — the [`Op`] trait every primitive implements with **one** derivative rule, and the
//!   vocabulary that rule is written in ([`Value`], [`Elem`], [`Pointwise`]);
//! * [`tape`] — the [`Tape`](tape::Tape) (Wengert list), its [`Var`](tape::Var) handles, and the
//!   [`Observer`] hook tools watch it through;
//! * [`sweep`] — the one backward sweep, generic over how rules are interpreted;
//! * [`backward`] — `backward`, `grad`, `grad_graph` and [`Grads`](backward::Grads);
//! * [`checkpoint`] — a segment recorded as one node whose rule replays it (memory for time);
//! * `trace` — what recording does differently while [`crate::compile`] traces a function.

pub mod backward;
pub mod checkpoint;
pub mod rule;
pub mod sweep;
pub mod tape;
pub(crate) mod trace;

pub use rule::{
    Binary, BinaryKernel, Cotangents, Elem, Elementwise, Op, Pointwise, RuleKernel, Scalar, Ternary, TernaryKernel,
    Unary, UnaryKernel, Value, VjpCtx, pointwise,
};
pub use tape::Observer;

/// The `Op` trait and what its rule sees, at the path of the first version (see [`rule`]).
pub mod op {
    pub use super::rule::{Cotangents, Op, VjpCtx};
}
