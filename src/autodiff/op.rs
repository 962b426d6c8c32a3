//! The [`Op`] trait: one interface for built-in primitives and user-defined operations.
//!
//! An op is a name, a forward computation on tensors, and a vector-Jacobian product (VJP) rule
//! written with [`Var`] operations. Because the rule is itself built from recorded operations, the
//! backward pass can be recorded on the tape ([`Tape::grad_graph`](crate::Tape::grad_graph)) and
//! differentiated again.
//!
//! ```
//! use tapegrad::{Op, Tape, Tensor, Var, VjpCtx, Cotangents, Result, Float};
//!
//! /// `y = x³`, written as a user op with its own rule.
//! struct Cube;
//! impl<T: Float> Op<T> for Cube {
//!     fn name(&self) -> &'static str { "cube" }
//!     fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
//!         Ok(x[0].map(|v| v * v * v))
//!     }
//!     fn vjp<'t>(&self, cx: &VjpCtx<'_, 't, T>, g: Var<'t, T>) -> Result<Cotangents<'t, T>> {
//!         let x = cx.input(0);
//!         Ok(cx.grads([Some(g * x * x * T::from_f64(3.0))]))
//!     }
//! }
//!
//! let tape = Tape::<f64>::new();
//! let x = tape.var(Tensor::from_vec(vec![2.0], [1]));
//! let y = tape.apply(Cube, &[x]).sum();
//! let g = y.backward();
//! assert_eq!(g[x].to_vec(), vec![12.0]);
//! ```

use crate::autodiff::tape::Var;
use crate::core::error::{Error, ErrorKind, Result};
use crate::core::float::Float;
use crate::tensor::Tensor;
use smallvec::SmallVec;

/// The gradients an op's VJP returns, one per input; `None` means "no gradient flows to this input"
/// (allowed only for inputs that do not need one: see [`VjpCtx::needs_grad`]).
pub type Cotangents<'t, T> = SmallVec<[Option<Var<'t, T>>; 2]>;

/// A differentiable operation: forward on tensors, backward (VJP) on recorded variables.
pub trait Op<T: Float>: 'static {
    /// A short unique name, e.g. `"exp"` or `"matmul"`; errors, registries and graph exports use it.
    fn name(&self) -> &'static str;

    /// Parameters worth showing beside the name (e.g. `axis=1, keepdim`); empty by default.
    fn params(&self) -> String {
        String::new()
    }

    /// Computes the output from the input values, or reports why the inputs do not fit.
    fn forward(&self, inputs: &[&Tensor<T>]) -> Result<Tensor<T>>;

    /// An optional fast path for first-order backward: the same rule as [`vjp`](Self::vjp),
    /// computed directly on tensors, so a plain `backward()` records no nodes for this op.
    ///
    /// Return `None` (the default) to use `vjp`. An op that provides both has its two forms
    /// checked against each other by the registry tests: `gradcheck` runs the first-order path,
    /// `gradgradcheck` and the recorded backward run `vjp`.
    fn vjp_tensors(&self, cx: &EagerCtx<'_, T>, g: &Tensor<T>) -> Option<TensorGrads<T>> {
        let _ = (cx, g);
        None
    }

    /// The vector-Jacobian product: given the gradient `g` of the loss with respect to this op's
    /// output, returns the gradients with respect to its inputs, built from `Var` operations.
    ///
    /// The default has no rule: it fails with [`ErrorKind::NoVjp`] the moment a gradient reaches
    /// the op, so a missing rule can never pass a silent zero.
    fn vjp<'t>(&self, cx: &VjpCtx<'_, 't, T>, g: Var<'t, T>) -> Result<Cotangents<'t, T>> {
        let _ = (cx, g);
        Err(Error::new(
            ErrorKind::NoVjp,
            self.name(),
            "this operation has no vector-Jacobian product rule, so no gradient can flow through it \
             (use detach() on its inputs if no gradient is wanted)",
        ))
    }
}

/// Per-input gradients as tensors, returned by [`Op::vjp_tensors`]; `None` for inputs that need none.
pub type TensorGrads<T> = SmallVec<[Option<Tensor<T>>; 2]>;

/// What a tensor-level VJP rule ([`Op::vjp_tensors`]) may look at: input and output values.
pub struct EagerCtx<'a, T: Float> {
    pub(crate) inputs: &'a [&'a Tensor<T>],
    pub(crate) output: &'a Tensor<T>,
    pub(crate) needs: &'a [bool],
}

impl<'a, T: Float> EagerCtx<'a, T> {
    /// The value of input `i`.
    pub fn input(&self, i: usize) -> &'a Tensor<T> {
        self.inputs[i]
    }

    /// The op's output value.
    pub fn output(&self) -> &'a Tensor<T> {
        self.output
    }

    /// Whether input `i` needs a gradient.
    pub fn needs_grad(&self, i: usize) -> bool {
        self.needs[i]
    }

    /// Packs per-input gradients, computing only those that are needed.
    pub fn grads<const N: usize>(&self, g: [&dyn Fn() -> Tensor<T>; N]) -> TensorGrads<T> {
        // (an input index past the op's arity counts as needed, so the sweep reports the count)
        g.iter()
            .enumerate()
            .map(|(i, f)| self.needs.get(i).copied().unwrap_or(true).then(f))
            .collect()
    }
}

/// What a VJP rule may look at: the op's inputs and output as variables on the tape.
pub struct VjpCtx<'a, 't, T: Float> {
    pub(crate) inputs: &'a [Var<'t, T>],
    pub(crate) output: Var<'t, T>,
    pub(crate) needs: &'a [bool],
}

impl<'t, T: Float> VjpCtx<'_, 't, T> {
    /// Input `i` of the op.
    pub fn input(&self, i: usize) -> Var<'t, T> {
        self.inputs[i]
    }

    /// All inputs of the op.
    pub fn inputs(&self) -> &[Var<'t, T>] {
        self.inputs
    }

    /// The op's output (saved by the forward pass, so rules like `exp`'s can reuse it).
    pub fn output(&self) -> Var<'t, T> {
        self.output
    }

    /// Whether input `i` needs a gradient; a rule may skip work for inputs that do not.
    pub fn needs_grad(&self, i: usize) -> bool {
        self.needs[i]
    }

    /// Packs per-input gradients, dropping those of inputs that need none (so their work can be
    /// skipped by passing a lazily computed value through [`needs_grad`](Self::needs_grad)).
    pub fn grads<const N: usize>(&self, g: [Option<Var<'t, T>>; N]) -> Cotangents<'t, T> {
        // (an input index past the op's arity counts as needed, so the sweep reports the count)
        g.into_iter()
            .enumerate()
            .map(|(i, v)| {
                if self.needs.get(i).copied().unwrap_or(true) {
                    v
                } else {
                    None
                }
            })
            .collect()
    }
}
