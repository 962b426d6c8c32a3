//! Gradient checkpointing: a segment of the computation whose intermediate values are not kept
//! for the backward pass, but recomputed by it.
//!
//! [`Tape::checkpoint`]`(&inputs, |v| …)` runs the segment on a private inner tape, keeps only its
//! output, and drops the inner tape with every intermediate value. On the outer tape the segment
//! is **one node**, whose op holds the segment's closure. When a backward pass reaches that node,
//! its rule replays the segment on a fresh inner tape from the node's recorded inputs, runs a
//! backward there with the node's cotangent, and returns the gradients of the inputs: memory for
//! time, one extra forward of the segment per backward.
//!
//! ```
//! use tapegrad::{Tape, Tensor};
//! let tape = Tape::<f64>::new();
//! let x = tape.var(Tensor::rand_normal([4, 8], 0.0, 1.0, 1));
//! let w = tape.var(Tensor::rand_normal([8, 8], 0.0, 0.3, 2));
//! // Two layers whose four intermediate values are not kept: only `h` is.
//! let h = tape.checkpoint(&[x, w], |v| v[0].matmul(v[1]).tanh().matmul(v[1]).tanh());
//! let loss = (h * h).sum();
//! let g = loss.backward();
//!
//! // The same gradients as without the checkpoint.
//! let plain = Tape::<f64>::new();
//! let (x2, w2) = (plain.var(x.value()), plain.var(w.value()));
//! let h2 = x2.matmul(w2).tanh().matmul(w2).tanh();
//! let g2 = (h2 * h2).sum().backward();
//! assert!(g[w].max_abs_diff(&g2[w2]) < 1e-12);
//! assert!(tape.retained_bytes() < plain.retained_bytes());
//! ```
//!
//! # What the closure may capture
//!
//! The closure must be `Send + Sync + 'static`: the tape keeps it (inside the node's op) until it
//! is dropped, and ops may move between threads. So it cannot capture a [`Var`] — every value
//! that should receive a gradient must be one of `inputs` (the borrow checker enforces this: a
//! `Var` borrows its tape). It may capture owned data: shapes, layer descriptions, seeds, constant
//! [`Tensor`]s (which it records on the inner tape with `v[0].tape().constant(..)`).
//!
//! # Determinism
//!
//! The replay must compute what the forward computed. Randomness inside a segment (a dropout
//! mask) must therefore come from a seed the closure captures, not from state that changes
//! between calls. The rule checks it: a replay whose output differs from the recorded output is an
//! error saying so, not a silently wrong gradient.
//!
//! # With `grad_graph`
//!
//! A recorded backward ([`Tape::grad_graph`]) through a checkpoint works and is differentiable
//! again: the rule replays the segment *on the outer tape* and records the segment's backward
//! there, so the intermediate values live on the outer tape from then on (a differentiable
//! gradient needs them). Memory is saved for first-order backward passes only.
//!
//! # Scope
//!
//! Observers of the outer tape (anomaly mode, the profiler) see the checkpoint as one node: its
//! output is checked, not the values inside the segment. `no_grad` and `detach` inside the
//! segment work as anywhere (they act on the inner tape).

use crate::autodiff::rule::{Cotangents, Op, Value, VjpCtx};
use crate::autodiff::tape::{OpRef, Tape, Var};
use crate::core::error::{Error, ErrorKind, Result, attempt, fail};
use crate::core::float::Float;
use crate::core::shape::fmt_shape;
use crate::tensor::Tensor;
use std::panic::Location;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A segment's computation as a checkpoint holds it: the closure, run on any tape.
pub(crate) trait SegmentFn<T: Float>: Send + Sync {
    fn run<'s>(&self, inputs: &[Var<'s, T>]) -> Var<'s, T>;
}

impl<T: Float, F> SegmentFn<T> for F
where
    F: for<'s> Fn(&[Var<'s, T>]) -> Var<'s, T> + Send + Sync,
{
    fn run<'s>(&self, inputs: &[Var<'s, T>]) -> Var<'s, T> {
        self(inputs)
    }
}

