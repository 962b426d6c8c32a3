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
use crate::autodiff::rule::{Elem, Elementwise, Pointwise, RuleKernel, Unary, UnaryKernel, Value, unary_loop};
use crate::autodiff::tape::{OpRef, Var};
use crate::core::error::{Error, ErrorKind, Result, fail};
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
                fn kernel(&self) -> Option<RuleKernel<T, 3>> {
                    Some(RuleKernel::new(concat!("d ", $name), *self))
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
                fn elementwise(&self) -> Option<Elementwise<'_, T>> {
                    Some(Elementwise::Unary(self))
                }
            }

            impl<T: Float> UnaryKernel<T> for $ty {
                fn apply(&self, x: &[T], out: &mut [T]) {
                    $( out.copy_from_slice(x); return $slice(out); )?
                    #[allow(unreachable_code)]
                    unary_loop(self, x, out)
                }
                fn one(&self, x: T) -> T {
                    // A slice kernel's bits come from the kernel (vectorised maths): one element
                    // through it; otherwise the function at one element, as `unary_loop` does.
                    $( let mut o = [x]; $slice(&mut o); return o[0]; )?
                    #[allow(unreachable_code)]
                    <Self as Unary<T>>::f(self, x)
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

        /// The elementwise functions of the table on plain tensors: no tape, the op's own forward
        /// (so a value computed here equals the value a `Var` records, bit for bit).
        impl<T: Float> Tensor<T> {
            $(
                $(#[$doc])*
                #[doc = ""]
                #[doc = concat!("On a plain tensor: the forward of the `", $name, "` op, with no tape.")]
                pub fn $method(&self) -> Tensor<T> {
                    <$ty as Op<T>>::forward(&$ty, &[self]).unwrap_or_else(|e| fail(e))
                }
            )*
        }

        fn register_table(r: &mut Registry) {
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
        |x| x.tanh_vec(), slice kernels::tanh_inplace,
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
    /// Tangent elementwise (radians): `d tan x = (1 + tan² x) dx`, from the output (strong zero:
    /// the factor is infinite at the poles `π/2 + kπ`; samples stay inside `(−1.3, 1.3)`).
    tan: Tan "tan" "tan x",
        |x| x.tan(),
        rule |g, _x, y| g.chain_mul(y * y + T::ONE),
        domain Domain::Interval(-1.3, 1.3), reference f64::tan;
    /// Arcsine elementwise, in `[−π/2, π/2]` (NaN outside `[−1, 1]`): `d asin x = dx / √(1 − x²)`,
    /// infinite at `±1` (strong zero: a zero cotangent gives 0 there).
    asin: Asin "asin" "arcsin x (|x| < 1)",
        |x| x.asin(),
        rule |g, x, _y| g.chain_div(((-x + T::ONE) * (x + T::ONE)).sqrt()),
        domain Domain::Interval(-1.0, 1.0), reference f64::asin;
    /// Arccosine elementwise, in `[0, π]` (NaN outside `[−1, 1]`): `d acos x = −dx / √(1 − x²)`,
    /// infinite at `±1` (strong zero).
    acos: Acos "acos" "arccos x (|x| < 1)",
        |x| x.acos(),
        rule |g, x, _y| -g.chain_div(((-x + T::ONE) * (x + T::ONE)).sqrt()),
        domain Domain::Interval(-1.0, 1.0), reference f64::acos;
    /// Arctangent elementwise, in `(−π/2, π/2)`: `d atan x = dx / (1 + x²)`.
    atan: Atan "atan" "arctan x",
        |x| x.atan(),
        rule |g, x, _y| g / (x * x + T::ONE),
        domain Domain::Real, reference f64::atan;
    /// Hyperbolic sine elementwise: `d sinh x = cosh x · dx` (strong zero: `cosh` overflows to ∞
    /// beyond `|x| ≈ 710` in `f64`).
    sinh: Sinh "sinh" "sinh x",
        |x| x.sinh(),
        rule |g, x, _y| g.chain_mul(x.cosh()),
        domain Domain::Real, reference f64::sinh;
    /// Hyperbolic cosine elementwise: `d cosh x = sinh x · dx` (strong zero, as `sinh`).
    cosh: Cosh "cosh" "cosh x",
        |x| x.cosh(),
        rule |g, x, _y| g.chain_mul(x.sinh()),
        domain Domain::Real, reference f64::cosh;
    /// Inverse hyperbolic sine elementwise: `d asinh x = dx / √(x² + 1)`.
    asinh: Asinh "asinh" "arsinh x",
        |x| x.asinh(),
        rule |g, x, _y| g / (x * x + T::ONE).sqrt(),
        domain Domain::Real, reference f64::asinh;
    /// Inverse hyperbolic cosine elementwise (NaN below 1): `d acosh x = dx / √(x² − 1)`, infinite
    /// at 1 (strong zero).
    acosh: Acosh "acosh" "arcosh x (x > 1)",
        |x| x.acosh(),
        rule |g, x, _y| g.chain_div(((x - T::ONE) * (x + T::ONE)).sqrt()),
        domain Domain::Above(1.0), reference f64::acosh;
    /// Inverse hyperbolic tangent elementwise (`±∞` at `±1`, NaN beyond): `d atanh x = dx / (1 − x²)`,
    /// infinite at `±1` (strong zero).
    atanh: Atanh "atanh" "artanh x (|x| < 1)",
        |x| x.atanh(),
        rule |g, x, _y| g.chain_div((-x + T::ONE) * (x + T::ONE)),
        domain Domain::Interval(-1.0, 1.0), reference f64::atanh;
    /// `ln(1 + x)` elementwise, accurate near 0 (`−∞` at `−1`, NaN below): `d = dx / (1 + x)`
    /// (strong zero).
    log1p: Log1p "log1p" "ln(1 + x) (x > −1)",
        |x| x.ln_1p(),
        rule |g, x, _y| g.chain_div(x + T::ONE),
        domain Domain::Above(-1.0), reference f64::ln_1p;
    /// `eˣ − 1` elementwise, accurate near 0: `d = eˣ dx = (y + 1) dx`, from the output (strong zero).
    expm1: Expm1 "expm1" "eˣ − 1",
        |x| x.exp_m1(),
        rule |g, _x, y| g.chain_mul(y + T::ONE),
        domain Domain::Real, reference f64::exp_m1;
    /// Base-2 logarithm elementwise: `d log₂ x = dx / (x ln 2)` (strong zero).
    log2: Log2 "log2" "log₂ x (x > 0)",
        |x| x.log2(),
        rule |g, x, _y| g.chain_div(x * T::from_f64(std::f64::consts::LN_2)),
        domain Domain::Positive, reference f64::log2;
    /// Base-10 logarithm elementwise: `d log₁₀ x = dx / (x ln 10)` (strong zero).
    log10: Log10 "log10" "log₁₀ x (x > 0)",
        |x| x.log10(),
        rule |g, x, _y| g.chain_div(x * T::from_f64(std::f64::consts::LN_10)),
        domain Domain::Positive, reference f64::log10;
    /// `2ˣ` elementwise: `d 2ˣ = 2ˣ ln 2 · dx`, from the output (strong zero).
    exp2: Exp2 "exp2" "2ˣ",
        |x| x.exp2(),
        rule |g, _x, y| g.chain_mul(y * T::from_f64(std::f64::consts::LN_2)),
        domain Domain::Real, reference f64::exp2;
    /// `1 / x` elementwise (`±∞` at `±0`): `d(1/x) = −dx / x² = −y² dx`, from the output (strong
    /// zero).
    reciprocal: Reciprocal "reciprocal" "1/x (x ≠ 0)",
        |x| x.recip(),
        rule |g, _x, y| -g.chain_mul(y * y),
        domain Domain::AwayFromZero, reference |x| 1.0 / x;
    /// `1 / √x` elementwise (`∞` at 0, NaN below): `d x^(−½) = −½ x^(−3/2) dx = −½ y³ dx`, from the
    /// output (strong zero).
    rsqrt: Rsqrt "rsqrt" "1/√x (x > 0)",
        |x| T::ONE / x.sqrt(),
        rule |g, _x, y| g.chain_mul(y * y * y) * T::from_f64(-0.5),
        domain Domain::Positive, reference |x| 1.0 / x.sqrt();
    /// `x²` elementwise, one op (where `x * x` records a `mul`, whose rule adds two gradients):
    /// `d x² = 2x dx` (strong zero, as `mul`'s).
    square: Square "square" "x²",
        |x| x * x,
        rule |g, x, _y| g.chain_mul(x) * T::from_f64(2.0),
        domain Domain::Real, reference |x| x * x;
    /// `ln(1 + eˣ)` elementwise, computed stably as `max(x, 0) + ln(1 + e^(−|x|))` (no overflow
    /// for large `x`, no loss for very negative `x`; NaN propagates): `d softplus x = σ(x) dx`,
    /// exactly `½` at 0.
    softplus: Softplus "softplus" "ln(1 + eˣ)",
        |x| softplus(x),
        rule |g, x, _y| g * x.sigmoid(),
        domain Domain::Real, reference |x| (1.0 + x.exp()).ln();
    /// The error function elementwise (`libm`'s): `d erf x = (2/√π) e^(−x²) dx`.
    erf: Erf "erf" "erf x",
        |x| x.erf(),
        rule |g, x, _y| g * (-(x * x)).exp() * T::from_f64(std::f64::consts::FRAC_2_SQRT_PI),
        domain Domain::Real, reference naive_erf;
    /// The complementary error function `1 − erf x` elementwise, accurate in the right tail
    /// (`libm`'s): `d erfc x = −(2/√π) e^(−x²) dx`.
    erfc: Erfc "erfc" "1 − erf x",
        |x| x.erfc(),
        rule |g, x, _y| -(g * (-(x * x)).exp() * T::from_f64(std::f64::consts::FRAC_2_SQRT_PI)),
        domain Domain::Real, reference naive_erfc;
    /// GELU, exact: `x · Φ(x)` elementwise with `Φ` the standard normal CDF, computed as
    /// `x · ½ erfc(−x/√2)` (accurate in the left tail, where `1 + erf` would cancel):
    /// `d gelu x = (Φ(x) + x φ(x)) dx` with `φ(x) = e^(−x²/2)/√(2π)`; `½` at 0. At `x = ±∞` the
    /// products `x · 0` are NaN.
    gelu: Gelu "gelu" "x·Φ(x), exact",
        |x| x * T::from_f64(0.5) * (-x * T::from_f64(std::f64::consts::FRAC_1_SQRT_2)).erfc(),
        rule |g, x, _y| g * ((-x * T::from_f64(std::f64::consts::FRAC_1_SQRT_2)).erfc() * T::from_f64(0.5)
            + x * (-(x * x) * T::from_f64(0.5)).exp() * T::from_f64(FRAC_1_SQRT_2PI)),
        domain Domain::Real, reference |x| x * 0.5 * naive_erfc(-x / std::f64::consts::SQRT_2);
    /// GELU, the tanh approximation: `½x(1 + tanh(√(2/π)(x + 0.044715x³)))` elementwise,
    /// computed as `x·σ(2u)` with `u` the tanh's argument (the same function: `½(1 + tanh u) =
    /// σ(2u)`), whose exponential vectorises where `tanh` calls the C library per element. With
    /// `s = σ(2u)`: `d = (s + 2x·s(1 − s)·√(2/π)(1 + 0.134145x²)) dx`, the second term with a
    /// strong zero in `s(1 − s)` (exactly 0 in the tails, where the other factor grows like `x³`).
    gelu_tanh: GeluTanh "gelu_tanh" "x·½(1 + tanh(√(2/π)(x + 0.044715x³)))",
        |x| x * sigmoid((x * x * x * T::from_f64(GELU_C) + x) * T::from_f64(2.0 * SQRT_2_OVER_PI)),
        rule |g, x, _y| {
            let s = ((x * x * x * T::from_f64(GELU_C) + x) * T::from_f64(2.0 * SQRT_2_OVER_PI)).sigmoid();
            let k = x * (x * x * T::from_f64(3.0 * GELU_C) + T::ONE) * T::from_f64(2.0 * SQRT_2_OVER_PI);
            g * (s + (s * (-s + T::ONE)).chain_mul(k))
        },
        domain Domain::Real,
        reference |x| 0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh());
    /// SiLU (swish): `x · σ(x)` elementwise: `d silu x = (σ(x) + y(1 − σ(x))) dx`, from the output;
    /// `½` at 0. At `x = −∞` the product `−∞ · 0` is NaN.
    silu: Silu "silu" "x·σ(x)",
        |x| x * sigmoid(x),
        rule |g, x, y| {
            let s = x.sigmoid();
            g * (s + y * (-s + T::ONE))
        },
        domain Domain::Real, reference |x| x / (1.0 + (-x).exp());
}

/// Declares the elementwise functions with constant parameters, one row each: the method and op
/// type, the op's name and its parameters (stored as `f64`, exact for `f32` and `f64`), a check
/// of the parameters (`Some(message)` when they are invalid; the forward then fails), the forward
/// at one element and the rule over any [`Elem`] (`g`, the input `x`, the saved output `y`), with
/// the parameters in scope as `T`. A row makes the op, its `Var` method and its `Tensor` method.
macro_rules! param_table {
    ($(
        $(#[$doc:meta])*
        $method:ident: $ty:ident $name:literal ($($p:ident),+),
        check $check:expr,
        |$x:ident| $fwd:expr,
        rule |$g:pat_param, $rx:pat_param, $ry:pat_param| $rule:expr;
    )*) => {$(
        #[doc = concat!("The `", $name, "` op with its parameters: see [`Var::", stringify!($method), "`].")]
        #[derive(Clone, Copy, Debug, PartialEq)]
        pub struct $ty {
            $(
                #[doc = concat!("The parameter `", stringify!($p), "`.")]
                pub $p: f64,
            )+
        }

        impl $ty {
            /// The parameters checked: an `Invalid` error naming the op when they do not fit.
            #[allow(unused_variables)]
            fn check(&self) -> Result<()> {
                let $ty { $($p),+ } = *self;
                let problem: Option<String> = $check;
                match problem {
                    Some(m) => Err(Error::new(ErrorKind::Invalid, $name, m)),
                    None => Ok(()),
                }
            }
        }

        impl<T: Float> Unary<T> for $ty {
            #[inline(always)]
            #[allow(unused_variables)]
            fn f(&self, $x: T) -> T {
                let $ty { $($p),+ } = *self;
                $(let $p = T::from_f64($p);)+
                $fwd
            }
        }

        impl<T: Float> Pointwise<T, 3> for $ty {
            #[inline(always)]
            #[allow(unused_variables)]
            fn eval<E: Elem<T>>(&self, [$g, $rx, $ry]: [E; 3]) -> E {
                let $ty { $($p),+ } = *self;
                $(let $p = T::from_f64($p);)+
                $rule
            }
            fn kernel(&self) -> Option<RuleKernel<T, 3>> {
                Some(RuleKernel::new(concat!("d ", $name), *self))
            }
        }

        impl<T: Float> Op<T> for $ty {
            fn name(&self) -> &'static str {
                $name
            }
            fn params(&self) -> String {
                let $ty { $($p),+ } = *self;
                [$(format!("{}={}", stringify!($p), $p)),+].join(", ")
            }
            fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
                arity($name, x, 1)?;
                self.check()?;
                Ok(x[0].map(|v| <Self as Unary<T>>::f(self, v)))
            }
            fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
                Ok(cx.grads([Some(V::pointwise(self, [g, cx.input(0), cx.output()]))]))
            }
            fn elementwise(&self) -> Option<Elementwise<'_, T>> {
                Some(Elementwise::Unary(self))
            }
        }

        impl<T: Float> UnaryKernel<T> for $ty {
            fn apply(&self, x: &[T], out: &mut [T]) {
                unary_loop(self, x, out)
            }
            fn one(&self, x: T) -> T {
                <Self as Unary<T>>::f(self, x)
            }
        }

        impl<'t, T: Float> Var<'t, T> {
            $(#[$doc])*
            #[track_caller]
            pub fn $method(self, $($p: T),+) -> Var<'t, T> {
                self.tape.op(OpRef::new($ty { $($p: $p.to_f64()),+ }), &[self])
            }
        }

        impl<T: Float> Tensor<T> {
            #[doc = concat!("`", $name, "` on a plain tensor: the op's forward, with no tape (see [`Var::",
                stringify!($method), "`]). Panics, naming the op and your line, where the `Var` method would.")]
            #[track_caller]
            pub fn $method(&self, $($p: T),+) -> Tensor<T> {
                let here = std::panic::Location::caller();
                let op = $ty { $($p: $p.to_f64()),+ };
                <$ty as Op<T>>::forward(&op, &[self]).unwrap_or_else(|e| fail(e.at(here)))
            }
        }
    )*};
}

