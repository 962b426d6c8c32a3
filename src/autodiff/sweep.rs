//! The backward sweep — one function for every backward pass.
//!
//! The tape is in execution order, so walking it from the output down to index 0 visits every
//! node after all of its consumers: its gradient is complete when the sweep reaches it. A value
//! used several times (fan-out, diamonds) receives the sum of the gradients of its uses. The walk
//! is a plain loop (no recursion: a chain of 100 000 ops needs no stack).
//!
//! `sweep` is generic over an `Interpretation` of the rules: `OnValues` (first order: each
//! rule runs on tensors, nothing is recorded, gradients are freed as soon as they are consumed
//! and accumulated in place) and `Recorded` (each rule runs on `Var`s and is recorded, so the
//! gradients can be differentiated again). Both run the ops' one rule ([`Op::vjp`]).
//!
//! Only nodes on a path from a requested input to the output are visited, and a rule is asked
//! only for the gradients of inputs on such a path.
//!
//! [`Op::vjp`]: crate::Op::vjp

use crate::autodiff::checkpoint::CheckpointOp;
use crate::autodiff::rule::Value;
use crate::autodiff::rule::{Cotangents, VjpCtx};
use crate::autodiff::tape::{Tape, Var};
use crate::core::error::{Error, ErrorKind, Result};
use crate::core::float::Float;
use crate::core::shape::fmt_shape;
use crate::tensor::Tensor;
use smallvec::SmallVec;

/// How a sweep runs the rules: on values or recorded.
pub(crate) trait Interpretation<'t, T: Float> {
    /// The cotangent type.
    type V: Value<T>;
    /// Runs node `i`'s rule on its cotangent `g`; `needs[k]` says whether input `k` wants a gradient.
    fn rule(&self, i: usize, needs: &[bool], g: &Self::V) -> Result<Cotangents<Self::V>>;
    /// `acc + g` (same shapes).
    fn accumulate(acc: Self::V, g: Self::V) -> Self::V;
}

/// First order: rules run on the tensors stored on the tape, borrowed in place.
pub(crate) struct OnValues<'t, T: Float>(pub(crate) &'t Tape<T>);

impl<'t, T: Float> Interpretation<'t, T> for OnValues<'t, T> {
    type V = Tensor<T>;
    fn rule(&self, i: usize, needs: &[bool], g: &Tensor<T>) -> Result<Cotangents<Tensor<T>>> {
        let nodes = self.0.nodes.borrow();
        let node = &nodes[i];
        // (push loops: SmallVec's collect is slower for 1–2 items)
        let mut inputs: SmallVec<[&Tensor<T>; 4]> = SmallVec::new();
        for &j in &node.inputs {
            inputs.push(&nodes[j].value);
        }
        let cx = VjpCtx {
            inputs: &inputs,
            output: &node.value,
            needs,
        };
        node.op
            .as_ref()
            .expect("the sweep runs rules of op nodes only")
            .get()
            .vjp_values(&cx, g)
    }
    fn accumulate(mut acc: Tensor<T>, g: Tensor<T>) -> Tensor<T> {
        acc.add_assign_same(&g);
        acc
    }
}

/// Recorded: rules run on `Var`s of the tape, so every operation they perform is recorded.
pub(crate) struct Recorded<'t, T: Float>(pub(crate) &'t Tape<T>);

