//! How a recorded backward runs the rules: [`Value`] and [`Elem`] for [`Var`]. Every operation a
//! rule performs on a `Var` records the op that computes it, whose own rule makes the result
//! differentiable again.
//!
//! (The first-order interpretation, on tensors and [`Scalar`](crate::autodiff::Scalar)s, lives
//! with the traits in [`crate::autodiff::value`]; this one needs the ops, so it lives here.)

use crate::autodiff::rule::{Binary, Elem, Pointwise, RuleKernel, Ternary, Unary, Value};
use crate::autodiff::rule::{BinaryKernel, Elementwise, TernaryKernel, UnaryKernel};
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
        let whole = if crate::autodiff::trace::whole_rules() {
            f.kernel().and_then(|k| record_whole(k, &args))
        } else {
            None
        };
        let out = whole.unwrap_or_else(|| f.eval(args.map(|a| *a)));
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

/// Records an elementwise rule as one [`WholeRule`] op over the arguments it reads (at most
/// three, so a compiled step can fuse it; `None` otherwise, and the rule records op by op).
#[track_caller]
fn record_whole<'t, T: Float, const N: usize>(k: RuleKernel<T, N>, args: &[&Var<'t, T>; N]) -> Option<Var<'t, T>> {
    let uses = k.uses();
    let read: SmallVec<[usize; 4]> = (0..N).filter(|&i| uses[i]).collect();
    if read.is_empty() || read.len() > 3 {
        return None;
    }
    let mut slot = [None; N];
    for (j, &i) in read.iter().enumerate() {
        slot[i] = Some(j);
    }
    let vars: SmallVec<[Var<'t, T>; 4]> = read.iter().map(|&i| *args[i]).collect();
    let op = WholeRule {
        k,
        slot,
        arity: read.len(),
    };
    args[0].tape.record(OpRef::new(op), &vars, Location::caller()).ok()
}

/// An elementwise rule recorded whole in a compiled step's backward: its inputs are the
/// arguments the expression reads (`slot[k]`: the input holding argument `k`). It has no rule of
/// its own (nothing differentiates a compiled backward again); it fails loudly if asked.
struct WholeRule<T: Float, const N: usize> {
    k: RuleKernel<T, N>,
    slot: [Option<usize>; N],
    arity: usize,
}

impl<T: Float, const N: usize> WholeRule<T, N> {
    fn run(&self, ins: &[&[T]], out: &mut [T]) {
        self.k.run(std::array::from_fn(|k| self.slot[k].map(|j| ins[j])), out)
    }

    /// [`run`](Self::run) at one element.
    fn one(&self, ins: &[T]) -> T {
        self.k.one(std::array::from_fn(|k| self.slot[k].map(|j| ins[j])))
    }
}

impl<T: Float, const N: usize> Op<T> for WholeRule<T, N> {
    fn name(&self) -> &'static str {
        self.k.name()
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        let name = self.k.name();
        if x.len() != self.arity {
            let msg = format!("takes {} inputs, got {}", self.arity, x.len());
            return Err(crate::core::error::Error::new(
                crate::core::error::ErrorKind::Invalid,
                name,
                msg,
            ));
        }
        let mut shape = Shape::from_slice(x[0].shape());
        for t in &x[1..] {
            shape = broadcast_extents(&shape, t.shape()).ok_or_else(|| {
                let shapes: Vec<String> = x.iter().map(|t| crate::core::shape::fmt_shape(t.shape())).collect();
                crate::core::error::Error::shape(
                    name,
                    format!("shapes {} do not broadcast together", shapes.join(", ")),
                )
            })?;
        }
        let full: SmallVec<[Tensor<T>; 3]> = x
            .iter()
            .map(|t| {
                if t.shape() == &shape[..] {
                    (*t).clone()
                } else {
                    t.broadcast_to(&shape)
                }
            })
            .collect();
        let ins: SmallVec<[&[T]; 3]> = full.iter().map(|t| t.data()).collect();
        let n = full[0].numel();
        let mut out = crate::tensor::pool::buffer::<T>(n);
        /// Elements per chunk when the pass splits across threads.
        const CHUNK: usize = 1 << 14;
        let work = n * (self.arity + 1) * crate::tensor::parallel::EXP_WORK;
        crate::tensor::parallel::chunks_mut(&mut out, CHUNK, work, |c, o| {
            let base = c * CHUNK;
            let part: SmallVec<[&[T]; 3]> = ins.iter().map(|s| &s[base..base + o.len()]).collect();
            self.run(&part, o);
        });
        Ok(Tensor::from_parts(shape, out))
    }
    fn vjp<V: Value<T>>(
        &self,
        _cx: &crate::autodiff::rule::VjpCtx<'_, V>,
        _g: &V,
    ) -> Result<crate::autodiff::rule::Cotangents<V>> {
        Err(crate::core::error::Error::new(
            crate::core::error::ErrorKind::NoVjp,
            self.k.name(),
            "an elementwise rule recorded whole by a compiled step has no rule of its own (a compiled \
             step's backward is not differentiated again)",
        ))
    }
    fn elementwise(&self) -> Option<Elementwise<'_, T>> {
        Some(match self.arity {
            1 => Elementwise::Unary(self),
            2 => Elementwise::Binary(self),
            _ => Elementwise::Ternary(self),
        })
    }
}

