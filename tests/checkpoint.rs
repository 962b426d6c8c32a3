//! Gradient checkpointing: the same gradients with and without it (f64, 1e-12 relative), through
//! fused ops, `detach` and `no_grad`, seeded dropout, a recorded backward; what it keeps; plans
//! under a budget; the errors.

mod common;

use common::panic_message;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tapegrad::check::{GradcheckOptions, gradcheck, gradgradcheck};
use tapegrad::nn::checkpoint::{CheckpointPlan, Sequential};
use tapegrad::nn::{Activation, Mlp, ParamStore, TransformerBlock};
use tapegrad::softmax::{CrossEntropy, Reduction, Target};
use tapegrad::{ErrorKind, Tape, Tensor, Var};

/// Every element equal to 1e-12 relative.
fn assert_close(a: &Tensor<f64>, b: &Tensor<f64>, what: &str) {
    assert_eq!(a.shape(), b.shape(), "{what}: shapes");
    for (i, (&x, &y)) in a.data().iter().zip(b.data()).enumerate() {
        assert!(
            x == y || (x - y).abs() <= 1e-12 * x.abs().max(y.abs()),
            "{what}: element {i}: {x:e} vs {y:e}"
        );
    }
}

/// Gradients of `loss(vars)` for each input, on a fresh tape.
fn grads<F>(inputs: &[Tensor<f64>], loss: F) -> Vec<Tensor<f64>>
where
    F: for<'t> Fn(&[Var<'t, f64>]) -> Var<'t, f64>,
{
    let tape = Tape::<f64>::new();
    let vars: Vec<Var<'_, f64>> = inputs.iter().map(|x| tape.var(x.clone())).collect();
    let l = loss(&vars);
    let g = l.backward();
    vars.iter().map(|&v| g[v].clone()).collect()
}

fn check_same<F, G>(inputs: &[Tensor<f64>], plain: F, checkpointed: G)
where
    F: for<'t> Fn(&[Var<'t, f64>]) -> Var<'t, f64>,
    G: for<'t> Fn(&[Var<'t, f64>]) -> Var<'t, f64>,
{
    let (a, b) = (grads(inputs, plain), grads(inputs, checkpointed));
    for (k, (a, b)) in a.iter().zip(&b).enumerate() {
        assert_close(b, a, &format!("gradient of input {k}"));
    }
}

fn layer<'t>(h: Var<'t, f64>, w: Var<'t, f64>, b: Var<'t, f64>) -> Var<'t, f64> {
    (h.matmul(w) + b).tanh()
}

fn mlp_inputs(seed: u64) -> Vec<Tensor<f64>> {
    let mut v = vec![Tensor::rand_normal([6, 5], 0.0, 1.0, seed)];
    for k in 0..4 {
        v.push(Tensor::rand_normal([5, 5], 0.0, 0.6, seed + 10 + k));
        v.push(Tensor::rand_normal([5], 0.0, 0.1, seed + 20 + k));
    }
    v
}

#[test]
fn gradients_are_equal_with_and_without_checkpointing() {
    let inputs = mlp_inputs(1);
    fn plain<'t>(v: &[Var<'t, f64>]) -> Var<'t, f64> {
        let mut h = v[0];
        for k in 0..4 {
            h = layer(h, v[1 + 2 * k], v[2 + 2 * k]);
        }
        (h * h).sum()
    }
    fn seg<'t>(v: &[Var<'t, f64>]) -> Var<'t, f64> {
        layer(layer(v[0], v[1], v[2]), v[3], v[4])
    }
    // Two segments of two layers; the data x is an input too (its gradient is checked).
    fn ckpt<'t>(v: &[Var<'t, f64>]) -> Var<'t, f64> {
        let tape = v[0].tape();
        let h = tape.checkpoint(&v[0..5], seg);
        let h = tape.checkpoint(&[h, v[5], v[6], v[7], v[8]], seg);
        (h * h).sum()
    }
    check_same(&inputs, plain, ckpt);
    // One segment holding the loss too.
    check_same(&inputs, plain, |v| {
        v[0].tape().checkpoint(v, |v| {
            let mut h = v[0];
            for k in 0..4 {
                h = layer(h, v[1 + 2 * k], v[2 + 2 * k]);
            }
            (h * h).sum()
        })
    });
}

