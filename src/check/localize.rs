//! `localize`: which node's rule is wrong — every node's rule checked on that node's own recorded
//! inputs (see [`localize`]).

use super::gradcheck::{dot_all, shifted, step_scale, unravel};
use crate::autodiff::checkpoint::CheckpointOp;
use crate::autodiff::rule::FirstOrderGrad;
use crate::autodiff::tape::{OpRef, Tape, Var};
use crate::core::error::{Error, Result};
use crate::core::float::Float;
use crate::core::rng::Rng;
use crate::core::shape::{Shape, fmt_shape, shape_of};
use crate::ops::Registry;
use crate::ops::fused::cross_entropy::CrossEntropyOp;
use crate::ops::fused::log_softmax::LogSoftmaxOp;
use crate::ops::fused::softmax::SoftmaxOp;
use crate::softmax::Target;
use crate::tensor::Tensor;
use std::any::{Any, TypeId};
use std::fmt;
use std::panic::Location;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A composed twin as the options hold it: the op (to downcast) and the inputs.
type TwinFn<T> = Arc<dyn for<'t> Fn(&dyn Any, &[Var<'t, T>]) -> Option<Var<'t, T>> + Send + Sync>;

#[derive(Clone)]
struct Twin<T: Float> {
    op: TypeId,
    name: &'static str,
    f: TwinFn<T>,
}

/// What [`localize`] checks and how strictly.
#[derive(Clone)]
pub struct LocalizeOptions<T: Float> {
    /// Check the library's own registered ops too (default: skip them — the registry checks them).
    pub include_library_ops: bool,
    /// Check second derivatives (the recorded rule) of ops that are differentiable twice.
    pub second_order: bool,
    /// Up to this many input elements (per node), every element is compared; above, random
    /// projections and sampled elements.
    pub max_elements: usize,
    /// Random directions compared above `max_elements`.
    pub projections: usize,
    /// Single elements, drawn at random, compared above `max_elements`.
    pub sampled_elements: usize,
    /// Absolute tolerance: an entry passes when `|rule − numeric| ≤ atol + rtol·max(|rule|,
    /// |numeric|)` plus the rounding error of the difference (bounded from the outputs it changed).
    pub atol: f64,
    /// Relative tolerance.
    pub rtol: f64,
    /// Relative tolerance of a fused op against its composed twin (both exact up to rounding).
    pub twin_rtol: f64,
    /// Seed of the cotangents, directions and samples (mixed with each node's index).
    pub seed: u64,
    twins: Vec<Twin<T>>,
}

impl<T: Float> fmt::Debug for LocalizeOptions<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalizeOptions")
            .field("include_library_ops", &self.include_library_ops)
            .field("second_order", &self.second_order)
            .field("max_elements", &self.max_elements)
            .field("projections", &self.projections)
            .field("sampled_elements", &self.sampled_elements)
            .field("atol", &self.atol)
            .field("rtol", &self.rtol)
            .field("twin_rtol", &self.twin_rtol)
            .field("seed", &self.seed)
            .field("twins", &self.twins.iter().map(|t| t.name).collect::<Vec<_>>())
            .finish()
    }
}

impl<T: Float> Default for LocalizeOptions<T> {
    /// Library ops skipped, second order on, every element up to 256, else 3 projections and 16
    /// sampled elements. Tolerances by element type: `atol = 1e-6`, `rtol = 1e-5` in `f64`;
    /// `atol = 1e-3`, `rtol = 1e-2` in `f32` (differences in `f32`).
    fn default() -> Self {
        let f32_like = T::EPSILON.to_f64() > 1e-10;
        LocalizeOptions {
            include_library_ops: false,
            second_order: true,
            max_elements: 256,
            projections: 3,
            sampled_elements: 16,
            atol: if f32_like { 1e-3 } else { 1e-6 },
            rtol: if f32_like { 1e-2 } else { 1e-5 },
            twin_rtol: 4096.0 * T::EPSILON.to_f64(),
            seed: 0x10ca_112e,
            twins: Vec::new(),
        }
    }
}

impl<T: Float> LocalizeOptions<T> {
    /// The same options, checking the library's registered ops too.
    pub fn include_library_ops(mut self) -> Self {
        self.include_library_ops = true;
        self
    }

    /// Declares the composed twin of your fused op `O`: every node holding an `O` is also
    /// compared with `f(op, inputs)` — the same function built from primitives — forward and
    /// VJP. `name` names the twin in reports.
    ///
    /// ```
    /// use tapegrad::check::{localize, LocalizeOptions};
    /// use tapegrad::{pointwise, Cotangents, Float, Math, Op, Result, Tape, Tensor, Value, VjpCtx};
    /// /// softplus in one op, with its rule σ(x)·g.
    /// struct Softplus;
    /// impl<T: Float> Op<T> for Softplus {
    ///     fn name(&self) -> &'static str { "softplus" }
    ///     fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
    ///         Ok(x[0].map(|v| v.max(T::ZERO) + (T::ONE + (-v.abs()).exp()).ln()))
    ///     }
    ///     fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
    ///         let x = cx.input(0);
    ///         Ok(cx.grads([Some(pointwise!(T; g, x => g * x.sigmoid()))]))
    ///     }
    /// }
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::rand_normal([3, 4], 0.0, 2.0, 1));
    /// let y = tape.apply(Softplus, &[x]).sum();
    /// let opts = LocalizeOptions::default().twin("log(1 + exp x)", |_: &Softplus, v| (v[0].exp() + 1.0).log());
    /// let report = localize(y, &opts);
    /// assert!(report.passed(), "{report}");
    /// assert!(report.checks[0].twin.as_ref().unwrap().passed);
    /// ```
    pub fn twin<O, F>(mut self, name: &'static str, f: F) -> Self
    where
        O: 'static,
        F: for<'t> Fn(&O, &[Var<'t, T>]) -> Var<'t, T> + Send + Sync + 'static,
    {
        self.twins.push(Twin {
            op: TypeId::of::<O>(),
            name,
            f: Arc::new(move |op, v| op.downcast_ref::<O>().map(|o| f(o, v))),
        });
        self
    }
}

