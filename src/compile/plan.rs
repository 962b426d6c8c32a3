//! Lowering a traced tape to a flat program: the forward ops the loss depends on, then the
//! backward as the sweep would run it — one step per rule, one per accumulation — with every
//! value given a slot and freed after its last use.
//!
//! The backward is planned here, once: which nodes a gradient reaches, which inputs each rule is
//! asked for, where two gradients meet. A replay only executes the list.

use crate::autodiff::rule::FirstOrderGrad;
use crate::autodiff::sweep::relevance;
use crate::autodiff::tape::{OpRef, Tape};
use crate::core::error::{Error, ErrorKind, Result};
use crate::core::float::Float;
use crate::tensor::Tensor;
use smallvec::SmallVec;
use std::panic::Location;

/// An index into the program's value slots.
pub(crate) type Slot = u32;

/// Where a slot's value comes from before the first step runs.
#[derive(Clone)]
pub(crate) enum Source<T: Float> {
    /// Parameter `k` of the step (its gradient is returned).
    Param(usize),
    /// Data input `k` (no gradient).
    Data(usize),
    /// A constant recorded while tracing (targets, masks, literals, the backward's seed).
    Const(Tensor<T>),
}

/// One instruction of the program.
pub(crate) enum Step<T: Float> {
    /// Runs an op's forward on the values in `inputs`, into `out`.
    Forward {
        op: OpRef<T>,
        inputs: SmallVec<[Slot; 4]>,
        out: Slot,
        node: usize,
    },
    /// Runs node `node`'s rule: its op's VJP on its input values (`inputs`), its output value
    /// (`output`) and the cotangent in `g`; the gradient of input `k` goes to `outs[k]` (`None`:
    /// not asked for).
    Rule {
        op: OpRef<T>,
        inputs: SmallVec<[Slot; 4]>,
        output: Slot,
        g: Slot,
        needs: SmallVec<[bool; 4]>,
        outs: SmallVec<[Option<Slot>; 4]>,
        node: usize,
    },
    /// `dst += src` (two gradients of one value meeting).
    Accumulate { dst: Slot, src: Slot },
}

/// What the tracer knew about a recorded node, for messages, the summary and the DOT export.
#[derive(Clone, Debug)]
pub(crate) struct NodeMeta {
    pub(crate) name: &'static str,
    pub(crate) params: String,
    pub(crate) shape: Vec<usize>,
    pub(crate) location: &'static Location<'static>,
}

/// A lowered program.
pub(crate) struct Plan<T: Float> {
    /// How each slot is filled before the first step (`None`: a step computes it).
    pub(crate) sources: Vec<Option<Source<T>>>,
    pub(crate) steps: Vec<Step<T>>,
    /// After step `i`, the slots in `free[i]` are dropped (their last use was step `i`).
    pub(crate) free: Vec<SmallVec<[Slot; 4]>>,
    /// Slots of values no step reads: dropped before the first step.
    pub(crate) free_at_start: Vec<Slot>,
    /// The loss slot.
    pub(crate) loss: Slot,
    /// The slot holding each parameter's gradient, or `None` where no gradient reaches it
    /// (the step returns zeros there).
    pub(crate) grads: Vec<Option<Slot>>,
    /// The index of the first backward step (`steps.len()` when there is none).
    pub(crate) first_backward: usize,
    /// Per recorded node (indexed by node): what it was.
    pub(crate) meta: Vec<NodeMeta>,
    /// The node each forward slot holds (slots below `meta.len()` are node values).
    pub(crate) n_nodes: usize,
}