impl<T: Float, const N: usize> UnaryKernel<T> for WholeRule<T, N> {
    fn apply(&self, x: &[T], out: &mut [T]) {
        self.run(&[x], out)
    }
    fn one(&self, x: T) -> T {
        WholeRule::one(self, &[x])
    }
}

impl<T: Float, const N: usize> BinaryKernel<T> for WholeRule<T, N> {
    fn apply(&self, a: &[T], b: &[T], out: &mut [T]) {
        self.run(&[a, b], out)
    }
    fn one(&self, a: T, b: T) -> T {
        WholeRule::one(self, &[a, b])
    }
}

impl<T: Float, const N: usize> TernaryKernel<T> for WholeRule<T, N> {
    fn apply(&self, a: &[T], b: &[T], c: &[T], out: &mut [T]) {
        self.run(&[a, b, c], out)
    }
    fn one(&self, a: T, b: T, c: T) -> T {
        WholeRule::one(self, &[a, b, c])
    }
}

#[cfg(test)]
mod tests {
    use crate::autodiff::rule::{Elem, Pointwise, RuleKernel};
    use crate::{ErrorKind, Float, Tape, Tensor, Value};

    /// `g · x²` (reads its first and third arguments, not the second).
    #[derive(Clone, Copy)]
    struct GxxRule;
    impl<T: Float> Pointwise<T, 3> for GxxRule {
        fn eval<E: Elem<T>>(&self, [g, _y, x]: [E; 3]) -> E {
            g * x * x
        }
        fn kernel(&self) -> Option<RuleKernel<T, 3>> {
            Some(RuleKernel::new("gxx", *self))
        }
    }

    #[test]
    fn a_rule_kernel_knows_which_arguments_it_reads() {
        let k = RuleKernel::<f64, 3>::new("gxx", GxxRule);
        assert_eq!(k.uses(), [true, false, true]);
        let mut out = [0.0; 3];
        k.run([Some(&[1.0, 2.0, 3.0]), None, Some(&[2.0, 0.5, -1.0])], &mut out);
        assert_eq!(out, [4.0, 0.5, 3.0]);
    }

    /// While a compiled step records its backward, the rule records as one op over the two
    /// arguments it reads, computing what the tensor interpretation computes; the op refuses to
    /// be differentiated again (loudly, not with a zero).
    #[test]
    fn a_whole_rule_is_one_op_with_the_tensor_bits_and_no_rule_of_its_own() {
        let tape = Tape::<f64>::new();
        let g = tape.var(Tensor::from_vec(vec![1.0, -2.0, 0.5], [3]));
        let y = tape.constant(Tensor::from_vec(vec![9.0, 9.0, 9.0], [3]));
        let x = tape.var(Tensor::from_vec(vec![0.3, 1e-3, -7.0], [1, 3]));
        let before = tape.len();
        let r = {
            let _whole = crate::autodiff::trace::WholeRules::on();
            <crate::Var<'_, f64> as Value<f64>>::pointwise(&GxxRule, [&g, &y, &x])
        };
        assert_eq!(tape.len(), before + 1, "one op recorded");
        assert_eq!(r.value().shape(), &[1, 3]);
        let want = <Tensor<f64> as Value<f64>>::pointwise(&GxxRule, [&g.value(), &y.value(), &x.value()]);
        assert_eq!(r.value().to_vec(), want.to_vec());
        let e = crate::attempt(|| r.sum().backward()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NoVjp);
        assert!(e.to_string().contains("gxx"), "{e}");
        // Outside a compiled step's backward the same rule records op by op (differentiable).
        let r2 = <crate::Var<'_, f64> as Value<f64>>::pointwise(&GxxRule, [&g, &y, &x]);
        assert_eq!(r2.value().to_vec(), want.to_vec());
        assert!(crate::attempt(|| r2.sum().backward()).is_ok());
    }
}