/// Where an entry of a comparison lies: an input of the node, or (second order) its cotangent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// Input `k` of the node.
    Input(usize),
    /// The cotangent of the node's output (a second-order check differentiates with respect to it).
    Cotangent,
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Slot::Input(k) => write!(f, "input {k}"),
            Slot::Cotangent => write!(f, "the cotangent"),
        }
    }
}

/// One compared value: where, the rule's value, the other side's, and the tolerance it had.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// Which input (or the cotangent).
    pub slot: Slot,
    /// The element (a multi-index), or `None` for a random projection.
    pub element: Option<Vec<usize>>,
    /// For a projection, its number.
    pub direction: Option<usize>,
    /// What the rule gives.
    pub rule: f64,
    /// What the other side gives: finite differences, or the composed twin.
    pub other: f64,
    /// The tolerance the entry had to meet.
    pub tol: f64,
}

impl Entry {
    fn ratio(&self) -> f64 {
        let e = (self.rule - self.other).abs();
        if e.is_nan() { f64::INFINITY } else { e / self.tol }
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.element, self.direction) {
            (Some(e), _) => write!(f, "{} element {e:?}", self.slot)?,
            (None, Some(d)) => write!(f, "random direction {d}")?,
            (None, None) => write!(f, "{}", self.slot)?,
        }
        Ok(())
    }
}

/// How a comparison with finite differences went.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    /// True when every compared entry was within its tolerance.
    pub passed: bool,
    /// Entries compared.
    pub compared: usize,
    /// True when random projections were used (the node had more than `max_elements` elements).
    pub projected: bool,
    /// Elements skipped because the forward was not finite on both sides of them.
    pub skipped: usize,
    /// The entry with the largest error relative to its tolerance.
    pub worst: Option<Entry>,
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({} {}{})",
            if self.passed { "agrees" } else { "DISAGREES" },
            self.compared,
            if self.projected {
                "projections and sampled elements"
            } else {
                "elements"
            },
            if self.skipped > 0 {
                format!(", {} skipped: not finite at x ± h", self.skipped)
            } else {
                String::new()
            }
        )?;
        if let Some(w) = &self.worst {
            write!(
                f,
                "; worst: {w}: rule {:.10e} vs finite differences {:.10e} (tolerance {:.2e})",
                w.rule, w.other, w.tol
            )?;
        }
        Ok(())
    }
}

/// The second-order part of a node's check.
#[derive(Clone, Debug, PartialEq)]
pub enum SecondOrder {
    /// Compared with finite differences of the first-order rule.
    Checked(Comparison),
    /// The rule is first order only, as the op declares (a differentiated-twice backward through it
    /// fails loudly): nothing to compare.
    FirstOrderOnly,
    /// Not checked, and why.
    Skipped(&'static str),
    /// Differentiating the rule failed.
    Failed(Error),
}

/// A fused op against its composed twin, on the node's inputs and the same cotangent.
#[derive(Clone, Debug, PartialEq)]
pub struct TwinCheck {
    /// The twin's name.
    pub name: &'static str,
    /// True when the forward values and the VJPs agree.
    pub passed: bool,
    /// The largest `|fused − composed|` of the forward values.
    pub forward_max_abs: f64,
    /// The largest `|rule − composed|` of the VJPs.
    pub vjp_max_abs: f64,
    /// The worst VJP entry (relative to its tolerance); `other` is the twin's value.
    pub worst: Option<Entry>,
    /// An error from building or differentiating the twin.
    pub error: Option<Error>,
}

/// A checkpoint a node was found inside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Enclosing {
    /// The checkpoint's node index (on the tape that holds it).
    pub node: usize,
    /// Where the checkpoint was made.
    pub location: &'static Location<'static>,
}

/// The check of one node.
#[derive(Clone, Debug)]
pub struct NodeCheck {
    /// The node's index on its tape.
    pub node: usize,
    /// The checkpoints it lies inside, outermost first (empty for a node of the tape itself).
    pub within: Vec<Enclosing>,
    /// The op's name.
    pub op: &'static str,
    /// The op's parameters.
    pub params: String,
    /// The shapes of its inputs.
    pub inputs: Vec<Shape>,
    /// The inputs that carry a gradient (the ones checked).
    pub checked_inputs: Vec<usize>,
    /// The shape of its output.
    pub output: Shape,
    /// The line of user code that built it.
    pub location: &'static Location<'static>,
    /// A problem found before any comparison (a forward that does not reproduce the recorded
    /// value, a rule that fails).
    pub problem: Option<String>,
    /// The first-order comparison (`None` when a problem stopped it).
    pub first_order: Option<Comparison>,
    /// The second-order part.
    pub second_order: SecondOrder,
    /// The composed twin, for a fused op that has one.
    pub twin: Option<TwinCheck>,
}

impl NodeCheck {
    /// True when nothing about this node's rule disagreed.
    pub fn passed(&self) -> bool {
        self.problem.is_none()
            && self.first_order.as_ref().is_some_and(|c| c.passed)
            && !matches!(&self.second_order, SecondOrder::Failed(_))
            && !matches!(&self.second_order, SecondOrder::Checked(c) if !c.passed)
            && self.twin.as_ref().is_none_or(|t| t.passed)
    }
}

