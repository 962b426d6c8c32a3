//! Sequential models under a memory budget: a [`Sequential`] list of [`Stage`]s, what each stage
//! keeps for the backward pass ([`StageCost`], measured), and a [`CheckpointPlan`] that groups the
//! stages into [checkpointed](crate::Tape::checkpoint) segments so that the memory kept for
//! backward stays under a byte budget.
//!
//! # The memory model
//!
//! Stage `i` keeps `kept_i` bytes on the tape when it is recorded normally (every value it
//! computes, its output included) and outputs `out_i` bytes. A plan cuts the stages into
//! consecutive segments. A segment recorded normally keeps `Σ kept_i`; a checkpointed one keeps
//! only its output `out_last` on the tape, and while a backward pass replays it, its `Σ kept_i`
//! once more — one segment at a time. So a plan keeps at most
//!
//! ```text
//! peak = Σ_plain segments Σ kept + Σ_checkpointed segments out_last + max_checkpointed Σ kept
//! ```
//!
//! With `n` equal stages cut into segments of `k`, that is about `(n/k + k)·kept`, smallest at
//! `k ≈ √n`: the classic √n checkpoints. Every checkpointed stage is computed twice (once forward,
//! once replayed), so a plan under budget leaves as many segments uncheckpointed as the budget
//! allows.
//!
//! ```
//! use tapegrad::nn::{Activation, Mlp, ParamStore};
//! use tapegrad::nn::checkpoint::CheckpointPlan;
//! use tapegrad::{Tape, Tensor};
//!
//! let mut store = ParamStore::<f64>::new();
//! let mlp = Mlp::new(&mut store, "mlp", &[16; 17], Activation::Tanh, 1); // 16 layers
//! let seq = mlp.sequential::<f64>();
//! let x = Tensor::rand_normal([8, 16], 0.0, 1.0, 2);
//! let costs = seq.measure(&store, &x);
//! let plain = CheckpointPlan::none(seq.len()).peak_bytes(&costs);
//! let plan = CheckpointPlan::for_budget(&costs, plain / 3).unwrap();
//! assert!(plan.peak_bytes(&costs) <= plain / 3);
//!
//! let tape = Tape::new();
//! let p = store.bind(&tape);
//! let loss = seq.forward_planned(&p, tape.constant(x.clone()), &plan).sum();
//! let g = loss.backward();
//! assert!(tape.retained_bytes() + tape.checkpoint_stats().largest_segment_bytes <= plain / 3);
//!
//! // The gradients are those of the plain model.
//! let tape2 = Tape::new();
//! let p2 = store.bind(&tape2);
//! let g2 = mlp.forward(&p2, tape2.constant(x)).sum().backward();
//! let w = mlp.layers[0].weight;
//! assert!(g[p[w]].max_abs_diff(&g2[p2[w]]) < 1e-12);
//! ```

use super::{Activation, Linear, Mlp, ParamId, ParamStore, Params};
use crate::autodiff::tape::{Tape, Var};
use crate::core::error::{Error, ErrorKind, Result};
use crate::core::float::Float;
use crate::tensor::Tensor;
use std::fmt;
use std::sync::Arc;

/// One stage of a sequential model: a function of the running value and of its own parameters.
///
/// A stage is `Send + Sync + 'static` because a checkpointed segment keeps its stages until the
/// backward pass replays them; it refers to its parameters by [`ParamId`], and receives them as
/// variables of whichever tape it runs on.
pub trait Stage<T: Float>: Send + Sync + 'static {
    /// The parameters the stage reads, in the order [`forward`](Self::forward) receives them.
    fn params(&self) -> Vec<ParamId>;
    /// The stage applied to `x`, with its parameters `p` (recorded on the tape of `x`).
    fn forward<'t>(&self, x: Var<'t, T>, p: &[Var<'t, T>]) -> Var<'t, T>;
}

/// A stage written as a closure over the running value and the parameters it names.
struct FnStage<F> {
    params: Vec<ParamId>,
    f: F,
}