param_table! {
    /// Leaky ReLU: `x` where `x > 0`, `slope · x` elsewhere, elementwise (NaN propagates). The
    /// gradient is *selected*: `g` where `x > 0`, `slope · g` where `x ≤ 0` — so at exactly 0 the
    /// slope's side, as PyTorch's — and with `slope = 0` exactly `relu`'s (0 there, also against
    /// an infinite `g`).
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::from_vec(vec![-2.0, 0.0, 3.0], [3]));
    /// let y = x.leaky_relu(0.1);
    /// assert_eq!(y.value().to_vec(), vec![-0.2, 0.0, 3.0]);
    /// assert_eq!(y.sum().backward()[x].to_vec(), vec![0.1, 0.1, 1.0]);
    /// ```
    leaky_relu: LeakyRelu "leaky_relu" (slope),
        check None,
        |x| if x > T::ZERO { x } else { x * slope },
        rule |g, x, _y| x.le(x.lit(T::ZERO)).select(if slope == T::ZERO { g.lit(T::ZERO) } else { g * slope }, g);
    /// ELU: `x` where `x > 0`, `α(eˣ − 1)` elsewhere, elementwise (NaN propagates). The gradient
    /// is selected: `g` where `x > 0`, `α eˣ · g` where `x ≤ 0` — so at exactly 0 the left side's
    /// `α`, as PyTorch's (the two sides meet when `α = 1`) — and with `α = 0` exactly `relu`'s.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::from_vec(vec![0.0, 2.0], [2]));
    /// let y = x.elu(0.5);
    /// assert_eq!(y.value().to_vec(), vec![0.0, 2.0]);
    /// assert_eq!(y.sum().backward()[x].to_vec(), vec![0.5, 1.0]);
    /// ```
    elu: Elu "elu" (alpha),
        check None,
        |x| if x > T::ZERO { x } else { alpha * x.exp_m1() },
        rule |g, x, _y| x.le(x.lit(T::ZERO)).select(if alpha == T::ZERO { g.lit(T::ZERO) } else { g * (x.exp() * alpha) }, g);
    /// `x` limited to `[lo, hi]`, elementwise: `lo` below, `hi` above, `x` in between; NaN
    /// propagates (`clamp(NaN) = NaN`). `lo = −∞` or `hi = +∞` clamps one side only.
    ///
    /// The gradient is `g` where `lo ≤ x ≤ hi` — **at a boundary the gradient passes**, as
    /// PyTorch's (a value sitting exactly on a bound still learns) — and exactly 0 strictly
    /// outside (selected, so an infinite `g` there gives 0, not NaN); at a NaN input it passes.
    /// A NaN bound or `lo > hi` is an error of kind `Invalid` naming `clamp` and your line
    /// (PyTorch returns `hi` everywhere when `lo > hi`); [`Tensor::try_clamp`] returns it.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::from_vec(vec![-3.0, -1.0, 0.5, 2.0], [4]));
    /// let y = x.clamp(-1.0, 1.0);
    /// assert_eq!(y.value().to_vec(), vec![-1.0, -1.0, 0.5, 1.0]);
    /// assert_eq!(y.sum().backward()[x].to_vec(), vec![0.0, 1.0, 1.0, 0.0]);   // passes at −1
    /// ```
    clamp: Clamp "clamp" (lo, hi),
        check (lo.is_nan() || hi.is_nan() || lo > hi).then(|| {
            format!("needs lo ≤ hi and neither NaN, got lo = {lo}, hi = {hi}")
        }),
        |x| if x < lo { lo } else if x > hi { hi } else { x },
        rule |g, x, _y| x.lt(x.lit(lo)).select(g.lit(T::ZERO), x.gt(x.lit(hi)).select(g.lit(T::ZERO), g));
}

