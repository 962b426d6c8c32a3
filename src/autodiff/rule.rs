//! The one rule: the [`Op`] trait every primitive implements — a name, a forward on tensors and
//! **one** derivative rule — and the vocabulary that rule is written in, so one text serves the
//! first-order backward, the recorded backward and (later) a compiler.
//!
//! a forward on tensors, and **one** derivative rule.
//!
//! The rule (the vector-Jacobian product, [`Op::vjp`]) is written once, generic over the value
//! type `V: `[`Value`]: the library runs it on tensors for a first-order `backward()` (nothing is
//! recorded) and on [`Var`](crate::Var)s for a recorded backward ([`Tape::grad_graph`](crate::Tape::grad_graph),
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

//!
//! # The rule vocabulary
//!
//! first-order backward, the recorded backward and (later) a compiler.
//!
//! * [`Value`] is what a rule receives and returns: a [`Tensor`] in a first-order backward (the
//!   rule computes gradients directly, recording nothing) or a [`Var`](crate::Var) in a recorded
//!   one (every operation the rule performs is recorded, so the gradient can be differentiated
//!   again). Its operations are the structural primitives rules are made of: elementwise
//!   expressions ([`Value::pointwise`]), `sum_to`, `broadcast_to`, `reshape`, `permute`,
//!   `matmul_t`, and any op at all ([`Value::apply`]).
//! * [`Elem`] is what an **elementwise** rule is written in: a scalar-like value with `+ − × ÷`
//!   and the maths functions. The first-order path runs an elementwise rule over [`Scalar`]s, one
//!   fused loop over the elements (`|g, x, y| g * (1 − y·y)` is one pass, not four); the recorded
//!   path runs the same text over `Var`s, recording one node per operation.
//!
//! A rule never names the interpretation it runs under, so the two paths cannot disagree:
//!
//! ```
//! use tapegrad::autodiff::{Elem, Pointwise};
//! use tapegrad::Float;
//! /// tanh's rule: g · (1 − y²), with y = tanh x (the saved output).
//! struct TanhRule;
//! impl<T: Float> Pointwise<T, 3> for TanhRule {
//!     fn eval<E: Elem<T>>(&self, [g, _x, y]: [E; 3]) -> E {
//!         g * (-(y * y) + T::ONE)
//!     }
//! }
//! ```

use crate::core::error::{Error, ErrorKind, Result};
use crate::core::float::Float;
use crate::core::shape::{Shape, shape_of};
use crate::tensor::Tensor;
use crate::tensor::vmath::wide;
use smallvec::SmallVec;
use std::ops::{Add, Div, Mul, Neg, Sub};

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

    /// For an elementwise op: the op as a kernel over slices of one length, so a compiled step
    /// can run it inside the loop of its neighbours ([`crate::compile`] fuses chains of them).
    /// The kernel must compute exactly what [`forward`](Self::forward) computes on inputs of one
    /// shape, each output element from the input elements at the same position (broadcasting is
    /// the compiler's job). `None`, the default: the op runs as its own step.
    fn elementwise(&self) -> Option<Elementwise<'_, T>> {
        None
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

/// A scalar-like value an elementwise rule is written in: [`Scalar`] (a first-order backward
/// runs the rule once per element, in one fused loop) or a [`Var`](crate::Var) (a recorded
/// backward records each operation). Arithmetic works with `Self` and with constants `T`; the
/// maths functions (`exp`, `tanh`, `sin`, comparisons, `select`, …) come from the elementwise op
/// table ([`crate::ops::Math`]), each of them an op with its own rule.
pub trait Elem<T: Float>:
    Copy
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + Add<T, Output = Self>
    + Sub<T, Output = Self>
    + Mul<T, Output = Self>
    + Div<T, Output = Self>
{
    /// The constant `c`, usable with `self` (on the same tape, for a recorded value).
    fn lit(self, c: T) -> Self;
    /// Applies an elementwise function of one argument: its scalar value, or its recorded op.
    fn map1<F: Unary<T>>(self, f: &F) -> Self;
    /// Applies an elementwise function of two arguments (broadcasting, for recorded values).
    fn map2<F: Binary<T>>(self, other: Self, f: &F) -> Self;
    /// Applies an elementwise function of three arguments (`select`).
    fn map3<F: Ternary<T>>(self, b: Self, c: Self, f: &F) -> Self;
}

