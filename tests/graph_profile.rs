//! Graph export and the backward profiler, checked against what was recorded.

use tapegrad::graph::{DotOptions, NodeKind};
use tapegrad::profile::{ProfileOptions, profile, profile_fn};
use tapegrad::{Cotangents, Float, Op, Result, Tape, Tensor, Value, Var, VjpCtx};

fn softmax_composed<'t>(x: Var<'t, f64>) -> Var<'t, f64> {
    let m = x.max_axis(-1, true).detach();
    let e = (x - m).exp();
    e / e.sum_axis(-1, true)
}

/// Counts `a -> b` edges in DOT text.
fn edges(dot: &str) -> Vec<(usize, usize, String)> {
    dot.lines()
        .filter_map(|l| {
            let l = l.trim();
            let (a, rest) = l.split_once(" -> ")?;
            let (b, attrs) = rest.split_once([' ', ';'])?;
            Some((a[1..].parse().ok()?, b[1..].parse().ok()?, attrs.to_string()))
        })
        .collect()
}

#[test]
fn dot_has_one_node_per_tape_node_and_one_edge_per_input() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::rand_normal([2, 3], 0.0, 1.0, 1));
    let g = tape.constant(Tensor::rand_normal([2, 3], 0.0, 1.0, 2));
    let loss = (softmax_composed(x) * g).sum();
    let dot = loss.to_dot(&DotOptions::default());
    let info = tape.nodes_info();
    for n in &info {
        assert!(
            dot.contains(&format!("  n{} [label=\"#{} {}", n.index, n.index, n.op)),
            "node {n:?} missing"
        );
    }
    let es = edges(&dot);
    let input_edges: usize = info.iter().map(|n| n.inputs.len()).sum();
    let detach: Vec<_> = es.iter().filter(|e| e.2.contains("detach")).collect();
    assert_eq!(es.len(), input_edges + detach.len());
    // exactly one detach: the max feeding the shift
    assert_eq!(detach.len(), 1);
    let (src, dst) = (detach[0].0, detach[0].1);
    assert_eq!(info[src].op, "max");
    assert_eq!(info[dst].kind, NodeKind::Detached { source: src });
    // every input edge of the recorded graph is present
    for n in &info {
        for &j in &n.inputs {
            assert!(es.iter().any(|e| e.0 == j && e.1 == n.index));
        }
    }
    // shapes and source lines appear
    assert!(dot.contains("[2, 3]") && dot.contains("[2, 1]"));
    assert!(dot.contains(file!()));
}

#[test]
fn dot_colours_gradient_flow_and_greys_unused_nodes() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], [2, 2]));
    let c = tape.constant(Tensor::from_vec(vec![3.0, 4.0, 5.0, 6.0], [2, 2]));
    let unused = x.exp(); // recorded, never used by the loss
    // used only through detach: value, no gradient ([2, 1]: one-element values are held inline
    // and share no buffer, so a detach of one is drawn as a plain constant)
    let m = x.max_axis(1, true);
    let loss = (x * c + m.detach()).sum();
    let dot = loss.to_dot(&DotOptions::default());
    let line = |i: usize| {
        dot.lines()
            .find(|l| l.trim_start().starts_with(&format!("n{i} [")))
            .map(str::to_string)
    };
    assert!(line(unused.index()).unwrap().contains("dashed"));
    assert!(line(x.index()).unwrap().contains("#cfe2ff")); // variable
    assert!(line(loss.index()).unwrap().contains("#ffd8a8")); // gradient flows
    assert!(line(c.index()).unwrap().contains("#ffffff")); // constant: no gradient
    assert!(line(m.index()).unwrap().contains("#ffffff")); // detached away: no gradient
    let pruned = loss.to_dot(&DotOptions::default().prune(true));
    assert!(!pruned.contains(&format!("n{} [", unused.index())));
    assert!(pruned.contains(&format!("n{} [", m.index())));
    // the caption counts kept bytes once per buffer: x, c, (exp pruned), max, mul, add, sum
    assert!(pruned.contains("6 nodes") || pruned.contains("7 nodes"), "{pruned}");
}

#[test]
fn nodes_info_counts_shared_buffers_once() {
    let tape = Tape::<f32>::new();
    let x = tape.var(Tensor::ones([3, 4]));
    let r = x.reshape([12]);
    let d = r.detach();
    let k1 = Tensor::<f32>::zeros([5]);
    let _c1 = tape.constant(k1.clone());
    let _c2 = tape.constant(k1); // same buffer as c1, but not a detach
    let info = tape.nodes_info();
    assert_eq!(info[x.index()].bytes, 48);
    assert_eq!((info[r.index()].bytes, info[r.index()].shares), (0, Some(x.index())));
    assert_eq!(info[d.index()].kind, NodeKind::Detached { source: x.index() });
    assert_eq!(info[4].kind, NodeKind::Constant);
    assert_eq!(info[4].shares, Some(3));
    assert_eq!(info.iter().map(|n| n.bytes).sum::<usize>(), 48 + 20);
}

