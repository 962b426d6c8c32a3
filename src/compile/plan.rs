//! Lowering a traced tape to a flat program: the forward ops the loss depends on, then the
//! backward as the sweep would run it — one step per rule, one per accumulation — with every
//! value given a slot and freed after its last use.
//!
//! The backward is planned here, once: which nodes a gradient reaches, which inputs each rule is
//! asked for, where two gradients meet. A replay only executes the list.

use super::fuse::Group;
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
    /// A fused loop (see [`super::fuse`]), with the forward steps it replaces (run instead, one
    /// by one, when every value is checked in anomaly mode).
    Fused { group: Box<Group<T>>, steps: Vec<Step<T>> },
}

impl<T: Float> Step<T> {
    /// The slots the step reads.
    pub(crate) fn reads(&self) -> SmallVec<[Slot; 6]> {
        match self {
            Step::Forward { inputs, .. } => inputs.iter().copied().collect(),
            Step::Rule { inputs, output, g, .. } => {
                let mut r: SmallVec<[Slot; 6]> = inputs.iter().copied().collect();
                r.push(*output);
                r.push(*g);
                r
            }
            Step::Accumulate { dst, src } => [*dst, *src].into_iter().collect(),
            Step::Fused { group, .. } => group.inputs.iter().map(|(x, _, _)| *x).collect(),
        }
    }

    /// The slots the step writes.
    pub(crate) fn writes(&self) -> SmallVec<[Slot; 4]> {
        match self {
            Step::Forward { out, .. } => [*out].into_iter().collect(),
            Step::Rule { outs, .. } => outs.iter().flatten().copied().collect(),
            Step::Accumulate { dst, .. } => [*dst].into_iter().collect(),
            Step::Fused { group, .. } => group.members.iter().filter_map(|m| m.out).collect(),
        }
    }
}

/// What the tracer knew about a recorded node, for messages, the summary and the DOT export.
#[derive(Clone, Debug)]
pub(crate) struct NodeMeta {
    pub(crate) name: &'static str,
    pub(crate) params: String,
    pub(crate) shape: Vec<usize>,
    pub(crate) location: &'static Location<'static>,
}

/// How a program's backward was made.
#[derive(Clone, Debug)]
pub(crate) enum Mode {
    /// Recorded from the rules as primitive ops (`grad_graph`) and lowered with the forward, so
    /// the fuser sees both.
    Recorded,
    /// One step per rule on tensors, because recording the backward was not possible (the
    /// reason).
    Rules(String),
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
    /// The slots with a source, in order (a run fills these, not every slot it scans).
    pub(crate) filled: Vec<Slot>,
    /// The step that computes the loss (`None`: the loss is an input).
    pub(crate) loss_step: Option<usize>,
    /// The loss slot.
    pub(crate) loss: Slot,
    /// The slot holding each parameter's gradient, or `None` where no gradient reaches it
    /// (the step returns zeros there).
    pub(crate) grads: Vec<Option<Slot>>,
    /// The index of the first backward step (`steps.len()` when there is none).
    pub(crate) first_backward: usize,
    /// How the backward was planned (for the summary).
    pub(crate) mode: Mode,
    /// Per recorded node (indexed by node): what it was.
    pub(crate) meta: Vec<NodeMeta>,
    /// The node each forward slot holds (slots below `meta.len()` are node values).
    pub(crate) n_nodes: usize,
}

impl<T: Float> Plan<T> {
    /// Lowers the tape of a finished trace: `loss` is the loss node, `params` and `data` the
    /// leaves made for the step's inputs, in order.
    /// Lowers the tape of a finished trace, the backward one step per rule: `loss` is the loss
    /// node, `params` and `data` the leaves made for the step's inputs, in order.
    pub(crate) fn lower(tape: &Tape<T>, loss: usize, params: &[usize], data: &[usize], why: String) -> Result<Self> {
        let nodes = tape.nodes.borrow();
        let top = loss;
        let meta = node_meta(&nodes[..=top]);
        let same: Vec<usize> = (0..=top).collect();
        let (mut sources, mut steps) = forward_steps(&nodes[..=top], &[loss], params, data, &same)?;

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
        Ok(Plan::finish(
            sources,
            steps,
            loss,
            grads,
            meta,
            top + 1,
            Mode::Rules(why),
        ))
    }

    /// Lowers a trace whose backward was recorded (`grads[k]`: the node holding parameter `k`'s
    /// gradient): one program of forward ops from the inputs to the loss and the gradients,
    /// then fused. Fails (and the caller plans the rules instead) when the recorded backward holds
    /// a value computed while tracing.
    pub(crate) fn lower_recorded(
        tape: &Tape<T>,
        loss: usize,
        grads: &[usize],
        params: &[usize],
        data: &[usize],
    ) -> Result<Self> {
        let nodes = tape.nodes.borrow();
        let top = grads.iter().copied().chain([loss]).max().unwrap_or(loss);
        let meta = node_meta(&nodes[..=top]);
        let alias = identities(&nodes[..=top], params, data, loss);
        let mut roots = vec![loss];
        roots.extend(grads.iter().map(|&g| alias[g]));
        let (sources, steps) = forward_steps(&nodes[..=top], &roots, params, data, &alias)?;
        let steps = super::fuse::fuse(steps, &meta, &roots);
        let grads = roots[1..].iter().map(|&g| Some(g as Slot)).collect();
        Ok(Plan::finish(sources, steps, loss, grads, meta, top + 1, Mode::Recorded))
    }