impl<T: Float> Tensor<T> {
    /// Like [`clamp`](Self::clamp), returning the error (kind `Invalid`, naming `clamp` and your
    /// line) for a NaN bound or `lo > hi`.
    ///
    /// ```
    /// use tapegrad::{ErrorKind, Tensor};
    /// let t = Tensor::from_vec(vec![-2.0, 0.5, 2.0], [3]);
    /// assert_eq!(t.try_clamp(-1.0, 1.0).unwrap().to_vec(), vec![-1.0, 0.5, 1.0]);
    /// assert_eq!(t.try_clamp(1.0, -1.0).unwrap_err().kind(), ErrorKind::Invalid);
    /// ```
    #[track_caller]
    pub fn try_clamp(&self, lo: T, hi: T) -> Result<Tensor<T>> {
        let here = std::panic::Location::caller();
        let op = Clamp {
            lo: lo.to_f64(),
            hi: hi.to_f64(),
        };
        <Clamp as Op<T>>::forward(&op, &[self]).map_err(|e| e.at(here))
    }
}

/// `+∞` in `T` (for samples written once for both element types).
fn inf<T: Float>() -> T {
    T::INFINITY
}

/// Inputs for `clamp`'s samples: values from a grid that keeps every element at least 0.05 from
/// the bounds the samples use (`±0.5`, `−1`, `0.25`, `0`), both inside and outside.
fn clamp_input(shape: &[usize], seed: usize) -> Tensor<f64> {
    const GRID: [f64; 8] = [-1.7, -0.83, -0.31, -0.07, 0.12, 0.38, 0.77, 1.45];
    Tensor::from_fn(shape, |i| GRID[(i * 5 + seed) % GRID.len()] + 0.001 * i as f64)
}

