//! Graph export: a recorded tape as a Graphviz DOT picture.
//!
//! Each node of the tape becomes a box showing its op (and parameters), its shape, the bytes of
//! value it keeps alive, and the line of *your* code that built it. Colours say what the backward
//! pass will do with it:
//!
//! * **orange** — a gradient flows through this node on its way to a variable (`tape.var`);
//! * **blue** — a variable leaf, where gradients end up;
//! * **white** — a value the output depends on but no gradient flows through (constants, the
//!   max of a shift-invariant softmax, …);
//! * **grey, dashed** — recorded on the tape but not used by the output.
//!
//! A [`detach`](crate::Var::detach)ed value is a new constant leaf that shares its source's buffer;
//! the picture draws it with a dashed "detach" edge from its source, so the value flow stays
//! visible while the gradient flow is visibly cut. Values that share a buffer with an earlier node
//! (reshape, detach) are counted once. One-element values are held inline, never shared, so the
//! detach of one is drawn as a plain constant.
//!
//! ```
//! use tapegrad::{Tape, Tensor};
//! use tapegrad::graph::DotOptions;
//!
//! let tape = Tape::<f64>::new();
//! let x = tape.var(Tensor::rand_normal([2, 3], 0.0, 1.0, 7));
//! let m = x.max_axis(1, true).detach();
//! let e = (x - m).exp();
//! let y = e / e.sum_axis(1, true);
//! let dot = y.to_dot(&DotOptions::default().title("softmax, composed"));
//! assert!(dot.starts_with("digraph"));
//! assert!(dot.contains("exp") && dot.contains("sum(axis=1, keepdim)"));
//! assert!(dot.contains("label=\"detach\"")); // the dashed edge from the max to its detached copy
//! // Render it with: dot -Tsvg graph.dot -o graph.svg
//! ```

use crate::autodiff::tape::{Node, Tape, Var};
use crate::core::float::Float;
use crate::core::shape::fmt_shape;
use std::collections::HashMap;
use std::fmt::Write as _;

/// What a node of the tape is, for pictures and profiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    /// A leaf made with [`Tape::var`]: gradients are returned for it.
    Var,
    /// A leaf made with [`Tape::constant`] or [`Tape::scalar`].
    Constant,
    /// A constant leaf sharing the buffer of the earlier node it was detached from.
    Detached {
        /// The index of the node it shares its value with.
        source: usize,
    },
    /// The output of an op.
    Op,
}

/// A read-only summary of one node, as the graph export and the profiler see it.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    /// Position on the tape.
    pub index: usize,
    /// Leaf, detached leaf or op output.
    pub kind: NodeKind,
    /// The op's name (`"var"`, `"constant"`, `"detach"` for leaves).
    pub op: &'static str,
    /// The op's parameters (`axis=1, keepdim`), empty if none.
    pub params: String,
    /// Indices of the inputs.
    pub inputs: Vec<usize>,
    /// Shape of the value.
    pub shape: Vec<usize>,
    /// True when a gradient can flow into the node.
    pub requires_grad: bool,
    /// `file:line` of the code that built it.
    pub location: String,
    /// Bytes of value this node keeps alive, counting a buffer shared with an earlier node once
    /// (so a reshape or a detach keeps 0 new bytes).
    pub bytes: usize,
    /// The earlier node whose buffer this one shares, if any.
    pub shares: Option<usize>,
}

/// Summarises nodes `0..=last` of the tape (all of it when `last` is `None`).
pub(crate) fn nodes_info<T: Float>(tape: &Tape<T>, last: Option<usize>) -> Vec<NodeInfo> {
    let nodes = tape.nodes.borrow();
    let end = last.map_or(nodes.len(), |l| (l + 1).min(nodes.len()));
    let mut first_owner: HashMap<usize, usize> = HashMap::new();
    let mut out: Vec<NodeInfo> = Vec::with_capacity(end);
    for (i, n) in nodes[..end].iter().enumerate() {
        // One-element values live inline in the tensor: they never share a buffer. (The buffer
        // is found without reading the elements, which would make an unmade value.)
        let buffer = n.value.heap_buffer();
        let shares = buffer.and_then(|(addr, _)| match first_owner.get(&addr) {
            Some(&j) => Some(j),
            None => {
                first_owner.insert(addr, i);
                None
            }
        });
        let mut kind = node_kind(n, shares);
        // Two constants made from one tensor share a buffer too; only a constant sharing the value
        // of an op output or a variable is a detached copy.
        if let NodeKind::Detached { source } = kind
            && matches!(out[source].kind, NodeKind::Constant | NodeKind::Detached { .. })
        {
            kind = NodeKind::Constant;
        }
        let (op, params) = match (&n.op, kind) {
            (Some(o), _) => (o.get().name(), o.get().params()),
            (None, NodeKind::Var) => ("var", String::new()),
            (None, NodeKind::Detached { .. }) => ("detach", String::new()),
            (None, _) => ("constant", String::new()),
        };
        out.push(NodeInfo {
            index: i,
            kind,
            op,
            params,
            inputs: n.inputs.to_vec(),
            shape: n.value.shape().to_vec(),
            requires_grad: n.requires_grad,
            location: format!("{}:{}", n.location.file(), n.location.line()),
            bytes: match buffer {
                _ if shares.is_some() => 0,
                Some((_, bytes)) => bytes,
                // An inline value, or an unmade product (which holds no buffer of its own).
                None if n.value.numel() == 1 => std::mem::size_of::<T>(),
                None => 0,
            },
            shares,
        });
    }
    out
}

