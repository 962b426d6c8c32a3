//! Arithmetic: `add sub mul div neg` with NumPy broadcasting, the broadcasting functions
//! `maximum minimum pow atan2`, and the scalar forms `add_scalar mul_scalar rdiv_scalar powf`. The operators `+ - * /` and unary `-` on [`Var`] record these:
//! `Var ∘ Var` records the broadcasting op, `Var ∘ scalar` and `scalar ∘ Var` the scalar forms
//! (`x / c` records `x · (1/c)`).
//!
//! Broadcasting VJPs sum each gradient back to its input's shape (`sum_to`).

use super::common::{arity, binary_ops, broadcast_zip};
use super::elementwise::Math;
use super::reference;
use super::registry::{Choice, Domain, OpInfo, Reference, Registry, Sample};
use super::select::{ByD, Logic, MinusHy, MinusHyOverD, OverD};
use crate::autodiff::rule::{Binary, Elem, Elementwise, Pointwise, Unary, UnaryKernel, Value, unary_loop};
use crate::autodiff::rule::{Cotangents, Op, VjpCtx};
use crate::autodiff::tape::{OpRef, Var};
use crate::core::error::{Result, fail};
use crate::core::float::Float;
use crate::tensor::Tensor;
use crate::{recipe, sample};
use std::ops::{Add, Div, Mul, Neg, Sub};

binary_ops! {
    /// `a + b`, broadcasting: `da = g`, `db = g`, each summed back over its broadcast axes.
    AddOp "add", |a, b| a + b,
        rule |cx, g, a, b, y| [g.clone().sum_to_like(a), g.clone().sum_to_like(b)];
    /// `a − b`, broadcasting: `da = g`, `db = −g`, each summed back over its broadcast axes.
    SubOp "sub", |a, b| a - b,
        rule |cx, g, a, b, y| [g.clone().sum_to_like(a), g.clone().sum_to_like(b).neg()];
    /// `a · b` elementwise, broadcasting: `da = g·b`, `db = g·a` (strong zeros: 0 where `g` is 0,
    /// even against an infinite factor).
    MulOp "mul" product, |a, b| a * b,
        rule |cx, g, a, b, y| [
            V::pointwise_sum_to_like(&ByD, [g, b], a),
            V::pointwise_sum_to_like(&ByD, [g, a], b)
        ];
    /// `a / b` elementwise, broadcasting: `d(a/b) = da/b − (a/b)·db/b`, from the output `y = a/b`
    /// (strong zeros in `g`); for `b` the numerator `−g·y` is summed over `b`'s broadcast axes
    /// first, then divided by `b` once.
    DivOp "div", |a, b| a / b,
        rule |cx, g, a, b, y| [
            V::pointwise_sum_to_like(&OverD, [g, b], a),
            V::pointwise(&OverD, [&V::pointwise_sum_to_like(&MinusHy, [g, y], b), b])
        ];
}

binary_ops! {
    /// `max(a, b)` elementwise, broadcasting; NaN when either is NaN (see [`Var::maximum`]).
    MaximumOp "maximum", |a, b| if a.is_nan() || b.is_nan() { a + b } else if a < b { b } else { a },
        rule |cx, g, a, b, y| [
            V::pointwise_sum_to_like(&Share::<true>, [g, a, b], a),
            V::pointwise_sum_to_like(&Share::<true>, [g, b, a], b)
        ];
    /// `min(a, b)` elementwise, broadcasting; NaN when either is NaN (see [`Var::minimum`]).
    MinimumOp "minimum", |a, b| if a.is_nan() || b.is_nan() { a + b } else if b < a { b } else { a },
        rule |cx, g, a, b, y| [
            V::pointwise_sum_to_like(&Share::<false>, [g, a, b], a),
            V::pointwise_sum_to_like(&Share::<false>, [g, b, a], b)
        ];
    /// `aᵇ` elementwise, broadcasting, with a tensor exponent (see [`Var::pow`]).
    PowOp "pow", |a, b| a.powf(b),
        rule |cx, g, a, b, y| [
            V::pointwise_sum_to_like(&PowBase, [g, a, b], a),
            V::pointwise_sum_to_like(&PowExponent, [g, a, b, y], b)
        ];
    /// `atan2(y, x)` elementwise, broadcasting: the angle of the point `(x, y)` (see
    /// [`Var::atan2`]).
    Atan2Op "atan2", |y, x| y.atan2(x),
        rule |cx, g, y, x, out| [
            V::pointwise_sum_to_like(&Atan2Y, [g, y, x], y),
            V::pointwise_sum_to_like(&Atan2X, [g, y, x], x)
        ];
}

