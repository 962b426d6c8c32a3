//! The [`Op`] trait: one interface for built-in primitives and user-defined operations — a name,
//! a forward on tensors, and **one** derivative rule.
//!
//! The rule (the vector-Jacobian product, [`Op::vjp`]) is written once, generic over the value
//! type `V: `[`Value`]: the library runs it on tensors for a first-order `backward()` (nothing is
//! recorded) and on [`Var`]s for a recorded backward ([`Tape::grad_graph`](crate::Tape::grad_graph),
//! differentiable again). Because there is one text, the two cannot disagree.
//!
//! ```
//! use tapegrad::{Op, Tape, Tensor, Value, VjpCtx, Cotangents, Result, Float};
//!
//! /// `y = x³`, written as a user op with its own rule: dy = 3x² dx.
//! struct Cube;
//! impl<T: Float> Op<T> for Cube {
//!     fn name(&self) -> &'static str { "cube" }
//!     fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
//!         Ok(x[0].map(|v| v * v * v))
//!     }
//!     fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
//!         let x = cx.input(0);
//!         Ok(cx.grads([Some(g.mul(x).mul(x).scale(T::from_f64(3.0)))]))
//!     }
//! }
//!
//! let tape = Tape::<f64>::new();
//! let x = tape.var(Tensor::from_vec(vec![2.0], [1]));
//! let y = tape.apply(Cube, &[x]).sum();
//! assert_eq!(y.backward()[x].to_vec(), vec![12.0]);                   // first order: 3x²
//! let dy = tape.grad_graph(&[y], &[tape.scalar(1.0)], &[x])[0];     // recorded, same rule
//! assert_eq!(tape.grad(&[dy.sum()], &[Tensor::scalar(1.0)], &[x])[0].to_vec(), vec![12.0]); // 6x
//! ```

use crate::autodiff::tape::Var;
use crate::autodiff::value::Value;
use crate::core::error::{Error, ErrorKind, Result};
use crate::core::float::Float;
use crate::tensor::Tensor;
use smallvec::SmallVec;
use std::sync::Arc;

/// The gradients a rule returns, one per input; `None` means "no gradient flows to this input"
/// (allowed only for inputs that do not need one: see [`VjpCtx::needs_grad`]).
pub type Cotangents<V> = SmallVec<[Option<V>; 2]>;

/// A differentiable operation: forward on tensors, one VJP rule for every backward.
///
/// Ops are `Send + Sync` (a tape holding them can move between threads).
pub trait Op<T: Float>: Send + Sync + 'static {
    /// A short unique name, e.g. `"exp"` or `"matmul"`; errors, registries and graph exports use it.
    fn name(&self) -> &'static str;

    /// Parameters worth showing beside the name (e.g. `axis=1, keepdim`); empty by default.
    fn params(&self) -> String {
        String::new()
    }

    /// Computes the output from the input values, or reports why the inputs do not fit.
    fn forward(&self, inputs: &[&Tensor<T>]) -> Result<Tensor<T>>;

    /// The vector-Jacobian product: given the gradient `g` of the loss with respect to this op's
    /// output, the gradients with respect to its inputs — written once, generic over the value
    /// type (see [`Value`]).
    ///
    /// The default has no rule: it fails with [`ErrorKind::NoVjp`] the moment a gradient reaches
    /// the op, so a missing rule can never pass a silent zero.
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>>
    where
        Self: Sized,
    {
        let _ = (cx, g);
        Err(Error::new(
            ErrorKind::NoVjp,
            self.name(),
            "this operation has no vector-Jacobian product rule, so no gradient can flow through it \
             (use detach() on its inputs if no gradient is wanted)",
        ))
    }
}

/// What a rule may look at: the op's input and output values, and which inputs need a gradient.
pub struct VjpCtx<'a, V> {
    pub(crate) inputs: &'a [&'a V],
    pub(crate) output: &'a V,
    pub(crate) needs: &'a [bool],
}

impl<'a, V> VjpCtx<'a, V> {
    /// Input `i` of the op.
    #[inline(always)]
    pub fn input(&self, i: usize) -> &'a V {
        self.inputs[i]
    }

    /// The number of inputs.
    pub fn arity(&self) -> usize {
        self.inputs.len()
    }

    /// The op's output (saved by the forward pass, so rules like `exp`'s can reuse it).
    #[inline(always)]
    pub fn output(&self) -> &'a V {
        self.output
    }

    /// Whether input `i` needs a gradient; a rule may skip work for inputs that do not.
    #[inline(always)]
    pub fn needs_grad(&self, i: usize) -> bool {
        self.needs.get(i).copied().unwrap_or(true)
    }

    /// Packs per-input gradients, dropping those of inputs that need none. (Compute expensive
    /// ones lazily: `cx.needs_grad(1).then(|| …)`.) An index past the op's inputs is kept, so the
    /// backward reports a rule that returns too many gradients.
    #[inline(always)]
    pub fn grads<const N: usize>(&self, g: [Option<V>; N]) -> Cotangents<V> {
        let mut out = Cotangents::new();
        for (i, v) in g.into_iter().enumerate() {
            out.push(if self.needs_grad(i) { v } else { None });
        }
        out
    }
}

impl<V: std::fmt::Debug> std::fmt::Debug for VjpCtx<'_, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VjpCtx")
            .field("inputs", &self.inputs)
            .field("needs", &self.needs)
            .finish()
    }
}

