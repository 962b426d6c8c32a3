//! Elementwise functions of one argument — **the table**. Each row is one op: its method, its
//! forward at one element, its rule, its input [`Domain`] and a reference; nothing else is needed.
//!
//! A rule is written over any [`Elem`] with the cotangent `g`, the input `x` and the saved output
//! `y`: the first-order backward runs it as one fused loop over the elements
//! (`|g, x, y| g * (1 − y·y)` is one pass), the recorded backward records it op by op (so it can be
//! differentiated again), and the two cannot disagree because there is one text.
//!
//! Where the local derivative can be infinite or NaN (`exp`, `log`, `sqrt`, …) the rule multiplies
//! with a **strong zero** — [`chain_mul`](Logic::chain_mul) / [`chain_div`](Logic::chain_div) are
//! exactly `0` where `g` is `0` — so a branch masked out by `select` contributes nothing (see
//! [`crate::ops::select`]).
//!
//! # Adding an elementwise function
//!
//! One row in the table below: the method and op type, the op's name and summary, the forward at
//! one element ([`Float`] has the scalar maths), optionally a vectorised slice kernel, the rule,
//! the input [`Domain`] (where the function is defined and smooth: samples and random programs
//! draw from it) and an `f64` reference. The row makes the op, its `Var` method, its method for
//! rules ([`Math`]) and its registry entry; the registry-driven tests, the random programs and the
//! fuzzer pick it up.

use super::common::arity;
use super::reference;
use super::registry::{Domain, OpInfo, Registry};
use super::select::Logic;
use crate::autodiff::rule::{Cotangents, Op, VjpCtx};
use crate::autodiff::rule::{Elem, Pointwise, Unary, Value};
use crate::autodiff::tape::{OpRef, Var};
use crate::core::error::Result;
use crate::core::float::Float;
use crate::tensor::{Tensor, kernels};
use crate::{recipe, sample};

/// Declares the table: for every row an op type (forward, rule), a [`Math`] method for rules, a
/// `Var` method and a registry entry.
macro_rules! unary_table {
    ($(
        $(#[$doc:meta])*
        $method:ident: $ty:ident $name:literal $summary:literal,
        |$x:ident| $fwd:expr, $(slice $slice:path,)?
        rule |$g:pat_param, $rx:pat_param, $ry:pat_param| $rule:expr,
        domain $domain:expr, reference $reference:expr;
    )*) => {
        $(
            #[doc = concat!("The `", $name, "` op: ", $summary, ".")]
            #[derive(Clone, Copy, Debug)]
            pub struct $ty;

            impl<T: Float> Unary<T> for $ty {
                #[inline(always)]
                fn f(&self, $x: T) -> T {
                    $fwd
                }
                fn as_static(&self) -> Option<&'static Self> {
                    Some(&$ty)
                }
            }

            impl<T: Float> Pointwise<T, 3> for $ty {
                #[inline(always)]
                fn eval<E: Elem<T>>(&self, [$g, $rx, $ry]: [E; 3]) -> E {
                    $rule
                }
            }

            impl<T: Float> Op<T> for $ty {
                fn name(&self) -> &'static str {
                    $name
                }
                fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
                    arity($name, x, 1)?;
                    $( return Ok(x[0].map_slice($slice)); )?
                    #[allow(unreachable_code)]
                    Ok(x[0].map(|v| <Self as Unary<T>>::f(self, v)))
                }
                fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
                    Ok(cx.grads([Some(V::pointwise(self, [g, cx.input(0), cx.output()]))]))
                }
            }
        )*

        /// The elementwise functions of the table, as methods of any [`Elem`]: what rules are
        /// written in (`x.exp()`, `y.tanh()`). On a recorded value each records its op.
        pub trait Math<T: Float>: Elem<T> {
            $(
                $(#[$doc])*
                #[inline(always)]
                fn $method(self) -> Self {
                    self.map1(&$ty)
                }
            )*
        }
        impl<T: Float, E: Elem<T>> Math<T> for E {}

        impl<'t, T: Float> Var<'t, T> {
            $(
                $(#[$doc])*
                #[track_caller]
                pub fn $method(self) -> Var<'t, T> {
                    self.tape.op(OpRef::Static(&$ty), &[self])
                }
            )*
        }

        pub(crate) fn register(r: &mut Registry) {
            $(
                r.register(
                    OpInfo::new($name, $summary, || {
                        let reference: fn(&[Tensor<f64>]) -> Tensor<f64> = |x| reference::map(&x[0], $reference);
                        vec![
                            sample!("[2,3]", [$domain.sample(&[2, 3], 20)], |v| v[0].$method()),
                            sample!("0-d", [$domain.sample(&[], 21)], |v| v[0].$method()),
                            sample!("[1]", [$domain.sample(&[1], 22)], |v| v[0].$method()),
                            sample!("3-D [2,3,2]", [$domain.sample(&[2, 3, 2], 23)], |v| v[0].$method()),
                        ]
                        .into_iter()
                        .map(|s| s.with_reference(reference))
                        .collect()
                    })
                    .domain($domain)
                    .recipe(recipe!(|c, v| {
                        let x = c.pick(v);
                        Some(c.into_domain(x, $domain).$method())
                    })),
                );
            )*
        }
    };
}

