//! The tape (a Wengert list) and [`Var`], the handle through which expressions are built.
//!
//! Every operation on a `Var` evaluates its forward at once and appends one node to the tape:
//! the op, the indices of its inputs, its output value and the source line that built it. The
//! tape is therefore in execution order, which is a topological order, and the backward pass is a
//! single reverse sweep over it — no graph search, no recursion.
//!
//! ```
//! use tapegrad::{Tape, Tensor};
//! let tape = Tape::<f64>::new();
//! let x = tape.var(Tensor::from_vec(vec![1.0, 2.0, 3.0], [3]));
//! let y = (x * x).sum();            // two nodes: mul, sum
//! assert_eq!(tape.len(), 3);        // plus the leaf x
//! assert_eq!(y.item(), 14.0);
//! assert_eq!(y.backward()[x].to_vec(), vec![2.0, 4.0, 6.0]);
//! ```

use crate::autodiff::rule::{Cotangents, Op, VjpCtx};
use crate::core::error::{Error, ErrorKind, Result, fail};
use crate::core::float::Float;
use crate::core::shape::fmt_shape;
use crate::tensor::Tensor;
use smallvec::SmallVec;
use std::cell::{Cell, Ref, RefCell};
use std::panic::Location;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// One entry of the Wengert list.
pub(crate) struct Node<T: Float> {
    /// The output value (kept for VJP rules that need it, and for inspection).
    pub(crate) value: Tensor<T>,
    /// `None` for a leaf (a variable or a constant).
    pub(crate) op: Option<OpRef<T>>,
    /// Indices of the input nodes, all smaller than this node's index.
    pub(crate) inputs: SmallVec<[usize; 2]>,
    /// True when a gradient can flow into this node (some input, or the leaf itself, is tracked).
    pub(crate) requires_grad: bool,
    /// True for leaves made with [`Tape::var`]: the ones `backward` returns gradients for.
    pub(crate) is_var: bool,
    /// The line of user code that built the node.
    pub(crate) location: &'static Location<'static>,
    /// Why gradient flow stops here although a tracked value led to it (for error messages).
    pub(crate) cut: Option<Cut>,
}

/// Where and why a tracked value stopped carrying a gradient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cut {
    /// An op with a tracked input, recorded under `no_grad`.
    NoGrad,
    /// A `detach()` of a tracked value.
    Detached,
}

static NEXT_TAPE_ID: AtomicU64 = AtomicU64::new(1);

/// A Wengert list of recorded operations on elements of type `T`.
///
/// The tape owns every value recorded on it; dropping the tape frees them all. It is not `Sync`:
/// one tape belongs to one thread.
pub struct Tape<T: Float> {
    pub(crate) nodes: RefCell<Vec<Node<T>>>,
    no_grad_depth: Cell<u32>,
    /// The tools watching this tape (anomaly mode, the profiler, yours): see [`Observer`].
    observers: RefCell<Vec<Arc<dyn Observer<T>>>>,
    /// `observers.len()`, readable without a borrow on the recording path.
    n_observers: Cell<usize>,
    id: u64,
}

impl<T: Float> Default for Tape<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Float> std::fmt::Debug for Tape<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tape<{}> {{ id: {}, nodes: {} }}", T::NAME, self.id, self.len())
    }
}

/// A handle to a value recorded on a [`Tape`]: small, `Copy`, and usable with `+ - * /` like a number.
///
/// A `Var` borrows its tape, so it cannot outlive it; using it with another tape is an error.
#[must_use = "an unused Var still records a node on the tape (and keeps its value alive until the tape is cleared)"]
pub struct Var<'t, T: Float> {
    pub(crate) tape: &'t Tape<T>,
    pub(crate) index: usize,
}

impl<T: Float> Clone for Var<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T: Float> Copy for Var<'_, T> {}

impl<T: Float> std::fmt::Debug for Var<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Var#{}{}", self.index, fmt_shape(&self.shape()))
    }
}