#[test]
fn dot_renders_with_graphviz_when_installed() {
    let Ok(out) = std::process::Command::new("dot").arg("-V").output() else {
        eprintln!("graphviz not installed: skipping the render check");
        return;
    };
    assert!(out.status.success());
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::rand_normal([2, 3], 0.0, 1.0, 1));
    let loss = softmax_composed(x).log().sum();
    let dot = loss.to_dot(&DotOptions::default().title("a \"quoted\" title\\"));
    use std::io::Write;
    let mut child = std::process::Command::new("dot")
        .arg("-Tsvg")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(dot.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("<svg"));
}

#[test]
fn profile_counts_ops_bytes_and_backward_rules() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::rand_normal([4, 5], 0.0, 1.0, 1));
    let _unused = x.tanh();
    let loss = softmax_composed(x).log().sum();
    let before = tape.len();
    let p = profile(loss, &ProfileOptions::rounds(2));
    assert_eq!(tape.len(), before, "profiling must leave the tape as it was");
    let row = |op: &str| p.row(op).unwrap_or_else(|| panic!("no row {op}: {p}")).clone();
    // ops used by the loss, each counted from what was recorded
    assert_eq!(row("sum").count, 2); // sum_axis is "sum" with an axis; plus the final sum
    for op in ["max", "sub", "exp", "div", "log"] {
        assert_eq!(row(op).count, 1, "{op}");
    }
    assert!(p.row("tanh").is_none());
    assert_eq!(p.unused_nodes, 1);
    // the max is detached: its rule never runs; every other op's does
    assert_eq!(row("max").backward_count, 0);
    assert_eq!(row("max").backward, std::time::Duration::ZERO);
    for op in ["sub", "exp", "div", "log"] {
        assert_eq!(row(op).backward_count, 1, "{op}");
    }
    // bytes: x, sub, exp, div, log [4,5]; max, sum_axis [4,1]; final sum 1 element; detach shares
    assert_eq!(p.bytes_total(), (5 * 20 + 2 * 4 + 1) * 8);
    assert_eq!(row("detach").bytes, 0);
    assert_eq!(p.bytes_saved_by_ops(), (4 * 20 + 2 * 4 + 1) * 8);
    // exp feeds both div and sum_axis: its gradient is accumulated
    assert!(p.accumulate > std::time::Duration::ZERO);
    assert!(p.ratio() > 0.0);
    // the gradient is unchanged by profiling
    let g = loss.backward()[x].clone();
    let t2 = Tape::<f64>::new();
    let x2 = t2.var(x.value());
    let g2 = softmax_composed(x2).log().sum().backward()[x2].clone();
    assert_eq!(g, g2);
}

#[test]
fn profile_table_is_aligned() {
    let x = Tensor::<f32>::rand_normal([3, 4], 0.0, 1.0, 1);
    let p = profile_fn(|t| (t.var(x.clone()).exp() * 2.0).sum(), &ProfileOptions::quick());
    let text = p.to_string();
    let lines: Vec<&str> = text.lines().collect();
    let width = lines[0].chars().count();
    let table: Vec<&str> = lines.iter().take_while(|l| !l.contains("op nodes")).copied().collect();
    assert!(table.len() >= 6, "{text}");
    for l in &table {
        assert_eq!(l.chars().count(), width, "misaligned line {l:?} in\n{text}");
    }
    assert!(text.contains("end to end"));
    assert_eq!(p.accumulate, std::time::Duration::ZERO); // a chain: nothing to accumulate
}

struct NoRule;
impl<T: Float> Op<T> for NoRule {
    fn name(&self) -> &'static str {
        "no_rule"
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        Ok(x[0].clone())
    }
}

struct Twice;
impl<T: Float> Op<T> for Twice {
    fn name(&self) -> &'static str {
        "twice"
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        Ok(x[0].map(|v| v + v))
    }
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
        Ok(cx.grads([Some(g.scale(T::from_f64(2.0)))]))
    }
}

#[test]
fn profile_fails_loudly_on_a_missing_rule_and_shows_user_ops() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::ones([3]));
    let y = tape.apply(Twice, &[x]).sum();
    let p = profile(y, &ProfileOptions::quick());
    assert_eq!(p.row("twice").unwrap().backward_count, 1);

    let bad = tape.apply(NoRule, &[x]).sum();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| profile(bad, &ProfileOptions::quick())));
    let msg = *r.unwrap_err().downcast::<String>().unwrap();
    assert!(msg.contains("no_rule"), "{msg}");
}