impl fmt::Display for NodeCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = self.location;
        let shapes: Vec<String> = self.inputs.iter().map(|s| fmt_shape(s)).collect();
        write!(
            f,
            "node #{} {}{} ({}) -> {}, built at {}:{}:{}",
            self.node,
            self.op,
            if self.params.is_empty() {
                String::new()
            } else {
                format!("[{}]", self.params)
            },
            shapes.join(", "),
            fmt_shape(&self.output),
            l.file(),
            l.line(),
            l.column()
        )?;
        for e in &self.within {
            write!(
                f,
                "\n    inside the checkpoint #{} made at {}:{}",
                e.node,
                e.location.file(),
                e.location.line()
            )?;
        }
        if let Some(p) = &self.problem {
            write!(f, "\n    {p}")?;
        }
        if let Some(c) = &self.first_order {
            write!(f, "\n    first order: {c}")?;
        }
        match &self.second_order {
            SecondOrder::Checked(c) => write!(f, "\n    second order: {c}")?,
            SecondOrder::FirstOrderOnly => write!(f, "\n    second order: the rule is first order only (declared)")?,
            SecondOrder::Skipped(why) => write!(f, "\n    second order: not checked ({why})")?,
            SecondOrder::Failed(e) => write!(f, "\n    second order: differentiating the rule failed: {e}")?,
        }
        if let Some(t) = &self.twin {
            write!(
                f,
                "\n    composed twin {}: {}; forward max |diff| {:.3e}, VJP max |diff| {:.3e}",
                t.name,
                if t.passed { "agrees" } else { "DISAGREES" },
                t.forward_max_abs,
                t.vjp_max_abs
            )?;
            if let (false, Some(w)) = (t.passed, &t.worst) {
                write!(f, "; worst: {w}: rule {:.10e} vs composed {:.10e}", w.rule, w.other)?;
            }
            if let Some(e) = &t.error {
                write!(f, "; {e}")?;
            }
        }
        Ok(())
    }
}

/// What [`localize`] found.
#[derive(Clone, Debug)]
pub struct LocalizeReport {
    /// Every checked node, in tape order (a checkpoint's nodes in its place).
    pub checks: Vec<NodeCheck>,
    /// Nodes checked.
    pub checked: usize,
    /// Nodes skipped as the library's registered ops.
    pub skipped_library: usize,
    /// Op nodes on a gradient path to the output (checked or skipped; checkpoints count as their
    /// nodes).
    pub on_path: usize,
    /// Forward runs of nodes (including those of the rule checks' finite differences).
    pub forward_runs: usize,
    /// Rule runs (VJPs, first and second order).
    pub rule_runs: usize,
    /// The element type the differences were taken in.
    pub precision: &'static str,
    /// How long it took.
    pub elapsed: Duration,
}

impl LocalizeReport {
    /// True when no checked node disagreed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(NodeCheck::passed)
    }

    /// The nodes whose rules disagree, earliest first.
    pub fn failures(&self) -> impl Iterator<Item = &NodeCheck> {
        self.checks.iter().filter(|c| !c.passed())
    }

    /// The earliest node whose rule disagrees.
    pub fn first_failure(&self) -> Option<&NodeCheck> {
        self.failures().next()
    }
}

impl fmt::Display for LocalizeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let failed = self.failures().count();
        write!(
            f,
            "localize: {} of {} checked node{} disagree{} ({} op nodes on the gradient path{}); {} forward and {} rule \
             runs in {:.2?}, differences in {}",
            failed,
            self.checked,
            if self.checked == 1 { "" } else { "s" },
            if failed == 1 { "s" } else { "" },
            self.on_path,
            if self.skipped_library > 0 {
                format!(
                    ", {} library ops skipped: the registry checks them",
                    self.skipped_library
                )
            } else {
                String::new()
            },
            self.forward_runs,
            self.rule_runs,
            self.elapsed,
            self.precision
        )?;
        for c in self.failures() {
            write!(f, "\n  {c}")?;
        }
        Ok(())
    }
}