/// The op of a checkpoint node: the segment, and what its runs measured.
pub(crate) struct CheckpointOp<T: Float> {
    seg: Arc<dyn SegmentFn<T>>,
    location: &'static Location<'static>,
    /// Nodes the segment recorded (inputs included) in its last run.
    nodes: AtomicUsize,
    /// The largest [`Tape::retained_bytes`] of an inner tape, forward or replay.
    inner_bytes: AtomicUsize,
}

impl<T: Float> CheckpointOp<T> {
    /// Runs the segment on `tape` with `inputs`, checking that its output belongs there and
    /// giving errors raised inside it the checkpoint's context.
    fn run_on<'s>(&self, tape: &'s Tape<T>, inputs: &[Var<'s, T>]) -> Result<Var<'s, T>> {
        let out = attempt(|| self.seg.run(inputs)).map_err(|e| self.inside(e))?;
        if out.tape().id() != tape.id() {
            return Err(Error::new(
                ErrorKind::ForeignVar,
                "checkpoint",
                "the segment returned a Var of another tape; it must return a value computed from its inputs",
            )
            .at(self.location));
        }
        Ok(out)
    }

    fn inside(&self, e: Error) -> Error {
        let l = self.location;
        let mut err = Error::new(
            e.kind(),
            e.op().to_string(),
            format!(
                "{} (inside the segment checkpointed at {}:{})",
                e.message(),
                l.file(),
                l.line()
            ),
        );
        if let Some(at) = e.location() {
            err = err.at(at);
        }
        err.at(l)
    }

    /// Records the segment on a fresh inner tape from `inputs` (all as variables) and hands the
    /// inner tape and its output to `k`.
    fn on_inner_tape<R>(&self, inputs: &[Tensor<T>], k: impl FnOnce(&Tape<T>, Var<'_, T>) -> Result<R>) -> Result<R> {
        let tape = Tape::<T>::with_capacity(self.nodes.load(Ordering::Relaxed));
        let vars: Vec<Var<'_, T>> = inputs.iter().map(|x| tape.var(x.clone())).collect();
        let out = self.run_on(&tape, &vars)?;
        self.nodes.store(tape.len(), Ordering::Relaxed);
        self.inner_bytes.fetch_max(tape.retained_bytes(), Ordering::Relaxed);
        k(&tape, out)
    }

    /// Checks that a replay reproduced the recorded output (to a few ulps: a replay of the same
    /// code gives the same bits, and a differing mask differs by far more).
    fn check_replay(&self, replayed: &Tensor<T>, recorded: &Tensor<T>) -> Result<()> {
        let close = |a: T, b: T| {
            let (a, b) = (a.to_f64(), b.to_f64());
            a == b
                || (a.is_nan() && b.is_nan())
                || (a - b).abs() <= 64.0 * T::EPSILON.to_f64() * a.abs().max(b.abs()).max(1.0)
        };
        let same_shape = replayed.shape() == recorded.shape();
        let bad = if same_shape {
            replayed
                .data()
                .iter()
                .zip(recorded.data())
                .position(|(&a, &b)| !close(a, b))
        } else {
            Some(0)
        };
        let Some(e) = bad else { return Ok(()) };
        let what = if same_shape {
            format!(
                "element {e} is {} on replay but was {} in the forward",
                replayed.data()[e],
                recorded.data()[e]
            )
        } else {
            format!(
                "the output has shape {} on replay but {} in the forward",
                fmt_shape(replayed.shape()),
                fmt_shape(recorded.shape())
            )
        };
        Err(Error::new(
            ErrorKind::Invalid,
            "checkpoint",
            format!(
                "replaying the checkpointed segment for the backward pass did not reproduce its forward ({what}): \
                 the segment is not deterministic. Draw random masks from a seed the closure captures, not from \
                 state that changes between calls"
            ),
        )
        .at(self.location))
    }

    /// The rule under a recorded backward: the segment replayed on the outer tape and its backward
    /// recorded there, so the gradients are differentiable again.
    pub(crate) fn vjp_recorded<'t>(
        &self,
        cx: &VjpCtx<'_, Var<'t, T>>,
        g: &Var<'t, T>,
    ) -> Result<Cotangents<Var<'t, T>>> {
        let tape = cx.output().tape();
        let inputs: Vec<Var<'t, T>> = (0..cx.arity()).map(|i| *cx.input(i)).collect();
        let out = self.run_on(tape, &inputs)?;
        self.check_replay(&out.value(), &cx.output().value())?;
        let wrt: Vec<Var<'t, T>> = (0..inputs.len())
            .filter(|&i| cx.needs_grad(i))
            .map(|i| inputs[i])
            .collect();
        let mut gs = tape
            .grad_graph_impl(&[out], &[*g], &wrt, true, self.location)?
            .into_iter();
        Ok((0..inputs.len())
            .map(|i| if cx.needs_grad(i) { gs.next() } else { None })
            .collect())
    }