/// An elementwise function of one argument that is also an op: its scalar form runs in fused
/// loops, its op is what a recorded value records.
pub trait Unary<T: Float>: Op<T> + Clone {
    /// The function at one element.
    fn f(&self, x: T) -> T;
    /// The op as a static, when it has no parameters (recorded without an allocation).
    fn as_static(&self) -> Option<&'static Self> {
        None
    }
}

/// An elementwise function of two arguments that is also an op (see [`Unary`]).
pub trait Binary<T: Float>: Op<T> + Clone {
    /// The function at one pair of elements.
    fn f(&self, a: T, b: T) -> T;
    /// The op as a static, when it has no parameters.
    fn as_static(&self) -> Option<&'static Self> {
        None
    }
    /// True for a piecewise-constant function (a comparison): a recorded value records it as a
    /// constant, through which no gradient flows.
    fn is_mask(&self) -> bool {
        false
    }
    /// True when the function is exactly the product `a · b` (`mul`): a compiled step's fused
    /// loop then sums a product that nothing else reads as a dot product of the two tiles,
    /// without a tile of products (the same bits: see [`BinaryKernel::is_product`]).
    fn is_product(&self) -> bool {
        false
    }
}

/// An elementwise function of three arguments that is also an op (see [`Unary`]).
pub trait Ternary<T: Float>: Op<T> + Clone {
    /// The function at one triple of elements.
    fn f(&self, a: T, b: T, c: T) -> T;
    /// The op as a static, when it has no parameters.
    fn as_static(&self) -> Option<&'static Self> {
        None
    }
}

/// An elementwise op as a kernel over slices (see [`Op::elementwise`]): what a compiled step's
/// fused loops call, one tile of elements at a time.
#[derive(Clone, Copy)]
pub enum Elementwise<'a, T: Float> {
    /// `out[i] = f(x[i])`.
    Unary(&'a dyn UnaryKernel<T>),
    /// `out[i] = f(a[i], b[i])`.
    Binary(&'a dyn BinaryKernel<T>),
    /// `out[i] = f(a[i], b[i], c[i])`.
    Ternary(&'a dyn TernaryKernel<T>),
}

impl<T: Float> std::fmt::Debug for Elementwise<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Elementwise::Unary(_) => "Unary",
            Elementwise::Binary(_) => "Binary",
            Elementwise::Ternary(_) => "Ternary",
        };
        write!(f, "Elementwise::{kind}")
    }
}

impl<T: Float> Elementwise<'_, T> {
    /// The number of inputs.
    pub fn arity(&self) -> usize {
        match self {
            Elementwise::Unary(_) => 1,
            Elementwise::Binary(_) => 2,
            Elementwise::Ternary(_) => 3,
        }
    }
}

/// A function of one argument over a slice (`x` and `out` have one length).
pub trait UnaryKernel<T: Float>: Sync {
    /// `out[i] = f(x[i])` for every `i`.
    fn apply(&self, x: &[T], out: &mut [T]);
    /// `f(x)` of one element, the same bits as [`apply`](Self::apply) (a fused loop of 0-d
    /// values calls it, without a slice per element). By default `apply` on one element.
    fn one(&self, x: T) -> T {
        let mut o = [x];
        self.apply(&[x], &mut o);
        o[0]
    }
}

/// A function of two arguments over slices of one length.
pub trait BinaryKernel<T: Float>: Sync {
    /// `out[i] = f(a[i], b[i])` for every `i`.
    fn apply(&self, a: &[T], b: &[T], out: &mut [T]);
    /// `f(a, b)` of one pair, the same bits as [`apply`](Self::apply) (see
    /// [`UnaryKernel::one`]).
    fn one(&self, a: T, b: T) -> T {
        let mut o = [a];
        self.apply(&[a], &[b], &mut o);
        o[0]
    }
    /// True when `apply` is exactly `out[i] = a[i] · b[i]`. A fused loop that sums such a product
    /// down to one value, where nothing else reads the product, computes the dot product of
    /// `a` and `b` instead (no tile of products is written or read back); its bits are those of
    /// the sum of the products. False by default.
    fn is_product(&self) -> bool {
        false
    }
}

