//! A backward profiler: what a recorded loss costs, op type by op type.
//!
//! [`profile`] replays a tape that has already been recorded:
//!
//! * **forward** — each op node's [`Op::forward`](crate::Op::forward) is re-run, in tape order, on
//!   the input values stored on the tape, every result kept until the replay ends (as a real
//!   recording keeps them);
//! * **backward** — the real first-order backward ([`Var::backward`](crate::Var::backward)'s
//!   sweep) is run from the loss with a timing [`Observer`] attached to the tape, timing each
//!   node's VJP rule and, separately, the checking and accumulation of its gradients;
//! * **kept** — the bytes of value each node keeps alive on the tape (a buffer shared by a reshape
//!   or a detach is counted once).
//!
//! Each node's time is the fastest of [`ProfileOptions::rounds`] replays: on a shared machine,
//! interference only ever adds time. The totals are sums over nodes; [`Profile::ratio`] is
//! backward ÷ forward for the whole loss. [`profile_fn`] also times the real passes end to end
//! (recording the loss on a fresh tape, then `backward()`), which adds the tape's own overhead.
//!
//! ```
//! use tapegrad::{Tape, Tensor};
//! use tapegrad::profile::{profile, ProfileOptions};
//!
//! let tape = Tape::<f64>::new();
//! let x = tape.var(Tensor::rand_normal([8, 10], 0.0, 1.0, 1));
//! let m = x.max_axis(1, true).detach();
//! let e = (x - m).exp();
//! let loss = (e / e.sum_axis(1, true)).log().sum();
//! let p = profile(loss, &ProfileOptions::quick());
//! assert_eq!(p.row("exp").unwrap().count, 1);
//! assert_eq!(p.row("exp").unwrap().bytes, 8 * 10 * 8);
//! assert!(p.ratio() > 0.0);
//! println!("{p}");
//! ```

use crate::autodiff::tape::Observer;
use crate::autodiff::tape::{Tape, Var};
use crate::core::float::Float;
use crate::debug::graph::{fmt_bytes, nodes_info, reach};
use crate::tensor::Tensor;
use std::fmt;
use std::panic::Location;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How hard [`profile`] works for stable numbers.
#[derive(Clone, Debug)]
pub struct ProfileOptions {
    /// Replays of the forward and backward passes; each node's time is the fastest of them.
    pub rounds: usize,
}

impl Default for ProfileOptions {
    fn default() -> Self {
        ProfileOptions { rounds: 15 }
    }
}

impl ProfileOptions {
    /// One round: fast, noisy (for tests and doc examples).
    pub fn quick() -> Self {
        ProfileOptions { rounds: 1 }
    }

    /// `n` rounds.
    pub fn rounds(n: usize) -> Self {
        ProfileOptions { rounds: n }
    }
}

/// One line of a [`Profile`]: every node of one op type.
#[derive(Clone, Debug, PartialEq)]
pub struct OpRow {
    /// The op's name (`"var"`, `"constant"`, `"detach"` for leaves).
    pub op: &'static str,
    /// How many nodes of this type the loss uses.
    pub count: usize,
    /// How many of them the backward pass runs a VJP rule for.
    pub backward_count: usize,
    /// Total forward time of these nodes.
    pub forward: Duration,
    /// Total time of their VJP rules.
    pub backward: Duration,
    /// Bytes of value they keep on the tape.
    pub bytes: usize,
}

/// End-to-end times of the real passes (see [`profile_fn`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Measured {
    /// Recording the loss on a fresh tape (forward plus tape overhead).
    pub forward: Duration,
    /// `loss.backward()`, sweep and accumulation included.
    pub backward: Duration,
}

/// Cost of a recorded loss per op type; `Display` prints an aligned table.
#[derive(Clone, Debug)]
pub struct Profile {
    /// Element type name (`f32`/`f64`).
    pub dtype: &'static str,
    /// One row per op type, in order of first appearance on the tape (leaves first).
    pub rows: Vec<OpRow>,
    /// Time the backward pass spends adding up the gradients of values used more than once.
    pub accumulate: Duration,
    /// Nodes on the tape up to the loss that the loss does not use (not in the rows).
    pub unused_nodes: usize,
    /// End-to-end timings, when measured.
    pub measured: Option<Measured>,
}

impl Profile {
    /// The row for op type `op`.
    pub fn row(&self, op: &str) -> Option<&OpRow> {
        self.rows.iter().find(|r| r.op == op)
    }