#[test]
fn gradients_are_equal_through_fused_softmax_and_cross_entropy() {
    let x = Tensor::rand_normal([5, 7], 0.0, 1.5, 3);
    let w = Tensor::rand_normal([7, 7], 0.0, 0.5, 4);
    let t = Tensor::rand_uniform([5, 7], 0.1, 1.0, 5);
    let t = t.zip_map(&t.sum_to_rows(), |a, s| a / s);
    let inputs = [x, w, t];
    const CLASSES: [usize; 5] = [3, 0, 6, 2, 2];
    fn body<'t>(v: &[Var<'t, f64>]) -> Var<'t, f64> {
        let h = v[0].matmul(v[1]);
        let s = h.softmax(1) * h.log_softmax(0);
        let ce = h.cross_entropy(Target::Classes(&CLASSES));
        let ce2 = s.cross_entropy_with(
            Target::Probs(v[2]),
            CrossEntropy {
                axis: 1,
                reduction: Reduction::Sum,
                ..Default::default()
            },
        );
        ce + ce2 + s.sum()
    }
    check_same(&inputs, body, |v| v[0].tape().checkpoint(v, body));
    // A segment ending in the softmax, the loss outside it.
    check_same(
        &inputs,
        |v| v[0].matmul(v[1]).softmax(-1).cross_entropy(Target::Classes(&CLASSES)),
        |v| {
            let s = v[0].tape().checkpoint(&v[..2], |v| v[0].matmul(v[1]).softmax(-1));
            s.cross_entropy(Target::Classes(&CLASSES))
        },
    );
}

#[test]
fn gradients_are_equal_with_detach_and_no_grad_inside_the_segment() {
    let inputs = [
        Tensor::rand_normal([4, 6], 0.0, 1.0, 6),
        Tensor::rand_normal([6, 6], 0.0, 0.5, 7),
    ];
    fn body<'t>(v: &[Var<'t, f64>]) -> Var<'t, f64> {
        let tape = v[0].tape();
        let h = v[0].matmul(v[1]);
        let m = h.max_axis(1, true).detach(); // no gradient through the max
        let scale = tape.no_grad(|| (v[1] * v[1]).sum().sqrt()); // nor through the norm
        ((h - m).exp() * scale).sum()
    }
    check_same(&inputs, body, |v| v[0].tape().checkpoint(v, body));
    // A segment whose output does not depend on some input at all: zeros, as without it.
    check_same(
        &inputs,
        |v| (v[0].detach() * v[1].sum()).sum(),
        |v| v[0].tape().checkpoint(v, |v| (v[0].detach() * v[1].sum()).sum()),
    );
}

/// The simplest seeded dropout: keep an element when `U(0, 1) ≥ p`, scaling kept ones by `1/(1−p)`.
fn dropout<'t>(x: Var<'t, f64>, p: f64, seed: u64) -> Var<'t, f64> {
    let u = Tensor::rand_uniform(x.shape(), 0.0, 1.0, seed);
    let mask = u.map(|u| if u >= p { 1.0 / (1.0 - p) } else { 0.0 });
    x * x.tape().constant(mask)
}

#[test]
fn a_seeded_dropout_inside_a_segment_replays_the_same_mask() {
    let inputs = mlp_inputs(8);
    fn plain<'t>(v: &[Var<'t, f64>]) -> Var<'t, f64> {
        let h = dropout(layer(v[0], v[1], v[2]), 0.5, 99);
        (layer(h, v[3], v[4]) * 2.0).sum()
    }
    fn ckpt<'t>(v: &[Var<'t, f64>]) -> Var<'t, f64> {
        let seed = 99u64; // captured by value: every replay draws the same mask
        let h = v[0].tape().checkpoint(&v[..5], move |v| {
            layer(dropout(layer(v[0], v[1], v[2]), 0.5, seed), v[3], v[4])
        });
        (h * 2.0).sum()
    }
    check_same(&inputs, plain, ckpt);
    // The mask matters.
    let without = grads(&inputs, |v| (layer(layer(v[0], v[1], v[2]), v[3], v[4]) * 2.0).sum());
    assert!(grads(&inputs, ckpt)[3].max_abs_diff(&without[3]) > 1e-3);
}