fn node_kind<T: Float>(n: &Node<T>, shares: Option<usize>) -> NodeKind {
    match (&n.op, n.is_var, shares) {
        (Some(_), _, _) => NodeKind::Op,
        (None, true, _) => NodeKind::Var,
        (None, false, Some(source)) => NodeKind::Detached { source },
        (None, false, None) => NodeKind::Constant,
    }
}

/// For each node up to `roots`' maximum: (used by a root, gradient flows through it on the way
/// to a variable). "Used" follows inputs and detach links; "gradient" follows inputs only, through
/// nodes that require a gradient.
pub(crate) fn reach(info: &[NodeInfo], roots: &[usize]) -> (Vec<bool>, Vec<bool>) {
    let n = info.len();
    let mut used = vec![false; n];
    let mut grad = vec![false; n];
    for &r in roots {
        if r < n {
            used[r] = true;
            grad[r] = info[r].requires_grad;
        }
    }
    for i in (0..n).rev() {
        if used[i] {
            for &j in &info[i].inputs {
                used[j] = true;
            }
            if let NodeKind::Detached { source } = info[i].kind {
                used[source] = true;
            }
        }
        if grad[i] {
            for &j in &info[i].inputs {
                if info[j].requires_grad {
                    grad[j] = true;
                }
            }
        }
    }
    (used, grad)
}

/// How [`to_dot`] draws a tape.
#[derive(Clone, Debug)]
pub struct DotOptions {
    /// A caption drawn above the graph.
    pub title: Option<String>,
    /// Show the source line of each node (default on).
    pub locations: bool,
    /// Leave out nodes the roots do not use (default off: they are drawn grey and dashed).
    pub prune: bool,
    /// Graphviz rank direction: `"TB"` (top to bottom, default) or `"LR"`.
    pub rankdir: &'static str,
}

impl Default for DotOptions {
    fn default() -> Self {
        DotOptions {
            title: None,
            locations: true,
            prune: false,
            rankdir: "TB",
        }
    }
}

impl DotOptions {
    /// Sets the caption.
    pub fn title(mut self, t: impl Into<String>) -> Self {
        self.title = Some(t.into());
        self
    }

    /// Shows or hides source lines.
    pub fn locations(mut self, on: bool) -> Self {
        self.locations = on;
        self
    }

    /// Leaves out nodes the roots do not use.
    pub fn prune(mut self, on: bool) -> Self {
        self.prune = on;
        self
    }

    /// Lays the graph out left to right.
    pub fn left_to_right(mut self) -> Self {
        self.rankdir = "LR";
        self
    }
}

/// Escapes a string for a double-quoted DOT label.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            _ => o.push(c),
        }
    }
    o
}