impl<T: Float, F> Stage<T> for FnStage<F>
where
    F: for<'t> Fn(Var<'t, T>, &[Var<'t, T>]) -> Var<'t, T> + Send + Sync + 'static,
{
    fn params(&self) -> Vec<ParamId> {
        self.params.clone()
    }
    fn forward<'t>(&self, x: Var<'t, T>, p: &[Var<'t, T>]) -> Var<'t, T> {
        (self.f)(x, p)
    }
}

/// One layer of an [`Mlp`] as a stage: the linear map, then the activation unless it is the last.
#[derive(Clone, Copy, Debug)]
struct MlpLayer {
    linear: Linear,
    activation: Option<Activation>,
}

impl<T: Float> Stage<T> for MlpLayer {
    fn params(&self) -> Vec<ParamId> {
        vec![self.linear.weight, self.linear.bias]
    }
    fn forward<'t>(&self, x: Var<'t, T>, p: &[Var<'t, T>]) -> Var<'t, T> {
        let h = x.matmul_nt(p[0]) + p[1];
        match self.activation {
            Some(a) => a.apply(h),
            None => h,
        }
    }
}

/// A model that is a chain of [`Stage`]s, each applied to the output of the one before.
#[derive(Clone, Default)]
pub struct Sequential<T: Float> {
    stages: Vec<Arc<dyn Stage<T>>>,
}

impl<T: Float> fmt::Debug for Sequential<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sequential({} stages)", self.stages.len())
    }
}

/// What one stage keeps for the backward pass when it is recorded normally, measured by
/// [`Sequential::measure`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StageCost {
    /// Bytes of the values the stage records (its output included): [`Tape::retained_bytes`].
    pub kept_bytes: usize,
    /// Bytes of its output.
    pub output_bytes: usize,
}

impl<T: Float> Sequential<T> {
    /// A model with no stages.
    pub fn new() -> Self {
        Sequential { stages: Vec::new() }
    }

    /// Appends a stage.
    pub fn push(&mut self, stage: impl Stage<T>) -> &mut Self {
        self.stages.push(Arc::new(stage));
        self
    }

    /// Appends a stage written as a closure `f(x, params)`, reading the parameters `params` (in
    /// that order).
    ///
    /// ```
    /// use tapegrad::nn::checkpoint::Sequential;
    /// use tapegrad::nn::ParamStore;
    /// use tapegrad::{Tape, Tensor};
    /// let mut store = ParamStore::<f64>::new();
    /// let w = store.insert("w", Tensor::from_vec(vec![2.0], [1, 1]));
    /// let mut seq = Sequential::new();
    /// seq.push_fn(vec![w], |x, p| x.matmul(p[0]).tanh());
    /// let tape = Tape::new();
    /// let y = seq.forward(&store.bind(&tape), tape.constant(Tensor::from_vec(vec![0.5], [1, 1])));
    /// assert!((y.item() - 1f64.tanh()).abs() < 1e-15);
    /// ```
    pub fn push_fn<F>(&mut self, params: Vec<ParamId>, f: F) -> &mut Self
    where
        F: for<'t> Fn(Var<'t, T>, &[Var<'t, T>]) -> Var<'t, T> + Send + Sync + 'static,
    {
        self.push(FnStage { params, f })
    }

    /// The number of stages.
    pub fn len(&self) -> usize {
        self.stages.len()
    }

    /// True when there are no stages.
    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }

    /// Runs every stage, recording normally (every intermediate value is kept).
    pub fn forward<'t>(&self, p: &Params<'t, T>, x: Var<'t, T>) -> Var<'t, T> {
        self.forward_planned(p, x, &CheckpointPlan::none(self.len()))
    }

    /// Runs the stages as `plan` groups them: each checkpointed segment is one
    /// [`Tape::checkpoint`] node, the others are recorded normally. Panics when the plan was made
    /// for another number of stages.
    #[track_caller]
    pub fn forward_planned<'t>(&self, p: &Params<'t, T>, x: Var<'t, T>, plan: &CheckpointPlan) -> Var<'t, T> {
        assert_eq!(
            plan.stages(),
            self.len(),
            "tapegrad: a checkpoint plan for {} stages used with a model of {} stages",
            plan.stages(),
            self.len()
        );
        let loc = std::panic::Location::caller();
        let tape = x.tape();
        let mut h = x;
        for seg in plan.segments() {
            let stages = &self.stages[seg.start..seg.end];
            if !seg.checkpointed {
                for s in stages {
                    let ps: Vec<Var<'t, T>> = s.params().iter().map(|&id| p[id]).collect();
                    h = s.forward(h, &ps);
                }
                continue;
            }
            // The segment's inputs: the running value, then each parameter once.
            let mut ids: Vec<ParamId> = Vec::new();
            let wiring: Vec<(Arc<dyn Stage<T>>, Vec<usize>)> = stages
                .iter()
                .map(|s| {
                    let pos = s
                        .params()
                        .iter()
                        .map(|id| {
                            1 + ids.iter().position(|k| k == id).unwrap_or_else(|| {
                                ids.push(*id);
                                ids.len() - 1
                            })
                        })
                        .collect();
                    (Arc::clone(s), pos)
                })
                .collect();
            let mut inputs = vec![h];
            inputs.extend(ids.iter().map(|&id| p[id]));
            h = tape
                .checkpoint_at(
                    &inputs,
                    move |v| {
                        let mut h = v[0];
                        for (s, pos) in &wiring {
                            let ps: Vec<Var<'_, T>> = pos.iter().map(|&i| v[i]).collect();
                            h = s.forward(h, &ps);
                        }
                        h
                    },
                    loc,
                )
                .unwrap_or_else(|e| crate::core::error::fail(e));
        }
        h
    }