#[test]
fn a_segment_that_is_not_deterministic_is_an_error_not_a_wrong_gradient() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::rand_normal([4, 8], 0.0, 1.0, 9));
    let calls = Arc::new(AtomicU64::new(0));
    let c = Arc::clone(&calls);
    let y = tape.checkpoint(&[x], move |v| dropout(v[0], 0.5, c.fetch_add(1, Ordering::Relaxed)));
    let e = y.sum().try_backward().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid);
    let msg = e.to_string();
    assert!(msg.contains("not deterministic") && msg.contains("seed"), "{msg}");
    assert!(msg.contains(file!()), "{msg}");
    assert_eq!(calls.load(Ordering::Relaxed), 2);
}

#[test]
fn a_recorded_backward_through_a_checkpoint_is_differentiable_again() {
    let inputs = mlp_inputs(10);
    fn f<'t>(v: &[Var<'t, f64>]) -> Var<'t, f64> {
        let h = v[0]
            .tape()
            .checkpoint(&v[..5], |v| layer(layer(v[0], v[1], v[2]), v[3], v[4]));
        layer(h, v[5], v[6]).sum_axis(1, false)
    }
    fn plain<'t>(v: &[Var<'t, f64>]) -> Var<'t, f64> {
        layer(layer(layer(v[0], v[1], v[2]), v[3], v[4]), v[5], v[6]).sum_axis(1, false)
    }
    // Hessian-vector products agree.
    let hvp = |checkpointed: bool| {
        let tape = Tape::<f64>::new();
        let vars: Vec<Var<'_, f64>> = inputs[..7].iter().map(|x| tape.var(x.clone())).collect();
        let y = if checkpointed { f(&vars) } else { plain(&vars) }.sum();
        let g = tape.grad_graph(&[y], &[tape.scalar(1.0)], &[vars[1]])[0];
        let dir = Tensor::rand_normal([5, 5], 0.0, 1.0, 11);
        tape.grad(&[g], &[dir], &vars)
    };
    for (k, (a, b)) in hvp(false).iter().zip(&hvp(true)).enumerate() {
        assert_close(b, a, &format!("hvp, input {k}"));
    }
    let opts = GradcheckOptions::default();
    let r = gradgradcheck(f, &inputs[..7], &opts);
    assert!(r.passed, "{r}");
    let r = gradcheck(f, &inputs[..7], &opts);
    assert!(r.passed, "{r}");
}

#[test]
fn an_error_inside_the_segment_names_the_op_and_both_lines() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::zeros([2, 3]));
    let before = tape.len();
    let e = tape
        .try_checkpoint(&[x], |v| v[0].matmul(v[0]))
        .map(|_| ())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Shape);
    let msg = e.to_string();
    assert!(
        msg.contains("matmul") && msg.contains("inside the segment checkpointed at"),
        "{msg}"
    );
    assert!(msg.contains(file!()), "{msg}");
    assert_eq!(tape.len(), before, "a failed checkpoint recorded something");
    let msg = panic_message(|| tape.checkpoint(&[x], |v| v[0].sum_axis(4, false)));
    assert!(
        msg.starts_with("tapegrad: sum") && msg.contains("checkpointed"),
        "{msg}"
    );
}

#[test]
fn inputs_that_need_no_gradient_and_nested_checkpoints() {
    let tape = Tape::<f64>::new();
    let x = tape.constant(Tensor::rand_normal([3, 4], 0.0, 1.0, 12));
    let w = tape.var(Tensor::rand_normal([4, 4], 0.0, 1.0, 13));
    let y = tape.checkpoint(&[x, w], |v| {
        let inner = v[0].tape().checkpoint(v, |v| v[0].matmul(v[1]).tanh());
        (inner * inner).sum()
    });
    let g = y.backward();
    let plain = Tape::<f64>::new();
    let (x2, w2) = (plain.constant(x.value()), plain.var(w.value()));
    let h = x2.matmul(w2).tanh();
    let g2 = (h * h).sum().backward();
    assert_close(&g[w], &g2[w2], "nested");
    // Under no_grad a checkpoint is a constant, like any op.
    let z = tape.no_grad(|| tape.checkpoint(&[w], |v| v[0].exp()));
    assert!(!z.requires_grad());
}