    /// The number of nodes the segment recorded in its last run (its inputs included).
    pub(crate) fn segment_nodes(&self) -> usize {
        self.nodes.load(Ordering::Relaxed)
    }

    /// The largest number of bytes an inner tape of this segment kept (forward or replay).
    pub(crate) fn inner_bytes(&self) -> usize {
        self.inner_bytes.load(Ordering::Relaxed)
    }

    /// Records the segment on `tape` with `inputs` (the replay the checks look inside).
    pub(crate) fn replay_on<'s>(&self, tape: &'s Tape<T>, inputs: &[Var<'s, T>]) -> Result<Var<'s, T>> {
        self.run_on(tape, inputs)
    }

    /// Where the checkpoint was made.
    pub(crate) fn location(&self) -> &'static Location<'static> {
        self.location
    }
}

impl<T: Float> Op<T> for CheckpointOp<T> {
    fn name(&self) -> &'static str {
        "checkpoint"
    }
    fn params(&self) -> String {
        let l = self.location;
        format!(
            "segment of {} nodes, at {}:{}",
            self.segment_nodes(),
            l.file(),
            l.line()
        )
    }
    /// Runs the segment on a private tape and keeps only its output.
    fn forward(&self, inputs: &[&Tensor<T>]) -> Result<Tensor<T>> {
        let inputs: Vec<Tensor<T>> = inputs.iter().map(|&x| x.clone()).collect();
        // Made here: an unmade output would keep the segment's own values alive past its tape.
        self.on_inner_tape(&inputs, |_, out| Ok(out.peek().made()))
    }
    /// Replays the segment from the inputs, checks the replay, and runs its backward with `g`.
    /// (A recorded backward does not come here: the sweep runs [`CheckpointOp::vjp_recorded`],
    /// which records the replay; on `Var`s this is a first-order fallback that fails loudly if
    /// differentiated again.)
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
        let inputs: Vec<Tensor<T>> = (0..cx.arity()).map(|i| cx.input(i).value()).collect();
        let recorded = cx.output().value();
        let gv = g.value();
        let grads = self.on_inner_tape(&inputs, |tape, out| {
            self.check_replay(&out.value(), &recorded)?;
            let wrt: Vec<Var<'_, T>> = (0..inputs.len())
                .filter(|&i| cx.needs_grad(i))
                .map(|index| Var { tape, index })
                .collect();
            tape.grad_impl(&[out], &[gv], &wrt, true, self.location)
        })?;
        let mut deps: Vec<&V> = (0..cx.arity()).map(|i| cx.input(i)).collect();
        deps.push(cx.output());
        deps.push(g);
        let mut grads = grads.into_iter();
        Ok((0..inputs.len())
            .map(|i| {
                if cx.needs_grad(i) {
                    grads.next().map(|t| V::first_order_only("checkpoint", i, t, &deps))
                } else {
                    None
                }
            })
            .collect())
    }
}

/// How many checkpoints a tape holds and what their segments keep while they run: see
/// [`Tape::checkpoint_stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckpointStats {
    /// Checkpoint nodes on the tape.
    pub segments: usize,
    /// Nodes recorded inside their segments (in their last runs), in all.
    pub segment_nodes: usize,
    /// The most bytes one segment's inner tape kept, in its forward or in a replay by a backward
    /// pass ([`Tape::retained_bytes`] of the inner tape). A first-order backward holds one
    /// replayed segment at a time, so the peak it keeps is the outer tape's
    /// [`retained_bytes`](Tape::retained_bytes) plus this.
    pub largest_segment_bytes: usize,
}