    /// Measures what each stage keeps for backward on the input `x`, running one stage at a time on
    /// a scratch tape (so the probe itself keeps at most one stage's values): one forward pass.
    pub fn measure(&self, store: &ParamStore<T>, x: &Tensor<T>) -> Vec<StageCost> {
        let mut h = x.clone();
        self.stages
            .iter()
            .map(|s| {
                let tape = Tape::<T>::new();
                let ps: Vec<Var<'_, T>> = s.params().iter().map(|&id| tape.var(store.get(id).clone())).collect();
                let out = s.forward(tape.var(h.clone()), &ps);
                h = out.value().made();
                StageCost {
                    kept_bytes: tape.retained_bytes(),
                    output_bytes: h.heap_buffer().map_or(0, |(_, b)| b),
                }
            })
            .collect()
    }
}

impl Mlp {
    /// The layers as a [`Sequential`] model: one stage per layer (its linear map and, except for
    /// the last, its activation), reading `{name}.{k}.weight` and `{name}.{k}.bias`. Its
    /// [`forward`](Sequential::forward) is [`Mlp::forward`].
    pub fn sequential<T: Float>(&self) -> Sequential<T> {
        let n = self.layers.len();
        let mut seq = Sequential::new();
        for (k, &linear) in self.layers.iter().enumerate() {
            seq.push(MlpLayer {
                linear,
                activation: (k + 1 < n).then_some(self.activation),
            });
        }
        seq
    }

    /// [`Mlp::forward`] with the layers grouped into checkpointed segments by `plan` (made for
    /// `self.layers.len()` stages, e.g. with [`CheckpointPlan::for_budget`] from
    /// [`Sequential::measure`] of [`Mlp::sequential`]).
    #[track_caller]
    pub fn forward_checkpointed<'t, T: Float>(
        &self,
        p: &Params<'t, T>,
        x: Var<'t, T>,
        plan: &CheckpointPlan,
    ) -> Var<'t, T> {
        self.sequential().forward_planned(p, x, plan)
    }
}

/// A run of consecutive stages `start..end`, checkpointed or recorded normally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlannedSegment {
    /// The first stage.
    pub start: usize,
    /// One past the last stage.
    pub end: usize,
    /// True when the segment is one checkpoint node (its values recomputed by the backward pass).
    pub checkpointed: bool,
}

/// How a [`Sequential`] model's stages are grouped into checkpointed segments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointPlan {
    segments: Vec<PlannedSegment>,
    stages: usize,
}

impl fmt::Display for CheckpointPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ck = self.segments.iter().filter(|s| s.checkpointed).count();
        write!(
            f,
            "{} stages in {} segments ({ck} checkpointed):",
            self.stages,
            self.segments.len()
        )?;
        for s in &self.segments {
            write!(
                f,
                " {}{}..{}",
                if s.checkpointed { "ckpt " } else { "" },
                s.start,
                s.end
            )?;
        }
        Ok(())
    }
}

impl CheckpointPlan {
    /// No checkpointing: one segment recorded normally.
    pub fn none(stages: usize) -> Self {
        CheckpointPlan {
            segments: if stages == 0 {
                vec![]
            } else {
                vec![PlannedSegment {
                    start: 0,
                    end: stages,
                    checkpointed: false,
                }]
            },
            stages,
        }
    }

    /// Every stage in checkpointed segments of `k` stages (the last may be shorter).
    pub fn every(stages: usize, k: usize) -> Self {
        let k = k.max(1);
        CheckpointPlan {
            segments: (0..stages)
                .step_by(k)
                .map(|start| PlannedSegment {
                    start,
                    end: (start + k).min(stages),
                    checkpointed: true,
                })
                .collect(),
            stages,
        }
    }