pub(crate) fn register(r: &mut Registry) {
    register_table(r);
    fn away(s: &[usize], seed: u64) -> Tensor<f64> {
        Domain::AwayFromZero.sample(s, seed)
    }
    r.register(
        OpInfo::new("leaky_relu", "x if x > 0, else slope·x", || {
            vec![
                sample!("[2,3] slope 0.1", [away(&[2, 3], 40)], |v| v[0].leaky_relu(0.1))
                    .with_reference(|x| reference::map(&x[0], |a| if a > 0.0 { a } else { 0.1 * a })),
                sample!("0-d slope 0.2", [away(&[], 41)], |v| v[0].leaky_relu(0.2))
                    .with_reference(|x| reference::map(&x[0], |a| if a > 0.0 { a } else { 0.2 * a })),
                sample!("3-D [2,3,2] slope -0.5", [away(&[2, 3, 2], 42)], |v| v[0]
                    .leaky_relu(-0.5))
                .with_reference(|x| reference::map(&x[0], |a| if a > 0.0 { a } else { -0.5 * a })),
                sample!("[1] slope 0", [away(&[4], 43)], |v| v[0].leaky_relu(0.0))
                    .with_reference(|x| reference::map(&x[0], |a| if a > 0.0 { a } else { 0.0 })),
            ]
        })
        .domain(Domain::AwayFromZero)
        // Tame: x mapped away from the kink, a usual slope; wild: any x, any slope (NaN, ±∞).
        .recipe(recipe!(|c, v| {
            let x = c.pick(v);
            let slope = if c.wild() {
                c.scalar()
            } else {
                c.one_of(&[0.01, 0.1, 0.2, 0.3, 0.0, -0.5])
            };
            Some(
                c.into_domain(x, Domain::AwayFromZero)
                    .leaky_relu(Float::from_f64(slope)),
            )
        })),
    );
    r.register(
        OpInfo::new("elu", "x if x > 0, else α(eˣ − 1)", || {
            vec![
                sample!("[2,3] α 1", [away(&[2, 3], 44)], |v| v[0].elu(1.0))
                    .with_reference(|x| reference::map(&x[0], |a| if a > 0.0 { a } else { a.exp() - 1.0 })),
                sample!("0-d α 0.5", [away(&[], 45)], |v| v[0].elu(0.5))
                    .with_reference(|x| reference::map(&x[0], |a| if a > 0.0 { a } else { 0.5 * (a.exp() - 1.0) })),
                sample!("3-D [2,3,2] α 1.5", [away(&[2, 3, 2], 46)], |v| v[0].elu(1.5))
                    .with_reference(|x| reference::map(&x[0], |a| if a > 0.0 { a } else { 1.5 * (a.exp() - 1.0) })),
                sample!("[4] α 0", [away(&[4], 47)], |v| v[0].elu(0.0))
                    .with_reference(|x| reference::map(&x[0], |a| if a > 0.0 { a } else { 0.0 })),
            ]
        })
        .domain(Domain::AwayFromZero)
        // Tame: x mapped away from the kink, a usual α; wild: any x, any α.
        .recipe(recipe!(|c, v| {
            let x = c.pick(v);
            let alpha = if c.wild() {
                c.scalar()
            } else {
                c.one_of(&[1.0, 0.5, 1.5, 0.1, 0.0])
            };
            Some(c.into_domain(x, Domain::AwayFromZero).elu(Float::from_f64(alpha)))
        })),
    );
    r.register(
        OpInfo::new("clamp", "x limited to [lo, hi]", || {
            fn clamped(x: &Tensor<f64>, lo: f64, hi: f64) -> Tensor<f64> {
                reference::map(x, |a| {
                    if a < lo {
                        lo
                    } else if a > hi {
                        hi
                    } else {
                        a
                    }
                })
            }
            vec![
                sample!("[2,3] to [-0.5, 0.5]", [clamp_input(&[2, 3], 0)], |v| v[0]
                    .clamp(-0.5, 0.5))
                .with_reference(|x| clamped(&x[0], -0.5, 0.5)),
                sample!("0-d inside [-1, 0.25]", [clamp_input(&[], 3)], |v| v[0]
                    .clamp(-1.0, 0.25))
                .with_reference(|x| clamped(&x[0], -1.0, 0.25)),
                sample!("3-D [2,3,2] to [-1, 0.25]", [clamp_input(&[2, 3, 2], 1)], |v| v[0]
                    .clamp(-1.0, 0.25))
                .with_reference(|x| clamped(&x[0], -1.0, 0.25)),
                sample!("[4] one-sided to [0, ∞)", [clamp_input(&[4], 2)], |v| v[0]
                    .clamp(0.0, inf()))
                .with_reference(|x| clamped(&x[0], 0.0, f64::INFINITY)),
            ]
        })
        // The kinks are at the bounds, which are parameters: the samples keep their inputs away
        // from them, and the tame recipe makes its input tie-free.
        //
        // Tame: `z = tanh(x)/5 + r` with a constant `r` of −1, 0 or 1 per element (drawn by the
        // choices), so every element of `z` lies at least 0.1 from the bounds — below, inside or
        // above — whatever the pool holds (a value already clamped to the same bound included);
        // wild: any x and any bounds (NaN, ±∞, lo > hi: the documented error).
        .recipe(recipe!(|c, v| {
            let x = c.pick(v);
            if c.wild() {
                let (lo, hi) = (c.scalar(), c.scalar());
                return Some(x.clamp(Float::from_f64(lo), Float::from_f64(hi)));
            }
            let (lo, hi) = c.one_of(&[
                (-0.5, 0.5),
                (-0.3, 0.4),
                (-0.5, f64::INFINITY),
                (f64::NEG_INFINITY, 0.5),
            ]);
            let ramp = Tensor::from_fn(x.shape(), |_| Float::from_f64(c.one_of(&[-1.0, 0.0, 1.0])));
            let z = x.tanh().mul_scalar(Float::from_f64(0.2)) + x.tape().constant(ramp);
            Some(z.clamp(Float::from_f64(lo), Float::from_f64(hi)))
        })),
    );
}

