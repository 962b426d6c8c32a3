//! Layout ops: `reshape`, `permute`/`transpose`, `broadcast_to`. They move values, never combine
//! them, so each rule is the inverse movement: reshape back, permute by the inverse permutation,
//! sum back down (`sum_to`).

use super::common::arity;
use super::reference;
use super::registry::{Choice, OpInfo, Registry};
use crate::autodiff::rule::Value;
use crate::autodiff::rule::{Cotangents, Op, VjpCtx};
use crate::autodiff::tape::{OpRef, Var};
use crate::core::error::{Error, Result, fail};
use crate::core::float::Float;
use crate::core::shape::{Shape, fmt_shape, shape_of};
use crate::tensor::Tensor;
use crate::{recipe, sample};
use std::panic::Location;

struct ReshapeOp(Shape);
impl<T: Float> Op<T> for ReshapeOp {
    fn name(&self) -> &'static str {
        "reshape"
    }
    fn params(&self) -> String {
        format!("shape={}", fmt_shape(&self.0))
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        arity("reshape", x, 1)?;
        x[0].try_reshape(&self.0)
            .map_err(|e| Error::shape("reshape", e.message()))
    }
    /// Reshape back.
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
        Ok(cx.grads([Some(g.reshape(&cx.input(0).shape()))]))
    }
}

struct PermuteOp(Shape);
impl<T: Float> Op<T> for PermuteOp {
    fn name(&self) -> &'static str {
        "permute"
    }
    fn params(&self) -> String {
        format!("axes={:?}", &self.0[..])
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        arity("permute", x, 1)?;
        x[0].try_permute(&self.0)
            .map_err(|e| Error::new(e.kind(), "permute", e.message()))
    }
    /// Permute back by the inverse permutation.
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
        let mut inv = vec![0; self.0.len()];
        for (i, &p) in self.0.iter().enumerate() {
            inv[p] = i;
        }
        Ok(cx.grads([Some(g.permute(&inv))]))
    }
}

struct BroadcastToOp(Shape);
impl<T: Float> Op<T> for BroadcastToOp {
    fn name(&self) -> &'static str {
        "broadcast_to"
    }
    fn params(&self) -> String {
        format!("shape={}", fmt_shape(&self.0))
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        arity("broadcast_to", x, 1)?;
        // Re-raised without the location inside this file: the tape adds the user's.
        x[0].try_broadcast_to(&self.0)
            .map_err(|e| Error::shape("broadcast_to", e.message()))
    }
    /// The rule of broadcasting is summing back down.
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
        Ok(cx.grads([Some(g.sum_to(&cx.input(0).shape()))]))
    }
}

impl<'t, T: Float> Var<'t, T> {
    /// The same values with another shape of the same size (no copy).
    #[track_caller]
    pub fn reshape(self, shape: impl AsRef<[usize]>) -> Var<'t, T> {
        self.tape.op(OpRef::new(ReshapeOp(shape_of(shape))), &[self])
    }

    /// Reorders the axes: axis `i` of the result is axis `perm[i]` of `self`.
    #[track_caller]
    pub fn permute(self, perm: impl AsRef<[usize]>) -> Var<'t, T> {
        self.tape.op(OpRef::new(PermuteOp(shape_of(perm))), &[self])
    }

    /// Swaps axes `a` and `b`; a negative axis counts from the end (`-1` is the last). Recorded as
    /// a `permute`. Panics with a `Shape` error naming `transpose`, the axes and the shape when
    /// either axis is out of range (nothing is recorded then).
    ///
    /// ```
    /// let tape = tapegrad::Tape::<f64>::new();
    /// let x = tape.var(tapegrad::Tensor::zeros([2, 3, 4]));
    /// assert_eq!(x.transpose(0, -1).shape().as_slice(), &[4, 3, 2]);
    /// ```
    #[track_caller]
    pub fn transpose(self, a: isize, b: isize) -> Var<'t, T> {
        let loc = Location::caller(); // here, not in the closure, which has its own location
        let perm = crate::tensor::transpose_perm(&self.shape(), a, b).unwrap_or_else(|e| fail(e.at(loc)));
        self.permute(perm)
    }

    /// Swaps the last two axes (the matrix transpose of a 2-D value, batched for more axes).
    /// A 0-d or 1-D value has no pair of axes to swap and is returned as it is (no node), as
    /// PyTorch's `t()` does.
    #[track_caller]
    pub fn t(self) -> Var<'t, T> {
        if self.shape().len() < 2 {
            return self;
        }
        self.transpose(-2, -1)
    }

    /// Broadcasts to a larger shape (NumPy rules). Returns `self` (no node) when already that shape.
    #[track_caller]
    pub fn broadcast_to(self, shape: impl AsRef<[usize]>) -> Var<'t, T> {
        let shape = shape.as_ref();
        if self.tape.node(self.index).value.shape() == shape {
            return self;
        }
        self.tape.op(OpRef::new(BroadcastToOp(shape_of(shape))), &[self])
    }
}