unary_table! {
    /// `eˣ` elementwise. Its rule reuses the output: `d eˣ = eˣ dx`.
    exp: Exp "exp" "eˣ",
        |x| x.exp(), slice kernels::exp_inplace,
        rule |g, _x, y| g.chain_mul(y),
        domain Domain::Real, reference f64::exp;
    /// Natural logarithm elementwise (`log 0 = −∞`, `log(x < 0) = NaN`): `d ln x = dx / x`.
    log: Log "log" "ln x (x > 0)",
        |x| x.ln(), slice kernels::ln_inplace,
        rule |g, x, _y| g.chain_div(x),
        domain Domain::Positive, reference f64::ln;
    /// Square root elementwise: `d √x = dx / (2√x)`, from the output.
    sqrt: Sqrt "sqrt" "√x (x > 0)",
        |x| x.sqrt(),
        rule |g, _x, y| g.chain_div(y) * T::from_f64(0.5),
        domain Domain::Positive, reference f64::sqrt;
    /// Hyperbolic tangent elementwise: `d tanh x = (1 − tanh² x) dx`, from the output.
    tanh: Tanh "tanh" "tanh x",
        |x| x.tanh(),
        rule |g, _x, y| g * (-(y * y) + T::ONE),
        domain Domain::Real, reference f64::tanh;
    /// The logistic function `1 / (1 + e⁻ˣ)` elementwise, computed stably on both tails:
    /// `d σ(x) = σ(x)(1 − σ(x)) dx`, from the output.
    sigmoid: Sigmoid "sigmoid" "1/(1+e⁻ˣ)",
        |x| sigmoid(x),
        rule |g, _x, y| g * y * (-y + T::ONE),
        domain Domain::Real, reference |x| 1.0 / (1.0 + (-x).exp());
    /// `max(x, 0)` elementwise, with NaN propagating (`relu(NaN)` is NaN, so a diverging network
    /// cannot hide behind a finite loss). The gradient is *selected*, not multiplied by a 0/1
    /// mask: `g` where not `x ≤ 0` (so 0 at exactly 0), and an infinite `g` at `x ≤ 0` gives 0,
    /// not `∞·0 = NaN` — as PyTorch's.
    relu: Relu "relu" "max(x, 0)",
        |x| if x < T::ZERO { T::ZERO } else { x },
        rule |g, x, _y| x.le(x.lit(T::ZERO)).select(g.lit(T::ZERO), g),
        domain Domain::AwayFromZero, reference |x| x.max(0.0);
    /// `|x|` elementwise: `d|x| = sign(x) dx`, with `sign(0) = 0` (the subgradient of least
    /// norm) and `sign(NaN) = NaN`.
    abs: Abs "abs" "|x|",
        |x| x.abs(),
        rule |g, x, _y| g * x.sign(),
        domain Domain::AwayFromZero, reference f64::abs;
    /// The sign of `x` elementwise (`−1`, `0`, `1`; NaN for NaN). Piecewise constant: its
    /// gradient is exactly zero (also against an infinite or NaN cotangent, as PyTorch's).
    sign: Sign "sign" "sign(x), gradient 0",
        |x| sign(x),
        rule |g, _x, _y| g.lit(T::ZERO),
        domain Domain::AwayFromZero, reference |x| if x.is_nan() { x } else if x == 0.0 { 0.0 } else { x.signum() };
    /// Sine elementwise (radians): `d sin x = cos x · dx`.
    sin: Sin "sin" "sin x",
        |x| x.sin(),
        rule |g, x, _y| g * x.cos(),
        domain Domain::Real, reference f64::sin;
    /// Cosine elementwise (radians): `d cos x = −sin x · dx`.
    cos: Cos "cos" "cos x",
        |x| x.cos(),
        rule |g, x, _y| -(g * x.sin()),
        domain Domain::Real, reference f64::cos;
}

/// `sign(x)`: `−1`, `0` or `1`, and NaN for NaN.
#[inline(always)]
fn sign<T: Float>(x: T) -> T {
    if x > T::ZERO {
        T::ONE
    } else if x < T::ZERO {
        -T::ONE
    } else if x.is_nan() {
        x
    } else {
        T::ZERO
    }
}

#[inline(always)]
fn sigmoid<T: Float>(x: T) -> T {
    // Stable on both tails: never exponentiates a large positive number.
    if x >= T::ZERO {
        T::ONE / (T::ONE + (-x).exp())
    } else {
        let e = x.exp();
        e / (T::ONE + e)
    }
}

impl<'t, T: Float> Var<'t, T> {
    /// `x²` elementwise (recorded as `x · x`).
    #[track_caller]
    pub fn square(self) -> Var<'t, T> {
        self * self
    }
}