    /// Sum of the forward times.
    pub fn forward_total(&self) -> Duration {
        self.rows.iter().map(|r| r.forward).sum()
    }

    /// Sum of the VJP times plus the gradient accumulation.
    pub fn backward_total(&self) -> Duration {
        self.rows.iter().map(|r| r.backward).sum::<Duration>() + self.accumulate
    }

    /// Bytes kept on the tape by every node the loss uses, leaves included.
    pub fn bytes_total(&self) -> usize {
        self.rows.iter().map(|r| r.bytes).sum()
    }

    /// Bytes kept by op outputs (leaves — inputs, parameters, detached copies — excluded): what
    /// the recording adds on top of the data.
    pub fn bytes_saved_by_ops(&self) -> usize {
        self.rows
            .iter()
            .filter(|r| !matches!(r.op, "var" | "constant" | "detach"))
            .map(|r| r.bytes)
            .sum()
    }

    /// Number of op nodes (leaves excluded).
    pub fn op_nodes(&self) -> usize {
        self.rows
            .iter()
            .filter(|r| !matches!(r.op, "var" | "constant" | "detach"))
            .map(|r| r.count)
            .sum()
    }

    /// Backward ÷ forward for the whole loss (sums over nodes).
    pub fn ratio(&self) -> f64 {
        let f = self.forward_total().as_secs_f64();
        if f > 0.0 {
            self.backward_total().as_secs_f64() / f
        } else {
            0.0
        }
    }
}

/// Formats a duration with a unit that keeps 3–4 significant digits.
pub fn fmt_duration(d: Duration) -> String {
    let ns = d.as_secs_f64() * 1e9;
    if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.1} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let head = ["op", "count", "forward", "backward", "bwd/fwd", "kept"];
        let ratio = |b: Duration, fw: Duration| {
            if fw.is_zero() {
                "-".to_string()
            } else {
                format!("{:.2}", b.as_secs_f64() / fw.as_secs_f64())
            }
        };
        let leaf = |op: &str| matches!(op, "var" | "constant" | "detach");
        let mut lines: Vec<[String; 6]> = Vec::new();
        for r in &self.rows {
            let fw = if leaf(r.op) {
                "-".to_string()
            } else {
                fmt_duration(r.forward)
            };
            let (bw, rt) = if leaf(r.op) || r.backward_count == 0 {
                ("-".to_string(), "-".to_string())
            } else {
                (fmt_duration(r.backward), ratio(r.backward, r.forward))
            };
            lines.push([r.op.to_string(), r.count.to_string(), fw, bw, rt, fmt_bytes(r.bytes)]);
        }
        if !self.accumulate.is_zero() {
            let b = fmt_duration(self.accumulate);
            lines.push(["(accumulate)".into(), "-".into(), "-".into(), b, "-".into(), "-".into()]);
        }
        let total = [
            "total".to_string(),
            self.rows.iter().map(|r| r.count).sum::<usize>().to_string(),
            fmt_duration(self.forward_total()),
            fmt_duration(self.backward_total()),
            format!("{:.2}", self.ratio()),
            fmt_bytes(self.bytes_total()),
        ];
        let mut w = head.map(str::len);
        for l in lines.iter().chain(std::iter::once(&total)) {
            for (k, c) in l.iter().enumerate() {
                w[k] = w[k].max(c.chars().count());
            }
        }
        let row = |f: &mut fmt::Formatter<'_>, c: &[String; 6]| -> fmt::Result {
            write!(f, "{:<w0$}", c[0], w0 = w[0])?;
            for k in 1..6 {
                let pad = w[k] - c[k].chars().count();
                write!(f, "  {}{}", " ".repeat(pad), c[k])?;
            }
            writeln!(f)
        };
        row(f, &head.map(String::from))?;
        let rule: usize = w.iter().sum::<usize>() + 2 * 5;
        writeln!(f, "{}", "-".repeat(rule))?;
        for l in &lines {
            row(f, l)?;
        }
        writeln!(f, "{}", "-".repeat(rule))?;
        row(f, &total)?;
        write!(
            f,
            "{} op nodes, {} kept by op outputs ({}); backward ÷ forward = {:.2}",
            self.op_nodes(),
            fmt_bytes(self.bytes_saved_by_ops()),
            self.dtype,
            self.ratio()
        )?;
        if self.unused_nodes > 0 {
            write!(f, "; {} recorded nodes unused by the loss", self.unused_nodes)?;
        }
        if let Some(m) = self.measured {
            write!(
                f,
                "\nend to end: record {}, backward {} (ratio {:.2})",
                fmt_duration(m.forward),
                fmt_duration(m.backward),
                m.backward.as_secs_f64() / m.forward.as_secs_f64().max(1e-12)
            )?;
        }
        Ok(())
    }
}