/// The share of `g` that operand `p` of `maximum(p, q)` (`MAX`) or `minimum(p, q)` receives:
/// `g` where `p` wins, nothing where it loses (selected, so an infinite `g` gives 0, not NaN),
/// `g/2` at a tie. Where `p` or `q` is NaN neither wins nor loses: `g` (as PyTorch's).
struct Share<const MAX: bool>;
impl<T: Float, const MAX: bool> Pointwise<T, 3> for Share<MAX> {
    #[inline(always)]
    fn eval<E: Elem<T>>(&self, [g, p, q]: [E; 3]) -> E {
        let loses = if MAX { p.lt(q) } else { p.gt(q) };
        loses.select(g.lit(T::ZERO), p.eq(q).select(g * T::from_f64(0.5), g))
    }
}

/// The gradient of `aᵇ` for `a`: `g · b · aᵇ⁻¹`, with strong zeros (exactly 0 where `g` or `b`
/// is 0, even when `aᵇ⁻¹` is infinite, as `0⁻¹` is).
struct PowBase;
impl<T: Float> Pointwise<T, 3> for PowBase {
    #[inline(always)]
    fn eval<E: Elem<T>>(&self, [g, a, b]: [E; 3]) -> E {
        g.chain_mul(b).chain_mul(a.map2(b - T::ONE, &PowOp))
    }
}

/// The gradient of `y = aᵇ` for `b`: `g · y · ln a` (strong zero in `g`), and exactly 0 where
/// `a = 0` and `b ≥ 0` (the limit of `aᵇ ln a` as `a → 0⁺` for `b > 0`; PyTorch's convention at
/// `b = 0` too), selected so the `−∞` of `ln 0` never reaches the gradient.
struct PowExponent;
impl<T: Float> Pointwise<T, 4> for PowExponent {
    #[inline(always)]
    fn eval<E: Elem<T>>(&self, [g, a, b, y]: [E; 4]) -> E {
        let full = g.chain_mul(y * a.log());
        let zero = g.lit(T::ZERO);
        a.eq(a.lit(T::ZERO))
            .select(b.ge(b.lit(T::ZERO)).select(zero, full), full)
    }
}

/// The gradient of `atan2(y, x)` for `y`: `g · x / (x² + y²)`, with strong zeros (so 0 at the
/// origin, where `x² + y² = 0`).
struct Atan2Y;
impl<T: Float> Pointwise<T, 3> for Atan2Y {
    #[inline(always)]
    fn eval<E: Elem<T>>(&self, [g, y, x]: [E; 3]) -> E {
        g.chain_mul(x).chain_div(x * x + y * y)
    }
}

/// The gradient of `atan2(y, x)` for `x`: `−g · y / (x² + y²)`, with strong zeros (0 at the
/// origin).
struct Atan2X;
impl<T: Float> Pointwise<T, 3> for Atan2X {
    #[inline(always)]
    fn eval<E: Elem<T>>(&self, [g, y, x]: [E; 3]) -> E {
        -g.chain_mul(y).chain_div(x * x + y * y)
    }
}