/// The object-safe face of an [`Op`], as a node stores it: the one generic rule instantiated for
/// each interpretation (values, recorded `Var`s).
pub(crate) trait DynOp<T: Float>: Send + Sync {
    fn name(&self) -> &'static str;
    fn params(&self) -> String;
    fn forward(&self, inputs: &[&Tensor<T>]) -> Result<Tensor<T>>;
    /// The rule on values (first-order backward).
    fn vjp_values(&self, cx: &VjpCtx<'_, Tensor<T>>, g: &Tensor<T>) -> Result<Cotangents<Tensor<T>>>;
    /// The rule on recorded values (recorded backward).
    fn vjp_vars<'t>(&self, cx: &VjpCtx<'_, Var<'t, T>>, g: &Var<'t, T>) -> Result<Cotangents<Var<'t, T>>>;
}

impl<T: Float, O: Op<T>> DynOp<T> for O {
    fn name(&self) -> &'static str {
        Op::name(self)
    }
    fn params(&self) -> String {
        Op::params(self)
    }
    fn forward(&self, inputs: &[&Tensor<T>]) -> Result<Tensor<T>> {
        Op::forward(self, inputs)
    }
    fn vjp_values(&self, cx: &VjpCtx<'_, Tensor<T>>, g: &Tensor<T>) -> Result<Cotangents<Tensor<T>>> {
        self.vjp(cx, g)
    }
    fn vjp_vars<'t>(&self, cx: &VjpCtx<'_, Var<'t, T>>, g: &Var<'t, T>) -> Result<Cotangents<Var<'t, T>>> {
        self.vjp(cx, g)
    }
}

/// How a node holds its op: built-in stateless ops are shared statics (no allocation per node),
/// ops with parameters are reference-counted.
#[derive(Clone)]
pub(crate) enum OpRef<T: Float> {
    Static(&'static dyn DynOp<T>),
    Shared(Arc<dyn DynOp<T>>),
}

impl<T: Float> OpRef<T> {
    /// A parameterised (or user) op, moved behind a reference count.
    pub(crate) fn new(op: impl Op<T>) -> Self {
        OpRef::Shared(Arc::new(op))
    }

    pub(crate) fn get(&self) -> &dyn DynOp<T> {
        match self {
            OpRef::Static(o) => *o,
            OpRef::Shared(o) => &**o,
        }
    }
}

impl<'a, V> VjpCtx<'a, V> {
    /// Packs gradients that a rule computed from tensor *values* (outside the rule vocabulary of
    /// [`Value`]), for a rule that is first order only. On a first-order backward they are used
    /// as they are; in a recorded backward each becomes a node that depends on the op's inputs,
    /// its output and `g` (so a second derivative always reaches it) and that fails loudly —
    /// naming `op` and the line that built the op's node — if one does.
    ///
    /// `op` should be the op's [`name`](Op::name). Register such an op as first order only.
    ///
    /// ```
    /// use tapegrad::{Cotangents, ErrorKind, Float, Op, Result, Tape, Tensor, Value, VjpCtx};
    /// struct Square;
    /// impl<T: Float> Op<T> for Square {
    ///     fn name(&self) -> &'static str { "square_fo" }
    ///     fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> { Ok(x[0].map(|a| a * a)) }
    ///     fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
    ///         let gx = cx.input(0).value().zip_map(&g.value(), |x, g| T::from_f64(2.0) * x * g);
    ///         Ok(cx.first_order_only("square_fo", g, [Some(gx)]))
    ///     }
    /// }
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::scalar(3.0));
    /// let y = tape.apply(Square, &[x]);
    /// assert_eq!(y.backward()[x].item(), 6.0);                      // first order: fine
    /// let dy = tape.grad_graph(&[y], &[tape.scalar(1.0)], &[x])[0];
    /// let e = tape.try_grad(&[dy], &[Tensor::scalar(1.0)], &[x]).unwrap_err();
    /// assert_eq!(e.kind(), ErrorKind::NoVjp);                       // second order: loud
    /// assert!(e.to_string().contains("square_fo"));
    /// ```
    pub fn first_order_only<T: Float, const N: usize>(
        &self,
        op: &'static str,
        g: &V,
        grads: [Option<Tensor<T>>; N],
    ) -> Cotangents<V>
    where
        V: Value<T>,
    {
        let mut deps: SmallVec<[&V; 6]> = self.inputs.iter().copied().collect();
        deps.push(self.output);
        deps.push(g);
        grads
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                let t = t?;
                self.needs_grad(i).then(|| V::first_order_only(op, i, t, &deps))
            })
            .collect()
    }
}

/// The gradient of one input produced by a first-order-only rule, recorded: a node whose value
/// the rule computed and which has no rule of its own (see [`VjpCtx::first_order_only`]).
pub(crate) struct FirstOrderGrad<T: Float> {
    pub(crate) op: &'static str,
    pub(crate) input: usize,
    pub(crate) value: Tensor<T>,
}

impl<T: Float> Op<T> for FirstOrderGrad<T> {
    fn name(&self) -> &'static str {
        self.op
    }
    fn params(&self) -> String {
        format!("first-order VJP, input {}", self.input)
    }
    fn forward(&self, _: &[&Tensor<T>]) -> Result<Tensor<T>> {
        Ok(self.value.clone())
    }
    fn vjp<V: Value<T>>(&self, _: &VjpCtx<'_, V>, _: &V) -> Result<Cotangents<V>> {
        Err(Error::new(
            ErrorKind::NoVjp,
            self.op,
            format!(
                "the VJP rule of op {:?} is first order only (it computes its gradient from values, not \
                 recorded operations), so it cannot be differentiated twice; a Hessian, hvp, jvp or \
                 gradgradcheck through it would be wrong",
                self.op
            ),
        ))
    }
}