impl<T: Float> Tape<T> {
    /// An empty tape.
    pub fn new() -> Self {
        Tape {
            nodes: RefCell::new(Vec::new()),
            no_grad_depth: Cell::new(0),
            observers: RefCell::new(Vec::new()),
            n_observers: Cell::new(0),
            id: NEXT_TAPE_ID.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// A tape with room for `n` nodes before it reallocates.
    pub fn with_capacity(n: usize) -> Self {
        let t = Self::new();
        t.nodes.borrow_mut().reserve(n);
        t
    }

    /// A unique number identifying this tape (used in error messages).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The number of nodes recorded.
    pub fn len(&self) -> usize {
        self.nodes.borrow().len()
    }

    /// True when nothing has been recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes every node but keeps the allocation, so the tape can be reused for the next step.
    /// Taking `&mut self` guarantees no `Var` of the old recording is still alive.
    pub fn clear(&mut self) {
        self.nodes.get_mut().clear();
    }

    /// How many nodes the tape can hold before its node storage reallocates.
    pub fn capacity(&self) -> usize {
        self.nodes.borrow().capacity()
    }

    /// The bytes of the values this tape keeps for a backward pass: the distinct heap buffers
    /// held by its op nodes (a buffer shared by several nodes, e.g. through a reshape or a
    /// `detach`, counts once). Leaves ([`var`](Self::var), [`constant`](Self::constant)) are not
    /// counted: they are the caller's own data (parameters, inputs, targets), which exist whether
    /// or not anything is recorded. One-element values live inline and count nothing.
    ///
    /// This is the memory that [checkpointing](Self::checkpoint) trades for recomputation.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f32>::new();
    /// let x = tape.var(Tensor::zeros([256, 64]));          // a leaf: not counted
    /// let y = x.tanh();                                     // 64 KiB kept
    /// let _z = y.reshape([64, 256]);                        // shares y's buffer
    /// let _w = y.detach();                                  // so does this
    /// assert_eq!(tape.retained_bytes(), 256 * 64 * 4);
    /// ```
    pub fn retained_bytes(&self) -> usize {
        let nodes = self.nodes.borrow();
        let mut seen = std::collections::HashSet::new();
        let mut leaves = std::collections::HashSet::new();
        // (a detached value is a leaf sharing an op node's buffer: that buffer is kept for backward)
        for n in nodes.iter().filter(|n| n.op.is_none() && n.cut.is_none()) {
            if let Some((addr, _)) = n.value.heap_buffer() {
                leaves.insert(addr);
            }
        }
        nodes
            .iter()
            .filter(|n| n.op.is_some())
            .filter_map(|n| n.value.heap_buffer())
            .filter(|&(addr, _)| !leaves.contains(&addr) && seen.insert(addr))
            .map(|(_, bytes)| bytes)
            .sum()
    }

    /// Records a leaf whose gradient is wanted: [`Var::backward`] returns a gradient for it.
    #[track_caller]
    pub fn var(&self, value: Tensor<T>) -> Var<'_, T> {
        self.leaf(value, true, Location::caller())
    }

    /// Records a leaf that is never differentiated (data, targets, masks).
    #[track_caller]
    pub fn constant(&self, value: Tensor<T>) -> Var<'_, T> {
        self.leaf(value, false, Location::caller())
    }