#[test]
fn what_a_checkpoint_keeps_and_the_stats() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::rand_normal([64, 64], 0.0, 1.0, 14));
    let y = tape.checkpoint(&[x], |v| v[0].tanh().exp().tanh().exp());
    let bytes = 64 * 64 * 8;
    assert_eq!(tape.retained_bytes(), bytes, "only the output is kept");
    let s = tape.checkpoint_stats();
    assert_eq!(
        (s.segments, s.segment_nodes, s.largest_segment_bytes),
        (1, 5, 4 * bytes)
    );
    let _ = y.sum().backward();
    assert_eq!(tape.checkpoint_stats().largest_segment_bytes, 4 * bytes);
    let plain = Tape::<f64>::new();
    let _ = plain.var(x.value()).tanh().exp().tanh().exp();
    assert_eq!(plain.retained_bytes(), 4 * bytes);
}

fn mlp_setup(layers: usize) -> (ParamStore<f64>, Mlp, Tensor<f64>) {
    let mut store = ParamStore::<f64>::new();
    let mlp = Mlp::new(&mut store, "mlp", &vec![24; layers + 1], Activation::Tanh, 3);
    (store, mlp, Tensor::rand_normal([16, 24], 0.0, 1.0, 4))
}

#[test]
fn mlp_under_a_budget_keeps_what_the_plan_says_and_the_same_gradients() {
    let (store, mlp, x) = mlp_setup(16);
    let seq = mlp.sequential::<f64>();
    let costs = seq.measure(&store, &x);
    let plain_peak = CheckpointPlan::none(16).peak_bytes(&costs);
    let reference = {
        let tape = Tape::new();
        let p = store.bind(&tape);
        let loss = mlp.forward(&p, tape.constant(x.clone())).tanh().sum();
        assert_eq!(
            tape.retained_bytes() - 16 * 24 * 8,
            plain_peak,
            "the model of the plain tape"
        );
        p.grads(loss.backward())
    };
    for divisor in [1, 2, 3] {
        let budget = plain_peak / divisor;
        let plan = CheckpointPlan::for_budget(&costs, budget).unwrap();
        let tape = Tape::new();
        let p = store.bind(&tape);
        let out = mlp.forward_checkpointed(&p, tape.constant(x.clone()), &plan);
        let (out_kept, kept) = (tape.retained_bytes(), plan.peak_bytes(&costs));
        let g = p.grads(out.tanh().sum().backward());
        let replay = tape.checkpoint_stats().largest_segment_bytes;
        assert_eq!(
            out_kept + replay,
            kept,
            "budget 1/{divisor}: measured vs the plan's model"
        );
        assert!(kept <= budget, "budget 1/{divisor}: {kept} > {budget}");
        if divisor == 1 {
            assert_eq!(plan.recomputed_stages(), 0);
        } else {
            assert!(plan.recomputed_stages() > 0);
        }
        for ((_, a), (_, b)) in reference.iter().zip(g.iter()) {
            assert_close(b, a, &format!("budget 1/{divisor}"));
        }
    }
    let least = CheckpointPlan::least_memory(&costs);
    let floor = least.peak_bytes(&costs);
    assert!(floor < plain_peak / 3 && CheckpointPlan::for_budget(&costs, floor).is_ok());
    assert!(CheckpointPlan::for_budget(&costs, floor - 1).is_err());
    let e = CheckpointPlan::for_budget(&costs, plain_peak / 50).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid);
    assert!(e.to_string().contains("the best keeps"), "{e}");
}

