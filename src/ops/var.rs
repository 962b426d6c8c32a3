//! How a recorded backward runs the rules: [`Value`] and [`Elem`] for [`Var`]. Every operation a
//! rule performs on a `Var` records the op that computes it, whose own rule makes the result
//! differentiable again.
//!
//! (The first-order interpretation, on tensors and [`Scalar`](crate::autodiff::Scalar)s, lives
//! with the traits in [`crate::autodiff::value`]; this one needs the ops, so it lives here.)

use crate::autodiff::rule::{Binary, Elem, Pointwise, Ternary, Unary, Value};
use crate::autodiff::rule::{FirstOrderGrad, Op};
use crate::autodiff::tape::{OpRef, Var};
use crate::core::error::{Result, fail};
use crate::core::float::Float;
use crate::core::shape::{Shape, broadcast_extents};
use crate::tensor::Tensor;
use smallvec::SmallVec;
use std::panic::Location;

impl<'t, T: Float> Value<T> for Var<'t, T> {
    fn shape(&self) -> Shape {
        Var::shape(self)
    }
    fn numel(&self) -> usize {
        Var::numel(self)
    }
    fn value(&self) -> Tensor<T> {
        Var::value(self)
    }
    #[track_caller]
    fn constant(&self, t: Tensor<T>) -> Self {
        self.tape.constant(t)
    }
    /// Evaluates the expression on `Var`s (recording each operation), broadcast to the shape of
    /// the arguments together (as on tensors) when the expression ignores some of them.
    #[track_caller]
    fn pointwise<const N: usize, F: Pointwise<T, N>>(f: &F, args: [&Self; N]) -> Self {
        let out = f.eval(args.map(|a| *a));
        let mut shape = args[0].shape();
        for a in &args[1..] {
            shape = broadcast_extents(&shape, &a.shape()).unwrap_or(shape);
        }
        if Var::shape(&out) == shape {
            out
        } else {
            Var::broadcast_to(out, &shape)
        }
    }
    #[track_caller]
    fn sum_to(&self, shape: &[usize]) -> Self {
        Var::sum_to(*self, shape)
    }
    #[track_caller]
    fn sum_to_like(self, like: &Self) -> Self {
        let shape = like.tape.node(like.index).value.shape().to_vec();
        Var::sum_to(self, shape)
    }
    fn has_shape(&self, shape: &[usize]) -> bool {
        self.tape.node(self.index).value.shape() == shape
    }
    #[track_caller]
    fn broadcast_to(&self, shape: &[usize]) -> Self {
        Var::broadcast_to(*self, shape)
    }
    #[track_caller]
    fn reshape(&self, shape: &[usize]) -> Self {
        Var::reshape(*self, shape)
    }
    #[track_caller]
    fn permute(&self, perm: &[usize]) -> Self {
        Var::permute(*self, perm)
    }
    #[track_caller]
    fn matmul_t(&self, b: &Self, ta: bool, tb: bool) -> Self {
        Var::matmul_t(*self, *b, ta, tb)
    }
    #[track_caller]
    fn apply<O: Op<T>>(op: O, inputs: &[&Self]) -> Result<Self> {
        let vars: SmallVec<[Var<'t, T>; 4]> = inputs.iter().map(|v| **v).collect();
        inputs[0].tape.record(OpRef::new(op), &vars, Location::caller())
    }
    fn first_order_only(op: &'static str, input: usize, grad: Tensor<T>, deps: &[&Self]) -> Self {
        let vars: SmallVec<[Var<'t, T>; 6]> = deps.iter().map(|v| **v).collect();
        // Recorded where the op's node was built (its output is the second-to-last dependency).
        let location = vars[vars.len() - 2].location();
        let node = FirstOrderGrad { op, input, value: grad };
        // `forward` only returns the stored value, so recording cannot fail.
        vars[0]
            .tape
            .record(OpRef::new(node), &vars, location)
            .unwrap_or_else(|e| fail(e))
    }
}

impl<'t, T: Float> Elem<T> for Var<'t, T> {
    #[track_caller]
    fn lit(self, c: T) -> Self {
        self.tape.scalar(c)
    }
    #[track_caller]
    fn map1<F: Unary<T>>(self, f: &F) -> Self {
        let op = match f.as_static() {
            Some(s) => OpRef::Static(s),
            None => OpRef::new(f.clone()),
        };
        self.tape.op(op, &[self])
    }
    #[track_caller]
    fn map2<F: Binary<T>>(self, other: Self, f: &F) -> Self {
        let op = match f.as_static() {
            Some(s) => OpRef::Static(s),
            None => OpRef::new(f.clone()),
        };
        if f.is_mask() {
            // A comparison is piecewise constant: recorded as a constant, no gradient through it.
            let _off = self.tape.no_grad_guard();
            return self.tape.op(op, &[self, other]);
        }
        self.tape.op(op, &[self, other])
    }
    #[track_caller]
    fn map3<F: Ternary<T>>(self, b: Self, c: Self, f: &F) -> Self {
        let op = match f.as_static() {
            Some(s) => OpRef::Static(s),
            None => OpRef::new(f.clone()),
        };
        self.tape.op(op, &[self, b, c])
    }
}
