//! Anomaly mode: find the first NaN or infinity, the op that made it, and your line that built it.
//!
//! Off by default. Switch it on with [`Tape::set_anomaly`] or make the tape with
//! [`Tape::with_anomaly`]; then
//!
//! * **forward**: every recorded value is checked as it is computed. The first op whose output
//!   holds a NaN or `±∞` fails with an [`Error`] of kind [`ErrorKind::NonFinite`], naming the op,
//!   the element, your source line, and whether its inputs were already non-finite (and if so
//!   which one and where *it* was built — a leaf you passed in, typically). The node is not
//!   recorded. Like every error, it is a panic in the panicking forms (`x.log()`, `a + b`) and an
//!   `Err` from the `try_` forms ([`Tape::try_apply`]).
//! * **backward**: every gradient is checked as the sweep produces it. The first non-finite one
//!   fails the whole backward with an `Err(NonFinite)` from [`Var::try_backward`](crate::Var::try_backward),
//!   [`Tape::try_grad`], [`Tape::try_grad_graph`] (a panic from their panicking forms). The report
//!   names the op whose rule produced it, the input it was for, your line that built that op, and
//!   the chain of ops from it to the output being differentiated.
//!
//! ```
//! use tapegrad::{ErrorKind, Tape, Tensor};
//! let tape = Tape::<f64>::with_anomaly();
//! let x = tape.var(Tensor::from_vec(vec![1.0, 0.0], [2]));
//! let r = x.sqrt();                      // √0 = 0 is fine in the forward…
//! let loss = (r * 3.0).sum();
//! let e = loss.try_backward().unwrap_err(); // …but d√x/dx = ∞ at 0
//! assert_eq!(e.kind(), ErrorKind::NonFinite);
//! assert_eq!(e.op(), "sqrt");
//! let msg = e.to_string();
//! assert!(msg.contains("Path to the output: sqrt (") && msg.contains("→ sum ("), "{msg}");
//! ```
//!
//! What it does not catch: a non-finite value in a leaf is reported at the first op that reads
//! it (leaves are recorded without a check); and because the untaken branch of
//! [`select`](crate::Var::select) is still computed, `where(x > 0, sqrt(x), 0)` at `x < 0` is reported
//! in the forward (`sqrt(−1) = NaN`) even though its gradient is clean — compute the branch on a
//! safe input (`sqrt(where(x > 0, x, 1))`) to keep anomaly mode quiet.
//!
//! Cost: one finiteness scan per recorded value and per gradient (measured in `benches/anomaly.rs`,
//! see the README).

use crate::autodiff::tape::Observer;
use crate::autodiff::tape::Tape;
use crate::core::error::{Error, ErrorKind, Result};
use crate::core::float::Float;
use crate::core::shape::fmt_shape;
use crate::tensor::Tensor;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The observer's name on the tape.
const NAME: &str = "anomaly";

impl<T: Float> Tape<T> {
    /// An empty tape with anomaly mode on (see [`crate::debug::anomaly`]).
    pub fn with_anomaly() -> Self {
        let t = Self::new();
        t.set_anomaly(true);
        t
    }

    /// Switches anomaly mode on or off for everything recorded or differentiated from now on.
    pub fn set_anomaly(&self, on: bool) {
        if on && !self.has_observer(NAME) {
            self.add_observer(Arc::new(Anomaly::default()));
        } else if !on {
            self.remove_observers(NAME);
        }
    }

    /// True when anomaly mode is on.
    pub fn anomaly(&self) -> bool {
        self.has_observer(NAME)
    }
}

/// Anomaly mode, as an [`Observer`] of the tape: checks every recorded value and every gradient.
/// The forward checks pause while a backward runs (a recorded backward's inner ops are reported
/// through the gradients they produce, with a better message).
#[derive(Debug, Default)]
struct Anomaly {
    /// How many backward sweeps are running.
    in_backward: AtomicUsize,
    /// The output of each running sweep (innermost last), for the path in a report.
    outputs: std::sync::Mutex<Vec<usize>>,
}

impl<T: Float> Observer<T> for Anomaly {
    fn name(&self) -> &'static str {
        NAME
    }
    fn recording(&self, tape: &Tape<T>, op: &'static str, inputs: &[usize], value: &Tensor<T>) -> Result<()> {
        if self.in_backward.load(Ordering::Relaxed) > 0 || all_finite(value.data()) {
            return Ok(());
        }
        Err(forward_error(tape, op, inputs, value))
    }
    fn backward_begin(&self, _tape: &Tape<T>, output: usize) {
        self.in_backward.fetch_add(1, Ordering::Relaxed);
        self.outputs.lock().unwrap_or_else(|e| e.into_inner()).push(output);
    }
    fn backward_end(&self, _tape: &Tape<T>) {
        self.in_backward.fetch_sub(1, Ordering::Relaxed);
        self.outputs.lock().unwrap_or_else(|e| e.into_inner()).pop();
    }
    fn gradient(
        &self,
        tape: &Tape<T>,
        node: usize,
        input: usize,
        grad: &Tensor<T>,
        incoming: &Tensor<T>,
    ) -> Result<()> {
        if all_finite(grad.data()) {
            return Ok(());
        }
        let top = self
            .outputs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last()
            .copied()
            .unwrap_or(node);
        check_gradient(tape, node, input, grad, all_finite(incoming.data()), top)
    }
}

