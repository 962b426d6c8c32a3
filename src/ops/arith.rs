//! Arithmetic: `add sub mul div neg` with NumPy broadcasting, and the scalar forms
//! `add_scalar mul_scalar rdiv_scalar`. The operators `+ - * /` and unary `-` on [`Var`] record these:
//! `Var ∘ Var` records the broadcasting op, `Var ∘ scalar` and `scalar ∘ Var` the scalar forms
//! (`x / c` records `x · (1/c)`).
//!
//! Broadcasting VJPs sum each gradient back to its input's shape (`sum_to`).

use super::select::sz;
use super::{NanRule, OpInfo, Registry, arity, broadcast_zip};
use crate::autodiff::op::{Cotangents, EagerCtx, Op, TensorGrads, VjpCtx};
use crate::autodiff::tape::{OpRef, Var};
use crate::core::error::Result;
use crate::core::float::Float;
use crate::sample;
use crate::tensor::Tensor;
use std::ops::{Add, Div, Mul, Neg, Sub};
use std::rc::Rc;

/// `f` elementwise over `g` (the output's shape) and an input broadcast to it.
fn zip<T: Float>(g: &Tensor<T>, x: &Tensor<T>, f: impl Fn(T, T) -> T) -> Tensor<T> {
    if g.shape() == x.shape() {
        g.zip_same(x, f)
    } else {
        g.zip_map(x, f)
    }
}

/// `g · x` with a strong zero (0 where `g` is 0, even if `x` is infinite or NaN): see `ops::select`.
fn times<T: Float>(g: &Tensor<T>, x: &Tensor<T>) -> Tensor<T> {
    zip(g, x, |a, b| sz(a, a * b))
}

struct AddOp;
impl<T: Float> Op<T> for AddOp {
    fn name(&self) -> &'static str {
        "add"
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        arity("add", x, 2)?;
        broadcast_zip("add", x[0], x[1], |a, b| a + b)
    }
    fn vjp_tensors(&self, cx: &EagerCtx<'_, T>, g: &Tensor<T>) -> Option<TensorGrads<T>> {
        Some(cx.grads([&|| g.sum_to(cx.input(0).shape()), &|| g.sum_to(cx.input(1).shape())]))
    }
    fn vjp<'t>(&self, cx: &VjpCtx<'_, 't, T>, g: Var<'t, T>) -> Result<Cotangents<'t, T>> {
        let (a, b) = (cx.input(0), cx.input(1));
        Ok(cx.grads([
            cx.needs_grad(0).then(|| g.sum_to(a.shape())),
            cx.needs_grad(1).then(|| g.sum_to(b.shape())),
        ]))
    }
}

struct SubOp;
impl<T: Float> Op<T> for SubOp {
    fn name(&self) -> &'static str {
        "sub"
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        arity("sub", x, 2)?;
        broadcast_zip("sub", x[0], x[1], |a, b| a - b)
    }
    fn vjp_tensors(&self, cx: &EagerCtx<'_, T>, g: &Tensor<T>) -> Option<TensorGrads<T>> {
        Some(cx.grads([&|| g.sum_to(cx.input(0).shape()), &|| {
            g.sum_to(cx.input(1).shape()).map(|v| -v)
        }]))
    }
    fn vjp<'t>(&self, cx: &VjpCtx<'_, 't, T>, g: Var<'t, T>) -> Result<Cotangents<'t, T>> {
        let (a, b) = (cx.input(0), cx.input(1));
        Ok(cx.grads([
            cx.needs_grad(0).then(|| g.sum_to(a.shape())),
            cx.needs_grad(1).then(|| (-g).sum_to(b.shape())),
        ]))
    }
}

struct MulOp;
impl<T: Float> Op<T> for MulOp {
    fn name(&self) -> &'static str {
        "mul"
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        arity("mul", x, 2)?;
        broadcast_zip("mul", x[0], x[1], |a, b| a * b)
    }
    fn vjp_tensors(&self, cx: &EagerCtx<'_, T>, g: &Tensor<T>) -> Option<TensorGrads<T>> {
        let (a, b) = (cx.input(0), cx.input(1));
        Some(cx.grads([&|| times(g, b).sum_to(a.shape()), &|| times(g, a).sum_to(b.shape())]))
    }
    fn vjp<'t>(&self, cx: &VjpCtx<'_, 't, T>, g: Var<'t, T>) -> Result<Cotangents<'t, T>> {
        let (a, b) = (cx.input(0), cx.input(1));
        Ok(cx.grads([
            cx.needs_grad(0).then(|| g.chain_mul(b).sum_to(a.shape())),
            cx.needs_grad(1).then(|| g.chain_mul(a).sum_to(b.shape())),
        ]))
    }
}