/// Random programs' and the fuzzer's call of `reshape`. Tame: the same number of elements split
/// into up to three factors; wild: any small shape (the wrong size included).
fn reshape_recipe<'t, T: Float>(c: &mut Choice<'_>, v: &[Var<'t, T>]) -> Option<Var<'t, T>> {
    let x = c.pick(v);
    if c.wild() {
        return Some(x.reshape(c.any_shape()));
    }
    let mut rest = x.numel();
    let mut dims = Vec::new();
    for _ in 0..c.below(3) {
        let divisors: Vec<usize> = (1..=rest).filter(|&d| rest.is_multiple_of(d)).collect();
        if divisors.is_empty() {
            break;
        }
        let d = c.one_of(&divisors);
        dims.push(d);
        rest /= d;
    }
    dims.push(rest);
    Some(x.reshape(dims))
}

/// Random programs' and the fuzzer's call of `permute`. Tame: a permutation of the axes; wild:
/// any short list of small axes (repeats, gaps, the wrong length), or a `transpose` of any two
/// small axes, negative ones included.
fn permute_recipe<'t, T: Float>(c: &mut Choice<'_>, v: &[Var<'t, T>]) -> Option<Var<'t, T>> {
    let x = c.pick(v);
    if !c.wild() {
        return Some(x.permute(c.permutation(x.shape().len())));
    }
    if c.flag() {
        let (a, b) = ((c.byte() as i8 % 4) as isize, (c.byte() as i8 % 4) as isize);
        return Some(x.transpose(a, b));
    }
    let n = c.below(5);
    let perm: Vec<usize> = (0..n).map(|_| c.below(5)).collect();
    Some(x.permute(perm))
}

/// Random programs' and the fuzzer's call of `broadcast_to`. Tame: axes of extent 1 stretched
/// to 1–3 and maybe a new leading axis; wild: any small shape.
fn broadcast_to_recipe<'t, T: Float>(c: &mut Choice<'_>, v: &[Var<'t, T>]) -> Option<Var<'t, T>> {
    let x = c.pick(v);
    if c.wild() {
        return Some(x.broadcast_to(c.any_shape()));
    }
    let shape = x.shape();
    let mut target: Vec<usize> = shape.iter().map(|&n| if n == 1 { 1 + c.below(3) } else { n }).collect();
    if shape.len() < 3 && c.flag() {
        target.insert(0, 1 + c.below(3));
    }
    Some(x.broadcast_to(target))
}

pub(crate) fn register(r: &mut Registry) {
    r.register(
        OpInfo::new("reshape", "same values, new shape", || {
            let n = |s: &[usize], seed| Tensor::<f64>::rand_normal(s, 0.0, 1.0, seed);
            vec![
                sample!("[2,3] to [3,2]", [n(&[2, 3], 50)], |v| v[0].reshape([3, 2]))
                    .with_reference(|x| reference::reshape(&x[0], &[3, 2])),
                sample!("[2,3,2] to [12]", [n(&[2, 3, 2], 51)], |v| v[0].reshape([12]))
                    .with_reference(|x| reference::reshape(&x[0], &[12])),
                sample!("0-d to [1,1]", [Tensor::scalar(0.5)], |v| v[0].reshape([1, 1]))
                    .with_reference(|x| reference::reshape(&x[0], &[1, 1])),
            ]
        })
        .recipe(recipe!(|c, v| reshape_recipe(c, v))),
    );
    r.register(
        OpInfo::new("permute", "reorder axes (transpose)", || {
            let n = |s: &[usize], seed| Tensor::<f64>::rand_normal(s, 0.0, 1.0, seed);
            vec![
                sample!("transpose [2,3]", [n(&[2, 3], 52)], |v| v[0].t())
                    .with_reference(|x| reference::permute(&x[0], &[1, 0])),
                sample!("[2,3,4] by [2,0,1]", [n(&[2, 3, 4], 53)], |v| v[0].permute([2, 0, 1]))
                    .with_reference(|x| reference::permute(&x[0], &[2, 0, 1])),
                sample!("[1,3] transpose", [n(&[1, 3], 54)], |v| v[0].transpose(0, 1))
                    .with_reference(|x| reference::permute(&x[0], &[1, 0])),
            ]
        })
        .recipe(recipe!(|c, v| permute_recipe(c, v))),
    );
    r.register(
        OpInfo::new("broadcast_to", "repeat along broadcast axes (NumPy rules)", || {
            let n = |s: &[usize], seed| Tensor::<f64>::rand_normal(s, 0.0, 1.0, seed);
            vec![
                sample!("[3] to [2,3]", [n(&[3], 55)], |v| v[0].broadcast_to([2, 3]))
                    .with_reference(|x| reference::broadcast_to(&x[0], &[2, 3])),
                sample!("[3,1] to [2,3,4]", [n(&[3, 1], 56)], |v| v[0].broadcast_to([2, 3, 4]))
                    .with_reference(|x| reference::broadcast_to(&x[0], &[2, 3, 4])),
                sample!("0-d to [2,2]", [Tensor::scalar(0.7)], |v| v[0].broadcast_to([2, 2]))
                    .with_reference(|x| reference::broadcast_to(&x[0], &[2, 2])),
            ]
        })
        .recipe(recipe!(|c, v| broadcast_to_recipe(c, v))),
    );
}