/// True when every element is finite, checked without branches so it vectorises: `x · 0` is `0`
/// for a finite `x` and NaN for `±∞` or NaN, and a NaN survives the sum.
#[inline]
pub(crate) fn all_finite<T: Float>(x: &[T]) -> bool {
    let mut acc = [T::ZERO; 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for k in 0..8 {
            acc[k] += c[k] * T::ZERO;
        }
    }
    let mut s = acc.iter().fold(T::ZERO, |a, &b| a + b);
    for &r in rest {
        s += r * T::ZERO;
    }
    s == T::ZERO
}

/// The first non-finite element of `t`: its multi-index, its value, and how many there are.
fn first_bad<T: Float>(t: &Tensor<T>) -> Option<(Vec<usize>, T, usize)> {
    let d = t.data();
    let pos = d.iter().position(|x| !x.is_finite())?;
    let count = d.iter().filter(|x| !x.is_finite()).count();
    let mut idx = vec![0; t.ndim()];
    let mut rem = pos;
    for (a, &n) in t.shape().iter().enumerate().rev() {
        idx[a] = rem % n;
        rem /= n;
    }
    Some((idx, d[pos], count))
}

fn what<T: Float>(x: T) -> &'static str {
    if x.is_nan() {
        "NaN"
    } else if x > T::ZERO {
        "+inf"
    } else {
        "-inf"
    }
}

/// The error for an op whose forward produced a non-finite value (called from `Tape::record`).
fn forward_error<T: Float>(tape: &Tape<T>, op: &'static str, inputs: &[usize], out: &Tensor<T>) -> Error {
    let (idx, x, count) = first_bad(out).expect("called on a non-finite value");
    let shapes: Vec<String> = inputs.iter().map(|&i| fmt_shape(tape.node(i).value.shape())).collect();
    let mut msg = format!(
        "anomaly mode: the forward produced {} at element {idx:?} of its {} output ({count} non-finite element{}), from inputs {}",
        what(x),
        fmt_shape(out.shape()),
        if count == 1 { "" } else { "s" },
        if shapes.is_empty() {
            "()".into()
        } else {
            shapes.join(", ")
        },
    );
    let bad_inputs: Vec<String> = inputs
        .iter()
        .enumerate()
        .filter_map(|(k, &j)| {
            let val = tape.node(j).value.clone();
            first_bad(&val)
                .map(|(i, x, _)| format!("input {k} ({}) already holds {} at {i:?}", tape.describe(j), what(x)))
        })
        .collect();
    if bad_inputs.is_empty() {
        msg.push_str("; all inputs were finite, so this op made it");
    } else {
        msg.push_str("; ");
        msg.push_str(&bad_inputs.join("; "));
    }
    Error::new(ErrorKind::NonFinite, op, msg)
}

/// Checks the gradient `gk` that node `i`'s rule produced for its input `k`. `g_finite` says
/// whether the gradient that reached node `i` was finite.
fn check_gradient<T: Float>(
    tape: &Tape<T>,
    i: usize,
    k: usize,
    gk: &Tensor<T>,
    g_finite: bool,
    top: usize,
) -> Result<()> {
    if all_finite(gk.data()) {
        return Ok(());
    }
    let Some((idx, x, count)) = first_bad(gk) else {
        return Ok(());
    };
    let (name, location, j) = {
        let n = tape.node(i);
        let name = n.op.as_ref().map_or("leaf", |o| o.get().name());
        (name, n.location, n.inputs[k])
    };
    let incoming = if g_finite {
        "the gradient reaching it was finite, so its rule made this"
    } else {
        "the gradient reaching it was already non-finite (a non-finite cotangent?)"
    };
    let chain = chain_to_output(tape, i, top);
    let msg = format!(
        "anomaly mode: the backward of node #{i} ({}) produced a gradient with {} at element {idx:?} \
         ({count} non-finite element{}) for its input {k} ({}); {incoming}. \
         Path to the output: {chain}",
        tape.describe(i),
        what(x),
        if count == 1 { "" } else { "s" },
        tape.describe(j),
    );
    Err(Error::new(ErrorKind::NonFinite, name, msg).at(location))
}

/// One chain of ops from node `from` to node `to` (its consumer, its consumer's consumer, …), as
/// `exp (src/main.rs:12) → sum (src/main.rs:13)`. Found when reporting only: a forward pass over
/// `from..=to` marks what `from` reaches, then a walk back from `to` follows marked inputs.
pub(crate) fn chain_to_output<T: Float>(tape: &Tape<T>, from: usize, to: usize) -> String {
    let nodes = tape.nodes.borrow();
    let mut reach = vec![false; to + 1 - from];
    reach[0] = true;
    for n in from + 1..=to {
        reach[n - from] = nodes[n].inputs.iter().any(|&j| j >= from && reach[j - from]);
    }
    let mut path = vec![to];
    let mut cur = to;
    while cur != from {
        let Some(&next) = nodes[cur].inputs.iter().find(|&&j| j >= from && reach[j - from]) else {
            break; // `to` does not depend on `from` (cannot happen from the sweep)
        };
        path.push(next);
        cur = next;
    }
    path.reverse();
    path.iter()
        .map(|&n| {
            let node = &nodes[n];
            let name = node
                .op
                .as_ref()
                .map_or(if node.is_var { "var" } else { "constant" }, |o| o.get().name());
            format!("{name} ({}:{})", node.location.file(), node.location.line())
        })
        .collect::<Vec<_>>()
        .join(" → ")
}