struct DivOp;
impl<T: Float> Op<T> for DivOp {
    fn name(&self) -> &'static str {
        "div"
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        arity("div", x, 2)?;
        broadcast_zip("div", x[0], x[1], |a, b| a / b)
    }
    fn vjp_tensors(&self, cx: &EagerCtx<'_, T>, g: &Tensor<T>) -> Option<TensorGrads<T>> {
        let (a, b, y) = (cx.input(0), cx.input(1), cx.output());
        Some(cx.grads([&|| zip(g, b, |g, b| sz(g, g / b)).sum_to(a.shape()), &|| {
            zip(&g.zip_same(y, |g, y| sz(g, -(g * y))), b, |t, b| sz(t, t / b)).sum_to(b.shape())
        }]))
    }
    /// `d(a/b) = da/b − (a/b)·db/b`.
    fn vjp<'t>(&self, cx: &VjpCtx<'_, 't, T>, g: Var<'t, T>) -> Result<Cotangents<'t, T>> {
        let (a, b, y) = (cx.input(0), cx.input(1), cx.output());
        Ok(cx.grads([
            cx.needs_grad(0).then(|| g.chain_div(b).sum_to(a.shape())),
            cx.needs_grad(1)
                .then(|| (-g.chain_mul(y).chain_div(b)).sum_to(b.shape())),
        ]))
    }
}

struct NegOp;
impl<T: Float> Op<T> for NegOp {
    fn name(&self) -> &'static str {
        "neg"
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        arity("neg", x, 1)?;
        Ok(x[0].map(|a| -a))
    }
    fn vjp_tensors(&self, cx: &EagerCtx<'_, T>, g: &Tensor<T>) -> Option<TensorGrads<T>> {
        Some(cx.grads([&|| g.map(|v| -v)]))
    }
    fn vjp<'t>(&self, cx: &VjpCtx<'_, 't, T>, g: Var<'t, T>) -> Result<Cotangents<'t, T>> {
        Ok(cx.grads([Some(-g)]))
    }
}

/// `x + c` for a constant `c`.
struct AddScalar(f64);
impl<T: Float> Op<T> for AddScalar {
    fn name(&self) -> &'static str {
        "add_scalar"
    }
    fn params(&self) -> String {
        format!("c={}", self.0)
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        arity("add_scalar", x, 1)?;
        let c = T::from_f64(self.0);
        Ok(x[0].map(|a| a + c))
    }
    fn vjp_tensors(&self, cx: &EagerCtx<'_, T>, g: &Tensor<T>) -> Option<TensorGrads<T>> {
        Some(cx.grads([&|| g.clone()]))
    }
    fn vjp<'t>(&self, cx: &VjpCtx<'_, 't, T>, g: Var<'t, T>) -> Result<Cotangents<'t, T>> {
        Ok(cx.grads([Some(g)]))
    }
}

/// `x · c` for a constant `c`.
struct MulScalar(f64);
impl<T: Float> Op<T> for MulScalar {
    fn name(&self) -> &'static str {
        "mul_scalar"
    }
    fn params(&self) -> String {
        format!("c={}", self.0)
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        arity("mul_scalar", x, 1)?;
        let c = T::from_f64(self.0);
        Ok(x[0].map(|a| a * c))
    }
    fn vjp_tensors(&self, cx: &EagerCtx<'_, T>, g: &Tensor<T>) -> Option<TensorGrads<T>> {
        let c = T::from_f64(self.0);
        Some(cx.grads([&|| g.map(|v| v * c)]))
    }
    fn vjp<'t>(&self, cx: &VjpCtx<'_, 't, T>, g: Var<'t, T>) -> Result<Cotangents<'t, T>> {
        Ok(cx.grads([Some(g.mul_scalar(T::from_f64(self.0)))]))
    }
}

/// `c / x` for a constant `c`.
struct RDivScalar(f64);
impl<T: Float> Op<T> for RDivScalar {
    fn name(&self) -> &'static str {
        "rdiv_scalar"
    }
    fn params(&self) -> String {
        format!("c={}", self.0)
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        arity("rdiv_scalar", x, 1)?;
        let c = T::from_f64(self.0);
        Ok(x[0].map(|a| c / a))
    }
    fn vjp_tensors(&self, cx: &EagerCtx<'_, T>, g: &Tensor<T>) -> Option<TensorGrads<T>> {
        Some(cx.grads([&|| g.zip3_same(cx.output(), cx.input(0), |g, y, x| sz(g, -(g * y) / x))]))
    }
    /// `d(c/x) = −(c/x)/x · dx`.
    fn vjp<'t>(&self, cx: &VjpCtx<'_, 't, T>, g: Var<'t, T>) -> Result<Cotangents<'t, T>> {
        let (x, y) = (cx.input(0), cx.output());
        Ok(cx.grads([Some(-g.chain_mul(y).chain_div(x))]))
    }
}