/// Per-node times of one replay of the forward pass: each op node's forward re-run, in tape
/// order, on the stored input values, every result kept alive until the round ends (as a real
/// recording keeps them).
fn replay_forward<T: Float>(tape: &Tape<T>, used: &[bool], times: &mut [Duration]) {
    let mut keep: Vec<Tensor<T>> = Vec::new();
    for (i, t) in times.iter_mut().enumerate() {
        if !used[i] {
            continue;
        }
        let node = tape.node(i);
        let Some(op) = node.op.clone() else { continue };
        let ins: Vec<Tensor<T>> = node.inputs.iter().map(|&j| tape.node(j).value.clone()).collect();
        drop(node);
        let refs: Vec<&Tensor<T>> = ins.iter().collect();
        let t0 = Instant::now();
        let out = op.get().forward(&refs);
        *t = t0.elapsed();
        if let Ok(v) = out {
            keep.push(v);
        }
    }
    std::hint::black_box(keep);
}

/// Times the rules of a real backward through the tape's [`Observer`] hook: for each node, from
/// the start of its rule to its first gradient (the rule), and from there to the end of the node
/// (checking and accumulating its gradients).
#[derive(Debug, Default)]
struct Timing {
    marks: Mutex<(Option<Instant>, Option<Instant>)>,
    rules: Mutex<Vec<(usize, Duration, Duration)>>,
}

/// The timing observer's name on the tape (attached only while the profiler runs a backward).
const TIMING: &str = "tapegrad-profile";

impl<T: Float> Observer<T> for Timing {
    fn name(&self) -> &'static str {
        TIMING
    }
    fn rule_begin(&self, _tape: &Tape<T>, _node: usize) {
        *self.marks.lock().unwrap_or_else(|e| e.into_inner()) = (Some(Instant::now()), None);
    }
    fn gradient(&self, _: &Tape<T>, _: usize, _: usize, _: &Tensor<T>, _: &Tensor<T>) -> crate::Result<()> {
        let mut m = self.marks.lock().unwrap_or_else(|e| e.into_inner());
        if m.1.is_none() {
            m.1 = Some(Instant::now());
        }
        Ok(())
    }
    fn rule_end(&self, _tape: &Tape<T>, node: usize) {
        let end = Instant::now();
        let (start, first) = *self.marks.lock().unwrap_or_else(|e| e.into_inner());
        let start = start.unwrap_or(end);
        let first = first.unwrap_or(end);
        self.rules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((node, first - start, end - first));
    }
}

/// One first-order backward from `loss` — the real one ([`Var::backward`]'s sweep), watched by a
/// timing observer. Times each node's rule and returns the total time spent accumulating the
/// gradients of values used more than once (at the nodes that `accumulates` marks).
#[track_caller]
fn replay_backward<T: Float>(loss: Var<'_, T>, accumulates: &[bool], times: &mut [Duration]) -> Duration {
    let tape = loss.tape;
    let leaves: Vec<Var<'_, T>> = (0..=loss.index)
        .filter(|&i| tape.node(i).is_var)
        .map(|index| Var { tape, index })
        .collect();
    let timing = Arc::new(Timing::default());
    tape.add_observer(timing.clone());
    let r = tape.grad_impl(
        &[loss],
        &[Tensor::ones(loss.shape())],
        &leaves,
        true,
        Location::caller(),
    );
    tape.remove_observers(TIMING);
    if let Err(e) = r {
        crate::core::error::fail(e);
    }
    let mut acc = Duration::ZERO;
    for &(i, rule, accumulate) in timing.rules.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        times[i] = rule;
        if accumulates[i] {
            acc += accumulate;
        }
    }
    acc
}

/// The fastest of the rounds: on a shared machine interference only ever adds time.
fn fastest(v: Vec<Duration>) -> Duration {
    v.into_iter().min().unwrap_or_default()
}