/// A function of three arguments over slices of one length.
pub trait TernaryKernel<T: Float>: Sync {
    /// `out[i] = f(a[i], b[i], c[i])` for every `i`.
    fn apply(&self, a: &[T], b: &[T], c: &[T], out: &mut [T]);
    /// `f(a, b, c)` of one triple, the same bits as [`apply`](Self::apply) (see
    /// [`UnaryKernel::one`]).
    fn one(&self, a: T, b: T, c: T) -> T {
        let mut o = [a];
        self.apply(&[a], &[b], &[c], &mut o);
        o[0]
    }
}

/// The element-at-a-time kernel of a [`Unary`] function (the default for table rows without a
/// vectorised slice kernel).
pub(crate) fn unary_loop<T: Float, F: Unary<T>>(f: &F, x: &[T], out: &mut [T]) {
    wide(|| out.iter_mut().zip(x).for_each(|(o, &v)| *o = f.f(v)));
}

impl<T: Float, F: Binary<T>> BinaryKernel<T> for F {
    fn apply(&self, a: &[T], b: &[T], out: &mut [T]) {
        wide(|| {
            for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
                *o = self.f(x, y);
            }
        })
    }
    fn one(&self, a: T, b: T) -> T {
        self.f(a, b)
    }
    fn is_product(&self) -> bool {
        Binary::is_product(self)
    }
}

impl<T: Float, F: Ternary<T>> TernaryKernel<T> for F {
    fn apply(&self, a: &[T], b: &[T], c: &[T], out: &mut [T]) {
        wide(|| {
            for (((o, &x), &y), &z) in out.iter_mut().zip(a).zip(b).zip(c) {
                *o = self.f(x, y, z);
            }
        })
    }
    fn one(&self, a: T, b: T, c: T) -> T {
        self.f(a, b, c)
    }
}

/// An elementwise expression of `N` arguments, written once over any [`Elem`]: the body of an
/// elementwise rule (or of any fused elementwise computation).
pub trait Pointwise<T: Float, const N: usize>: Sync {
    /// The expression at one element (or, for recorded values, as recorded ops).
    fn eval<E: Elem<T>>(&self, args: [E; N]) -> E;

    /// The expression as a [`RuleKernel`] a compiled step can keep. When a rule's expression
    /// has one, a compiled step's backward records it as *one* elementwise op — one pass with the
    /// first-order backward's arithmetic — instead of op by op. `None` (the default): recorded op
    /// by op, as for every other recorded backward.
    fn kernel(&self) -> Option<RuleKernel<T, N>> {
        None
    }

    /// True when the expression of two arguments is its second argument wherever the first is
    /// `1` — `eval([1, d]) = d` bit for bit for every `d` (a NaN may come back quieted), as
    /// `g · d` is. Then, on tensors, a first argument that is an unmade broadcast of a single
    /// `1` (the gradient `sum` hands down to a product) gives `d` itself, with no pass over
    /// memory. `false` (the default) always evaluates.
    fn identity_at_one(&self) -> bool {
        false
    }
}

/// A [`Pointwise`] expression kept as one elementwise kernel (see [`Pointwise::kernel`]): what a
/// compiled step's backward records for an elementwise rule, run over slices with the same
/// per-element arithmetic as the first-order backward (`Tensor` interpretation), so a compiled
/// rule gives the eager rule's bits.
pub struct RuleKernel<T: Float, const N: usize> {
    name: &'static str,
    f: std::sync::Arc<dyn ErasedPointwise<T, N>>,
}

impl<T: Float, const N: usize> Clone for RuleKernel<T, N> {
    fn clone(&self) -> Self {
        RuleKernel {
            name: self.name,
            f: std::sync::Arc::clone(&self.f),
        }
    }
}

impl<T: Float, const N: usize> std::fmt::Debug for RuleKernel<T, N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RuleKernel({}, {N} arguments)", self.name)
    }
}