impl<T: Float> Plan<T> {
    /// Lowers the tape of a finished trace: `loss` is the loss node, `params` and `data` the
    /// leaves made for the step's inputs, in order.
    pub(crate) fn lower(tape: &Tape<T>, loss: usize, params: &[usize], data: &[usize]) -> Result<Self> {
        let nodes = tape.nodes.borrow();
        let top = loss;
        let meta: Vec<NodeMeta> = nodes[..=top]
            .iter()
            .map(|n| NodeMeta {
                name: n
                    .op
                    .as_ref()
                    .map_or(if n.is_var { "param" } else { "constant" }, |o| o.get().name()),
                params: n.op.as_ref().map_or(String::new(), |o| o.get().params()),
                shape: n.value.shape().to_vec(),
                location: n.location,
            })
            .collect();

        // The nodes the loss depends on.
        let mut needed = vec![false; top + 1];
        needed[top] = true;
        for i in (0..=top).rev() {
            if needed[i] {
                for &j in &nodes[i].inputs {
                    needed[j] = true;
                }
            }
        }
        let mut sources: Vec<Option<Source<T>>> = vec![None; top + 1];
        let mut steps = Vec::new();
        for i in 0..=top {
            if !needed[i] {
                continue;
            }
            let n = &nodes[i];
            match &n.op {
                None => {
                    sources[i] = Some(if let Some(k) = params.iter().position(|&p| p == i) {
                        Source::Param(k)
                    } else if let Some(k) = data.iter().position(|&d| d == i) {
                        Source::Data(k)
                    } else {
                        Source::Const(n.value.clone())
                    });
                }
                Some(op) => {
                    if op.get().as_any().is::<FirstOrderGrad<T>>() {
                        return Err(Error::new(
                            ErrorKind::Invalid,
                            "compile",
                            format!(
                                "the traced function took a recorded gradient through {:?}, whose rule is first \
                                 order only (its value was computed while tracing and would be stale on replay)",
                                op.get().name()
                            ),
                        )
                        .at(n.location));
                    }
                    steps.push(Step::Forward {
                        op: op.clone(),
                        inputs: n.inputs.iter().map(|&j| j as Slot).collect(),
                        out: i as Slot,
                        node: i,
                    });
                }
            }
        }
        let first_backward = steps.len();

        // The backward, planned as the sweep runs it.
        let relevant = relevance(tape, top, params);
        let mut next_slot = (top + 1) as Slot;
        let mut fresh = |sources: &mut Vec<Option<Source<T>>>| {
            sources.push(None);
            next_slot += 1;
            next_slot - 1
        };
        let mut grad: Vec<Option<Slot>> = vec![None; top + 1];
        if relevant[top] {
            let seed = fresh(&mut sources);
            sources[seed as usize] = Some(Source::Const(Tensor::ones(nodes[top].value.shape())));
            grad[top] = Some(seed);
        }
        for i in (0..=top).rev() {
            if !relevant[i] {
                continue;
            }
            let (Some(g), Some(op)) = (grad[i], nodes[i].op.as_ref()) else {
                continue;
            };
            let needs: SmallVec<[bool; 4]> = nodes[i].inputs.iter().map(|&j| relevant[j]).collect();
            if !needs.contains(&true) {
                continue;
            }
            let outs: SmallVec<[Option<Slot>; 4]> = needs.iter().map(|&n| n.then(|| fresh(&mut sources))).collect();
            steps.push(Step::Rule {
                op: op.clone(),
                inputs: nodes[i].inputs.iter().map(|&j| j as Slot).collect(),
                output: i as Slot,
                g,
                needs,
                outs: outs.clone(),
                node: i,
            });
            for (k, out) in outs.iter().enumerate() {
                let Some(out) = *out else { continue };
                let j = nodes[i].inputs[k];
                match grad[j] {
                    None => grad[j] = Some(out),
                    Some(dst) => steps.push(Step::Accumulate { dst, src: out }),
                }
            }
        }
        let grads: Vec<Option<Slot>> = params.iter().map(|&p| grad[p]).collect();

        // Liveness: each slot is dropped after the last step that reads it.
        let n_slots = sources.len();
        let mut last: Vec<Option<usize>> = vec![None; n_slots];
        for (s, step) in steps.iter().enumerate() {
            let mut read = |x: Slot| last[x as usize] = Some(s);
            match step {
                Step::Forward { inputs, .. } => inputs.iter().for_each(|&x| read(x)),
                Step::Rule { inputs, output, g, .. } => {
                    inputs.iter().for_each(|&x| read(x));
                    read(*output);
                    read(*g);
                }
                Step::Accumulate { dst, src } => {
                    read(*dst);
                    read(*src);
                }
            }
        }
        let mut kept = vec![false; n_slots];
        kept[loss] = true;
        for g in grads.iter().flatten() {
            kept[*g as usize] = true;
        }
        let mut free: Vec<SmallVec<[Slot; 4]>> = steps.iter().map(|_| SmallVec::new()).collect();
        let mut free_at_start = Vec::new();
        // Where each slot is written (a slot written and never read is dropped right away).
        let mut written: Vec<Option<usize>> = vec![None; n_slots];
        for (s, step) in steps.iter().enumerate() {
            match step {
                Step::Forward { out, .. } => written[*out as usize] = Some(s),
                Step::Rule { outs, .. } => outs.iter().flatten().for_each(|&o| written[o as usize] = Some(s)),
                Step::Accumulate { .. } => {}
            }
        }
        for x in 0..n_slots {
            if kept[x] {
                continue;
            }
            match (last[x], written[x]) {
                (Some(s), _) => free[s].push(x as Slot),
                (None, Some(s)) => free[s].push(x as Slot),
                (None, None) if sources[x].is_some() => free_at_start.push(x as Slot),
                (None, None) => {}
            }
        }
        Ok(Plan {
            sources,
            steps,
            free,
            free_at_start,
            loss: loss as Slot,
            grads,
            first_backward,
            meta,
            n_nodes: top + 1,
        })
    }

    /// The number of value slots.
    pub(crate) fn n_slots(&self) -> usize {
        self.sources.len()
    }
}