impl<'t, T: Float> Var<'t, T> {
    /// The larger of `self` and `other` elementwise, broadcasting; NaN where either is NaN (as
    /// PyTorch's `maximum`, unlike `f64::max`).
    ///
    /// **Ties** (`a == b`, `0` and `−0` included): the value is `a`, and the gradient is split,
    /// **half to each** operand — as PyTorch's — so the two shares always add up to `g` and
    /// `x.maximum(x)` has gradient exactly 1 (the central difference at a tie is ½ for each, too).
    /// Elsewhere the larger operand gets `g` and the smaller exactly 0 (selected: an infinite `g`
    /// gives 0 there, not NaN). Where an operand is NaN both get `g`.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let a = tape.var(Tensor::from_vec(vec![1.0, 2.0, 3.0], [3]));
    /// let b = tape.var(Tensor::from_vec(vec![2.0, 2.0, 0.0], [3]));
    /// let y = a.maximum(b);
    /// assert_eq!(y.value().to_vec(), vec![2.0, 2.0, 3.0]);
    /// let g = y.sum().backward();
    /// assert_eq!((g[a].to_vec(), g[b].to_vec()), (vec![0.0, 0.5, 1.0], vec![1.0, 0.5, 0.0]));
    /// ```
    #[track_caller]
    pub fn maximum(self, other: Var<'t, T>) -> Var<'t, T> {
        self.tape.op(OpRef::Static(&MaximumOp), &[self, other])
    }

    /// The smaller of `self` and `other` elementwise, broadcasting; NaN where either is NaN. Ties
    /// as [`maximum`](Self::maximum)'s: the value is `a`, the gradient **half to each**.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let a = tape.var(Tensor::from_vec(vec![1.0, 2.0], [2]));
    /// let b = tape.var(Tensor::scalar(2.0));
    /// let y = a.minimum(b);
    /// assert_eq!(y.value().to_vec(), vec![1.0, 2.0]);
    /// let g = y.sum().backward();
    /// assert_eq!((g[a].to_vec(), g[b].item()), (vec![1.0, 0.5], 0.5));
    /// ```
    #[track_caller]
    pub fn minimum(self, other: Var<'t, T>) -> Var<'t, T> {
        self.tape.op(OpRef::Static(&MinimumOp), &[self, other])
    }

    /// `selfᵉ` elementwise with a tensor exponent, broadcasting (for a constant exponent,
    /// [`powf`](Self::powf)). The value is `powf`'s: NaN for a negative base and a non-integer
    /// exponent, `0ᵉ = 0` for `e > 0`, `1` for `e = 0`, `∞` for `e < 0`.
    ///
    /// Gradients: `d/da = e·aᵉ⁻¹` with strong zeros (exactly 0 where `e = 0`, even at `a = 0`);
    /// `d/de = aᵉ ln a`, taken as **exactly 0 at `a = 0` for `e ≥ 0`** (the limit from the right;
    /// PyTorch's convention), `−∞`-scaled for `e < 0` there, and NaN for a negative base (no real
    /// logarithm). The exponent's gradient is computed only when the exponent needs one, so a
    /// constant exponent never leaks a NaN into the base's gradient: `x.pow(2)` at `x = 0` has
    /// gradient 0.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let a = tape.var(Tensor::from_vec(vec![0.0, 2.0], [2]));
    /// let e = tape.var(Tensor::from_vec(vec![2.0, 3.0], [2]));
    /// let y = a.pow(e);
    /// assert_eq!(y.value().to_vec(), vec![0.0, 8.0]);
    /// let g = y.sum().backward();
    /// assert_eq!(g[a].to_vec(), vec![0.0, 12.0]);
    /// assert_eq!(g[e].to_vec(), vec![0.0, 8.0 * 2f64.ln()]);
    /// ```
    #[track_caller]
    pub fn pow(self, exponent: Var<'t, T>) -> Var<'t, T> {
        self.tape.op(OpRef::Static(&PowOp), &[self, exponent])
    }

    /// `atan2(self, x)` elementwise, broadcasting: the angle of the point `(x, self)` in
    /// `[−π, π]`, with the signs of zeros as `f64::atan2` (`atan2(±0, −0) = ±π`).
    ///
    /// Gradients: `d/dy = x / (x² + y²)`, `d/dx = −y / (x² + y²)`, with strong zeros. At the
    /// **origin**, where the angle is undefined, both are **exactly 0** (PyTorch gives NaN); on the
    /// branch cut (`y = ±0`, `x < 0`), where the angle jumps between `π` and `−π`, they are the
    /// one-sided derivatives (`d/dy = 1/x`).
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let y = tape.var(Tensor::from_vec(vec![1.0, 0.0], [2]));
    /// let x = tape.var(Tensor::from_vec(vec![1.0, 0.0], [2]));
    /// let a = y.atan2(x);
    /// assert_eq!(a.value().to_vec(), vec![std::f64::consts::FRAC_PI_4, 0.0]);
    /// let g = a.sum().backward();
    /// assert_eq!((g[y].to_vec(), g[x].to_vec()), (vec![0.5, 0.0], vec![-0.5, 0.0]));
    /// ```
    #[track_caller]
    pub fn atan2(self, x: Var<'t, T>) -> Var<'t, T> {
        self.tape.op(OpRef::Static(&Atan2Op), &[self, x])
    }
}

/// The broadcasting binary functions on plain tensors: the op's own forward, with no tape.
impl<T: Float> Tensor<T> {
    /// [`Var::maximum`] on plain tensors: the larger elementwise, broadcasting, NaN where either
    /// is NaN; `self`'s element at a tie. Panics with a shape error naming `maximum`, the shapes
    /// and your line when they do not broadcast ([`attempt`](crate::attempt) returns it).
    ///
    /// ```
    /// use tapegrad::Tensor;
    /// let a = Tensor::from_vec(vec![1.0, 5.0], [2]);
    /// assert_eq!(a.maximum(&Tensor::scalar(2.0)).to_vec(), vec![2.0, 5.0]);
    /// ```
    #[track_caller]
    pub fn maximum(&self, other: &Tensor<T>) -> Tensor<T> {
        tensor_binary(&MaximumOp, self, other)
    }

    /// [`Var::minimum`] on plain tensors (see [`maximum`](Self::maximum)).
    #[track_caller]
    pub fn minimum(&self, other: &Tensor<T>) -> Tensor<T> {
        tensor_binary(&MinimumOp, self, other)
    }

    /// [`Var::pow`] on plain tensors: `selfᵉ` elementwise, broadcasting (see
    /// [`maximum`](Self::maximum) for errors).
    #[track_caller]
    pub fn pow(&self, exponent: &Tensor<T>) -> Tensor<T> {
        tensor_binary(&PowOp, self, exponent)
    }

    /// [`Var::atan2`] on plain tensors: `atan2(self, x)` elementwise, broadcasting (see
    /// [`maximum`](Self::maximum) for errors).
    #[track_caller]
    pub fn atan2(&self, x: &Tensor<T>) -> Tensor<T> {
        tensor_binary(&Atan2Op, self, x)
    }
}

/// Runs a binary op's forward on plain tensors, panicking with its error at the caller's line.
#[track_caller]
fn tensor_binary<T: Float, O: Op<T>>(op: &O, a: &Tensor<T>, b: &Tensor<T>) -> Tensor<T> {
    let here = std::panic::Location::caller();
    op.forward(&[a, b]).unwrap_or_else(|e| fail(e.at(here)))
}

/// `−x`.
#[derive(Clone, Copy, Debug)]
pub struct NegOp;
impl<T: Float> Op<T> for NegOp {
    fn name(&self) -> &'static str {
        "neg"
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        arity("neg", x, 1)?;
        Ok(x[0].map(|a| -a))
    }
    /// `dx = −g`.
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
        Ok(cx.grads([Some(g.neg())]))
    }
    fn elementwise(&self) -> Option<Elementwise<'_, T>> {
        Some(Elementwise::Unary(self))
    }
}
impl<T: Float> UnaryKernel<T> for NegOp {
    fn apply(&self, x: &[T], out: &mut [T]) {
        crate::tensor::vmath::wide(|| out.iter_mut().zip(x).for_each(|(o, &a)| *o = -a));
    }
    fn one(&self, x: T) -> T {
        -x
    }
}

/// Declares the ops with one constant parameter `c`: the forward at one element and the rule.
macro_rules! scalar_ops {
    ($($(#[$doc:meta])* $method:ident: $ty:ident $name:literal, |$x:ident, $c:ident| $fwd:expr,
       rule |$cx:ident, $g:ident, $rc:pat_param| $rule:expr;)*) => {
        impl<'t, T: Float> Var<'t, T> {
            $(
                $(#[$doc])*
                #[track_caller]
                pub fn $method(self, c: T) -> Var<'t, T> {
                    self.tape.op(OpRef::new($ty(c.to_f64())), &[self])
                }
            )*
        }
        $(
        $(#[$doc])*
        #[derive(Clone, Copy, Debug)]
        pub struct $ty(pub f64);
        impl<T: Float> Op<T> for $ty {
            fn name(&self) -> &'static str {
                $name
            }
            fn params(&self) -> String {
                format!("c={}", self.0)
            }
            fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
                arity($name, x, 1)?;
                let $c = T::from_f64(self.0);
                Ok(x[0].map(|$x| $fwd))
            }
            fn vjp<V: Value<T>>(&self, $cx: &VjpCtx<'_, V>, $g: &V) -> Result<Cotangents<V>> {
                let $rc = T::from_f64(self.0);
                Ok($cx.grads([Some($rule)]))
            }
            fn elementwise(&self) -> Option<Elementwise<'_, T>> {
                Some(Elementwise::Unary(self))
            }
        }
        impl<T: Float> UnaryKernel<T> for $ty {
            fn apply(&self, x: &[T], out: &mut [T]) {
                let $c = T::from_f64(self.0);
                crate::tensor::vmath::wide(|| out.iter_mut().zip(x).for_each(|(o, &$x)| *o = $fwd));
            }
            fn one(&self, $x: T) -> T {
                let $c = T::from_f64(self.0);
                $fwd
            }
        }
    )*};
}