impl<T: Float, const N: usize> RuleKernel<T, N> {
    /// The expression `f`, shown as `name` in a compiled step's summary (e.g. `"d exp"`).
    pub fn new<F: Pointwise<T, N> + Send + 'static>(name: &'static str, f: F) -> Self {
        RuleKernel {
            name,
            f: std::sync::Arc::new(f),
        }
    }

    /// The name given to [`new`](Self::new).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Which arguments the expression reads (found by evaluating it once on a probe).
    pub(crate) fn uses(&self) -> [bool; N] {
        self.f.uses()
    }

    /// `out[i] = f(args at i)` with `ins[k]` the slice of argument `k` (all of `out`'s length),
    /// or `None` for an argument the expression does not read (given as 0).
    pub(crate) fn run(&self, ins: [Option<&[T]>; N], out: &mut [T]) {
        self.f.run(ins, out)
    }

    /// [`run`](Self::run) at one element: `ins[k]` the value of argument `k` (`None`: unread,
    /// given as 0). The same arithmetic, so the same bits.
    pub(crate) fn one(&self, ins: [Option<T>; N]) -> T {
        self.f.one(ins)
    }
}

/// A [`Pointwise`] expression behind a pointer: what [`RuleKernel`] holds.
trait ErasedPointwise<T: Float, const N: usize>: Send + Sync {
    fn uses(&self) -> [bool; N];
    fn run(&self, ins: [Option<&[T]>; N], out: &mut [T]);
    fn one(&self, ins: [Option<T>; N]) -> T;
}

impl<T: Float, const N: usize, F: Pointwise<T, N> + Send> ErasedPointwise<T, N> for F {
    fn uses(&self) -> [bool; N] {
        let Probe(m, _) = self.eval(std::array::from_fn(|k| {
            Probe(1u64 << k.min(63), std::marker::PhantomData)
        }));
        std::array::from_fn(|k| m & (1u64 << k.min(63)) != 0)
    }
    fn run(&self, ins: [Option<&[T]>; N], out: &mut [T]) {
        run_blocks_wide(self, ins, out)
    }
    fn one(&self, ins: [Option<T>; N]) -> T {
        self.eval(std::array::from_fn(|k| Scalar(ins[k].unwrap_or(T::ZERO)))).0
    }
}

crate::tensor::vmath::wide_fn! {
    /// [`run_blocks`] compiled for the widest vectors this CPU has (the same bits): a direct call
    /// in each wide copy, so the expression inlines there (handed to `wide` as a closure, a rule
    /// the size of `d gelu_tanh`'s stayed a scalar SSE2 call: 4 ms instead of ~1 on 1M f32).
    fn run_blocks_wide[T: Float, const N: usize, F: Pointwise<T, N>](f: &F, ins: [Option<&[T]>; N], out: &mut [T]) -> () = run_blocks
}

/// `out[i] = f(ins at i)`, in blocks of 256 elements (an unread argument reads a block of zeros).
#[inline(always)]
fn run_blocks<T: Float, const N: usize, F: Pointwise<T, N>>(f: &F, ins: [Option<&[T]>; N], out: &mut [T]) {
    /// Elements per block (the block of zeros standing for unread arguments).
    const BLOCK: usize = 256;
    let zeros = [T::ZERO; BLOCK];
    for (b, o) in out.chunks_mut(BLOCK).enumerate() {
        let (base, n) = (b * BLOCK, o.len());
        let a: [&[T]; N] = std::array::from_fn(|k| match ins[k] {
            Some(s) => &s[base..base + n],
            None => &zeros[..n],
        });
        if let Ok(o) = <&mut [T; BLOCK]>::try_from(&mut *o) {
            // A full block as fixed-size arrays: a known trip count, so the loop vectorises
            // with no scalar epilogue (with a slice length it kept one of 16 elements per
            // block, which cost as much as the other 240 together).
            let a: [&[T; BLOCK]; N] = std::array::from_fn(|k| a[k].try_into().expect("a block"));
            for i in 0..BLOCK {
                o[i] = f.eval(std::array::from_fn(|k| Scalar(a[k][i]))).0;
            }
            continue;
        }
        for i in 0..n {
            o[i] = f.eval(std::array::from_fn(|k| Scalar(a[k][i]))).0;
        }
    }
}

/// An [`Elem`] that tracks which arguments an expression reads (a bit per argument).
#[derive(Clone, Copy)]
struct Probe<T>(u64, std::marker::PhantomData<T>);

impl<T> Probe<T> {
    /// What a value computed from both reads.
    fn join(self, o: Self) -> Self {
        Probe(self.0 | o.0, self.1)
    }
}