impl<'t, T: Float> Var<'t, T> {
    /// `self + c` for a constant `c`.
    #[track_caller]
    pub fn add_scalar(self, c: T) -> Var<'t, T> {
        self.tape.op(OpRef::Shared(Rc::new(AddScalar(c.to_f64()))), &[self])
    }

    /// `self · c` for a constant `c`.
    #[track_caller]
    pub fn mul_scalar(self, c: T) -> Var<'t, T> {
        self.tape.op(OpRef::Shared(Rc::new(MulScalar(c.to_f64()))), &[self])
    }

    /// `c / self` for a constant `c`.
    #[track_caller]
    pub fn rdiv_scalar(self, c: T) -> Var<'t, T> {
        self.tape.op(OpRef::Shared(Rc::new(RDivScalar(c.to_f64()))), &[self])
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

macro_rules! scalar_lhs {
    ($($t:ty),*) => {$(
        impl<'t> Add<Var<'t, $t>> for $t {
            type Output = Var<'t, $t>;
            #[track_caller]
            fn add(self, rhs: Var<'t, $t>) -> Var<'t, $t> { rhs.add_scalar(self) }
        }
        impl<'t> Sub<Var<'t, $t>> for $t {
            type Output = Var<'t, $t>;
            #[track_caller]
            fn sub(self, rhs: Var<'t, $t>) -> Var<'t, $t> { (-rhs).add_scalar(self) }
        }
        impl<'t> Mul<Var<'t, $t>> for $t {
            type Output = Var<'t, $t>;
            #[track_caller]
            fn mul(self, rhs: Var<'t, $t>) -> Var<'t, $t> { rhs.mul_scalar(self) }
        }
        impl<'t> Div<Var<'t, $t>> for $t {
            type Output = Var<'t, $t>;
            #[track_caller]
            fn div(self, rhs: Var<'t, $t>) -> Var<'t, $t> { rhs.rdiv_scalar(self) }
        }
    )*};
}
scalar_lhs!(f32, f64);

fn t(v: &[f64], s: &[usize]) -> Tensor<f64> {
    Tensor::from_vec(v.to_vec(), s)
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
    macro_rules! binary_entry {
        ($name:literal, $summary:literal, |$a:ident, $b:ident| $e:expr) => {
            r.register(OpInfo {
                name: $name,
                summary: $summary,
                differentiable_twice: true,
                nan: NanRule::Propagates,
                samples: || {
                    bin_samples()
                        .into_iter()
                        .map(|(l, x, y)| {
                            sample!(l, [x, y], |v| {
                                let ($a, $b) = (v[0], v[1]);
                                $e
                            })
                        })
                        .collect()
                },
            })
        };
    }
    binary_entry!("add", "a + b, broadcasting", |a, b| a + b);
    binary_entry!("sub", "a − b, broadcasting", |a, b| a - b);
    binary_entry!("mul", "a · b elementwise, broadcasting", |a, b| a * b);
    binary_entry!("div", "a / b elementwise, broadcasting", |a, b| a / b);
    r.register(OpInfo {
        name: "neg",
        summary: "−x",
        differentiable_twice: true,
        nan: NanRule::Propagates,
        samples: || {
            vec![
                sample!("[2,3]", [Tensor::rand_normal([2, 3], 0.0, 1.0, 10)], |v| -v[0]),
                sample!("0-d", [Tensor::scalar(0.4)], |v| -v[0]),
            ]
        },
    });
    r.register(OpInfo {
        name: "add_scalar",
        summary: "x + c",
        differentiable_twice: true,
        nan: NanRule::Propagates,
        samples: || {
            vec![
                sample!("[2,3] + 1.5", [Tensor::rand_normal([2, 3], 0.0, 1.0, 11)], |v| v[0]
                    + 1.5),
                sample!("2 − x, [3]", [Tensor::rand_normal([3], 0.0, 1.0, 12)], |v| 2.0 - v[0]),
            ]
        },
    });
    r.register(OpInfo {
        name: "mul_scalar",
        summary: "x · c",
        differentiable_twice: true,
        nan: NanRule::Propagates,
        samples: || {
            vec![
                sample!("[2,3] · 2.5", [Tensor::rand_normal([2, 3], 0.0, 1.0, 13)], |v| v[0]
                    * 2.5),
                sample!("x / 4, [2,2,2]", [Tensor::rand_normal([2, 2, 2], 0.0, 1.0, 14)], |v| v
                    [0]
                    / 4.0),
            ]
        },
    });
    r.register(OpInfo {
        name: "rdiv_scalar",
        summary: "c / x",
        differentiable_twice: true,
        nan: NanRule::Propagates,
        samples: || {
            vec![
                sample!("3 / x, [2,3]", [Tensor::rand_uniform([2, 3], 0.5, 2.0, 15)], |v| 3.0
                    / v[0]),
                sample!("1 / x, 0-d", [Tensor::scalar(-1.5)], |v| 1.0 / v[0]),
            ]
        },
    });
}