/// Profiles the recorded computation of `loss` (a one-element value, or any value: the backward
/// pass is seeded with ones). Panics when the backward pass fails (as `loss.backward()` would).
#[track_caller]
pub fn profile<T: Float>(loss: Var<'_, T>, opts: &ProfileOptions) -> Profile {
    let tape = loss.tape;
    let info = nodes_info(tape, Some(loss.index));
    let (used, grad) = reach(&info, &[loss.index]);
    // Node i accumulates into an input j when a later consumer (visited first by the reverse
    // sweep) already gave j a gradient.
    let mut last_consumer = vec![None::<usize>; info.len()];
    let mut accumulates = vec![false; info.len()];
    for i in (0..info.len()).rev().filter(|&i| grad[i]) {
        for &j in info[i].inputs.iter().filter(|&&j| grad[j]) {
            match last_consumer[j] {
                Some(c) if c > i => accumulates[i] = true,
                _ => last_consumer[j] = Some(i),
            }
        }
    }
    let n = info.len();
    let rounds = opts.rounds.max(1);
    let mut fwd: Vec<Vec<Duration>> = vec![Vec::with_capacity(rounds); n];
    let mut bwd: Vec<Vec<Duration>> = vec![Vec::with_capacity(rounds); n];
    let mut acc = Vec::with_capacity(rounds);
    let mut ran_bwd = vec![false; n];
    let mut ft = vec![Duration::ZERO; n];
    let mut bt = vec![Duration::ZERO; n];
    for _ in 0..rounds {
        ft.fill(Duration::ZERO);
        bt.fill(Duration::MAX);
        replay_forward(tape, &used, &mut ft);
        acc.push(replay_backward(loss, &accumulates, &mut bt));
        for i in 0..n {
            fwd[i].push(ft[i]);
            ran_bwd[i] = bt[i] != Duration::MAX;
            bwd[i].push(if ran_bwd[i] { bt[i] } else { Duration::ZERO });
        }
    }
    let mut rows: Vec<OpRow> = Vec::new();
    for node in info.iter().filter(|x| used[x.index]) {
        let i = node.index;
        let (f, b) = (
            fastest(std::mem::take(&mut fwd[i])),
            fastest(std::mem::take(&mut bwd[i])),
        );
        match rows.iter_mut().find(|r| r.op == node.op) {
            Some(r) => {
                r.count += 1;
                r.backward_count += ran_bwd[i] as usize;
                r.forward += f;
                r.backward += b;
                r.bytes += node.bytes;
            }
            None => rows.push(OpRow {
                op: node.op,
                count: 1,
                backward_count: ran_bwd[i] as usize,
                forward: f,
                backward: b,
                bytes: node.bytes,
            }),
        }
    }
    // Leaves first (they are the data), then ops in order of first appearance.
    rows.sort_by_key(|r| !matches!(r.op, "var" | "constant" | "detach"));
    Profile {
        dtype: T::NAME,
        rows,
        accumulate: fastest(acc),
        unused_nodes: used.iter().filter(|&&u| !u).count(),
        measured: None,
    }
}

/// Records the loss built by `f` on fresh tapes to time the real passes end to end (recording,
/// then `backward()`), then profiles the last recording op by op with [`profile`].
///
/// ```
/// use tapegrad::{Tensor, profile::{profile_fn, ProfileOptions}};
/// let x = Tensor::<f32>::rand_normal([4, 5], 0.0, 1.0, 3);
/// let p = profile_fn(|tape| (tape.var(x.clone()).exp() * 2.0).sum(), &ProfileOptions::quick());
/// assert!(p.measured.is_some());
/// assert_eq!(p.op_nodes(), 3); // exp, mul_scalar, sum
/// ```
#[track_caller]
pub fn profile_fn<T: Float, F>(f: F, opts: &ProfileOptions) -> Profile
where
    F: for<'t> Fn(&'t Tape<T>) -> Var<'t, T>,
{
    let mut fw = Vec::new();
    let mut bw = Vec::new();
    for _ in 0..opts.rounds.max(1) {
        let tape = Tape::<T>::new();
        let t0 = Instant::now();
        let loss = f(&tape);
        let t1 = Instant::now();
        std::hint::black_box(loss.backward_with(Tensor::ones(loss.shape())));
        bw.push(t1.elapsed());
        fw.push(t1 - t0);
    }
    let tape = Tape::<T>::new();
    let loss = f(&tape);
    let mut p = profile(loss, opts);
    p.measured = Some(Measured {
        forward: fastest(fw),
        backward: fastest(bw),
    });
    p
}