    /// Records a 0-d constant.
    #[track_caller]
    pub fn scalar(&self, x: T) -> Var<'_, T> {
        self.leaf(Tensor::scalar(x), false, Location::caller())
    }

    fn leaf(&self, value: Tensor<T>, is_var: bool, location: &'static Location<'static>) -> Var<'_, T> {
        self.leaf_with(value, is_var, None, location)
    }

    fn leaf_with(
        &self,
        value: Tensor<T>,
        is_var: bool,
        cut: Option<Cut>,
        location: &'static Location<'static>,
    ) -> Var<'_, T> {
        let mut nodes = self.nodes.borrow_mut();
        nodes.push(Node {
            value,
            op: None,
            inputs: SmallVec::new(),
            requires_grad: is_var,
            is_var,
            location,
            cut,
        });
        Var {
            tape: self,
            index: nodes.len() - 1,
        }
    }

    /// True unless inside a [`no_grad`](Self::no_grad) scope.
    pub fn grad_enabled(&self) -> bool {
        self.no_grad_depth.get() == 0
    }

    /// Runs `f` with gradient tracking off: every node it records is a constant.
    ///
    /// ```
    /// let tape = tapegrad::Tape::<f32>::new();
    /// let x = tape.var(tapegrad::Tensor::scalar(2.0));
    /// let y = tape.no_grad(|| x * x);
    /// assert!(!y.requires_grad());
    /// ```
    pub fn no_grad<R>(&self, f: impl FnOnce() -> R) -> R {
        let _g = self.no_grad_guard();
        f()
    }

    /// Turns gradient tracking off until the returned guard is dropped.
    pub fn no_grad_guard(&self) -> NoGradGuard<'_, T> {
        self.no_grad_depth.set(self.no_grad_depth.get() + 1);
        NoGradGuard { tape: self }
    }

    /// Turns gradient tracking on (whatever the enclosing `no_grad` scopes) until the guard is
    /// dropped: a recorded backward records its rules even when called inside `no_grad`, as
    /// PyTorch's `create_graph` does.
    pub(crate) fn enable_grad_guard(&self) -> EnableGradGuard<'_, T> {
        let restore = self.no_grad_depth.replace(0);
        EnableGradGuard { tape: self, restore }
    }

    /// Records a user-defined (or any) op applied to `inputs`. Panics with the op's error.
    ///
    /// See [`Op`] for an example.
    #[track_caller]
    pub fn apply<'t>(&'t self, op: impl Op<T>, inputs: &[Var<'t, T>]) -> Var<'t, T> {
        let loc = Location::caller();
        self.record(OpRef::new(op), inputs, loc).unwrap_or_else(|e| fail(e))
    }

    /// Like [`apply`](Self::apply), returning the error instead of panicking. On error the tape is
    /// unchanged.
    #[track_caller]
    pub fn try_apply<'t>(&'t self, op: impl Op<T>, inputs: &[Var<'t, T>]) -> Result<Var<'t, T>> {
        self.record(OpRef::new(op), inputs, Location::caller())
    }

    /// Checks that `v` belongs to this tape.
    pub(crate) fn check_own(&self, v: &Var<'_, T>, op: &str) -> Result<()> {
        if std::ptr::eq(self, v.tape) {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::ForeignVar,
                op,
                format!(
                    "a Var from tape #{} was used with tape #{}; every operand must be recorded on the same tape",
                    v.tape.id, self.id
                ),
            ))
        }
    }

    /// The one place nodes are appended: runs the forward and records the result.
    pub(crate) fn record<'t>(
        &'t self,
        op: OpRef<T>,
        inputs: &[Var<'t, T>],
        location: &'static Location<'static>,
    ) -> Result<Var<'t, T>> {
        let o = op.get();
        if let Some(v) = inputs.iter().find(|v| !std::ptr::eq(self, v.tape)) {
            return Err(self.check_own(v, o.name()).unwrap_err().at(location));
        }
        let (value, tracked) = {
            let nodes = self.nodes.borrow();
            // (push loops: SmallVec's collect/extend path is several times slower for 1–2 items)
            let mut vals: SmallVec<[&Tensor<T>; 4]> = SmallVec::new();
            for v in inputs {
                vals.push(&nodes[v.index].value);
            }
            let value = o.forward(&vals).map_err(|e| e.at(location))?;
            if self.n_observers.get() > 0 {
                let idx: SmallVec<[usize; 4]> = inputs.iter().map(|v| v.index).collect();
                for obs in self.observers() {
                    obs.recording(self, o.name(), &idx, &value)
                        .map_err(|e| e.at(location))?;
                }
            }
            let tracked = inputs.iter().any(|v| nodes[v.index].requires_grad);
            (value, tracked)
        };
        let (requires_grad, cut) = match (tracked, self.grad_enabled()) {
            (true, true) => (true, None),
            (true, false) => (false, Some(Cut::NoGrad)),
            (false, _) => (false, None),
        };
        let mut idx = SmallVec::new();
        for v in inputs {
            idx.push(v.index);
        }
        let mut nodes = self.nodes.borrow_mut();
        nodes.push(Node {
            value,
            op: Some(op),
            inputs: idx,
            requires_grad,
            is_var: false,
            location,
            cut,
        });
        Ok(Var {
            tape: self,
            index: nodes.len() - 1,
        })
    }

    /// Records a built-in op, panicking with its error (which names the op, shapes and caller).
    #[track_caller]
    pub(crate) fn op<'t>(&'t self, op: OpRef<T>, inputs: &[Var<'t, T>]) -> Var<'t, T> {
        self.record(op, inputs, Location::caller()).unwrap_or_else(|e| fail(e))
    }

    /// Attaches an observer: it sees every node recorded and every gradient produced from now on.
    pub fn add_observer(&self, observer: Arc<dyn Observer<T>>) {
        self.observers.borrow_mut().push(observer);
        self.n_observers.set(self.n_observers.get() + 1);
    }

    /// Detaches every observer whose [`name`](Observer::name) is `name`; returns how many.
    pub fn remove_observers(&self, name: &str) -> usize {
        let mut obs = self.observers.borrow_mut();
        let before = obs.len();
        obs.retain(|o| o.name() != name);
        self.n_observers.set(obs.len());
        before - obs.len()
    }

    /// True when an observer named `name` is attached.
    pub fn has_observer(&self, name: &str) -> bool {
        self.observers.borrow().iter().any(|o| o.name() == name)
    }

    /// The attached observers (a snapshot: observers may be added while it is used).
    pub(crate) fn observers(&self) -> SmallVec<[Arc<dyn Observer<T>>; 2]> {
        if self.n_observers.get() == 0 {
            return SmallVec::new();
        }
        self.observers.borrow().iter().cloned().collect()
    }

    /// A read-only view of node `i` (for the crate's own walkers: backward, checks, exports).
    pub(crate) fn node(&self, i: usize) -> Ref<'_, Node<T>> {
        Ref::map(self.nodes.borrow(), |n| &n[i])
    }

    /// The name of node `i`'s op, or `var` / `constant` for a leaf.
    pub(crate) fn node_name(&self, i: usize) -> &'static str {
        let n = self.node(i);
        n.op.as_ref()
            .map_or(if n.is_var { "var" } else { "constant" }, |o| o.get().name())
    }

    /// Describes node `i` for error messages: `exp [3, 4] (built at src/main.rs:10:5)`.
    pub(crate) fn describe(&self, i: usize) -> String {
        let name = self.node_name(i);
        let n = self.node(i);
        format!(
            "{} {} (built at {}:{})",
            name,
            fmt_shape(n.value.shape()),
            n.location.file(),
            n.location.line()
        )
    }
}