/// `localize`: which node's rule is wrong. [`gradcheck`](super::gradcheck) says *that* a
/// function's gradient is wrong; [`localize`] walks a recorded tape and checks every node's rule on
/// that node's own recorded inputs, so a wrong hand-written rule among hundreds of nodes is found
/// and named — op, parameters, shapes and the line of your code that built it.
///
/// For each node on a gradient path to the output:
///
/// * **first order** — a random cotangent `v` (shaped like the node's output) is pushed through
///   the node's rule, and each entry of the result, `(Jᵀv)_j`, is compared with a central finite
///   difference of `⟨v, f(x ± h e_j)⟩`, re-running the node's forward on its recorded inputs. Above
///   [`max_elements`](LocalizeOptions::max_elements) input elements it compares random
///   projections `⟨Jᵀv, u⟩` instead, plus a few sampled elements (so a failure still names one).
/// * **second order** — the node's *recorded* rule (the one `grad_graph` runs, differentiable
///   again) is differentiated with respect to the inputs and `v`, and compared in the same way
///   with finite differences of the first-order rule. An op whose rule is first order only
///   ([`VjpCtx::first_order_only`](crate::VjpCtx::first_order_only), or a library op registered so)
///   has declared it: it is reported as such, not as a failure.
/// * **composed twin** — for a fused op with a composed twin (the library's `softmax`,
///   `log_softmax` and `cross_entropy`; your own through [`LocalizeOptions::twin`]), the forward
///   and the VJP on the same `v` against the twin's, built from primitives.
///
/// Nodes whose ops are the library's own registered ops are skipped by default (the registry
/// checks them on its samples: `check_registry`, `gradgradcheck_registry`);
/// [`include_library_ops`](LocalizeOptions::include_library_ops) checks them too. A
/// [checkpointed](crate::Tape::checkpoint) segment is replayed and its nodes are checked one by
/// one, named with the checkpoint they are inside.
///
/// # Precision
///
/// The differences are taken in the tape's element type, accumulated in `f64`: on an `f64` tape
/// they are `f64` differences; on an `f32` tape the node's forward runs in `f32` (an `f32` tape
/// holds the `f32` instantiation of each op, and a user op's `f64` one cannot be reached from it),
/// with the `f32` step `ε^(1/3)` and looser default tolerances ([`LocalizeOptions::default`]
/// picks them by type). For the sharpest check, record the same program on an `f64` tape.
///
/// The step is `h = ε^(1/3)·max(1, |x|)`; a node at a kink (a `relu` input within `h` of 0), or
/// whose forward is not a smooth function of its inputs, can disagree with its differences
/// although its rule is right.
///
/// # Cost
///
/// One finite-difference check per checked node: `2n` forward runs of the node for `n` input
/// elements (or `2·projections + 2·sampled_elements` above the limit), a few more rule runs for
/// the second order. The report says how many nodes were checked, how many runs it took and how
/// long.
///
/// ```
/// use tapegrad::check::{localize, LocalizeOptions};
/// use tapegrad::{pointwise, Cotangents, Float, Op, Result, Tape, Tensor, Value, VjpCtx};
///
/// /// The learner's softmax: the right forward, the diagonal-only rule g ⊙ h(1 − h).
/// struct LearnerSoftmax;
/// impl<T: Float> Op<T> for LearnerSoftmax {
///     fn name(&self) -> &'static str { "learner_softmax" }
///     fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
///         Ok(Tape::<T>::new().constant(x[0].clone()).softmax(-1).value())
///     }
///     fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
///         let h = cx.output();
///         Ok(cx.grads([Some(pointwise!(T; g, h => g * h * (-h + T::ONE)))]))
///     }
/// }
///
/// let tape = Tape::<f64>::new();
/// let x = tape.var(Tensor::rand_normal([4, 3], 0.0, 1.0, 1));
/// let w = tape.var(Tensor::rand_normal([3, 5], 0.0, 1.0, 2));
/// let h = tape.apply(LearnerSoftmax, &[x.matmul(w).tanh()]);
/// let loss = (h * h).sum();
///
/// let report = localize(loss, &LocalizeOptions::default());
/// assert!(!report.passed());
/// let bad = report.first_failure().unwrap();
/// assert_eq!(bad.op, "learner_softmax");
/// assert_eq!(bad.location, h.location());          // the line that built it
/// assert_eq!(report.checked, 1);                   // matmul, tanh, mul, sum: the registry's
/// println!("{report}");
/// ```
pub fn localize<T: Float>(output: Var<'_, T>, opts: &LocalizeOptions<T>) -> LocalizeReport {
    let t0 = Instant::now();
    let mut report = LocalizeReport {
        checks: Vec::new(),
        checked: 0,
        skipped_library: 0,
        on_path: 0,
        forward_runs: 0,
        rule_runs: 0,
        precision: T::NAME,
        elapsed: Duration::ZERO,
    };
    walk(output.tape(), output.index(), opts, &[], &mut report);
    report.elapsed = t0.elapsed();
    report
}

/// The op nodes on a gradient path to node `top`: ancestors of it that require a gradient.
fn on_path<T: Float>(tape: &Tape<T>, top: usize) -> Vec<usize> {
    let nodes = tape.nodes.borrow();
    let mut reach = vec![false; top + 1];
    reach[top] = true;
    let mut out = Vec::new();
    for i in (0..=top).rev() {
        if !reach[i] || !nodes[i].requires_grad {
            continue;
        }
        if nodes[i].op.is_some() {
            out.push(i);
        }
        for &j in &nodes[i].inputs {
            reach[j] = true;
        }
    }
    out.reverse();
    out
}

fn walk<T: Float>(
    tape: &Tape<T>,
    top: usize,
    opts: &LocalizeOptions<T>,
    within: &[Enclosing],
    report: &mut LocalizeReport,
) {
    for i in on_path(tape, top) {
        let op = tape.node(i).op.clone().expect("op nodes only");
        if let Some(ck) = op.get().as_any().downcast_ref::<CheckpointOp<T>>() {
            descend(tape, i, ck, opts, within, report);
            continue;
        }
        report.on_path += 1;
        let name = op.get().name();
        if !opts.include_library_ops
            && op.get().type_name().starts_with("tapegrad::")
            && Registry::builtin().get(name).is_some()
        {
            report.skipped_library += 1;
            continue;
        }
        report.checked += 1;
        let check = check_node(tape, i, &op, opts, within, report);
        report.checks.push(check);
    }
}

/// Replays a checkpoint's segment on a fresh tape from the node's recorded inputs and checks the
/// nodes inside it.
fn descend<T: Float>(
    tape: &Tape<T>,
    i: usize,
    ck: &CheckpointOp<T>,
    opts: &LocalizeOptions<T>,
    within: &[Enclosing],
    report: &mut LocalizeReport,
) {
    let (inputs, needs): (Vec<Tensor<T>>, Vec<bool>) = {
        let nodes = tape.nodes.borrow();
        nodes[i]
            .inputs
            .iter()
            .map(|&j| (nodes[j].value.clone(), nodes[j].requires_grad))
            .unzip()
    };
    let inner = Tape::<T>::new();
    let vars = leaves(&inner, &inputs, &needs);
    let mut path = within.to_vec();
    path.push(Enclosing {
        node: i,
        location: ck.location(),
    });
    match ck.replay_on(&inner, &vars) {
        Ok(out) => walk(&inner, out.index(), opts, &path, report),
        Err(e) => {
            // The segment cannot be replayed: report the checkpoint node itself.
            report.on_path += 1;
            report.checked += 1;
            let mut c = describe(tape, i, within);
            c.problem = Some(format!("replaying the checkpointed segment failed: {e}"));
            report.checks.push(c);
        }
    }
}