    /// Checkpointed segments of `⌈√n⌉` stages: the classic choice for `n` equal stages.
    pub fn sqrt(stages: usize) -> Self {
        Self::every(stages, (stages as f64).sqrt().ceil() as usize)
    }

    /// The segments, in order.
    pub fn segments(&self) -> &[PlannedSegment] {
        &self.segments
    }

    /// The number of stages the plan covers.
    pub fn stages(&self) -> usize {
        self.stages
    }

    /// How many stages a backward pass recomputes (those in checkpointed segments).
    pub fn recomputed_stages(&self) -> usize {
        self.segments
            .iter()
            .filter(|s| s.checkpointed)
            .map(|s| s.end - s.start)
            .sum()
    }

    /// The most bytes this plan keeps for backward, by the model of the [module docs](self): what
    /// stays on the tape plus the largest checkpointed segment while it is replayed.
    pub fn peak_bytes(&self, costs: &[StageCost]) -> usize {
        let kept = |s: &PlannedSegment| costs[s.start..s.end].iter().map(|c| c.kept_bytes).sum::<usize>();
        let on_tape: usize = self
            .segments
            .iter()
            .map(|s| {
                if s.checkpointed {
                    costs[s.end - 1].output_bytes
                } else {
                    kept(s)
                }
            })
            .sum();
        let replay = self
            .segments
            .iter()
            .filter(|s| s.checkpointed)
            .map(kept)
            .max()
            .unwrap_or(0);
        on_tape + replay
    }

    /// The plan that recomputes the fewest stages while keeping at most `budget` bytes for
    /// backward (by [`peak_bytes`](Self::peak_bytes)): no checkpointing when everything fits;
    /// otherwise, among segmentations into equal runs of `k` stages (every `k`), each with as many
    /// segments left normal as the budget allows (from the last, which the backward pass reaches
    /// first), the one that recomputes least (and then keeps least). An error of kind
    /// [`ErrorKind::Invalid`] when no plan fits, saying how many bytes the best one needs.
    pub fn for_budget(costs: &[StageCost], budget: usize) -> Result<Self> {
        let n = costs.len();
        let none = Self::none(n);
        if none.peak_bytes(costs) <= budget {
            return Ok(none);
        }
        let mut best: Option<(usize, usize, Self)> = None;
        let mut smallest = usize::MAX;
        for k in 1..=n {
            let mut plan = Self::every(n, k);
            let peak = plan.peak_bytes(costs);
            smallest = smallest.min(peak);
            if peak > budget {
                continue;
            }
            for i in (0..plan.segments.len()).rev() {
                plan.segments[i].checkpointed = false;
                if plan.peak_bytes(costs) > budget {
                    plan.segments[i].checkpointed = true;
                }
            }
            let plan = plan.merged();
            let key = (plan.recomputed_stages(), plan.peak_bytes(costs));
            if best.as_ref().is_none_or(|(r, p, _)| key < (*r, *p)) {
                best = Some((key.0, key.1, plan));
            }
        }
        best.map(|(_, _, p)| p).ok_or_else(|| {
            Error::new(
                ErrorKind::Invalid,
                "checkpoint plan",
                format!(
                    "no plan keeps at most {budget} bytes for backward: the best keeps {smallest} bytes \
                     (recording everything keeps {})",
                    none.peak_bytes(costs)
                ),
            )
        })
    }

    /// Among segmentations into equal runs of `k` stages, all checkpointed, the one that keeps
    /// the least for backward (by [`peak_bytes`](Self::peak_bytes)): the floor that
    /// [`for_budget`](Self::for_budget) can reach.
    pub fn least_memory(costs: &[StageCost]) -> Self {
        let n = costs.len();
        (1..=n)
            .map(|k| Self::every(n, k))
            .min_by_key(|p| p.peak_bytes(costs))
            .unwrap_or_else(|| Self::none(n))
    }

    /// Joins consecutive segments recorded normally (the same thing, one segment).
    fn merged(mut self) -> Self {
        let mut out: Vec<PlannedSegment> = Vec::with_capacity(self.segments.len());
        for s in self.segments.drain(..) {
            match out.last_mut() {
                Some(last) if !last.checkpointed && !s.checkpointed => last.end = s.end,
                _ => out.push(s),
            }
        }
        self.segments = out;
        self
    }
}