impl<'t, T: Float> Interpretation<'t, T> for Recorded<'t, T> {
    type V = Var<'t, T>;
    fn rule(&self, i: usize, needs: &[bool], g: &Var<'t, T>) -> Result<Cotangents<Var<'t, T>>> {
        let tape = self.0;
        let (op, vars) = {
            let node = tape.node(i);
            let mut vars: SmallVec<[Var<'t, T>; 4]> = SmallVec::new();
            for &index in &node.inputs {
                vars.push(Var { tape, index });
            }
            (node.op.clone().expect("the sweep runs rules of op nodes only"), vars)
        };
        let refs: SmallVec<[&Var<'t, T>; 4]> = vars.iter().collect();
        let output = Var { tape, index: i };
        let cx = VjpCtx {
            inputs: &refs,
            output: &output,
            needs,
        };
        // A checkpointed segment's rule is a replay and a backward on the tape itself, which the
        // rule vocabulary cannot say: it records the replay here, so it is differentiable again.
        if let Some(ck) = op.get().as_any().downcast_ref::<CheckpointOp<T>>() {
            return ck.vjp_recorded(&cx, g);
        }
        op.get().vjp_vars(&cx, g)
    }
    fn accumulate(acc: Var<'t, T>, g: Var<'t, T>) -> Var<'t, T> {
        acc + g
    }
}

/// Marks the nodes a gradient must flow through: those on a path from a requested input up to
/// node `top` (only nodes that require a gradient pass it on).
pub(crate) fn relevance<T: Float>(tape: &Tape<T>, top: usize, wrt: &[usize]) -> Vec<bool> {
    let mut relevant = vec![false; top + 1];
    for &w in wrt {
        if w <= top {
            relevant[w] = true;
        }
    }
    let nodes = tape.nodes.borrow();
    for i in 0..=top {
        if !relevant[i] && nodes[i].requires_grad {
            relevant[i] = nodes[i].inputs.iter().any(|&j| relevant[j]);
        }
    }
    relevant
}

/// The gradients of `Σ ⟨seed, output⟩` with respect to each of `wrt` (node indices), or `None`
/// where no path leads there. `seeds` pairs output nodes with their cotangents.
pub(crate) fn sweep<'t, T: Float, I: Interpretation<'t, T>>(
    tape: &'t Tape<T>,
    interp: &I,
    seeds: Vec<(usize, I::V)>,
    wrt: &[usize],
) -> Result<Vec<Option<I::V>>> {
    let Some(top) = seeds.iter().map(|s| s.0).max() else {
        return Ok(vec![None; wrt.len()]);
    };
    let relevant = relevance(tape, top, wrt);
    let mut keep = vec![false; top + 1];
    for &w in wrt.iter().filter(|&&w| w <= top) {
        keep[w] = true;
    }
    let observers = tape.observers();
    observers.iter().for_each(|o| o.backward_begin(tape, top));
    // `backward_end` runs however the sweep ends: done, an error, or a panicking rule.
    struct End<'a, 't, T: Float>(
        &'a [std::sync::Arc<dyn crate::autodiff::tape::Observer<T>>],
        &'t Tape<T>,
    );
    impl<T: Float> Drop for End<'_, '_, T> {
        fn drop(&mut self) {
            self.0.iter().for_each(|o| o.backward_end(self.1));
        }
    }
    let _end = End(&observers, tape);
    let mut grads: Vec<Option<I::V>> = (0..=top).map(|_| None).collect();
    let add = |slot: &mut Option<I::V>, g: I::V| {
        *slot = Some(match slot.take() {
            None => g,
            Some(acc) => I::accumulate(acc, g),
        })
    };
    for (i, seed) in seeds {
        add(&mut grads[i], seed);
    }
    let mut needs: SmallVec<[bool; 4]> = SmallVec::new();
    for i in (0..=top).rev() {
        if !relevant[i] {
            continue;
        }
        // A requested input keeps its gradient; every other one is freed once consumed.
        let Some(g) = (if keep[i] { grads[i].clone() } else { grads[i].take() }) else {
            continue;
        };
        needs.clear();
        let is_op = {
            let node = tape.node(i);
            for &j in &node.inputs {
                needs.push(relevant[j]);
            }
            node.op.is_some()
        };
        if !is_op || !needs.contains(&true) {
            continue;
        }
        let watched = !observers.is_empty();
        if watched {
            observers.iter().for_each(|o| o.rule_begin(tape, i));
        }
        let gs = interp.rule(i, &needs, &g).map_err(|e| rule_error(tape, i, e))?;
        if gs.len() != needs.len() {
            let (got, want) = (gs.len(), needs.len());
            let msg = format!(
                "the VJP rule returned {got} gradient{} for {want} input{}",
                if got == 1 { "" } else { "s" },
                if want == 1 { "" } else { "s" }
            );
            return Err(rule_error(tape, i, Error::new(ErrorKind::Invalid, "vjp", msg)));
        }
        for (k, gk) in gs.into_iter().enumerate() {
            if !needs[k] {
                continue;
            }
            let j = check_rule_grad(tape, i, k, gk.as_ref())?;
            let gk = gk.expect("checked");
            if watched {
                for o in &observers {
                    o.gradient(tape, i, k, &gk.value(), &g.value())?;
                }
            }
            add(&mut grads[j], gk);
        }
        if watched {
            observers.iter().for_each(|o| o.rule_end(tape, i));
        }
    }
    // (clone, not take: the same input may be asked for twice)
    Ok(wrt
        .iter()
        .map(|&w| if w <= top { grads[w].clone() } else { None })
        .collect())
}

/// Wraps an error raised by node `i`'s rule with the op, its shapes and the user's line.
fn rule_error<T: Float>(tape: &Tape<T>, i: usize, e: Error) -> Error {
    let (name, location, inputs, out) = {
        let nodes = tape.nodes.borrow();
        let n = &nodes[i];
        let shapes: Vec<String> = n.inputs.iter().map(|&j| fmt_shape(nodes[j].value.shape())).collect();
        let name = n.op.as_ref().map_or("leaf", |o| o.get().name());
        (name, n.location, shapes.join(", "), fmt_shape(n.value.shape()))
    };
    let msg = format!(
        "{} [backward through node #{i}: {name}({inputs}) -> {out}]",
        e.message()
    );
    let mut err = Error::new(e.kind(), name, msg).at(location);
    if let Some(l) = e.location() {
        err = err.at(l);
    }
    err
}

/// Checks a rule's gradient for input `k` of node `i`: present when needed, of the input's shape.
/// Returns the input's node index.
fn check_rule_grad<T: Float, V: Value<T>>(tape: &Tape<T>, i: usize, k: usize, grad: Option<&V>) -> Result<usize> {
    let e = {
        let nodes = tape.nodes.borrow();
        let j = nodes[i].inputs[k];
        let want = nodes[j].value.shape();
        let name = nodes[i].op.as_ref().map_or("leaf", |o| o.get().name());
        match grad {
            Some(g) if g.has_shape(want) => return Ok(j),
            None => Error::new(
                ErrorKind::NoVjp,
                name,
                format!("the VJP rule gave no gradient for input {k}, which needs one"),
            ),
            Some(g) => Error::shape(
                name,
                format!(
                    "the VJP rule returned a gradient of shape {} for input {k} of shape {}",
                    fmt_shape(&g.shape()),
                    fmt_shape(want)
                ),
            ),
        }
    };
    Err(rule_error(tape, i, e))
}