#[test]
fn sqrt_plan_and_a_sequential_of_closures_sharing_a_parameter() {
    let mut store = ParamStore::<f64>::new();
    let w = store.insert("w", Tensor::rand_normal([6, 6], 0.0, 0.5, 15));
    let b = store.insert("b", Tensor::rand_normal([6], 0.0, 0.5, 16));
    let mut seq = Sequential::new();
    for k in 0..9 {
        if k % 3 == 2 {
            seq.push_fn(vec![], move |x, _| dropout(x, 0.25, 100 + k));
        } else {
            seq.push_fn(vec![w, b], |x, p| (x.matmul(p[0]) + p[1]).tanh()); // one w, b, shared
        }
    }
    let x = Tensor::rand_normal([5, 6], 0.0, 1.0, 17);
    let run = |plan: &CheckpointPlan| {
        let tape = Tape::new();
        let p = store.bind(&tape);
        let y = seq.forward_planned(&p, tape.var(x.clone()), plan);
        p.grads((y * y).sum().backward())
    };
    let plan = CheckpointPlan::sqrt(9);
    assert_eq!(plan.segments().len(), 3);
    let (a, c) = (run(&CheckpointPlan::none(9)), run(&plan));
    for ((_, a), (_, c)) in a.iter().zip(c.iter()) {
        assert_close(c, a, "shared parameters");
    }
    let msg = panic_message(|| run(&CheckpointPlan::sqrt(4)));
    assert!(msg.contains("4 stages") && msg.contains("9 stages"), "{msg}");
}

/// Row sums broadcast back, for normalising probability targets.
trait RowSums {
    fn sum_to_rows(&self) -> Tensor<f64>;
}
impl RowSums for Tensor<f64> {
    fn sum_to_rows(&self) -> Tensor<f64> {
        let c = self.shape()[1];
        Tensor::from_fn(self.shape(), |i| self.data()[(i / c) * c..(i / c + 1) * c].iter().sum())
    }
}

#[test]
fn a_transformer_stack_under_a_budget_has_the_plain_gradients_and_keeps_what_the_plan_says() {
    let mut store = ParamStore::<f64>::new();
    let blocks: Vec<TransformerBlock> = (0..4)
        .map(|i| TransformerBlock::new(&mut store, &format!("blocks.{i}"), 8, 2, 16, 40 + i))
        .collect();
    let x = Tensor::rand_normal([2, 5, 8], 0.0, 1.0, 41);
    // The reference: the blocks' own forward, recorded plainly.
    let reference = {
        let tape = Tape::new();
        let p = store.bind(&tape);
        let mut h = tape.constant(x.clone());
        for b in &blocks {
            h = b.forward(&p, h, true);
        }
        p.grads((h * h).sum().backward())
    };
    let seq = TransformerBlock::stack::<f64>(&blocks, true);
    assert_eq!(seq.len(), 4);
    // Every parameter is listed once, and all of them are the block's.
    let ids = blocks[1].params();
    assert_eq!(ids.len(), 2 + 8 + 2 + 4);
    assert!(ids.iter().all(|&id| store.name(id).starts_with("blocks.1.")));
    let costs = seq.measure(&store, &x);
    let plain = CheckpointPlan::none(4).peak_bytes(&costs);
    let mut plans = vec![
        CheckpointPlan::none(4),
        CheckpointPlan::every(4, 1),
        CheckpointPlan::every(4, 3),
    ];
    plans.push(CheckpointPlan::for_budget(&costs, plain / 2).unwrap());
    for plan in &plans {
        let tape = Tape::new();
        let p = store.bind(&tape);
        let out = seq.forward_planned(&p, tape.constant(x.clone()), plan);
        let on_tape = tape.retained_bytes();
        let g = p.grads((out * out).sum().backward());
        let replay = tape.checkpoint_stats().largest_segment_bytes;
        // What the plan's model says it keeps (`out * out` keeps only `out`, already counted).
        assert_eq!(on_tape + replay, plan.peak_bytes(&costs), "{plan}");
        for ((id, a), (_, b)) in reference.iter().zip(g.iter()) {
            assert_close(b, a, &format!("{plan}: {}", store.name(id)));
        }
    }
    assert!(plans[3].peak_bytes(&costs) <= plain / 2);
    // Checkpointing every block keeps its output and replays one block: well under the plain tape.
    assert!(plans[1].peak_bytes(&costs) * 2 < plain);
}