macro_rules! probe_ops {
    ($($tr:ident $m:ident),*) => {$(
        impl<T: Float> $tr for Probe<T> {
            type Output = Self;
            #[inline]
            fn $m(self, o: Self) -> Self {
                self.join(o)
            }
        }
        impl<T: Float> $tr<T> for Probe<T> {
            type Output = Self;
            #[inline]
            fn $m(self, _: T) -> Self {
                self
            }
        }
    )*};
}
probe_ops!(Add add, Sub sub, Mul mul, Div div);

impl<T: Float> Neg for Probe<T> {
    type Output = Self;
    fn neg(self) -> Self {
        self
    }
}

impl<T: Float> Elem<T> for Probe<T> {
    fn lit(self, _: T) -> Self {
        Probe(0, self.1)
    }
    fn map1<F: Unary<T>>(self, _: &F) -> Self {
        self
    }
    fn map2<F: Binary<T>>(self, other: Self, _: &F) -> Self {
        Probe(self.0 | other.0, self.1)
    }
    fn map3<F: Ternary<T>>(self, b: Self, c: Self, _: &F) -> Self {
        Probe(self.0 | b.0 | c.0, self.1)
    }
}

/// One element of a tensor, as an [`Elem`]: what a first-order backward runs elementwise rules on.
/// A thin wrapper (no cost after inlining), so that the scalar maths of [`Float`] and the rule
/// vocabulary of [`Elem`] never clash.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct Scalar<T>(pub T);

macro_rules! scalar_ops {
    ($($tr:ident $m:ident $op:tt),*) => {$(
        impl<T: Float> $tr for Scalar<T> {
            type Output = Self;
            #[inline(always)]
            fn $m(self, o: Self) -> Self { Scalar(self.0 $op o.0) }
        }
        impl<T: Float> $tr<T> for Scalar<T> {
            type Output = Self;
            #[inline(always)]
            fn $m(self, o: T) -> Self { Scalar(self.0 $op o) }
        }
    )*};
}
scalar_ops!(Add add +, Sub sub -, Mul mul *, Div div /);

impl<T: Float> Neg for Scalar<T> {
    type Output = Self;
    #[inline(always)]
    fn neg(self) -> Self {
        Scalar(-self.0)
    }
}

impl<T: Float> Elem<T> for Scalar<T> {
    #[inline(always)]
    fn lit(self, c: T) -> Self {
        Scalar(c)
    }
    #[inline(always)]
    fn map1<F: Unary<T>>(self, f: &F) -> Self {
        Scalar(f.f(self.0))
    }
    #[inline(always)]
    fn map2<F: Binary<T>>(self, other: Self, f: &F) -> Self {
        Scalar(f.f(self.0, other.0))
    }
    #[inline(always)]
    fn map3<F: Ternary<T>>(self, b: Self, c: Self, f: &F) -> Self {
        Scalar(f.f(self.0, b.0, c.0))
    }
}

mod sealed {
    pub trait Sealed {}
    impl<T: crate::Float> Sealed for crate::Tensor<T> {}
    impl<T: crate::Float> Sealed for crate::Var<'_, T> {}
}