/// A node's description, before any check.
fn describe<T: Float>(tape: &Tape<T>, i: usize, within: &[Enclosing]) -> NodeCheck {
    let nodes = tape.nodes.borrow();
    let n = &nodes[i];
    let op = n.op.as_ref().expect("op nodes only").get();
    NodeCheck {
        node: i,
        within: within.to_vec(),
        op: op.name(),
        params: op.params(),
        inputs: n.inputs.iter().map(|&j| shape_of(nodes[j].value.shape())).collect(),
        checked_inputs: n
            .inputs
            .iter()
            .enumerate()
            .filter(|(_, j)| nodes[**j].requires_grad)
            .map(|(k, _)| k)
            .collect(),
        output: shape_of(n.value.shape()),
        location: n.location,
        problem: None,
        first_order: None,
        second_order: SecondOrder::Skipped("the first-order check did not pass"),
        twin: None,
    }
}

/// Values equal up to a few ulps (NaN equal to NaN).
fn reproduces<T: Float>(a: &Tensor<T>, b: &Tensor<T>) -> Option<String> {
    if a.shape() != b.shape() {
        return Some(format!(
            "re-running the forward on the recorded inputs gives shape {} but the tape holds {}",
            fmt_shape(a.shape()),
            fmt_shape(b.shape())
        ));
    }
    let eps = T::EPSILON.to_f64();
    let bad = a.data().iter().zip(b.data()).position(|(&x, &y)| {
        let (x, y) = (x.to_f64(), y.to_f64());
        !(x == y || (x.is_nan() && y.is_nan()) || (x - y).abs() <= 64.0 * eps * x.abs().max(y.abs()).max(1.0))
    })?;
    Some(format!(
        "re-running the forward on the recorded inputs does not reproduce the recorded value (element {:?}: {} vs {}): \
         the op is not a function of its inputs alone, so its rule cannot be checked",
        unravel(bad, a.shape()),
        a.data()[bad],
        b.data()[bad]
    ))
}

/// `inputs` as leaves of `tape`: variables where `needs`, constants elsewhere.
fn leaves<'s, T: Float>(tape: &'s Tape<T>, inputs: &[Tensor<T>], needs: &[bool]) -> Vec<Var<'s, T>> {
    inputs
        .iter()
        .zip(needs)
        .map(|(x, &n)| {
            if n {
                tape.var(x.clone())
            } else {
                tape.constant(x.clone())
            }
        })
        .collect()
}

/// The node under check: its op, its recorded inputs, which of them carry a gradient, and the line
/// that built it.
struct Node<'a, T: Float> {
    op: &'a OpRef<T>,
    inputs: Vec<Tensor<T>>,
    needs: Vec<bool>,
    /// The inputs that carry a gradient (the checked ones), in order.
    needed: Vec<usize>,
    loc: &'static Location<'static>,
}

impl<T: Float> Node<'_, T> {
    /// The checked inputs' values.
    fn checked(&self) -> Vec<Tensor<T>> {
        self.needed.iter().map(|&k| self.inputs[k].clone()).collect()
    }

    /// The checked inputs' slots.
    fn slots(&self) -> Vec<Slot> {
        self.needed.iter().map(|&k| Slot::Input(k)).collect()
    }

    /// The recorded inputs with the checked ones replaced by `b` (in the order of `needed`; extra
    /// entries of `b` are ignored).
    fn with(&self, b: &[Tensor<T>]) -> Vec<Tensor<T>> {
        let mut xs = self.inputs.clone();
        for (&k, x) in self.needed.iter().zip(b) {
            xs[k] = x.clone();
        }
        xs
    }

    /// The checked inputs among `vars` (the node's inputs as leaves of a tape).
    fn wrt<'s>(&self, vars: &[Var<'s, T>]) -> Vec<Var<'s, T>> {
        self.needed.iter().map(|&k| vars[k]).collect()
    }

    /// Records the op on `tape` from `inputs` (variables where the node's inputs need a gradient).
    fn record<'s>(&self, tape: &'s Tape<T>, inputs: &[Tensor<T>]) -> Result<(Vec<Var<'s, T>>, Var<'s, T>)> {
        let vars = leaves(tape, inputs, &self.needs);
        let out = tape.record(self.op.clone(), &vars, self.loc)?;
        Ok((vars, out))
    }
}

/// Random entries `±U(0.5, 1.5)`: a cotangent or direction with no entry near 0, so that no part of
/// a rule's error is multiplied by a vanishing weight.
fn signed<T: Float>(shape: &[usize], rng: &mut Rng) -> Tensor<T> {
    Tensor::from_fn(shape, |_| {
        let m = 0.5 + rng.uniform();
        T::from_f64(if rng.next_u64() & 1 == 0 { m } else { -m })
    })
}