scalar_ops! {
    /// `self + c` for a constant `c`: `dx = g`.
    add_scalar: AddScalar "add_scalar", |x, c| x + c, rule |_cx, g, _| g.clone();
    /// `self · c` for a constant `c`: `dx = c·g`.
    mul_scalar: MulScalar "mul_scalar", |x, c| x * c, rule |_cx, g, c| g.scale(c);
    /// `c / self` for a constant `c`: `d(c/x) = −(c/x)/x · dx`, from the output (strong zero in `g`).
    rdiv_scalar: RDivScalar "rdiv_scalar", |x, c| c / x,
        rule |cx, g, _| V::pointwise(&MinusHyOverD, [g, cx.output(), cx.input(0)]);
}

/// `xᵖ` for a constant exponent `p`.
#[derive(Clone, Copy, Debug)]
pub struct PowfOp(pub f64);
impl<T: Float> Unary<T> for PowfOp {
    #[inline(always)]
    fn f(&self, x: T) -> T {
        x.powf(T::from_f64(self.0))
    }
}
/// `d xᵖ = p·xᵖ⁻¹ dx` (strong zero in `g`); for `p = 0` the gradient is 0.
impl<T: Float> Pointwise<T, 2> for PowfOp {
    #[inline(always)]
    fn eval<E: Elem<T>>(&self, [g, x]: [E; 2]) -> E {
        if self.0 == 0.0 {
            return g.lit(T::ZERO);
        }
        g.chain_mul(x.map1(&PowfOp(self.0 - 1.0)) * T::from_f64(self.0))
    }
}
impl<T: Float> Op<T> for PowfOp {
    fn name(&self) -> &'static str {
        "powf"
    }
    fn params(&self) -> String {
        format!("p={}", self.0)
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        arity("powf", x, 1)?;
        Ok(x[0].map(|a| Unary::f(self, a)))
    }
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
        Ok(cx.grads([Some(V::pointwise(self, [g, cx.input(0)]))]))
    }
    fn elementwise(&self) -> Option<Elementwise<'_, T>> {
        Some(Elementwise::Unary(self))
    }
}
impl<T: Float> UnaryKernel<T> for PowfOp {
    fn apply(&self, x: &[T], out: &mut [T]) {
        unary_loop(self, x, out)
    }
    fn one(&self, x: T) -> T {
        <Self as Unary<T>>::f(self, x)
    }
}

