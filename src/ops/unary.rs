//! Elementwise functions: `exp log sqrt powf tanh sigmoid relu abs`.
//!
//! Each rule is the textbook derivative, written with `Var` operations so it can be differentiated
//! again. Rules reuse the saved output where that is cheaper (`exp`, `sqrt`, `tanh`, `sigmoid`).

use super::select::sz;
use super::{NanRule, OpInfo, Registry, arity};
use crate::autodiff::op::{Cotangents, EagerCtx, Op, TensorGrads, VjpCtx};
use crate::autodiff::tape::{OpRef, Var};
use crate::core::error::Result;
use crate::core::float::Float;
use crate::sample;
use crate::tensor::{Tensor, kernels};
use std::rc::Rc;

/// Declares a stateless elementwise op: its forward (`|x| …` per element), its VJP rule on
/// `Var`s, and the same rule per element for the first-order fast path (`|g, x, y| …`, with
/// `x` the input and `y` the output).
macro_rules! unary_op {
    ($ty:ident, $name:literal, |$x:ident| $fwd:expr, |$cx:ident, $g:ident| $vjp:expr,
     |$eg:ident, $ex:ident, $ey:ident| $eager:expr) => {
        struct $ty;
        impl<T: Float> Op<T> for $ty {
            fn name(&self) -> &'static str {
                $name
            }
            fn forward(&self, inputs: &[&Tensor<T>]) -> Result<Tensor<T>> {
                arity($name, inputs, 1)?;
                match $name {
                    // Vectorised slice kernels for the two functions softmax-like code lives on.
                    "exp" => Ok(inputs[0].map_slice(kernels::exp_inplace)),
                    "log" => Ok(inputs[0].map_slice(kernels::ln_inplace)),
                    _ => Ok(inputs[0].map(|$x: T| $fwd)),
                }
            }
            fn vjp_tensors(&self, cx: &EagerCtx<'_, T>, g: &Tensor<T>) -> Option<TensorGrads<T>> {
                #[allow(unused_variables)]
                let f = |$eg: T, $ex: T, $ey: T| -> T { $eager };
                Some(cx.grads([&|| g.zip3_same(cx.input(0), cx.output(), f)]))
            }
            fn vjp<'t>(&self, $cx: &VjpCtx<'_, 't, T>, $g: Var<'t, T>) -> Result<Cotangents<'t, T>> {
                Ok($cx.grads([Some($vjp)]))
            }
        }
    };
}

// Where the local derivative can be infinite or NaN (exp, log, sqrt, powf) the chain-rule product
// has a strong zero (`chain_mul`/`chain_div` on Vars, `sz` per element: exactly 0 where g = 0), so a
// branch masked out by `select` contributes nothing (see `ops::select`).
// exp: d eˣ = eˣ dx — reuses the output y.
unary_op!(
    ExpOp,
    "exp",
    |x| x.exp(),
    |cx, g| g.chain_mul(cx.output()),
    |g, x, y| sz(g, g * y)
);
// log: d ln x = dx / x.
unary_op!(
    LogOp,
    "log",
    |x| x.ln(),
    |cx, g| g.chain_div(cx.input(0)),
    |g, x, y| sz(g, g / x)
);
// sqrt: d √x = dx / (2√x).
unary_op!(
    SqrtOp,
    "sqrt",
    |x| x.sqrt(),
    |cx, g| g.chain_div(cx.output()).mul_scalar(T::from_f64(0.5)),
    |g, x, y| sz(g, g / y * T::from_f64(0.5))
);
// tanh: d tanh x = (1 − tanh² x) dx.
unary_op!(
    TanhOp,
    "tanh",
    |x| x.tanh(),
    |cx, g| {
        let y = cx.output();
        g * (-(y * y) + T::ONE)
    },
    |g, x, y| g * (-(y * y) + T::ONE)
);
// sigmoid: d σ(x) = σ(x)(1 − σ(x)) dx.
unary_op!(
    SigmoidOp,
    "sigmoid",
    |x| sigmoid(x),
    |cx, g| {
        let y = cx.output();
        g * y * (-y + T::ONE)
    },
    |g, x, y| g * y * (-y + T::ONE)
);
// relu: max(x, 0) with NaN propagating (relu(NaN) = NaN, so a diverging network cannot hide
// behind a finite loss). The gradient is *selected*, not multiplied by a 0/1 mask, so an
// infinite cotangent at x ≤ 0 gives 0 (not ∞·0 = NaN), as PyTorch's: `g` where not x ≤ 0 (so at
// exactly 0 the gradient is 0, and at NaN it passes).
unary_op!(
    ReluOp,
    "relu",
    |x| if x < T::ZERO { T::ZERO } else { x },
    |cx, g| {
        let tape = g.tape();
        cx.input(0).le(tape.scalar(T::ZERO)).select(tape.scalar(T::ZERO), g)
    },
    |g, x, y| if x <= T::ZERO { T::ZERO } else { g }
);
// abs: d|x| = sign(x) dx (a constant; sign(0) = 0, the subgradient of least norm; sign(NaN) is
// NaN, so a NaN input gives a NaN gradient).
unary_op!(
    AbsOp,
    "abs",
    |x| x.abs(),
    |cx, g| {
        let s = cx.input(0).value().map(sign);
        g * g.tape().constant(s)
    },
    |g, x, y| g * sign(x)
);

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