fn check_node<T: Float>(
    tape: &Tape<T>,
    i: usize,
    op: &OpRef<T>,
    opts: &LocalizeOptions<T>,
    within: &[Enclosing],
    report: &mut LocalizeReport,
) -> NodeCheck {
    let mut check = describe(tape, i, within);
    let (inputs, needs, recorded) = {
        let nodes = tape.nodes.borrow();
        let n = &nodes[i];
        let inputs: Vec<Tensor<T>> = n.inputs.iter().map(|&j| nodes[j].value.clone()).collect();
        let needs: Vec<bool> = n.inputs.iter().map(|&j| nodes[j].requires_grad).collect();
        (inputs, needs, n.value.clone())
    };
    let node = Node {
        op,
        inputs,
        needs,
        needed: check.checked_inputs.clone(),
        loc: check.location,
    };
    let mut rng = Rng::new(opts.seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ ((within.len() as u64) << 56));
    let forward = |xs: &[Tensor<T>]| -> Result<Tensor<T>> {
        let refs: Vec<&Tensor<T>> = xs.iter().collect();
        op.get().forward(&refs)
    };

    // The forward must reproduce the recorded value, or differences of it mean nothing.
    report.forward_runs += 1;
    match forward(&node.inputs) {
        Ok(y) => {
            if let Some(p) = reproduces(&y, &recorded) {
                check.problem = Some(p);
                return check;
            }
        }
        Err(e) => {
            check.problem = Some(format!("re-running the forward on the recorded inputs failed: {e}"));
            return check;
        }
    }

    // First order: the rule on a random cotangent against differences of ⟨v, f⟩.
    let v: Tensor<T> = signed(recorded.shape(), &mut rng);
    let mini = Tape::<T>::new();
    let analytic = node
        .record(&mini, &node.inputs)
        .and_then(|(vars, out)| mini.grad_impl(&[out], std::slice::from_ref(&v), &node.wrt(&vars), true, node.loc));
    report.rule_runs += 1;
    let analytic = match analytic {
        Ok(a) => a,
        Err(e) => {
            check.problem = Some(format!("the rule failed: {e}"));
            return check;
        }
    };
    let weights: Vec<f64> = v.data().iter().map(|x| x.to_f64()).collect();
    let mut forward_runs = 0;
    let first = compare(
        &node.checked(),
        &node.slots(),
        &analytic,
        &weights,
        &mut |b: &[Tensor<T>]| {
            forward_runs += 1;
            forward(&node.with(b)).map(|y| y.data().iter().map(|x| x.to_f64()).collect())
        },
        opts,
        &mut rng,
    );
    report.forward_runs += forward_runs;
    let first_passed = first.passed;
    check.first_order = Some(first);

    // The composed twin, on the same cotangent.
    check.twin = twin_check(&node, &recorded, &v, &analytic, opts);
    if check.twin.is_some() {
        report.forward_runs += 1;
        report.rule_runs += 1;
    }

    // Second order.
    check.second_order = if !opts.second_order {
        SecondOrder::Skipped("second_order is off")
    } else if !first_passed {
        SecondOrder::Skipped("the first-order check did not pass")
    } else if op.get().type_name().starts_with("tapegrad::")
        && Registry::builtin()
            .get(op.get().name())
            .is_some_and(|r| !r.differentiable_twice)
    {
        SecondOrder::FirstOrderOnly
    } else {
        second_order(&node, &v, opts, &mut rng, report)
    };
    check
}

/// The second-order check: `S(x, v) = Σ_k ⟨w_k, G_k(x, v)⟩`, `G` the recorded rule, differentiated
/// by its own rules, against differences of the first-order rule.
fn second_order<T: Float>(
    node: &Node<'_, T>,
    v: &Tensor<T>,
    opts: &LocalizeOptions<T>,
    rng: &mut Rng,
    report: &mut LocalizeReport,
) -> SecondOrder {
    let loc = node.loc;
    let ws: Vec<Tensor<T>> = node
        .needed
        .iter()
        .map(|&k| signed(node.inputs[k].shape(), rng))
        .collect();
    let mini = Tape::<T>::new();
    let analytic = (|| {
        let (vars, out) = node.record(&mini, &node.inputs)?;
        let forward_len = mini.len();
        let vv = mini.var(v.clone());
        let mut wrt = node.wrt(&vars);
        let gs = mini.grad_graph_impl(&[out], &[vv], &wrt, true, loc)?;
        let first_order_only = (forward_len..mini.len()).any(|j| {
            mini.node(j)
                .op
                .as_ref()
                .is_some_and(|o| o.get().as_any().is::<FirstOrderGrad<T>>())
        });
        if first_order_only {
            return Ok(None);
        }
        wrt.push(vv);
        mini.grad_impl(&gs, &ws, &wrt, true, loc).map(Some)
    })();
    report.rule_runs += 2;
    let analytic = match analytic {
        Ok(Some(a)) => a,
        Ok(None) => return SecondOrder::FirstOrderOnly,
        Err(e) => return SecondOrder::Failed(e),
    };
    let mut base = node.checked();
    base.push(v.clone());
    let mut slots = node.slots();
    slots.push(Slot::Cotangent);
    let weights: Vec<f64> = ws.iter().flat_map(|w| w.data().iter().map(|x| x.to_f64())).collect();
    let mut runs = 0;
    let c = compare(
        &base,
        &slots,
        &analytic,
        &weights,
        &mut |b: &[Tensor<T>]| {
            runs += 1;
            let t = Tape::<T>::new();
            let (vars, out) = node.record(&t, &node.with(b))?;
            let gs = t.grad_impl(
                &[out],
                std::slice::from_ref(&b[b.len() - 1]),
                &node.wrt(&vars),
                true,
                loc,
            )?;
            Ok(gs.iter().flat_map(|g| g.data().iter().map(|x| x.to_f64())).collect())
        },
        opts,
        rng,
    );
    report.forward_runs += runs;
    report.rule_runs += runs;
    SecondOrder::Checked(c)
}

