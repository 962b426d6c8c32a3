//! Arithmetic: `add sub mul div neg` with NumPy broadcasting, and the scalar forms
//! `add_scalar mul_scalar rdiv_scalar`. The operators `+ - * /` and unary `-` on [`Var`] record these:
//! `Var ∘ Var` records the broadcasting op, `Var ∘ scalar` and `scalar ∘ Var` the scalar forms
//! (`x / c` records `x · (1/c)`).
//!
//! Broadcasting VJPs sum each gradient back to its input's shape (`sum_to`).

use super::common::{arity, binary_ops, broadcast_zip};
use super::reference;
use super::registry::{Choice, Domain, OpInfo, Registry};
use super::select::{ByD, MinusHy, MinusHyOverD, OverD};
use crate::autodiff::rule::{Binary, Elem, Pointwise, Unary, Value};
use crate::autodiff::rule::{Cotangents, Op, VjpCtx};
use crate::autodiff::tape::{OpRef, Var};
use crate::core::error::Result;
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
    MulOp "mul", |a, b| a * b,
        rule |cx, g, a, b, y| [
            V::pointwise(&ByD, [g, b]).sum_to_like(a),
            V::pointwise(&ByD, [g, a]).sum_to_like(b)
        ];
    /// `a / b` elementwise, broadcasting: `d(a/b) = da/b − (a/b)·db/b`, from the output `y = a/b`
    /// (strong zeros in `g`); for `b` the numerator `−g·y` is summed over `b`'s broadcast axes
    /// first, then divided by `b` once.
    DivOp "div", |a, b| a / b,
        rule |cx, g, a, b, y| [
            V::pointwise(&OverD, [g, b]).sum_to_like(a),
            V::pointwise(&OverD, [&V::pointwise(&MinusHy, [g, y]).sum_to_like(b), b])
        ];
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
        use super::select::Logic;
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