/// `x^p` for a constant exponent `p`.
struct PowfOp(f64);
impl<T: Float> Op<T> for PowfOp {
    fn name(&self) -> &'static str {
        "powf"
    }
    fn params(&self) -> String {
        format!("p={}", self.0)
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        arity("powf", x, 1)?;
        let p = T::from_f64(self.0);
        Ok(x[0].map(|a| a.powf(p)))
    }
    fn vjp_tensors(&self, cx: &EagerCtx<'_, T>, g: &Tensor<T>) -> Option<TensorGrads<T>> {
        let p = T::from_f64(self.0);
        if self.0 == 0.0 {
            return Some(cx.grads([&|| g.map(|_| T::ZERO)]));
        }
        Some(cx.grads([&|| g.zip_same(cx.input(0), |g, x| sz(g, g * (x.powf(p - T::ONE) * p)))]))
    }
    /// `d xᵖ = p·xᵖ⁻¹ dx` (for `p = 0` the gradient is 0).
    fn vjp<'t>(&self, cx: &VjpCtx<'_, 't, T>, g: Var<'t, T>) -> Result<Cotangents<'t, T>> {
        let p = T::from_f64(self.0);
        if self.0 == 0.0 {
            return Ok(cx.grads([Some(g.mul_scalar(T::ZERO))]));
        }
        Ok(cx.grads([Some(g.chain_mul(cx.input(0).powf(p - T::ONE).mul_scalar(p)))]))
    }
}

impl<'t, T: Float> Var<'t, T> {
    /// `eˣ` elementwise.
    #[track_caller]
    pub fn exp(self) -> Var<'t, T> {
        self.tape.op(OpRef::Static(&ExpOp), &[self])
    }

    /// Natural logarithm elementwise (`log(0) = −∞`, `log(x < 0) = NaN`).
    #[track_caller]
    pub fn log(self) -> Var<'t, T> {
        self.tape.op(OpRef::Static(&LogOp), &[self])
    }

    /// Square root elementwise.
    #[track_caller]
    pub fn sqrt(self) -> Var<'t, T> {
        self.tape.op(OpRef::Static(&SqrtOp), &[self])
    }

    /// `xᵖ` elementwise for a constant power `p`.
    #[track_caller]
    pub fn powf(self, p: T) -> Var<'t, T> {
        self.tape.op(OpRef::Shared(Rc::new(PowfOp(p.to_f64()))), &[self])
    }

    /// Hyperbolic tangent elementwise.
    #[track_caller]
    pub fn tanh(self) -> Var<'t, T> {
        self.tape.op(OpRef::Static(&TanhOp), &[self])
    }

    /// The logistic function `1 / (1 + e⁻ˣ)` elementwise (computed stably on both tails).
    #[track_caller]
    pub fn sigmoid(self) -> Var<'t, T> {
        self.tape.op(OpRef::Static(&SigmoidOp), &[self])
    }

    /// `max(x, 0)` elementwise; NaN propagates (`relu(NaN)` is NaN). The gradient at exactly 0
    /// is 0.
    #[track_caller]
    pub fn relu(self) -> Var<'t, T> {
        self.tape.op(OpRef::Static(&ReluOp), &[self])
    }

    /// `|x|` elementwise; the gradient at exactly 0 is 0.
    #[track_caller]
    pub fn abs(self) -> Var<'t, T> {
        self.tape.op(OpRef::Static(&AbsOp), &[self])
    }

    /// `x²` elementwise (recorded as `x · x`).
    #[track_caller]
    pub fn square(self) -> Var<'t, T> {
        self * self
    }
}

/// Values away from 0 (the kinks of `relu` and `abs`), with both signs.
fn away_from_zero(shape: &[usize], seed: u64) -> Tensor<f64> {
    Tensor::rand_uniform(shape, 0.2, 2.0, seed).zip_map(&Tensor::rand_uniform(shape, -1.0, 1.0, seed + 100), |a, s| {
        if s < 0.0 { -a } else { a }
    })
}

pub(crate) fn register(r: &mut Registry) {
    macro_rules! entry {
        ($name:literal, $summary:literal, $inputs:expr, |$x:ident| $e:expr) => {
            r.register(OpInfo {
                name: $name,
                summary: $summary,
                differentiable_twice: true,
                nan: NanRule::Propagates,
                samples: || {
                    let make: fn(&[usize], u64) -> Tensor<f64> = $inputs;
                    vec![
                        sample!("[2,3]", [make(&[2, 3], 20)], |v| { let $x = v[0]; $e }),
                        sample!("0-d", [make(&[], 21)], |v| { let $x = v[0]; $e }),
                        sample!("[1]", [make(&[1], 22)], |v| { let $x = v[0]; $e }),
                        sample!("3-D [2,3,2]", [make(&[2, 3, 2], 23)], |v| { let $x = v[0]; $e }),
                    ]
                },
            })
        };
    }
    entry!("exp", "eˣ", |s, seed| Tensor::rand_normal(s, 0.0, 1.0, seed), |x| x
        .exp());
    entry!(
        "log",
        "ln x (x > 0)",
        |s, seed| Tensor::rand_uniform(s, 0.3, 3.0, seed),
        |x| x.log()
    );
    entry!(
        "sqrt",
        "√x (x > 0)",
        |s, seed| Tensor::rand_uniform(s, 0.3, 3.0, seed),
        |x| x.sqrt()
    );
    entry!(
        "powf",
        "xᵖ, constant p (x > 0)",
        |s, seed| Tensor::rand_uniform(s, 0.3, 3.0, seed),
        |x| x.powf(2.5)
    );
    entry!(
        "tanh",
        "tanh x",
        |s, seed| Tensor::rand_normal(s, 0.0, 1.5, seed),
        |x| x.tanh()
    );
    entry!(
        "sigmoid",
        "1/(1+e⁻ˣ)",
        |s, seed| Tensor::rand_normal(s, 0.0, 2.0, seed),
        |x| x.sigmoid()
    );
    entry!("relu", "max(x, 0)", away_from_zero, |x| x.relu());
    entry!("abs", "|x|", away_from_zero, |x| x.abs());
}