/// The composed twin of the library's fused ops.
fn builtin_twin<'t, T: Float>(op: &dyn Any, v: &[Var<'t, T>]) -> Option<(&'static str, Var<'t, T>)> {
    if let Some(s) = op.downcast_ref::<SoftmaxOp>() {
        return Some(("softmax_composed", v[0].softmax_composed(s.axis)));
    }
    if let Some(s) = op.downcast_ref::<LogSoftmaxOp>() {
        return Some(("log_softmax_composed", v[0].log_softmax_composed(s.axis)));
    }
    if let Some(CrossEntropyOp(spec)) = op.downcast_ref::<CrossEntropyOp>() {
        let opts = spec.options();
        let target = match &spec.classes {
            Some(c) => Target::Classes(&c[..]),
            None => Target::Probs(v[1]),
        };
        return Some(("cross_entropy_composed", v[0].cross_entropy_composed(target, opts)));
    }
    None
}

fn twin_check<T: Float>(
    node: &Node<'_, T>,
    recorded: &Tensor<T>,
    v: &Tensor<T>,
    analytic: &[Tensor<T>],
    opts: &LocalizeOptions<T>,
) -> Option<TwinCheck> {
    let any = node.op.get().as_any();
    let user = opts.twins.iter().find(|t| t.op == any.type_id());
    let tape = Tape::<T>::new();
    let vars = leaves(&tape, &node.inputs, &node.needs);
    let built = crate::core::error::attempt(|| match user {
        Some(t) => (t.f)(any, &vars).map(|out| (t.name, out)),
        None => builtin_twin(any, &vars),
    });
    let mut twin = TwinCheck {
        name: "",
        passed: true,
        forward_max_abs: 0.0,
        vjp_max_abs: 0.0,
        worst: None,
        error: None,
    };
    let (name, out) = match built {
        Ok(Some(b)) => b,
        Ok(None) => return None,
        Err(e) => {
            twin.name = user.map_or("composed twin", |t| t.name);
            twin.passed = false;
            twin.error = Some(e);
            return Some(twin);
        }
    };
    twin.name = name;
    let rtol = opts.twin_rtol;
    let max_abs = |t: &Tensor<T>| t.data().iter().fold(0.0f64, |m, x| m.max(x.to_f64().abs()));
    let diff = |a: &Tensor<T>, b: &Tensor<T>| {
        a.data()
            .iter()
            .zip(b.data())
            .map(|(x, y)| {
                let d = (x.to_f64() - y.to_f64()).abs();
                if d.is_nan() && !(x.is_nan() && y.is_nan()) {
                    f64::INFINITY
                } else if d.is_nan() {
                    0.0
                } else {
                    d
                }
            })
            .fold(0.0f64, f64::max)
    };
    let y = out.value();
    if y.shape() != recorded.shape() {
        twin.passed = false;
        twin.forward_max_abs = f64::INFINITY;
        return Some(twin);
    }
    // Rounding differences scale with the values computed from (the inputs, the cotangent), not
    // only with the result, so each side's tolerance has a floor at their scale.
    let input_scale = node.inputs.iter().map(max_abs).fold(max_abs(&y), f64::max);
    twin.forward_max_abs = diff(recorded, &y);
    if twin.forward_max_abs > rtol * input_scale.max(1e-300) {
        twin.passed = false;
    }
    let composed = match tape.grad_impl(&[out], std::slice::from_ref(v), &node.wrt(&vars), true, node.loc) {
        Ok(g) => g,
        Err(e) => {
            twin.passed = false;
            twin.error = Some(e);
            return Some(twin);
        }
    };
    let mut worst = -1.0;
    for ((&k, a), c) in node.needed.iter().zip(analytic).zip(&composed) {
        twin.vjp_max_abs = twin.vjp_max_abs.max(diff(a, c));
        let floor = max_abs(c).max(max_abs(v));
        for (j, (x, y)) in a.data().iter().zip(c.data()).enumerate() {
            let e = Entry {
                slot: Slot::Input(k),
                element: Some(unravel(j, a.shape())),
                direction: None,
                rule: x.to_f64(),
                other: y.to_f64(),
                tol: rtol * (y.to_f64().abs() + floor).max(1e-300),
            };
            let r = if e.rule == e.other { 0.0 } else { e.ratio() };
            if r > 1.0 {
                twin.passed = false;
            }
            if r > worst {
                worst = r;
                twin.worst = Some(e);
            }
        }
    }
    Some(twin)
}

/// What [`compare`] differentiates: the outputs (flattened, in `f64`) at perturbed values.
type Eval<'a, T> = dyn FnMut(&[Tensor<T>]) -> Result<Vec<f64>> + 'a;

