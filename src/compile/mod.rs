//! Trace once, replay fast: a compiled training step.
//!
//! [`Compiled::trace`] runs your function once on a tape, records its backward from the ops' one
//! rule ([`Op::vjp`](crate::Op::vjp), interpreted on `Var`s as in
//! [`Tape::grad_graph`](crate::Tape::grad_graph)), lowers forward and backward together to one
//! flat program, **fuses** it, and checks it by running it once on the example inputs.
//! [`Compiled::run`] then replays that program on new inputs of the same shapes: no recording,
//! no graph search, no per-node bookkeeping, every intermediate value dropped right after its last
//! use (its buffer goes back to the pool for the next step to reuse).
//!
//! # Fusion
//!
//! Runs of elementwise ops over one shape ([`Op::elementwise`](crate::Op::elementwise)), the
//! broadcasts between them and the sums and row maxima that consume them become one loop over
//! the elements, tile by tile (4096 elements, or whole rows up to 32 768): each op computes one
//! tile into a small buffer that stays in cache, broadcast inputs are read by strides (never
//! materialised, so `sum`'s gradient costs nothing), and only the values something after the loop
//! reads are written out. A row sum or row maximum is complete at the end of its tile, so the ops
//! after it read it in the same pass: the composed softmax `exp(x − max x) / Σ exp(…)` with its
//! whole backward is **one loop** that reads `x` and writes the gradient — no special case for
//! softmax, the general rule does it (the naive softmax and the composed cross-entropy likewise).
//! Other ops (matmul, the fused library ops, indexing) run as their own steps between loops.
//!
//! The loops split into fixed chunks of tiles across the threads
//! ([`set_num_threads`](crate::set_num_threads)), with the same bits at any thread count, and
//! run with the widest vector instructions the CPU has (AVX-512 or AVX2, picked at run time:
//! the same bits as the default SSE2 code).
//!
//! An elementwise rule written as one expression ([`Pointwise`](crate::autodiff::Pointwise)
//! with a [`RuleKernel`](crate::autodiff::RuleKernel): every table function's, `pointwise!`
//! rules) is recorded as **one** op (`d tanh`, `d gelu_tanh`: shown so in the summary) that runs
//! the first-order rule's own arithmetic — one pass, the eager bits. Other rules record op by
//! op, running the ops' own kernels (the vectorised `exp`/`ln`) where the eager rule may run
//! their scalar forms, and a sum whose rows span tiles adds in another order, so compiled and
//! eager agree to rounding — checked for every registry sample and the random programs (f64 to
//! 1e-12, f32 to 1e-5, normwise), NaN propagating alike.
//!
//! When recording the backward is not possible — a rule that reads values (`max_axis`, `prod`,
//! …) or is first order only — the program runs the backward rule by rule on tensors instead, as
//! the eager sweep does, without fusion; [`Compiled::summary`] says which and why.
//!
//! ```
//! use tapegrad::compile::Compiled;
//! use tapegrad::Tensor;
//!
//! // loss = Σ softmax(x·w) ⊙ t, gradients for w; x and t are data.
//! let w = Tensor::from_vec(vec![0.5, -0.25, 1.0, 0.75], [2, 2]);
//! let x = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], [2, 2]);
//! let t = Tensor::from_vec(vec![1.0, 0.0, 0.0, 1.0], [2, 2]);
//! let mut step = Compiled::trace(&[&w], &[&x, &t], |_tape, p, d| {
//!     (d[0].matmul(p[0]).softmax_composed(-1) * d[1]).sum()
//! })
//! .unwrap();
//!
//! let out = step.run(&[&w], &[&x, &t]).unwrap();
//!
//! // The same step, eagerly:
//! let tape = tapegrad::Tape::<f64>::new();
//! let (wv, xv, tv) = (tape.var(w.clone()), tape.constant(x.clone()), tape.constant(t.clone()));
//! let loss = (xv.matmul(wv).softmax_composed(-1) * tv).sum();
//! assert!((out.loss.item() - loss.item()).abs() < 1e-12);
//! let g = loss.backward();
//! for (a, b) in out.grads[0].data().iter().zip(g[wv].data()) {
//!     assert!((a - b).abs() < 1e-12);
//! }
//! ```
//!
//! # What is fixed when you trace
//!
//! The program is the graph your function built for the example inputs. So:
//!
//! * **Shapes are fixed.** Inputs of other shapes are refused with an error naming the input and
//!   both shapes; trace again for a new shape, or let a [`Jit`] do it: it keeps one compiled
//!   program per set of input shapes (a small cache, least recently used evicted) and traces on
//!   a miss — a last, shorter batch costs one more trace, not an error.
//! * **Everything that is not an input is fixed**: constants you make inside the function
//!   (`tape.constant(..)`), class indices and targets given to ops (`cross_entropy`,
//!   `embedding`, `gather`), dropout seeds. Pass what changes from step to step as a data input
//!   (a float tensor), or trace again.
//! * **The function may not read values.** `Var::value`, `Var::item`, `argmax`/`argmin`, or a
//!   recorded gradient through a first-order-only rule inside the traced function would bake
//!   today's numbers into the program; the trace is refused with the line that read. Read the
//!   step's outputs instead. (`detach()` is fine: while tracing it records an identity op through
//!   which no gradient flows, so a detached maximum follows new inputs.)
//!
//! # Errors, NaN and anomaly checks
//!
//! A replayed op that fails reports the op, its shapes and the line of your function that
//! recorded it, as the eager op would. NaN propagates through a compiled step as it does through
//! the eager one. With [`Compiled::set_anomaly`] every value and gradient is checked as it is
//! made, and the first step that turns finite values into a non-finite one is reported (op,
//! shapes, line) — the compiled form of [anomaly mode](crate::debug::anomaly).
//!
//! # Seeing what it made
//!
//! [`Compiled::summary`] lists the program step by step (op, shape, the line that recorded it, what
//! each step frees; a fused loop lists the recorded ops it covers, `*` marking those it writes
//! out, and the bytes it moves); [`Compiled::to_dot`] draws it for Graphviz;
//! [`Compiled::profile`] times each step (a fused loop as one).