/// Keeps gradient tracking off while alive; see [`Tape::no_grad_guard`].
pub struct NoGradGuard<'t, T: Float> {
    tape: &'t Tape<T>,
}

impl<T: Float> std::fmt::Debug for NoGradGuard<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NoGradGuard(tape #{})", self.tape.id())
    }
}

impl<T: Float> Drop for NoGradGuard<'_, T> {
    fn drop(&mut self) {
        self.tape.no_grad_depth.set(self.tape.no_grad_depth.get() - 1);
    }
}

/// Keeps gradient tracking on while alive, restoring the enclosing `no_grad` depth on drop.
pub(crate) struct EnableGradGuard<'t, T: Float> {
    tape: &'t Tape<T>,
    restore: u32,
}

impl<T: Float> Drop for EnableGradGuard<'_, T> {
    fn drop(&mut self) {
        self.tape.no_grad_depth.set(self.restore);
    }
}

/// Truncates the tape back to a length when dropped (on return, on error and on unwind), unless
/// disarmed: the clean-up after a backward whose rules panicked or failed.
pub(crate) struct TruncateGuard<'t, T: Float> {
    tape: &'t Tape<T>,
    len: Option<usize>,
}

impl<'t, T: Float> TruncateGuard<'t, T> {
    /// Remembers the tape's current length.
    pub(crate) fn new(tape: &'t Tape<T>) -> Self {
        TruncateGuard {
            tape,
            len: Some(tape.len()),
        }
    }

    /// Keeps what was recorded (the success path of a recorded backward).
    pub(crate) fn disarm(mut self) {
        self.len = None;
    }
}

impl<T: Float> Drop for TruncateGuard<'_, T> {
    fn drop(&mut self) {
        if let Some(len) = self.len
            && let Ok(mut nodes) = self.tape.nodes.try_borrow_mut()
        {
            nodes.truncate(len);
        }
    }
}