/// What a derivative rule receives and returns: a [`Tensor`] (first-order backward: computed at
/// once, nothing recorded) or a [`Var`](crate::Var) (recorded backward: differentiable again).
///
/// Write a rule once, generic over `V: Value<T>`; the library runs it both ways. Every method is
/// a primitive with its own rule, so a rule written in them is differentiable to any order.
/// (Sealed: the interpretations are the library's.)
pub trait Value<T: Float>: Clone + sealed::Sealed {
    /// The shape.
    fn shape(&self) -> Shape;
    /// The number of elements.
    fn numel(&self) -> usize {
        self.shape().iter().product()
    }
    /// The concrete value (for a recorded value, its current value, with no dependence recorded:
    /// use it for masks and indices, not for quantities that should be differentiated).
    fn value(&self) -> Tensor<T>;
    /// A constant (no gradient), usable with `self` (on the same tape, for a recorded value).
    fn constant(&self, t: Tensor<T>) -> Self;
    /// The elementwise expression `f` over `args`, broadcast together: one fused loop on tensors,
    /// recorded ops on `Var`s.
    fn pointwise<const N: usize, F: Pointwise<T, N>>(f: &F, args: [&Self; N]) -> Self;
    /// `pointwise(f, args).sum_to_like(like)`: the rule of a broadcasting op for an operand it
    /// broadcast. On tensors one pass with no temporary of the full size when the sum runs over
    /// the last axis or over leading axes (the same bits as the two steps); recorded, the two
    /// ops.
    fn pointwise_sum_to_like<const N: usize, F: Pointwise<T, N>>(f: &F, args: [&Self; N], like: &Self) -> Self {
        Self::pointwise(f, args).sum_to_like(like)
    }
    /// Sums down to `shape`, which must broadcast to this shape (the rule of broadcasting). No
    /// work when the shapes are equal.
    fn sum_to(&self, shape: &[usize]) -> Self;
    /// Sums down to the shape of `like` (the rule of a broadcasting op for its input `like`);
    /// returns `self` itself (no work) when the shapes are equal.
    fn sum_to_like(self, like: &Self) -> Self;
    /// True when this value has shape `shape`.
    fn has_shape(&self, shape: &[usize]) -> bool;
    /// Broadcasts up to `shape` (the rule of `sum_to`). No work when the shapes are equal.
    fn broadcast_to(&self, shape: &[usize]) -> Self;
    /// The same elements with another shape of the same size.
    fn reshape(&self, shape: &[usize]) -> Self;
    /// Reorders the axes: axis `i` of the result is axis `perm[i]` of `self`.
    fn permute(&self, perm: &[usize]) -> Self;
    /// `op(self) @ op(b)` over the last two axes, batched; `op` transposes when its flag is set.
    fn matmul_t(&self, b: &Self, ta: bool, tb: bool) -> Self;
    /// Applies any op: on tensors its forward runs at once; on `Var`s it is recorded (so its own
    /// rule makes the result differentiable). The fused backward ops (`softmax_backward`, …) are
    /// used this way.
    fn apply<O: Op<T>>(op: O, inputs: &[&Self]) -> Result<Self>;
    /// A gradient computed from *values* (outside the rule vocabulary): on tensors it is simply
    /// `grad`; recorded, it becomes a node that fails loudly — naming `op` and the line that built
    /// the op's node — if a second derivative ever reaches it. `deps` are the values it was
    /// computed from (inputs, output, cotangent).
    fn first_order_only(op: &'static str, input: usize, grad: Tensor<T>, deps: &[&Self]) -> Self;

    /// `self + o`, broadcasting.
    fn add(&self, o: &Self) -> Self {
        Self::pointwise(&Sum2, [self, o])
    }
    /// `self · o`, broadcasting.
    fn mul(&self, o: &Self) -> Self {
        Self::pointwise(&Prod2, [self, o])
    }
    /// `self · c` for a constant `c`.
    fn scale(&self, c: T) -> Self {
        Self::pointwise(&Scale(c), [self])
    }
    /// `−self`.
    fn neg(&self) -> Self {
        Self::pointwise(&Negate, [self])
    }
}

/// `a + b`, as a pointwise expression.
struct Sum2;
impl<T: Float> Pointwise<T, 2> for Sum2 {
    #[inline(always)]
    fn eval<E: Elem<T>>(&self, [a, b]: [E; 2]) -> E {
        a + b
    }
}
/// `a · b`, as a pointwise expression.
struct Prod2;
impl<T: Float> Pointwise<T, 2> for Prod2 {
    #[inline(always)]
    fn eval<E: Elem<T>>(&self, [a, b]: [E; 2]) -> E {
        a * b
    }
    fn identity_at_one(&self) -> bool {
        true
    }
}
/// `a · c`, as a pointwise expression.
struct Scale<T>(T);
impl<T: Float> Pointwise<T, 1> for Scale<T> {
    #[inline(always)]
    fn eval<E: Elem<T>>(&self, [a]: [E; 1]) -> E {
        a * self.0
    }
}
/// `−a`, as a pointwise expression.
struct Negate;
impl<T: Float> Pointwise<T, 1> for Negate {
    #[inline(always)]
    fn eval<E: Elem<T>>(&self, [a]: [E; 1]) -> E {
        -a
    }
}

impl<T: Float> Value<T> for Tensor<T> {
    fn shape(&self) -> Shape {
        shape_of(Tensor::shape(self))
    }
    fn numel(&self) -> usize {
        Tensor::numel(self)
    }
    fn value(&self) -> Tensor<T> {
        self.clone()
    }
    fn constant(&self, t: Tensor<T>) -> Self {
        t
    }
    #[inline]
    fn pointwise<const N: usize, F: Pointwise<T, N>>(f: &F, args: [&Self; N]) -> Self {
        if let Some(d) = unit_times(f, &args) {
            return d;
        }
        Tensor::zip_n("pointwise", args, |x| f.eval(std::array::from_fn(|k| Scalar(x[k]))).0)
    }
    fn pointwise_sum_to_like<const N: usize, F: Pointwise<T, N>>(f: &F, args: [&Self; N], like: &Self) -> Self {
        if let Some(d) = unit_times(f, &args) {
            return d.sum_to_like(like);
        }
        Tensor::zip_n_sum_to("pointwise", args, like.shape(), |x| {
            f.eval(std::array::from_fn(|k| Scalar(x[k]))).0
        })
    }
    fn sum_to(&self, shape: &[usize]) -> Self {
        Tensor::sum_to(self, shape)
    }
    fn sum_to_like(self, like: &Self) -> Self {
        if crate::core::shape::same_shape(Tensor::shape(&self), Tensor::shape(like)) {
            return self;
        }
        Tensor::sum_to(&self, like.shape())
    }
    fn has_shape(&self, shape: &[usize]) -> bool {
        crate::core::shape::same_shape(Tensor::shape(self), shape)
    }
    fn broadcast_to(&self, shape: &[usize]) -> Self {
        if !crate::core::shape::broadcasts_to(Tensor::shape(self), shape) {
            return Tensor::broadcast_to(self, shape); // (its error)
        }
        Tensor::broadcast_lazily(self, shape)
    }
    #[track_caller]
    fn reshape(&self, shape: &[usize]) -> Self {
        Tensor::reshape(self, shape)
    }
    fn permute(&self, perm: &[usize]) -> Self {
        Tensor::permute(self, perm)
    }
    fn matmul_t(&self, b: &Self, ta: bool, tb: bool) -> Self {
        self.try_matmul_t(b, ta, tb, "matmul")
            .unwrap_or_else(|e| crate::core::error::fail(e))
    }
    fn apply<O: Op<T>>(op: O, inputs: &[&Self]) -> Result<Self> {
        op.forward(inputs)
    }
    fn first_order_only(_op: &'static str, _input: usize, grad: Tensor<T>, _deps: &[&Self]) -> Self {
        grad
    }
}

/// `d` itself for `f([g, d])` when `f` is the identity at `g = 1` ([`Pointwise::identity_at_one`]),
/// `g` is an unmade broadcast of a single `1` and `d` already has the result's shape: `g · d`
/// (the product rule under a `sum`) without the pass that would multiply by one.
fn unit_times<T: Float, const N: usize, F: Pointwise<T, N>>(f: &F, args: &[&Tensor<T>; N]) -> Option<Tensor<T>> {
    if N != 2 || !f.identity_at_one() {
        return None;
    }
    let (g, d) = (args[0], args[1]);
    (g.is_unit_broadcast() && crate::core::shape::same_shape(g.shape(), d.shape())).then(|| d.clone())
}

/// Runs an elementwise expression on values of any interpretation (the function form of
/// [`Value::pointwise`], for type inference from the arguments); see [`pointwise!`](crate::pointwise).
#[inline]
pub fn pointwise<T: Float, V: Value<T>, F: Pointwise<T, N>, const N: usize>(f: &F, args: [&V; N]) -> V {
    V::pointwise(f, args)
}

/// Counts identifiers (a helper of [`pointwise!`](crate::pointwise)).
#[doc(hidden)]
#[macro_export]
macro_rules! __count_idents {
    () => { 0usize };
    ($x:ident $($xs:ident)*) => { 1usize + $crate::__count_idents!($($xs)*) };
}

/// An elementwise rule written inline: `pointwise!(T; g, y => g * y * (-y + T::ONE))` evaluates
/// the expression over the [`Value`]s `g` and `y` in scope — one fused loop on tensors, recorded
/// ops on `Var`s — with the same names standing for one element inside the expression. `T` names
/// the element type (so the expression can use `T::ONE`, `T::from_f64(..)`).
///
/// ```
/// use tapegrad::{pointwise, Cotangents, Float, Op, Result, Tape, Tensor, Value, VjpCtx};
/// /// `y = x³` with its rule `3x²·g`, written once for both backward passes.
/// struct Cube;
/// impl<T: Float> Op<T> for Cube {
///     fn name(&self) -> &'static str { "cube" }
///     fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> { Ok(x[0].map(|v| v * v * v)) }
///     fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
///         let x = cx.input(0);
///         Ok(cx.grads([Some(pointwise!(T; g, x => g * x * x * T::from_f64(3.0)))]))
///     }
/// }
/// let tape = Tape::<f64>::new();
/// let x = tape.var(Tensor::scalar(2.0));
/// let y = tape.apply(Cube, &[x]);
/// assert_eq!(y.backward()[x].item(), 12.0);
/// let dy = tape.grad_graph(&[y], &[tape.scalar(1.0)], &[x])[0];
/// assert_eq!(tape.grad(&[dy], &[Tensor::scalar(1.0)], &[x])[0].item(), 12.0); // 6x
/// ```
#[macro_export]
macro_rules! pointwise {
    ($T:ident; $($a:ident),+ => $body:expr) => {{
        #[derive(Clone, Copy)]
        struct InlineRule;
        impl<$T: $crate::core::float::Float> $crate::autodiff::rule::Pointwise<$T, { $crate::__count_idents!($($a)+) }> for InlineRule {
            #[inline(always)]
            fn eval<E: $crate::autodiff::rule::Elem<$T>>(&self, [$($a),+]: [E; { $crate::__count_idents!($($a)+) }]) -> E {
                $body
            }
            fn kernel(&self) -> Option<$crate::autodiff::rule::RuleKernel<$T, { $crate::__count_idents!($($a)+) }>> {
                Some($crate::autodiff::rule::RuleKernel::new("pointwise rule", InlineRule))
            }
        }
        $crate::autodiff::rule::pointwise(&InlineRule, [$($a),+])
    }};
}

#[cfg(test)]
mod wide_tests {
    use super::*;
    use crate::ops::elementwise::{GeluTanh, Sigmoid};