/// Formats a byte count: `48 B`, `12.5 KiB`, `3.0 MiB`.
pub fn fmt_bytes(b: usize) -> String {
    if b < 1024 {
        format!("{b} B")
    } else if b < 1024 * 1024 {
        format!("{:.1} KiB", b as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
    }
}

/// The nodes of `tape` up to the last of `roots` (the whole tape when `roots` is empty) as a
/// Graphviz DOT digraph. Render it with `dot -Tsvg in.dot -o out.svg`.
pub fn to_dot<T: Float>(tape: &Tape<T>, roots: &[Var<'_, T>], opts: &DotOptions) -> String {
    let last = roots.iter().map(|r| r.index).max();
    let info = nodes_info(tape, last);
    let root_idx: Vec<usize> = if roots.is_empty() {
        (0..info.len()).collect()
    } else {
        roots.iter().map(|r| r.index).collect()
    };
    let (used, grad) = reach(&info, &root_idx);
    let shown = |i: usize| !opts.prune || used[i];

    let mut s = String::new();
    let _ = writeln!(s, "digraph tape {{");
    let _ = writeln!(s, "  rankdir={};", opts.rankdir);
    let _ = writeln!(
        s,
        "  node [shape=box, style=\"rounded,filled\", fontname=\"Helvetica\", fontsize=10];"
    );
    let _ = writeln!(s, "  edge [fontname=\"Helvetica\", fontsize=8, color=\"#555555\"];");
    let kept: usize = info.iter().filter(|n| shown(n.index)).map(|n| n.bytes).sum();
    let nodes_shown = info.iter().filter(|n| shown(n.index)).count();
    let caption = format!(
        "{}{} nodes, {} of values kept ({})",
        opts.title.as_ref().map(|t| format!("{t}\n")).unwrap_or_default(),
        nodes_shown,
        fmt_bytes(kept),
        T::NAME
    );
    let _ = writeln!(s, "  labelloc=t; fontname=\"Helvetica\"; fontsize=12;");
    let _ = writeln!(s, "  label=\"{}\";", esc(&caption));
    for n in info.iter().filter(|n| shown(n.index)) {
        let i = n.index;
        let mut label = format!("#{i} {}", n.op);
        if !n.params.is_empty() {
            let _ = write!(label, "({})", n.params);
        }
        let _ = write!(label, "\n{} · ", fmt_shape(&n.shape));
        match n.shares {
            Some(j) => {
                let _ = write!(label, "shares #{j}");
            }
            None => label.push_str(&fmt_bytes(n.bytes)),
        }
        if opts.locations {
            let _ = write!(label, "\n{}", n.location);
        }
        let (fill, border, style) = if !used[i] {
            ("#eeeeee", "#999999", "rounded,filled,dashed")
        } else if n.kind == NodeKind::Var {
            ("#cfe2ff", "#1f4e9c", "rounded,filled,bold")
        } else if grad[i] {
            ("#ffd8a8", "#c25e00", "rounded,filled")
        } else {
            ("#ffffff", "#333333", "rounded,filled")
        };
        let _ = writeln!(
            s,
            "  n{i} [label=\"{}\", fillcolor=\"{fill}\", color=\"{border}\", style=\"{style}\"{}];",
            esc(&label),
            if used[i] { "" } else { ", fontcolor=\"#888888\"" }
        );
    }
    for n in info.iter().filter(|n| shown(n.index)) {
        let i = n.index;
        let multi = n.inputs.len() > 1;
        for (k, &j) in n.inputs.iter().enumerate() {
            if !shown(j) {
                continue;
            }
            let mut attrs = Vec::new();
            if multi {
                attrs.push(format!("label=\"{k}\""));
            }
            if grad[i] && grad[j] {
                attrs.push("color=\"#c25e00\", penwidth=1.5".to_string());
            }
            if attrs.is_empty() {
                let _ = writeln!(s, "  n{j} -> n{i};");
            } else {
                let _ = writeln!(s, "  n{j} -> n{i} [{}];", attrs.join(", "));
            }
        }
        if let NodeKind::Detached { source } = n.kind
            && shown(source)
        {
            let _ = writeln!(
                s,
                "  n{source} -> n{i} [style=dashed, label=\"detach\", arrowhead=empty];"
            );
        }
    }
    let _ = writeln!(s, "}}");
    s
}

impl<T: Float> Tape<T> {
    /// The whole tape as a Graphviz DOT digraph; see [`graph`](crate::debug::graph).
    pub fn to_dot(&self, opts: &DotOptions) -> String {
        to_dot(self, &[], opts)
    }

    /// A summary of every node (op, shape, inputs, bytes, source line), in tape order.
    ///
    /// ```
    /// let tape = tapegrad::Tape::<f32>::new();
    /// let x = tape.var(tapegrad::Tensor::ones([2, 2]));
    /// let _y = x.exp().reshape([4]);
    /// let nodes = tape.nodes_info();
    /// assert_eq!(nodes.iter().map(|n| n.op).collect::<Vec<_>>(), ["var", "exp", "reshape"]);
    /// assert_eq!(nodes[1].bytes, 16);
    /// assert_eq!(nodes[2].shares, Some(1)); // reshape does not copy
    /// ```
    pub fn nodes_info(&self) -> Vec<NodeInfo> {
        nodes_info(self, None)
    }
}

impl<T: Float> Var<'_, T> {
    /// The part of the tape this value was built from (everything recorded up to it) as a Graphviz
    /// DOT digraph; nodes it does not use are drawn grey (or left out with
    /// [`DotOptions::prune`]). See [`graph`](crate::debug::graph).
    pub fn to_dot(&self, opts: &DotOptions) -> String {
        to_dot(self.tape, &[*self], opts)
    }
}