impl<T: Float> Tape<T> {
    /// Records `f(inputs)` as a checkpointed segment: `f` runs on a private tape, only its output is
    /// kept, and a backward pass replays `f` to get the values its rules need (see
    /// [`crate::autodiff::checkpoint`]). Panics on error (an error inside `f` carries the
    /// checkpoint's line too); see [`try_checkpoint`](Self::try_checkpoint).
    ///
    /// `f` receives the inputs as variables of the private tape, in order, and must return a value
    /// computed from them. It must be deterministic (capture seeds, not changing state) and
    /// `Send + Sync + 'static`: it cannot capture a `Var`, so everything that needs a gradient is
    /// passed as an input.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::from_vec(vec![0.5, -1.0], [2]));
    /// let y = tape.checkpoint(&[x], |v| (v[0] * v[0]).exp());
    /// let g = y.sum().backward();
    /// let expect: Vec<f64> = [0.5f64, -1.0].iter().map(|x| 2.0 * x * (x * x).exp()).collect();
    /// assert!((g[x].to_vec()[0] - expect[0]).abs() < 1e-15);
    /// assert_eq!(y.op_name(), "checkpoint");
    /// ```
    #[track_caller]
    pub fn checkpoint<'t, F>(&'t self, inputs: &[Var<'t, T>], f: F) -> Var<'t, T>
    where
        F: for<'s> Fn(&[Var<'s, T>]) -> Var<'s, T> + Send + Sync + 'static,
    {
        self.checkpoint_at(inputs, f, Location::caller())
            .unwrap_or_else(|e| fail(e))
    }

    /// Like [`checkpoint`](Self::checkpoint), returning an error raised inside the segment instead
    /// of panicking. On error the outer tape is unchanged.
    #[track_caller]
    pub fn try_checkpoint<'t, F>(&'t self, inputs: &[Var<'t, T>], f: F) -> Result<Var<'t, T>>
    where
        F: for<'s> Fn(&[Var<'s, T>]) -> Var<'s, T> + Send + Sync + 'static,
    {
        self.checkpoint_at(inputs, f, Location::caller())
    }

    pub(crate) fn checkpoint_at<'t, F>(
        &'t self,
        inputs: &[Var<'t, T>],
        f: F,
        location: &'static Location<'static>,
    ) -> Result<Var<'t, T>>
    where
        F: for<'s> Fn(&[Var<'s, T>]) -> Var<'s, T> + Send + Sync + 'static,
    {
        let op = CheckpointOp {
            seg: Arc::new(f),
            location,
            nodes: AtomicUsize::new(0),
            inner_bytes: AtomicUsize::new(0),
        };
        self.record(OpRef::new(op), inputs, location)
    }

    /// The checkpoints on this tape and the most bytes one of their segments kept while it ran.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f32>::new();
    /// let x = tape.var(Tensor::ones([128, 128]));
    /// let y = tape.checkpoint(&[x], |v| v[0].tanh().exp().tanh());  // 3 values of 64 KiB inside
    /// let s = tape.checkpoint_stats();
    /// assert_eq!((s.segments, s.largest_segment_bytes), (1, 3 * 128 * 128 * 4));
    /// assert_eq!(tape.retained_bytes(), 128 * 128 * 4);               // only y is kept
    /// # let _ = y;
    /// ```
    pub fn checkpoint_stats(&self) -> CheckpointStats {
        let nodes = self.nodes.borrow();
        let mut s = CheckpointStats::default();
        for n in nodes.iter() {
            if let Some(ck) =
                n.op.as_ref()
                    .and_then(|o| o.get().as_any().downcast_ref::<CheckpointOp<T>>())
            {
                s.segments += 1;
                s.segment_nodes += ck.segment_nodes();
                s.largest_segment_bytes = s.largest_segment_bytes.max(ck.inner_bytes());
            }
        }
        s
    }
}