/// Compares `analytic[k] = ∂φ/∂base[k]` with central differences of `φ(b) = Σ_o w_o·eval(b)_o`:
/// every element when there are at most `max_elements`, else random projections and sampled
/// elements.
fn compare<T: Float>(
    base: &[Tensor<T>],
    slots: &[Slot],
    analytic: &[Tensor<T>],
    weights: &[f64],
    eval: &mut Eval<'_, T>,
    opts: &LocalizeOptions<T>,
    rng: &mut Rng,
) -> Comparison {
    let eps = T::EPSILON.to_f64();
    let rel = eps.cbrt();
    let total: usize = base.iter().map(Tensor::numel).sum();
    let mut c = Comparison {
        passed: true,
        compared: 0,
        projected: total > opts.max_elements,
        skipped: 0,
        worst: None,
    };
    let base_out = eval(base).ok();
    // ⟨w, f(b+) − f(b−)⟩ and a bound on the rounding error of that difference, or None when a
    // side failed or is not finite where f(b) is. The bound counts every output, changed or not:
    // an output much larger than the change (a running sum of 1e12) can round it away entirely.
    let mut central = |bp: &[Tensor<T>], bm: &[Tensor<T>]| -> Option<(f64, f64)> {
        let (fp, fm) = (eval(bp).ok()?, eval(bm).ok()?);
        let (mut dot, mut round) = (0.0, 0.0);
        for (o, (&a, &b)) in fp.iter().zip(&fm).enumerate() {
            let base_finite = base_out.as_ref().is_none_or(|f| f[o].is_finite());
            if base_finite && !(a.is_finite() && b.is_finite()) {
                return None;
            }
            if a != b {
                dot += weights[o] * (a - b);
            }
            if a.is_finite() && b.is_finite() {
                round += weights[o].abs() * a.abs().max(b.abs());
            }
        }
        Some((dot, 4.0 * eps * round))
    };
    let tol = |a: f64, n: f64, round: f64| opts.atol + opts.rtol * a.abs().max(n.abs()) + round;
    // The difference quotient along one direction with step h0 (shrunk up to twice when a side is
    // not finite) as (numeric, tolerance) for the rule's value `a`. When it disagrees, the step may
    // be too coarse for the function (a softmax of logits in the thousands: the step grows with
    // |x|, its curvature does not), so the step is divided by 4 up to 4 times, each level
    // extrapolated (Richardson: `(16·D(h/4) − D(h))/15` cancels the h² error of a central
    // difference). A level is accepted when it agrees with the rule *and* has converged (it agrees
    // with its own quotient); refining stops before rounding would dominate the tolerance, so a
    // wrong rule cannot hide behind a tiny step. A disagreement reports the most refined value.
    let estimate = |a: f64, h0: f64, quotient: &mut dyn FnMut(f64) -> Option<(f64, f64)>| -> Option<(f64, f64)> {
        let mut h = h0;
        let mut first = None;
        for _ in 0..3 {
            if let Some(q) = quotient(h) {
                first = Some(q);
                break;
            }
            h /= 10.0;
        }
        let (mut d, mut r) = first?;
        let mut best = (d, tol(a, d, r));
        if (a - d).abs() <= best.1 {
            return Some(best);
        }
        let rounding_cap = 0.5 * (opts.atol + opts.rtol * a.abs());
        for _ in 0..4 {
            h /= 4.0;
            let Some((d4, r4)) = quotient(h) else { break };
            let (x, rx) = ((16.0 * d4 - d) / 15.0, (16.0 * r4 + r) / 15.0);
            if rx > rounding_cap {
                break;
            }
            let t = tol(a, x, rx);
            best = (x, t);
            if (a - x).abs() <= t && (x - d4).abs() <= t {
                break;
            }
            (d, r) = (d4, r4);
        }
        Some(best)
    };
    let mut entries: Vec<Entry> = Vec::new();
    let mut element = |k: usize, j: usize, c: &mut Comparison, entries: &mut Vec<Entry>| {
        let x = base[k].data()[j];
        let a = analytic[k].data()[j].to_f64();
        let mut quotient = |h: f64| {
            let (xp, xm) = (x + T::from_f64(h), x - T::from_f64(h));
            let mut bp = base.to_vec();
            bp[k].data_mut()[j] = xp;
            let mut bm = base.to_vec();
            bm[k].data_mut()[j] = xm;
            let d = xp.to_f64() - xm.to_f64();
            central(&bp, &bm).map(|(dot, round)| (dot / d, round / d))
        };
        match estimate(a, rel * x.to_f64().abs().max(1.0), &mut quotient) {
            Some((numeric, tol)) => entries.push(Entry {
                slot: slots[k],
                element: Some(unravel(j, base[k].shape())),
                direction: None,
                rule: a,
                other: numeric,
                tol,
            }),
            None => c.skipped += 1,
        }
    };
    if !c.projected {
        for (k, b) in base.iter().enumerate() {
            for j in 0..b.numel() {
                element(k, j, &mut c, &mut entries);
            }
        }
    } else {
        for _ in 0..opts.sampled_elements {
            let mut j = rng.below(total);
            let mut k = 0;
            while j >= base[k].numel() {
                j -= base[k].numel();
                k += 1;
            }
            element(k, j, &mut c, &mut entries);
        }
        let scale = step_scale(base);
        for d in 0..opts.projections {
            let us: Vec<Tensor<T>> = base.iter().map(|b| signed(b.shape(), rng)).collect();
            let a = dot_all(analytic, &us);
            let mut quotient = |h: f64| {
                central(&shifted(base, &us, h), &shifted(base, &us, -h))
                    .map(|(dot, round)| (dot / (2.0 * h), round / (2.0 * h)))
            };
            let got = estimate(a, rel * scale, &mut quotient);
            match got {
                Some((numeric, tol)) => entries.push(Entry {
                    slot: slots[0],
                    element: None,
                    direction: Some(d),
                    rule: a,
                    other: numeric,
                    tol,
                }),
                None => c.skipped += 1,
            }
        }
    }
    // The worst entry relative to its tolerance; when an element fails, the worst element (it says
    // where), even if a projection is worse.
    c.compared = entries.len();
    c.passed = entries.iter().all(|e| e.ratio() <= 1.0);
    let worst_of = |it: &mut dyn Iterator<Item = &Entry>| it.max_by(|a, b| a.ratio().total_cmp(&b.ratio())).cloned();
    let worst_element = worst_of(&mut entries.iter().filter(|e| e.element.is_some()));
    c.worst = match worst_element {
        Some(e) if e.ratio() > 1.0 => Some(e),
        _ => worst_of(&mut entries.iter()),
    };
    c
}