impl<'t, T: Float> Var<'t, T> {
    /// The tape this variable lives on.
    pub fn tape(&self) -> &'t Tape<T> {
        self.tape
    }

    /// The node's position on the tape.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The value (shares the buffer, no copy).
    ///
    /// Inside a function being compiled ([`crate::compile`]) reading a value is refused: the
    /// compiled step replays the recorded ops on new inputs, so a value read while tracing would
    /// be stale.
    #[track_caller]
    pub fn value(&self) -> Tensor<T> {
        crate::autodiff::trace::note_read(Location::caller());
        self.peek()
    }

    /// The value, for the library's own checks of shapes and extents (which a compiled step may
    /// read: they do not depend on the data).
    pub(crate) fn peek(&self) -> Tensor<T> {
        self.tape.node(self.index).value.clone()
    }

    /// The shape of the value.
    pub fn shape(&self) -> crate::Shape {
        crate::core::shape::shape_of(self.tape.node(self.index).value.shape())
    }

    /// The number of elements.
    pub fn numel(&self) -> usize {
        self.tape.node(self.index).value.numel()
    }

    /// The only element of a one-element value. Panics otherwise.
    #[track_caller]
    pub fn item(&self) -> T {
        crate::autodiff::trace::note_read(Location::caller());
        self.tape.node(self.index).value.item()
    }

    /// True when a gradient can flow into this variable.
    pub fn requires_grad(&self) -> bool {
        self.tape.node(self.index).requires_grad
    }

    /// The name of the op that produced this variable (`"var"` or `"constant"` for leaves).
    pub fn op_name(&self) -> &'static str {
        let n = self.tape.node(self.index);
        n.op.as_ref()
            .map_or(if n.is_var { "var" } else { "constant" }, |o| o.get().name())
    }

    /// Where in the user's code this variable was built.
    pub fn location(&self) -> &'static Location<'static> {
        self.tape.node(self.index).location
    }

    /// The same value with gradient flow stopped (a constant sharing the buffer, no copy).
    ///
    /// ```
    /// let tape = tapegrad::Tape::<f64>::new();
    /// let x = tape.var(tapegrad::Tensor::scalar(3.0));
    /// let y = x * x.detach();          // d/dx = x.detach() = 3, not 2x = 6
    /// assert_eq!(y.backward()[x].item(), 3.0);
    /// ```
    #[track_caller]
    pub fn detach(self) -> Var<'t, T> {
        let cut = self.requires_grad().then_some(Cut::Detached);
        if crate::autodiff::trace::tracing() {
            // While tracing, a detached value must follow new inputs on replay: it is recorded as
            // an identity op through which no gradient flows, not as a leaf holding today's value.
            let out = {
                let _off = self.tape.no_grad_guard();
                self.tape.op(OpRef::Static(&crate::autodiff::trace::Detach), &[self])
            };
            self.tape.nodes.borrow_mut()[out.index].cut = cut;
            return out;
        }
        let v = self.peek();
        self.tape.leaf_with(v, false, cut, Location::caller())
    }
}

// ---------------------------------------------------------------------------------------------
// How a node holds its op.
// ---------------------------------------------------------------------------------------------

/// The object-safe face of an [`Op`], as a node stores it: the one generic rule instantiated for
/// each interpretation (values, recorded `Var`s).
pub(crate) trait DynOp<T: Float>: Send + Sync {
    fn name(&self) -> &'static str;
    fn params(&self) -> String;
    fn forward(&self, inputs: &[&Tensor<T>]) -> Result<Tensor<T>>;
    /// The rule on values (first-order backward).
    fn vjp_values(&self, cx: &VjpCtx<'_, Tensor<T>>, g: &Tensor<T>) -> Result<Cotangents<Tensor<T>>>;
    /// The rule on recorded values (recorded backward).
    fn vjp_vars<'t>(&self, cx: &VjpCtx<'_, Var<'t, T>>, g: &Var<'t, T>) -> Result<Cotangents<Var<'t, T>>>;
    /// The op itself, for the crate's tools that treat some op types specially (a checkpointed
    /// segment, the composed twins of fused ops).
    fn as_any(&self) -> &dyn std::any::Any;
    /// The op's Rust type name (`tapegrad::…` for the library's own ops).
    fn type_name(&self) -> &'static str;
    /// The op as a slice kernel, when it is elementwise (see [`Op::elementwise`]).
    fn elementwise(&self) -> Option<crate::autodiff::rule::Elementwise<'_, T>>;
    /// The elementwise op at one point (its kernel's `one`: the same bits as the kernel on one
    /// element), its arguments first among `a, b, c`. One virtual call, arguments and result in
    /// registers, where `elementwise()` then `one` would be two: a compiled loop of scalars makes
    /// one per member, on its chain's critical path. Panics when the op is not elementwise.
    fn elementwise_one(&self, a: T, b: T, c: T) -> T;
}

impl<T: Float, O: Op<T>> DynOp<T> for O {
    fn name(&self) -> &'static str {
        Op::name(self)
    }
    fn params(&self) -> String {
        Op::params(self)
    }
    fn forward(&self, inputs: &[&Tensor<T>]) -> Result<Tensor<T>> {
        Op::forward(self, inputs)
    }
    fn vjp_values(&self, cx: &VjpCtx<'_, Tensor<T>>, g: &Tensor<T>) -> Result<Cotangents<Tensor<T>>> {
        self.vjp(cx, g)
    }
    fn vjp_vars<'t>(&self, cx: &VjpCtx<'_, Var<'t, T>>, g: &Var<'t, T>) -> Result<Cotangents<Var<'t, T>>> {
        self.vjp(cx, g)
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn type_name(&self) -> &'static str {
        std::any::type_name::<O>()
    }
    fn elementwise(&self) -> Option<crate::autodiff::rule::Elementwise<'_, T>> {
        Op::elementwise(self)
    }
    #[inline]
    fn elementwise_one(&self, a: T, b: T, c: T) -> T {
        use crate::autodiff::rule::Elementwise;
        match Op::elementwise(self).expect("fused: an elementwise op") {
            Elementwise::Unary(f) => f.one(a),
            Elementwise::Binary(f) => f.one(a, b),
            Elementwise::Ternary(f) => f.one(a, b, c),
        }
    }
}