mod cache;
mod fuse;
mod plan;

pub use cache::Jit;

use crate::core::error::{Error, ErrorKind, Result, attempt};
use crate::core::float::Float;
use crate::core::shape::fmt_shape;
use crate::debug::graph::fmt_bytes;
use crate::tensor::Tensor;
use crate::{Tape, Var, VjpCtx};
use plan::{Plan, Slot, Source, Step};
use smallvec::SmallVec;
use std::fmt::Write as _;
use std::panic::Location;
use std::time::{Duration, Instant};

/// A training step traced once and replayed on new inputs of the same shapes (see the
/// [module docs](self)).
pub struct Compiled<T: Float> {
    plan: Plan<T>,
    /// The value slots, reused from run to run.
    slots: Vec<Option<Tensor<T>>>,
    param_shapes: Vec<Vec<usize>>,
    data_shapes: Vec<Vec<usize>>,
    anomaly: bool,
    /// Bytes of intermediate values alive when the backward started, in the last run.
    kept_bytes: usize,
    traced_at: &'static Location<'static>,
}

impl<T: Float> std::fmt::Debug for Compiled<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiled")
            .field("steps", &self.plan.steps.len())
            .field("params", &self.param_shapes)
            .field("data", &self.data_shapes)
            .field("traced_at", &format_args!("{}", self.traced_at))
            .finish()
    }
}

/// What a compiled step returns: the loss and the gradient of the loss for each parameter.
#[derive(Clone, Debug)]
pub struct StepOutput<T: Float> {
    /// The loss (a one-element tensor of the loss's shape).
    pub loss: Tensor<T>,
    /// `∂loss/∂param` for each parameter, in the order given (zeros where the loss does not
    /// depend on a parameter).
    pub grads: Vec<Tensor<T>>,
}

/// The time one step of a compiled program took in [`Compiled::profile`].
#[derive(Clone, Debug)]
pub struct StepTime {
    /// What the step did: `forward exp`, `backward of matmul (inputs 0, 1)`, `accumulate`.
    pub what: String,
    /// The shape of the value it made.
    pub shape: Vec<usize>,
    /// The line of the traced function that recorded the op.
    pub location: &'static Location<'static>,
    /// Wall time of the step.
    pub time: Duration,
}

