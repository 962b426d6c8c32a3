//! Tracing: running the user's function once on a tape, with two differences from ordinary
//! recording that make the tape replayable on new inputs.
//!
//! * `detach()` records an identity op (no gradient flows through it) instead of a leaf holding
//!   the value it had while tracing, so a detached maximum follows the new inputs on replay.
//! * Reading a value (`Var::value`, `Var::item`, `argmax`, …) is noted: a function that reads a
//!   value may build a different graph, or bake today's numbers into a constant, for other
//!   inputs, so [`Compiled::trace`](crate::compile::Compiled::trace) refuses it and names the line.
//!
//! Both are switched on only while a trace runs (a thread-local flag), so ordinary tapes behave
//! exactly as before.

use crate::autodiff::rule::Op;
use crate::core::error::{Error, ErrorKind, Result};
use crate::core::float::Float;
use crate::tensor::Tensor;
use std::cell::Cell;
use std::panic::Location;

thread_local! {
    /// Nesting depth of traces running on this thread.
    static TRACING: Cell<u32> = const { Cell::new(0) };
    /// The first value read while tracing, if any.
    static FIRST_READ: Cell<Option<&'static Location<'static>>> = const { Cell::new(None) };
}

/// True while a trace runs on this thread.
#[inline]
pub(crate) fn tracing() -> bool {
    TRACING.with(|t| t.get() > 0)
}

thread_local! {
    /// Set while a compiled step records its backward (and only then).
    static WHOLE_RULES: Cell<bool> = const { Cell::new(false) };
}

/// True while a compiled step records its backward on this thread: an elementwise rule with a
/// [`RuleKernel`](crate::autodiff::RuleKernel) then records as one op. That op has no rule of its
/// own — nothing differentiates a compiled step's recorded backward again — which is why this is
/// never on for a user's own `grad_graph`.
#[inline]
pub(crate) fn whole_rules() -> bool {
    WHOLE_RULES.with(|w| w.get())
}

/// Records elementwise rules whole (see [`whole_rules`]) until dropped.
pub(crate) struct WholeRules(bool);

impl WholeRules {
    pub(crate) fn on() -> Self {
        WholeRules(WHOLE_RULES.with(|w| w.replace(true)))
    }
}

impl Drop for WholeRules {
    fn drop(&mut self) {
        WHOLE_RULES.with(|w| w.set(self.0));
    }
}

/// Notes that user code read a value at `at` (a no-op unless a trace runs).
#[inline]
pub(crate) fn note_read(at: &'static Location<'static>) {
    if tracing() {
        FIRST_READ.with(|r| {
            if r.get().is_none() {
                r.set(Some(at));
            }
        });
    }
}

/// Marks a trace as running on this thread until dropped; [`TraceGuard::first_read`] reports
/// the first value read meanwhile.
pub(crate) struct TraceGuard {
    outer_read: Option<&'static Location<'static>>,
}

impl TraceGuard {
    pub(crate) fn new() -> Self {
        TRACING.with(|t| t.set(t.get() + 1));
        TraceGuard {
            outer_read: FIRST_READ.with(|r| r.take()),
        }
    }
    /// The first value read since the guard was made.
    pub(crate) fn first_read(&self) -> Option<&'static Location<'static>> {
        FIRST_READ.with(|r| r.get())
    }
}

impl Drop for TraceGuard {
    fn drop(&mut self) {
        TRACING.with(|t| t.set(t.get() - 1));
        FIRST_READ.with(|r| r.set(self.outer_read));
    }
}

/// `detach()` while tracing: the identity, recorded under `no_grad` (so no gradient reaches its
/// input); its forward shares the input's buffer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Detach;

impl<T: Float> Op<T> for Detach {
    fn name(&self) -> &'static str {
        "detach"
    }
    fn elementwise(&self) -> Option<crate::autodiff::rule::Elementwise<'_, T>> {
        Some(crate::autodiff::rule::Elementwise::Unary(self))
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        match x {
            [x] => Ok((*x).clone()),
            _ => Err(Error::new(
                ErrorKind::Invalid,
                "detach",
                format!("takes 1 input, got {}", x.len()),
            )),
        }
    }
}

impl<T: Float> crate::autodiff::rule::UnaryKernel<T> for Detach {
    fn apply(&self, x: &[T], out: &mut [T]) {
        out.copy_from_slice(x);
    }
    fn one(&self, x: T) -> T {
        x
    }
}