/// `1/√(2π)`, the standard normal density at 0.
const FRAC_1_SQRT_2PI: f64 = 0.398_942_280_401_432_7;
/// `√(2/π)`, the scale inside the tanh approximation of GELU.
const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
/// The cubic coefficient of the tanh approximation of GELU.
const GELU_C: f64 = 0.044_715;

/// `ln(1 + eˣ)` stably: `x + ln(1 + e⁻ˣ)` for `x > 0`, `ln(1 + eˣ)` otherwise (NaN goes the
/// second way and stays NaN).
#[inline(always)]
fn softplus<T: Float>(x: T) -> T {
    if x > T::ZERO {
        x + (-x).exp().ln_1p()
    } else {
        x.exp().ln_1p()
    }
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
    // Stable on both tails: never exponentiates a large positive number (`e = e^(−|x|) ≤ 1`), and
    // `e/(1 + e)` keeps the left tail's subnormals. Both sides are computed and one selected, with
    // the branch-free exponential, so a loop over elements vectorises; NaN stays NaN.
    let e = (-x.abs()).exp_vec();
    let r = T::ONE / (T::ONE + e);
    if x >= T::ZERO { r } else { e * r }
}

// ---------------------------------------------------------------------------------------------
// Naive references for the rows `std` has no function for (the registry's independent side):
// plain series and continued fractions in `f64`, none of `libm`.