    /// Liveness: each slot is dropped after the last step that reads it.
    fn finish(
        sources: Vec<Option<Source<T>>>,
        steps: Vec<Step<T>>,
        loss: usize,
        grads: Vec<Option<Slot>>,
        meta: Vec<NodeMeta>,
        n_nodes: usize,
        mode: Mode,
    ) -> Self {
        // The first step of the backward: a rule, an accumulation, or (recorded) an op recorded
        // after the loss, alone or in a fused loop.
        let first_backward = steps
            .iter()
            .position(|s| match s {
                Step::Rule { .. } | Step::Accumulate { .. } => true,
                Step::Forward { node, .. } => *node > loss,
                Step::Fused { group, .. } => group.members.iter().any(|m| m.node > loss),
            })
            .unwrap_or(steps.len());
        let n_slots = sources.len();
        let mut last: Vec<Option<usize>> = vec![None; n_slots];
        let mut written: Vec<Option<usize>> = vec![None; n_slots];
        for (s, step) in steps.iter().enumerate() {
            for x in step.reads() {
                last[x as usize] = Some(s);
            }
            if !matches!(step, Step::Accumulate { .. }) {
                for x in step.writes() {
                    written[x as usize] = Some(s);
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
        for x in 0..n_slots {
            if kept[x] {
                continue;
            }
            match (last[x], written[x]) {
                (Some(s), Some(w)) => free[s.max(w)].push(x as Slot),
                (Some(s), None) => free[s].push(x as Slot),
                (None, Some(w)) => free[w].push(x as Slot),
                (None, None) if sources[x].is_some() => free_at_start.push(x as Slot),
                (None, None) => {}
            }
        }
        let filled = (0..n_slots)
            .filter(|&x| sources[x].is_some())
            .map(|x| x as Slot)
            .collect();
        let loss_step = steps.iter().position(|s| s.writes().contains(&(loss as Slot)));
        Plan {
            sources,
            steps,
            free,
            free_at_start,
            filled,
            loss_step,
            loss: loss as Slot,
            grads,
            first_backward,
            mode,
            meta,
            n_nodes,
        }
    }

    /// The number of value slots.
    pub(crate) fn n_slots(&self) -> usize {
        self.sources.len()
    }
}

/// What the tracer knew about each node.
fn node_meta<T: Float>(nodes: &[crate::autodiff::tape::Node<T>]) -> Vec<NodeMeta> {
    nodes
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
        .collect()
}

/// How each slot is filled, and the steps.
type Lowered<T> = (Vec<Option<Source<T>>>, Vec<Step<T>>);

/// Products by ones in a recorded program: `alias[i]` is the node whose value node `i` has —
/// itself, unless `i` is `x · 1`, `1 · x` or `chain_mul(1, x)` with `x` of `i`'s shape, where
/// `1` is a constant of ones (not an input of the step) or a broadcast or reshape of one. A
/// recorded backward starts from the seed spread to the summed shape (`sum`'s rule), and the
/// first rule multiplies by it; the product is exact (`1 · x = x` for every float, NaN,
/// infinities and signed zeros included; `chain_mul(x, 1)` is not, it makes `−0` a `+0`), so it
/// is not computed and its readers read `x`. On `sum(softmax(x) · g)` this saves writing and
/// reading again a tensor of `x`'s size. The loss is never aliased.
fn identities<T: Float>(
    nodes: &[crate::autodiff::tape::Node<T>],
    params: &[usize],
    data: &[usize],
    loss: usize,
) -> Vec<usize> {
    use crate::ops::arith::MulOp;
    use crate::ops::layout::{BroadcastToOp, ReshapeOp};
    use crate::ops::select::ChainMul;
    let mut alias: Vec<usize> = (0..nodes.len()).collect();
    let mut ones = vec![false; nodes.len()];
    for (i, n) in nodes.iter().enumerate() {
        let Some(op) = &n.op else {
            ones[i] = !params.contains(&i) && !data.contains(&i) && n.value.data().iter().all(|&v| v == T::ONE);
            continue;
        };
        let any = op.get().as_any();
        let ins: SmallVec<[usize; 3]> = n.inputs.iter().map(|&j| alias[j]).collect();
        if ins.len() == 1 && (any.is::<BroadcastToOp>() || any.is::<ReshapeOp>()) {
            ones[i] = ones[ins[0]];
        } else if ins.len() == 2 && i != loss {
            let (mul, chain) = (any.is::<MulOp>(), any.is::<ChainMul>());
            let same = |j: usize| nodes[j].value.shape() == n.value.shape();
            if (mul || chain) && ones[ins[0]] && same(ins[1]) {
                alias[i] = ins[1];
            } else if mul && ones[ins[1]] && same(ins[0]) {
                alias[i] = ins[0];
            }
        }
    }
    alias
}

/// The sources and forward steps of the nodes `roots` depend on, in recorded order; a node's
/// inputs are read through `alias` (see [`identities`]), so an aliased node is not computed.
fn forward_steps<T: Float>(
    nodes: &[crate::autodiff::tape::Node<T>],
    roots: &[usize],
    params: &[usize],
    data: &[usize],
    alias: &[usize],
) -> Result<Lowered<T>> {
    let top = nodes.len() - 1;
    let mut needed = vec![false; top + 1];
    for &r in roots {
        needed[alias[r]] = true;
    }
    for i in (0..=top).rev() {
        if needed[i] {
            for &j in &nodes[i].inputs {
                needed[alias[j]] = true;
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
                    inputs: n.inputs.iter().map(|&j| alias[j] as Slot).collect(),
                    out: i as Slot,
                    node: i,
                });
            }
        }
    }
    Ok((sources, steps))
}