impl<T: Float> Compiled<T> {
    /// Traces `f` on the example inputs and compiles it. `f` receives the tape, the parameters
    /// (as [`Tape::var`]s: the step returns their gradients) and the data (as constants), and
    /// returns the loss, which must have one element.
    ///
    /// The program is run once on the examples before it is returned, so a rule that fails or a
    /// gradient of the wrong shape is reported here, not in the first [`run`](Self::run).
    ///
    /// Errors: an op of `f` that fails (its error, as eagerly), a loss with more than one element
    /// ([`ErrorKind::NonScalar`]), a loss from another tape ([`ErrorKind::ForeignVar`]), and a
    /// function that reads a value while tracing ([`ErrorKind::Invalid`], naming the line).
    #[track_caller]
    pub fn trace<F>(params: &[&Tensor<T>], data: &[&Tensor<T>], f: F) -> Result<Self>
    where
        F: for<'t> FnOnce(&'t Tape<T>, &[Var<'t, T>], &[Var<'t, T>]) -> Var<'t, T>,
    {
        Self::trace_at(params, data, f, Location::caller())
    }

    /// [`trace`](Self::trace), with `here` as the line the step reports as traced at.
    pub(crate) fn trace_at<F>(
        params: &[&Tensor<T>],
        data: &[&Tensor<T>],
        f: F,
        here: &'static Location<'static>,
    ) -> Result<Self>
    where
        F: for<'t> FnOnce(&'t Tape<T>, &[Var<'t, T>], &[Var<'t, T>]) -> Var<'t, T>,
    {
        let tape = Tape::<T>::new();
        let guard = crate::autodiff::trace::TraceGuard::new();
        let pv: Vec<Var<'_, T>> = params.iter().map(|&p| tape.var(p.clone())).collect();
        let dv: Vec<Var<'_, T>> = data.iter().map(|&d| tape.constant(d.clone())).collect();
        let loss = attempt(|| f(&tape, &pv, &dv))?;
        if let Some(at) = guard.first_read() {
            return Err(Error::new(
                ErrorKind::Invalid,
                "compile",
                "the traced function read a value (Var::value, Var::item, argmax/argmin, or a recorded \
                 gradient through a rule that reads values); a compiled step replays the recorded ops \
                 on new inputs, so the value read while tracing would be stale. Read the step's outputs \
                 instead, or pass what you computed from values as a data input",
            )
            .at(at));
        }
        tape.check_own(&loss, "compile").map_err(|e| e.at(here))?;
        if loss.numel() != 1 {
            return Err(Error::new(
                ErrorKind::NonScalar,
                "compile",
                format!(
                    "the traced function must return a loss with one element, got shape {}",
                    fmt_shape(&loss.shape())
                ),
            )
            .at(loss.location()));
        }
        let pi: Vec<usize> = pv.iter().map(|v| v.index()).collect();
        let di: Vec<usize> = dv.iter().map(|v| v.index()).collect();
        // The backward, recorded from the same rules as primitive ops when it can be (so the
        // fuser sees forward and backward as one program); else planned rule by rule.
        let seed = tape.constant(Tensor::ones(loss.shape()));
        let recorded = {
            let _whole = crate::autodiff::trace::WholeRules::on();
            tape.grad_graph_impl(&[loss], &[seed], &pv, true, here)
        };
        let read = guard.first_read();
        drop(guard);
        let rules = |why: String| Plan::lower(&tape, loss.index(), &pi, &di, why).map_err(|e| e.at(here));
        let plan = match (recorded, read) {
            (Ok(gs), None) => {
                let gi: Vec<usize> = gs.iter().map(|g| g.index()).collect();
                match Plan::lower_recorded(&tape, loss.index(), &gi, &pi, &di) {
                    Ok(p) => p,
                    Err(e) => rules(e.message().to_string())?,
                }
            }
            (Ok(_), Some(at)) => rules(format!("a rule of the backward reads values (at {at})"))?,
            (Err(e), _) => rules(format!("the backward could not be recorded: {}", e.message()))?,
        };
        drop(tape);
        let mut step = Compiled {
            slots: (0..plan.n_slots()).map(|_| None).collect(),
            plan,
            param_shapes: params.iter().map(|p| p.shape().to_vec()).collect(),
            data_shapes: data.iter().map(|d| d.shape().to_vec()).collect(),
            anomaly: false,
            kept_bytes: 0,
            traced_at: here,
        };
        step.run(params, data)?;
        Ok(step)
    }

    /// Runs the compiled step on new inputs (the same number and shapes as when traced): the
    /// loss and the parameters' gradients.
    pub fn run(&mut self, params: &[&Tensor<T>], data: &[&Tensor<T>]) -> Result<StepOutput<T>> {
        self.check_inputs(params, data)?;
        let r = attempt(|| self.execute(params, data, None)).and_then(|r| r);
        if r.is_err() {
            self.slots.iter_mut().for_each(|s| *s = None);
        }
        r
    }

    /// Like [`run`](Self::run), also timing each step of the program (for finding the slow one).
    pub fn profile(&mut self, params: &[&Tensor<T>], data: &[&Tensor<T>]) -> Result<(StepOutput<T>, Vec<StepTime>)> {
        self.check_inputs(params, data)?;
        let mut times = Vec::with_capacity(self.plan.steps.len());
        let r = attempt(|| self.execute(params, data, Some(&mut times))).and_then(|r| r);
        if r.is_err() {
            self.slots.iter_mut().for_each(|s| *s = None);
        }
        Ok((r?, times))
    }

    /// Checks every value and gradient as it is made (off by default): the first step that makes
    /// a non-finite value from finite ones fails with [`ErrorKind::NonFinite`], naming the op, the
    /// shapes and the line that recorded it; a non-finite input is reported as such.
    pub fn set_anomaly(&mut self, on: bool) {
        self.anomaly = on;
    }

    /// The number of steps of the program (forward ops, rules and accumulations).
    pub fn len(&self) -> usize {
        self.plan.steps.len()
    }

    /// The number of fused loops in the program (steps that each run several recorded ops as
    /// one loop over the elements; see [`summary`](Self::summary)).
    pub fn fused_loops(&self) -> usize {
        self.plan
            .steps
            .iter()
            .filter(|s| matches!(s, Step::Fused { .. }))
            .count()
    }

    /// True when the program has no step (a loss that is an input).
    pub fn is_empty(&self) -> bool {
        self.plan.steps.is_empty()
    }

    /// Bytes of forward values still alive once the loss was computed, in the last run: what the
    /// step keeps for its backward (inputs and constants not counted; values a fused loop
    /// recomputes or never writes out cost nothing here).
    pub fn kept_for_backward_bytes(&self) -> usize {
        self.kept_bytes
    }

    /// The program, one line per step: what it runs, the shape it makes, the line of the traced
    /// function that recorded the op, and the slots it frees.
    pub fn summary(&self) -> String {
        let p = &self.plan;
        let fused = self.fused_loops();
        let mode = match &p.mode {
            plan::Mode::Recorded => "backward recorded from the rules and fused with the forward".to_string(),
            plan::Mode::Rules(why) => format!("backward rule by rule, not fused ({why})"),
        };
        let mut s = format!(
            "compiled step (traced at {}): {} steps ({fused} fused loops), {mode}\n",
            self.traced_at,
            p.steps.len(),
        );
        for (i, step) in p.steps.iter().enumerate() {
            let (what, shape, loc) = self.describe(step);
            let _ = write!(s, "  #{i:<4} {what:<40} {:<16} {loc}", fmt_shape(&shape));
            if !p.free[i].is_empty() {
                let _ = write!(s, "   frees {:?}", p.free[i].as_slice());
            }
            s.push('\n');
        }
        let _ = writeln!(s, "kept for backward (last run): {}", fmt_bytes(self.kept_bytes));
        s
    }

    /// The program as a Graphviz DOT graph: one box per step, an edge per value passed between
    /// steps (inputs and constants as ellipses).
    pub fn to_dot(&self) -> String {
        let p = &self.plan;
        let mut s = String::from("digraph compiled {\n  rankdir=TB;\n  node [fontname=\"monospace\"];\n");
        let mut maker: Vec<Option<String>> = vec![None; p.n_slots()];
        for (x, src) in p.sources.iter().enumerate() {
            let Some(src) = src else { continue };
            let label = match src {
                Source::Param(k) => format!("param {k}"),
                Source::Data(k) => format!("data {k}"),
                Source::Const(t) => format!("constant {}", fmt_shape(t.shape())),
            };
            let _ = writeln!(s, "  s{x} [shape=ellipse, label=\"{label}\"];");
            maker[x] = Some(format!("s{x}"));
        }
        for (i, step) in p.steps.iter().enumerate() {
            let (what, shape, loc) = self.describe(step);
            let color = if i < p.first_backward {
                "lightblue"
            } else {
                "lightsalmon"
            };
            let _ = writeln!(
                s,
                "  n{i} [shape=box, style=filled, fillcolor={color}, label=\"#{i} {}\\n{}\\n{}\"];",
                what.replace('"', "'"),
                fmt_shape(&shape),
                loc
            );
            let (reads, writes) = (step.reads(), step.writes());
            for r in reads {
                if let Some(m) = &maker[r as usize] {
                    let _ = writeln!(s, "  {m} -> n{i};");
                }
            }
            for w in writes {
                maker[w as usize] = Some(format!("n{i}"));
            }
        }
        s.push_str("}\n");
        s
    }

    fn describe(&self, step: &Step<T>) -> (String, Vec<usize>, &'static Location<'static>) {
        let meta = &self.plan.meta;
        match step {
            Step::Forward { node, .. } => {
                let m = &meta[*node];
                let what = if m.params.is_empty() {
                    format!("forward {}", m.name)
                } else {
                    format!("forward {}({})", m.name, m.params)
                };
                (what, m.shape.clone(), m.location)
            }
            Step::Rule { node, needs, .. } => {
                let m = &meta[*node];
                let ks: Vec<String> = needs
                    .iter()
                    .enumerate()
                    .filter(|e| *e.1)
                    .map(|(k, _)| k.to_string())
                    .collect();
                (
                    format!("backward of {} (inputs {})", m.name, ks.join(", ")),
                    m.shape.clone(),
                    m.location,
                )
            }
            Step::Accumulate { dst, .. } => {
                let shape = self.slot_shape(*dst);
                ("accumulate".to_string(), shape, self.traced_at)
            }
            Step::Fused { group, .. } => {
                let names: Vec<String> = group
                    .members
                    .iter()
                    .filter(|m| !matches!(m.kind, fuse::Kind::Expand))
                    .map(|m| {
                        let n = &meta[m.node];
                        let w = if m.out.is_some() { "*" } else { "" };
                        if n.params.is_empty() {
                            format!("{}{w}", n.name)
                        } else {
                            format!("{}({}){w}", n.name, n.params)
                        }
                    })
                    .collect();
                let what = format!(
                    "fused loop of {} ops [{}], moves {}",
                    names.len(),
                    names.join(" "),
                    fmt_bytes(group.bytes_moved())
                );
                (what, group.shape.clone(), meta[group.members[0].node].location)
            }
        }
    }

    /// The shape a slot holds (gradient slots: the shape of the value they are the gradient of).
    fn slot_shape(&self, x: Slot) -> Vec<usize> {
        let p = &self.plan;
        if (x as usize) < p.n_nodes {
            return p.meta[x as usize].shape.clone();
        }
        for step in &p.steps {
            if let Step::Rule { outs, inputs, .. } = step
                && let Some(k) = outs.iter().position(|o| *o == Some(x))
            {
                return p.meta[inputs[k] as usize].shape.clone();
            }
        }
        Vec::new()
    }

    /// True when the step was traced for inputs of exactly these counts and shapes.
    pub(crate) fn traced_for(&self, params: &[&Tensor<T>], data: &[&Tensor<T>]) -> bool {
        let same = |given: &[&Tensor<T>], want: &[Vec<usize>]| {
            given.len() == want.len() && given.iter().zip(want).all(|(g, w)| g.shape() == &w[..])
        };
        same(params, &self.param_shapes) && same(data, &self.data_shapes)
    }

    fn check_inputs(&self, params: &[&Tensor<T>], data: &[&Tensor<T>]) -> Result<()> {
        for (what, given, want) in [
            ("parameter", params, &self.param_shapes),
            ("data input", data, &self.data_shapes),
        ] {
            if given.len() != want.len() {
                return Err(Error::new(
                    ErrorKind::Invalid,
                    "compiled step",
                    format!(
                        "{} {what}s given, the step was traced with {} (traced at {})",
                        given.len(),
                        want.len(),
                        self.traced_at
                    ),
                ));
            }
            for (k, (g, w)) in given.iter().zip(want.iter()).enumerate() {
                if g.shape() != &w[..] {
                    return Err(Error::shape(
                        "compiled step",
                        format!(
                            "{what} {k} has shape {}, the step was traced with {}; a compiled step replays one \
                             set of shapes: trace again for these (traced at {})",
                            fmt_shape(g.shape()),
                            fmt_shape(w),
                            self.traced_at
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn execute(
        &mut self,
        params: &[&Tensor<T>],
        data: &[&Tensor<T>],
        mut times: Option<&mut Vec<StepTime>>,
    ) -> Result<StepOutput<T>> {
        let anomaly = self.anomaly;
        for &x in &self.plan.filled {
            let x = x as usize;
            let src = self.plan.sources[x]
                .as_ref()
                .expect("planned: a filled slot has a source");
            let t = match src {
                Source::Param(k) => params[*k].clone(),
                Source::Data(k) => data[*k].clone(),
                Source::Const(t) => t.clone(),
            };
            if anomaly && !t.all_finite() && !matches!(src, Source::Const(_)) {
                let what = match src {
                    Source::Param(k) => format!("parameter {k}"),
                    Source::Data(k) => format!("data input {k}"),
                    Source::Const(_) => unreachable!("constants are not checked"),
                };
                return Err(Error::new(
                    ErrorKind::NonFinite,
                    "compiled step",
                    format!("{what} of shape {} holds a NaN or an infinity", fmt_shape(t.shape())),
                ));
            }
            self.slots[x] = Some(t);
        }
        for &x in &self.plan.free_at_start {
            self.slots[x as usize] = None;
        }
        let mut kept_bytes = 0;
        for (i, step) in self.plan.steps.iter().enumerate() {
            let t0 = times.is_some().then(Instant::now);
            match step {
                Step::Forward { op, inputs, out, node } => {
                    forward_step(&mut self.slots, &self.plan.meta, op, inputs, *out, *node, anomaly)?;
                }
                Step::Fused { group, steps } => {
                    if anomaly {
                        // Every value checked: the ops one by one, then only what the loop writes kept.
                        for st in steps {
                            if let Step::Forward { op, inputs, out, node } = st {
                                forward_step(&mut self.slots, &self.plan.meta, op, inputs, *out, *node, anomaly)?;
                            }
                        }
                        for m in &group.members {
                            if m.out.is_none() {
                                self.slots[m.node] = None;
                            }
                        }
                    } else {
                        let slots = &self.slots;
                        let made = group.run(|x| slots[x as usize].as_ref().expect("planned: input computed"));
                        for (x, t) in made {
                            self.slots[x as usize] = Some(t);
                        }
                    }
                }
                Step::Rule {
                    op,
                    inputs,
                    output,
                    g,
                    needs,
                    outs,
                    node,
                } => {
                    let gs = {
                        let mut vals: SmallVec<[&Tensor<T>; 4]> = SmallVec::new();
                        for &x in inputs {
                            vals.push(self.slots[x as usize].as_ref().expect("planned: value kept"));
                        }
                        let out = self.slots[*output as usize].as_ref().expect("planned: output kept");
                        let gv = self.slots[*g as usize].as_ref().expect("planned: cotangent made");
                        let cx = VjpCtx {
                            inputs: &vals,
                            output: out,
                            needs,
                        };
                        let gs = op.get().vjp_values(&cx, gv).map_err(|e| self.rule_error(*node, e))?;
                        if anomaly
                            && gs.iter().flatten().any(|t| !t.all_finite())
                            && gv.all_finite()
                            && vals.iter().all(|t| t.all_finite())
                            && out.all_finite()
                        {
                            return Err(self.non_finite(*node, "its VJP rule"));
                        }
                        gs
                    };
                    if gs.len() != needs.len() {
                        let msg = format!(
                            "the VJP rule returned {} gradients for {} inputs",
                            gs.len(),
                            needs.len()
                        );
                        return Err(self.rule_error(*node, Error::new(ErrorKind::Invalid, "vjp", msg)));
                    }
                    for (k, gk) in gs.into_iter().enumerate() {
                        let Some(o) = outs[k] else { continue };
                        let want = &self.plan.meta[inputs[k] as usize].shape;
                        let gk = match gk {
                            Some(t) if t.shape() == &want[..] => t,
                            Some(t) => {
                                let msg = format!(
                                    "the VJP rule returned a gradient of shape {} for input {k} of shape {}",
                                    fmt_shape(t.shape()),
                                    fmt_shape(want)
                                );
                                return Err(self.rule_error(*node, Error::shape("vjp", msg)));
                            }
                            None => {
                                let msg = format!("the VJP rule gave no gradient for input {k}, which needs one");
                                return Err(self.rule_error(*node, Error::new(ErrorKind::NoVjp, "vjp", msg)));
                            }
                        };
                        self.slots[o as usize] = Some(gk);
                    }
                }
                Step::Accumulate { dst, src } => {
                    let s = self.slots[*src as usize].take().expect("planned: gradient made");
                    let d = self.slots[*dst as usize].as_mut().expect("planned: gradient made");
                    d.add_assign_same(&s);
                    self.slots[*src as usize] = Some(s);
                }
            }
            for &x in &self.plan.free[i] {
                self.slots[x as usize] = None;
            }
            if self.plan.loss_step == Some(i) {
                kept_bytes = self.live_intermediate_bytes();
            }
            if let (Some(ts), Some(t0)) = (times.as_deref_mut(), t0) {
                let (what, shape, location) = self.describe(step);
                ts.push(StepTime {
                    what,
                    shape,
                    location,
                    time: t0.elapsed(),
                });
            }
        }
        self.kept_bytes = kept_bytes;
        // (Two results may be one value: a gradient that is the seed, or shared by two inputs.)
        let loss = self.slots[self.plan.loss as usize].clone().expect("planned: loss kept");
        let grads = self
            .plan
            .grads
            .iter()
            .zip(&self.param_shapes)
            .map(|(g, shape)| match g {
                Some(x) => self.slots[*x as usize].clone().expect("planned: gradient kept"),
                None => Tensor::zeros(shape),
            })
            .collect();
        self.slots[self.plan.loss as usize] = None;
        for x in self.plan.grads.iter().flatten() {
            self.slots[*x as usize] = None;
        }
        Ok(StepOutput { loss, grads })
    }

    /// Bytes of the live slots that hold forward values computed by the program (not inputs or
    /// constants): measured once the loss is computed, what the step keeps for its backward.
    fn live_intermediate_bytes(&self) -> usize {
        let mut seen = std::collections::HashSet::new();
        let mut inputs = std::collections::HashSet::new();
        for &x in &self.plan.filled {
            if let Some(t) = &self.slots[x as usize]
                && let Some((addr, _)) = t.heap_buffer()
            {
                inputs.insert(addr);
            }
        }
        // Forward values only: the slots below the loss's are the recorded forward nodes.
        self.slots[..self.plan.loss as usize]
            .iter()
            .flatten()
            .filter_map(|t| t.heap_buffer())
            .filter(|&(addr, _)| !inputs.contains(&addr) && seen.insert(addr))
            .map(|(_, b)| b)
            .sum()
    }

    fn rule_error(&self, node: usize, e: Error) -> Error {
        let m = &self.plan.meta[node];
        let err = Error::new(
            e.kind(),
            m.name,
            format!(
                "{} [compiled step, backward through node #{node}: {} -> {}]",
                e.message(),
                m.name,
                fmt_shape(&m.shape)
            ),
        )
        .at(m.location);
        match e.location() {
            Some(l) => err.at(l),
            None => err,
        }
    }

    fn non_finite(&self, node: usize, part: &str) -> Error {
        non_finite(&self.plan.meta, node, part)
    }
}

/// The anomaly error of node `node`: `part` of it made a non-finite value from finite ones.
fn non_finite(meta: &[plan::NodeMeta], node: usize, part: &str) -> Error {
    let m = &meta[node];
    Error::new(
        ErrorKind::NonFinite,
        m.name,
        format!(
            "anomaly in a compiled step: {part} made a NaN or an infinity from finite values (node #{node}: {} -> {})",
            m.name,
            fmt_shape(&m.shape)
        ),
    )
    .at(m.location)
}

/// Runs one recorded op's forward on its input slots, into slot `out`.
fn forward_step<T: Float>(
    slots: &mut [Option<Tensor<T>>],
    meta: &[plan::NodeMeta],
    op: &crate::autodiff::tape::OpRef<T>,
    inputs: &[Slot],
    out: Slot,
    node: usize,
    anomaly: bool,
) -> Result<()> {
    let value = {
        let mut vals: SmallVec<[&Tensor<T>; 4]> = SmallVec::new();
        for &x in inputs {
            vals.push(slots[x as usize].as_ref().expect("planned: input computed"));
        }
        let v = op.get().forward(&vals).map_err(|e| e.at(meta[node].location))?;
        if anomaly && !v.all_finite() && vals.iter().all(|t| t.all_finite()) {
            return Err(non_finite(meta, node, "its forward"));
        }
        v
    };
    slots[out as usize] = Some(value);
    Ok(())
}