    /// Awkward values: signed zeros, subnormals, infinities, NaN, tails and ordinary numbers.
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut r = crate::rng::Rng::new(seed);
        (0..n)
            .map(|i| match i % 17 {
                0 => -0.0,
                3 => f32::MIN_POSITIVE / 7.0,
                5 => f32::INFINITY,
                6 => f32::NEG_INFINITY,
                9 => f32::NAN,
                11 => (r.normal() * 40.0) as f32,
                _ => r.normal() as f32,
            })
            .collect()
    }

    /// The wide copy of an elementwise rule's loop (what a compiled backward runs) computes
    /// every element with the same operations as the plain loop: the same bits (NaN as NaN), at lengths
    /// around the block size, with an unread argument standing in as zeros.
    #[test]
    fn the_wide_rule_loop_is_the_plain_one() {
        for n in [0, 1, 15, 255, 256, 257, 1000, 4096] {
            let (g, x, y) = (values(n, 1), values(n, 2), values(n, 3));
            for ins in [
                [Some(&g[..]), Some(&x[..]), Some(&y[..])],
                [Some(&g[..]), Some(&x[..]), None],
            ] {
                for (name, wide, plain) in [
                    (
                        "d gelu_tanh",
                        run_with(&GeluTanh, ins, true),
                        run_with(&GeluTanh, ins, false),
                    ),
                    (
                        "d sigmoid",
                        run_with(&Sigmoid, ins, true),
                        run_with(&Sigmoid, ins, false),
                    ),
                ] {
                    // Every NaN as one: its sign and payload may differ between a vector and a
                    // scalar instruction.
                    let bits = |v: &[f32]| -> Vec<u32> {
                        v.iter()
                            .map(|x| if x.is_nan() { u32::MAX } else { x.to_bits() })
                            .collect()
                    };
                    assert_eq!(bits(&wide), bits(&plain), "{name}, {n} elements");
                }
            }
        }
    }

    fn run_with<F: Pointwise<f32, 3>>(f: &F, ins: [Option<&[f32]>; 3], wide: bool) -> Vec<f32> {
        let n = ins[0].map_or(0, <[f32]>::len);
        let mut out = vec![0.0; n];
        if wide {
            run_blocks_wide(f, ins, &mut out);
        } else {
            run_blocks(f, ins, &mut out);
        }
        out
    }
}