impl<'t, T: Float> Var<'t, T> {
    /// `xᵖ` elementwise for a constant power `p`.
    #[track_caller]
    pub fn powf(self, p: T) -> Var<'t, T> {
        self.tape.op(OpRef::new(PowfOp(p.to_f64())), &[self])
    }
}

macro_rules! var_binop {
    ($trait:ident, $method:ident, $op:ident, |$s:ident, $c:ident| $scalar:expr) => {
        impl<'t, T: Float> $trait<Var<'t, T>> for Var<'t, T> {
            type Output = Var<'t, T>;
            #[track_caller]
            fn $method(self, rhs: Var<'t, T>) -> Var<'t, T> {
                self.tape.op(OpRef::Static(&$op), &[self, rhs])
            }
        }
        impl<'t, T: Float> $trait<T> for Var<'t, T> {
            type Output = Var<'t, T>;
            #[track_caller]
            fn $method(self, $c: T) -> Var<'t, T> {
                let $s = self;
                $scalar
            }
        }
    };
}

var_binop!(Add, add, AddOp, |s, c| s.add_scalar(c));
var_binop!(Sub, sub, SubOp, |s, c| s.add_scalar(-c));
var_binop!(Mul, mul, MulOp, |s, c| s.mul_scalar(c));
var_binop!(Div, div, DivOp, |s, c| s.mul_scalar(T::ONE / c));

impl<'t, T: Float> Neg for Var<'t, T> {
    type Output = Var<'t, T>;
    #[track_caller]
    fn neg(self) -> Var<'t, T> {
        self.tape.op(OpRef::Static(&NegOp), &[self])
    }
}