/// `erf x` by its everywhere-convergent series `(2/√π) e^(−x²) Σ 2ⁿ x^(2n+1) / (1·3···(2n+1))`
/// (positive terms, no cancellation) for `|x| < 1`, and `1 − erfc x` beyond.
fn naive_erf(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    if x.abs() >= 1.0 {
        return if x > 0.0 {
            1.0 - naive_erfc(x)
        } else {
            naive_erfc(-x) - 1.0
        };
    }
    let (mut term, mut sum, mut n) = (x, x, 0.0);
    while term.abs() > 1e-17 * sum.abs() {
        n += 1.0;
        term *= 2.0 * x * x / (2.0 * n + 1.0);
        sum += term;
    }
    std::f64::consts::FRAC_2_SQRT_PI * (-x * x).exp() * sum
}

/// `erfc x` by Laplace's continued fraction `e^(−x²)/√π · 1/(x + ½/(x + 1/(x + (3/2)/(x + …))))`,
/// evaluated bottom-up from 2000 levels, for `x ≥ 1`; `2 − erfc(−x)` for `x ≤ −1`; `1 − erf x`
/// in between.
fn naive_erfc(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    if x <= -1.0 {
        return 2.0 - naive_erfc(-x);
    }
    if x < 1.0 {
        return 1.0 - naive_erf(x);
    }
    let mut k = 0.0;
    for n in (1..=2000).rev() {
        k = (n as f64 / 2.0) / (x + k);
    }
    (-x * x).exp() / std::f64::consts::PI.sqrt() / (x + k)
}