/// How a node holds its op: built-in stateless ops are shared statics (no allocation per node),
/// ops with parameters are reference-counted.
#[derive(Clone)]
pub(crate) enum OpRef<T: Float> {
    Static(&'static dyn DynOp<T>),
    Shared(Arc<dyn DynOp<T>>),
}

impl<T: Float> OpRef<T> {
    /// A parameterised (or user) op, moved behind a reference count.
    pub(crate) fn new(op: impl Op<T>) -> Self {
        OpRef::Shared(Arc::new(op))
    }

    pub(crate) fn get(&self) -> &dyn DynOp<T> {
        match self {
            OpRef::Static(o) => *o,
            OpRef::Shared(o) => &**o,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Observers.
// ---------------------------------------------------------------------------------------------

/// The one hook through which tools watch a tape: an [`Observer`] sees every node as it is
/// recorded and every gradient as a backward sweep produces it. Anomaly mode
/// ([`crate::debug::anomaly`]) and the profiler ([`crate::debug::profile`]) are observers; the
/// tape and the sweep call no tool by name.
///
/// ```
/// use std::sync::{Arc, atomic::{AtomicUsize, Ordering}};
/// use tapegrad::{autodiff::Observer, Tape, Tensor};
///
/// /// Counts the rules a backward runs.
/// #[derive(Debug, Default)]
/// struct CountRules(AtomicUsize);
/// impl Observer<f64> for CountRules {
///     fn rule_begin(&self, _tape: &Tape<f64>, _node: usize) {
///         self.0.fetch_add(1, Ordering::Relaxed);
///     }
/// }
///
/// let tape = Tape::<f64>::new();
/// let counter = Arc::new(CountRules::default());
/// tape.add_observer(counter.clone());
/// let x = tape.var(Tensor::scalar(2.0));
/// let _ = (x.exp() * x).backward();
/// assert_eq!(counter.0.load(Ordering::Relaxed), 2); // mul, exp
/// ```
///
/// Every method has an empty default.
///
/// Methods receive the tape, so they can describe nodes (`tape.describe(i)`-style messages go
/// through the public `Var`/graph API); they must not record on it.
pub trait Observer<T: Float>: Send + Sync + std::fmt::Debug {
    /// A name, so the observer can be found and detached ([`Tape::remove_observers`]).
    fn name(&self) -> &'static str {
        "observer"
    }
    /// An op named `op` with input nodes `inputs` computed `value` and is about to be recorded;
    /// an error refuses it (nothing is recorded and the op's caller gets the error).
    fn recording(&self, tape: &Tape<T>, op: &'static str, inputs: &[usize], value: &Tensor<T>) -> Result<()> {
        let _ = (tape, op, inputs, value);
        Ok(())
    }
    /// A backward sweep from node `output` starts.
    fn backward_begin(&self, tape: &Tape<T>, output: usize) {
        let _ = (tape, output);
    }
    /// The sweep is about to run node `node`'s rule.
    fn rule_begin(&self, tape: &Tape<T>, node: usize) {
        let _ = (tape, node);
    }
    /// Node `node`'s rule produced `grad` for its input `input`, from the cotangent `incoming`;
    /// an error stops the backward (which returns it).
    fn gradient(
        &self,
        tape: &Tape<T>,
        node: usize,
        input: usize,
        grad: &Tensor<T>,
        incoming: &Tensor<T>,
    ) -> Result<()> {
        let _ = (tape, node, input, grad, incoming);
        Ok(())
    }
    /// Node `node`'s gradients have been accumulated into its inputs.
    fn rule_end(&self, tape: &Tape<T>, node: usize) {
        let _ = (tape, node);
    }
    /// The sweep ended: successfully, with an error, or by a panic in a rule (always called once
    /// for each `backward_begin`).
    fn backward_end(&self, tape: &Tape<T>) {
        let _ = tape;
    }
}