/// `c ∘ x` for a constant `c` on the left: each operator as the scalar-parameter op it records.
macro_rules! scalar_lhs {
    ($t:ty: $($tr:ident $m:ident |$c:ident, $x:ident| $body:expr;)*) => {$(
        impl<'t> $tr<Var<'t, $t>> for $t {
            type Output = Var<'t, $t>;
            #[track_caller]
            fn $m(self, rhs: Var<'t, $t>) -> Var<'t, $t> {
                let ($c, $x) = (self, rhs);
                $body
            }
        }
    )*};
}
macro_rules! scalar_lhs_all {
    ($($t:ty),*) => {$(
        scalar_lhs! { $t:
            Add add |c, x| x.add_scalar(c);
            Sub sub |c, x| (-x).add_scalar(c);
            Mul mul |c, x| x.mul_scalar(c);
            Div div |c, x| x.rdiv_scalar(c);
        }
    )*};
}
scalar_lhs_all!(f32, f64);

fn t(v: &[f64], s: &[usize]) -> Tensor<f64> {
    Tensor::from_vec(v.to_vec(), s)
}

/// A scalar parameter for an op in `T` (tame: ordinary; wild: often NaN, ±∞, huge, subnormal).
fn scalar<T: Float>(c: &mut Choice<'_>) -> T {
    T::from_f64(c.scalar())
}

pub(crate) fn register(r: &mut Registry) {
    fn bin_samples() -> Vec<(&'static str, Tensor<f64>, Tensor<f64>)> {
        vec![
            (
                "same [2,3]",
                Tensor::rand_uniform([2, 3], 0.5, 2.0, 1),
                Tensor::rand_uniform([2, 3], 0.5, 2.0, 2),
            ),
            (
                "broadcast [2,3] by [3]",
                Tensor::rand_uniform([2, 3], 0.5, 2.0, 3),
                Tensor::rand_uniform([3], 0.5, 2.0, 4),
            ),
            (
                "broadcast [4,1] by [1,3]",
                Tensor::rand_uniform([4, 1], 0.5, 2.0, 5),
                Tensor::rand_uniform([1, 3], 0.5, 2.0, 6),
            ),
            (
                "3-D [2,1,3] by [4,1]",
                Tensor::rand_uniform([2, 1, 3], 0.5, 2.0, 7),
                Tensor::rand_uniform([4, 1], 0.5, 2.0, 8),
            ),
            (
                "0-d by [3]",
                Tensor::scalar(1.3),
                Tensor::rand_uniform([3], 0.5, 2.0, 9),
            ),
            ("1-element [1] by [1]", t(&[0.7], &[1]), t(&[1.9], &[1])),
        ]
    }
    // Tame: two operands that broadcast together (the denominator of `div` mapped into its
    // domain); wild: any two, so mismatched shapes reach the op's error.
    macro_rules! binary_entry {
        ($name:literal, $summary:literal, $domain:expr, |$a:ident, $b:ident| $e:expr) => {
            r.register(
                OpInfo::new($name, $summary, || {
                    bin_samples()
                        .into_iter()
                        .map(|(l, x, y)| {
                            sample!(l, [x, y], |v| {
                                let ($a, $b) = (v[0], v[1]);
                                $e
                            })
                            .with_reference(|x| reference::zip(&x[0], &x[1], |$a, $b| $e))
                        })
                        .collect()
                })
                .domain($domain)
                .recipe(recipe!(|c, v| {
                    let ($a, b) = c.pick_broadcastable(v)?;
                    let $b = c.into_domain(b, $domain);
                    Some($e)
                })),
            )
        };
    }
    binary_entry!("add", "a + b, broadcasting", Domain::Real, |a, b| a + b);
    binary_entry!("sub", "a − b, broadcasting", Domain::Real, |a, b| a - b);
    binary_entry!("mul", "a · b elementwise, broadcasting", Domain::Real, |a, b| a * b);
    // The domain is the denominator's (the numerator is any real).
    binary_entry!(
        "div",
        "a / b elementwise, broadcasting (b > 0 in random programs)",
        Domain::Positive,
        |a, b| a / b
    );
    // Inputs for `maximum`/`minimum`: values from a grid with steps of at least 0.4, `b`'s shifted
    // by 0.2, so every pair is at least 0.15 apart (finite differences never straddle a tie) and
    // either operand wins somewhere.
    fn apart(shape: &[usize], seed: usize, shift: f64) -> Tensor<f64> {
        const GRID: [f64; 8] = [-1.7, -1.1, -0.6, -0.2, 0.3, 0.7, 1.2, 1.6];
        Tensor::from_fn(shape, |i| GRID[(i * 5 + seed) % GRID.len()] + shift + 0.001 * i as f64)
    }
    fn extreme_samples(max: bool) -> Vec<Sample> {
        let pairs = [
            ("same [2,3]", apart(&[2, 3], 0, 0.0), apart(&[2, 3], 3, 0.2)),
            ("broadcast [2,3] by [3]", apart(&[2, 3], 1, 0.0), apart(&[3], 6, 0.2)),
            (
                "broadcast [4,1] by [1,3]",
                apart(&[4, 1], 2, 0.2),
                apart(&[1, 3], 5, 0.0),
            ),
            (
                "3-D [2,1,3] by [4,1]",
                apart(&[2, 1, 3], 4, 0.0),
                apart(&[4, 1], 7, 0.2),
            ),
            ("0-d by [3]", Tensor::scalar(0.5), apart(&[3], 1, 0.2)),
            ("1-element [1] by [1]", t(&[-0.6], &[1]), t(&[0.1], &[1])),
        ];
        pairs
            .into_iter()
            .map(|(l, a, b)| {
                if max {
                    sample!(l, [a, b], |v| v[0].maximum(v[1]))
                        .with_reference(|x| reference::zip(&x[0], &x[1], |a, b| if a < b { b } else { a }))
                } else {
                    sample!(l, [a, b], |v| v[0].minimum(v[1]))
                        .with_reference(|x| reference::zip(&x[0], &x[1], |a, b| if b < a { b } else { a }))
                }
            })
            .collect()
    }
    // Tame: `maximum(tanh(a)/5, tanh(b)/5 + d)` with a constant `d` of ±½ per element of `b`
    // (signs drawn by the choices), so the operands are at least 0.1 apart everywhere (no tie,
    // whatever the pool holds, `a` and `b` the same value included) and each wins somewhere;
    // wild: the bare call on any two values.
    macro_rules! extreme_recipe {
        ($m:ident) => {
            recipe!(|c, v| {
                let (a, b) = c.pick_broadcastable(v)?;
                if c.wild() {
                    return Some(a.$m(b));
                }
                let d = Tensor::from_fn(b.shape(), |_| Float::from_f64(if c.flag() { 0.5 } else { -0.5 }));
                let fifth = Float::from_f64(0.2);
                let (a, b) = (
                    a.tanh().mul_scalar(fifth),
                    b.tanh().mul_scalar(fifth) + b.tape().constant(d),
                );
                Some(a.$m(b))
            })
        };
    }
    r.register(
        OpInfo::new(
            "maximum",
            "max(a, b) elementwise, broadcasting; ties split the gradient",
            || extreme_samples(true),
        )
        .recipe(extreme_recipe!(maximum)),
    );
    r.register(
        OpInfo::new(
            "minimum",
            "min(a, b) elementwise, broadcasting; ties split the gradient",
            || extreme_samples(false),
        )
        .recipe(extreme_recipe!(minimum)),
    );
    r.register(
        OpInfo::new(
            "pow",
            "aᵇ elementwise with a tensor exponent, broadcasting (a > 0)",
            || {
                let pos = |s: &[usize], seed| Domain::Positive.sample(s, seed);
                let exp = |s: &[usize], seed| Tensor::rand_uniform(s, -2.0, 3.0, seed);
                let pow: Reference = |x| reference::zip(&x[0], &x[1], f64::powf);
                let mut samples: Vec<Sample> = [
                    ("same [2,3]", pos(&[2, 3], 60), exp(&[2, 3], 61)),
                    ("broadcast [2,3] by [3]", pos(&[2, 3], 62), exp(&[3], 63)),
                    ("[3] by [2,1] exponents", pos(&[3], 64), exp(&[2, 1], 65)),
                    ("3-D [2,1,3] by [4,1]", pos(&[2, 1, 3], 66), exp(&[4, 1], 67)),
                    ("0-d by 0-d", Tensor::scalar(1.7), Tensor::scalar(-0.6)),
                ]
                .into_iter()
                .map(|(l, a, b)| sample!(l, [a, b], |v| v[0].pow(v[1])).with_reference(pow))
                .collect();
                // A constant exponent (it needs no gradient) and a base through 0 and below: the
                // base's gradient stays finite at 0, second order included.
                samples.push(
                    sample!(
                        "[4] with 0, constant exponent 3",
                        [t(&[0.0, -1.5, 0.8, 2.0], &[4])],
                        |v| { v[0].pow(v[0].tape().scalar(Float::from_f64(3.0))) }
                    )
                    .with_reference(|x| reference::map(&x[0], |a| a.powf(3.0))),
                );
                samples
            },
        )
        .domain(Domain::Positive)
        // Tame: a base mapped to a > 0, an exponent squashed into (−1.5, 2.5); wild: any two
        // values (negative bases, 0 to a negative power, NaN, ±∞, mismatched shapes).
        .recipe(recipe!(|c, v| {
            let (a, b) = c.pick_broadcastable(v)?;
            if c.wild() {
                return Some(a.pow(b));
            }
            Some(
                c.into_domain(a, Domain::Positive)
                    .pow(c.into_domain(b, Domain::Interval(-2.0, 3.0))),
            )
        })),
    );
    r.register(
        OpInfo::new("atan2", "atan2(y, x) elementwise, broadcasting", || {
            let away = |s: &[usize], seed| Domain::AwayFromZero.sample(s, seed);
            let any = |s: &[usize], seed| Tensor::rand_normal(s, 0.0, 1.0, seed);
            let atan2: Reference = |x| reference::zip(&x[0], &x[1], f64::atan2);
            [
                ("same [2,3]", away(&[2, 3], 70), any(&[2, 3], 71)),
                ("broadcast [2,3] by [3]", away(&[2, 3], 72), any(&[3], 73)),
                ("[3] by [2,1]", away(&[3], 74), any(&[2, 1], 75)),
                ("3-D [2,1,3] by [4,1]", away(&[2, 1, 3], 76), any(&[4, 1], 77)),
                ("0-d by [1]", Tensor::scalar(-0.4), t(&[-2.0], &[1])),
            ]
            .into_iter()
            .map(|(l, y, x)| sample!(l, [y, x], |v| v[0].atan2(v[1])).with_reference(atan2))
            .collect()
        })
        // The domain is `y`'s: away from 0 keeps the points off the branch cut (`y = 0, x < 0`,
        // where the angle jumps by 2π) and away from the origin.
        .domain(Domain::AwayFromZero)
        // Tame: `y` mapped away from 0, any `x`; wild: any two values.
        .recipe(recipe!(|c, v| {
            let (y, x) = c.pick_broadcastable(v)?;
            if c.wild() {
                return Some(y.atan2(x));
            }
            Some(c.into_domain(y, Domain::AwayFromZero).atan2(x))
        })),
    );
    r.register(
        OpInfo::new("powf", "xᵖ, constant p (x > 0)", || {
            let pos = |s: &[usize], seed| Domain::Positive.sample(s, seed);
            vec![
                sample!("[2,3] ^ 2.5", [pos(&[2, 3], 20)], |v| v[0].powf(2.5))
                    .with_reference(|x| reference::map(&x[0], |a| a.powf(2.5))),
                sample!("0-d ^ -1.5", [pos(&[], 21)], |v| v[0].powf(-1.5))
                    .with_reference(|x| reference::map(&x[0], |a| a.powf(-1.5))),
                sample!("[2,3,2] ^ 3", [pos(&[2, 3, 2], 23)], |v| v[0].powf(3.0))
                    .with_reference(|x| reference::map(&x[0], |a| a.powf(3.0))),
                sample!("[3] ^ 0", [pos(&[3], 24)], |v| v[0].powf(0.0) * v[0])
                    .with_reference(|x| reference::map(&x[0], |a| a.powf(0.0) * a)),
            ]
        })
        .domain(Domain::Positive)
        // Tame: a base mapped to x > 0 and an exponent from a short list (0 included); wild: any
        // base and any exponent (NaN, ±∞, fractions of negative bases).
        .recipe(recipe!(|c, v| {
            let x = c.pick(v);
            let p = if c.wild() {
                match c.byte() % 2 {
                    0 => c.scalar(),
                    _ => (c.byte() as i8) as f64 / 8.0,
                }
            } else {
                c.one_of(&[2.5, -1.5, 3.0, 0.5, 1.5, -0.5, 2.0, 0.0])
            };
            Some(c.into_domain(x, Domain::Positive).powf(Float::from_f64(p)))
        })),
    );
    r.register(
        OpInfo::new("neg", "−x", || {
            vec![
                sample!("[2,3]", [Tensor::rand_normal([2, 3], 0.0, 1.0, 10)], |v| -v[0])
                    .with_reference(|x| reference::map(&x[0], |a| -a)),
                sample!("0-d", [Tensor::scalar(0.4)], |v| -v[0]).with_reference(|x| reference::map(&x[0], |a| -a)),
            ]
        })
        .recipe(recipe!(|c, v| Some(-c.pick(v)))),
    );
    r.register(
        OpInfo::new("add_scalar", "x + c", || {
            vec![
                sample!("[2,3] + 1.5", [Tensor::rand_normal([2, 3], 0.0, 1.0, 11)], |v| v[0]
                    + 1.5)
                .with_reference(|x| reference::map(&x[0], |a| a + 1.5)),
                sample!("2 − x, [3]", [Tensor::rand_normal([3], 0.0, 1.0, 12)], |v| 2.0 - v[0])
                    .with_reference(|x| reference::map(&x[0], |a| 2.0 - a)),
            ]
        })
        .recipe(recipe!(|c, v| {
            let x = c.pick(v);
            Some(x.add_scalar(scalar(c)))
        })),
    );
    r.register(
        OpInfo::new("mul_scalar", "x · c", || {
            vec![
                sample!("[2,3] · 2.5", [Tensor::rand_normal([2, 3], 0.0, 1.0, 13)], |v| v[0]
                    * 2.5)
                .with_reference(|x| reference::map(&x[0], |a| a * 2.5)),
                sample!("x / 4, [2,2,2]", [Tensor::rand_normal([2, 2, 2], 0.0, 1.0, 14)], |v| v
                    [0]
                    / 4.0)
                .with_reference(|x| reference::map(&x[0], |a| a / 4.0)),
            ]
        })
        .recipe(recipe!(|c, v| {
            let x = c.pick(v);
            Some(x.mul_scalar(scalar(c)))
        })),
    );
    r.register(
        OpInfo::new("rdiv_scalar", "c / x (x ≠ 0)", || {
            vec![
                sample!("3 / x, [2,3]", [Tensor::rand_uniform([2, 3], 0.5, 2.0, 15)], |v| 3.0
                    / v[0])
                .with_reference(|x| reference::map(&x[0], |a| 3.0 / a)),
                sample!("1 / x, 0-d", [Tensor::scalar(-1.5)], |v| 1.0 / v[0])
                    .with_reference(|x| reference::map(&x[0], |a| 1.0 / a)),
            ]
        })
        .domain(Domain::AwayFromZero)
        // Tame: x mapped away from 0 (`±(x² + ¼)`); wild: any x, so 0 and ±∞ reach the op.
        .recipe(recipe!(|c, v| {
            let x = c.pick(v);
            let k = scalar(c);
            Some(c.into_domain(x, Domain::AwayFromZero).rdiv_scalar(k))
        })),
    );
}
