//! Each bad input of the README's table: what the user sees, proved here. Every error names the
//! op, the shapes and the line of *this* file that built the node.

use tapegrad::{ErrorKind, Op, Result, Tape, Tensor, Var};

mod common;
use common::panic_message;

fn here(line: u32) -> String {
    format!("{}:{line}", file!())
}

#[test]
fn shape_mismatch() {
    let tape = Tape::<f64>::new();
    let a = tape.var(Tensor::zeros([2, 3]));
    let b = tape.var(Tensor::zeros([4]));
    let line = line!() + 1;
    let msg = panic_message(|| a + b);
    assert!(msg.starts_with("tapegrad: add:"), "{msg}");
    assert!(
        msg.contains("[2, 3]") && msg.contains("[4]") && msg.contains("do not broadcast"),
        "{msg}"
    );
    assert!(msg.contains(&here(line)), "{msg}");
    assert_eq!(tape.len(), 2, "a failed op records nothing");
}

#[test]
fn var_from_another_tape() {
    let t1 = Tape::<f64>::new();
    let t2 = Tape::<f64>::new();
    let a = t1.var(Tensor::scalar(1.0));
    let b = t2.var(Tensor::scalar(2.0));
    let line = line!() + 1;
    let msg = panic_message(|| a * b);
    assert!(
        msg.contains("mul") && msg.contains(&format!("from tape #{}", t2.id())),
        "{msg}"
    );
    assert!(msg.contains(&here(line)), "{msg}");
    // The try_ form reports the same kind.
    struct Id;
    impl Op<f64> for Id {
        fn name(&self) -> &'static str {
            "id"
        }
        fn forward(&self, x: &[&Tensor<f64>]) -> Result<Tensor<f64>> {
            Ok(x[0].clone())
        }
    }
    assert_eq!(t1.try_apply(Id, &[b]).unwrap_err().kind(), ErrorKind::ForeignVar);
}

#[test]
fn non_scalar_backward() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::ones([2, 3]));
    let line = line!() + 1;
    let y = x.exp();
    let e = y.try_backward().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NonScalar);
    let msg = e.to_string();
    assert!(msg.contains("6 elements") && msg.contains("exp [2, 3]"), "{msg}");
    assert!(msg.contains(&here(line)), "names the line that built the output: {msg}");
    assert!(msg.contains("backward_with"), "suggests the fix: {msg}");
}

#[test]
fn op_without_a_rule_reached_by_a_gradient() {
    struct Floor;
    impl Op<f64> for Floor {
        fn name(&self) -> &'static str {
            "floor"
        }
        fn forward(&self, x: &[&Tensor<f64>]) -> Result<Tensor<f64>> {
            Ok(x[0].map(f64::floor))
        }
    }
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::from_vec(vec![1.5, 2.5], [2]));
    let line = line!() + 1;
    let y = tape.apply(Floor, &[x]);
    let e = (y * x).sum().try_backward().unwrap_err();
    assert_eq!((e.kind(), e.op()), (ErrorKind::NoVjp, "floor"));
    assert!(e.to_string().contains(&here(line)), "{e}");
    // Off the gradient path (detached input) the same op is fine.
    let z = tape.apply(Floor, &[x.detach()]);
    assert_eq!((z * x).sum().backward()[x].to_vec(), vec![1.0, 2.0]);
}

#[test]
fn nan_input_propagates_unless_anomaly_mode() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::from_vec(vec![1.0, f64::NAN], [2]));
    let y = (x * x).sum();
    assert!(y.item().is_nan());
    let g = y.backward();
    assert_eq!(g[x].data()[0], 2.0);
    assert!(g[x].data()[1].is_nan());
    // Anomaly mode names the leaf that carried the NaN in.
    tape.set_anomaly(true);
    let line = line!() - 8;
    let msg = panic_message(|| x * x);
    assert!(msg.contains("NaN") && msg.contains("input 0 (var [2]"), "{msg}");
    assert!(msg.contains(&here(line)), "{msg}");
}

#[test]
fn empty_tensor() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::zeros([0]));
    let s = x.sum();
    assert_eq!(s.item(), 0.0);
    assert!(x.mean().item().is_nan(), "mean of nothing is 0/0, as in NumPy");
    let g = (x.exp() * x).sum().backward();
    assert_eq!(g[x].shape(), &[0]);
    assert_eq!(format!("{}", x.value()), "[] (shape [0])");
    // Matmul with an empty inner size is a matrix of zeros; gradients have the operands' shapes.
    let a = tape.var(Tensor::ones([2, 0]));
    let b = tape.var(Tensor::ones([0, 3]));
    let c = a.matmul(b);
    assert_eq!(c.value(), Tensor::zeros([2, 3]));
    let g = c.sum().backward();
    assert_eq!((g[a].shape(), g[b].shape()), (&[2, 0][..], &[0, 3][..]));
}

#[test]
fn zero_size_axis() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::zeros([3, 0]));
    // Summing over the empty axis gives zeros of the right shape (a kernel bug fixed here).
    let s = x.sum_axis(1, false);
    assert_eq!(s.value(), Tensor::zeros([3]));
    assert_eq!(x.sum_axis(1, true).shape().as_slice(), &[3, 1]);
    assert_eq!((s * s).sum().backward()[x].shape(), &[3, 0]);
    // Summing over the non-empty axis gives an empty result.
    assert_eq!(x.sum_axis(0, false).shape().as_slice(), &[0]);
    // max over an empty axis has no answer: a shape error naming the axis.
    let line = line!() + 1;
    let msg = panic_message(|| x.max_axis(1, true));
    assert!(msg.contains("max") && msg.contains("empty axis 1 of [3, 0]"), "{msg}");
    assert!(msg.contains(&here(line)), "{msg}");
    // max over the other axis is fine (and empty).
    assert_eq!(x.max_axis(0, false).shape().as_slice(), &[0]);
}

#[test]
fn log_of_a_negative_number() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::from_vec(vec![-1.0, 0.0, 1.0], [3]));
    let y = x.log();
    let v = y.value();
    assert!(v.data()[0].is_nan());
    assert_eq!(v.data()[1], f64::NEG_INFINITY);
    assert_eq!(v.data()[2], 0.0);
    // With anomaly mode it is an error at the log.
    let tape = Tape::<f64>::with_anomaly();
    let x = tape.var(Tensor::from_vec(vec![-1.0, 1.0], [2]));
    let line = line!() + 1;
    let msg = panic_message(|| x.log());
    assert!(
        msg.starts_with("tapegrad: log:") && msg.contains("NaN at element [0]"),
        "{msg}"
    );
    assert!(msg.contains(&here(line)), "{msg}");
}

/// Softmax from primitives with the max detached, written out here (independent of the library's).
fn softmax<'t>(x: Var<'t, f64>) -> Var<'t, f64> {
    let m = x.max_axis(-1, true).detach();
    let e = (x - m).exp();
    e / e.sum_axis(-1, true)
}

#[test]
fn softmax_of_huge_logits_is_finite() {
    let tape = Tape::<f64>::with_anomaly();
    let x = tape.var(Tensor::from_vec(vec![1e30, -1e30, 0.0, -1e30, 1e30, 1e30], [2, 3]));
    let y = softmax(x);
    assert_eq!(y.value().to_vec(), vec![1.0, 0.0, 0.0, 0.0, 0.5, 0.5]);
    // The library's fused and composed softmax agree exactly here, gradients included.
    let cot = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3]);
    for lib in [x.softmax(-1), x.softmax_composed(-1)] {
        assert_eq!(lib.value(), y.value(), "{}", lib.op_name());
        let gl = tape.grad(&[lib], std::slice::from_ref(&cot), &[x]);
        let gy = tape.grad(&[y], std::slice::from_ref(&cot), &[x]);
        assert!(gl[0].all_finite());
        assert!(gl[0].max_abs_diff(&gy[0]) < 1e-15, "{}", lib.op_name());
    }
    let g = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3]);
    let grads = (y * tape.constant(g.clone())).sum().backward();
    // Independent: y ⊙ (g − ⟨g, y⟩) per row.
    let yv = y.value();
    for r in 0..2 {
        let dot: f64 = (0..3).map(|j| yv.get(&[r, j]) * g.get(&[r, j])).sum();
        for j in 0..3 {
            let expect = yv.get(&[r, j]) * (g.get(&[r, j]) - dot);
            assert_eq!(grads[x].get(&[r, j]), expect);
        }
    }
    // Without the shift, exp overflows: anomaly mode points at the exp.
    let line = line!() + 1;
    let msg = panic_message(|| x.exp());
    assert!(
        msg.contains("exp") && msg.contains("+inf") && msg.contains(&here(line)),
        "{msg}"
    );
}

#[test]
fn matmul_with_mismatched_inner_size() {
    let tape = Tape::<f64>::new();
    let a = tape.var(Tensor::zeros([2, 3]));
    let b = tape.var(Tensor::zeros([4, 5]));
    let line = line!() + 1;
    let msg = panic_message(|| a.matmul(b));
    assert!(
        msg.starts_with("tapegrad: matmul:") && msg.contains("inner sizes differ"),
        "{msg}"
    );
    assert!(msg.contains("[2, 3] @ [4, 5]"), "{msg}");
    assert!(msg.contains(&here(line)), "{msg}");
    let v = tape.var(Tensor::zeros([3]));
    let msg = panic_message(|| a.matmul(v));
    assert!(msg.contains("at least 2-D") && msg.contains("[3]"), "{msg}");
}

#[test]
fn reshape_to_the_wrong_size() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::zeros([2, 3]));
    let line = line!() + 1;
    let msg = panic_message(|| x.reshape([4, 2]));
    assert!(msg.starts_with("tapegrad: reshape:"), "{msg}");
    assert!(
        msg.contains("[2, 3] (6 elements)") && msg.contains("[4, 2] (8 elements)"),
        "{msg}"
    );
    assert!(msg.contains(&here(line)), "{msg}");
    let e = Tensor::<f64>::try_from_vec(vec![1.0; 5], [2, 3]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Shape);
}

#[test]
fn bad_axis_and_bad_permutation() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::zeros([2, 3]));
    let msg = panic_message(|| x.sum_axis(2, false));
    assert!(msg.contains("axis 2 is out of range for a tensor with 2 axes"), "{msg}");
    let msg = panic_message(|| x.permute([0, 0]));
    assert!(msg.contains("not a permutation"), "{msg}");
}

#[test]
fn transpose_with_bad_axes_names_transpose_the_axes_and_the_shape() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::zeros([2, 3]));
    let before = tape.len();
    let line = line!() + 1;
    let msg = panic_message(|| x.transpose(1, 2));
    assert!(msg.starts_with("tapegrad: transpose: "), "{msg}");
    assert!(
        msg.contains("(1, 2)") && msg.contains("[2, 3]") && msg.contains("axis 2"),
        "{msg}"
    );
    assert!(msg.contains(&here(line)), "{msg}");
    let line = line!() + 1;
    let msg = panic_message(|| x.transpose(-3, 0));
    assert!(msg.starts_with("tapegrad: transpose: "), "{msg}");
    assert!(
        msg.contains("(-3, 0)") && msg.contains("[2, 3]") && msg.contains("axis -3"),
        "{msg}"
    );
    assert!(msg.contains(&here(line)), "{msg}");
    assert_eq!(tape.len(), before, "a failed transpose records nothing");
    // The same for a plain tensor, in both forms.
    let v = Tensor::<f64>::zeros([4]);
    let line = line!() + 1;
    let msg = panic_message(|| v.transpose(0, 1));
    assert!(msg.starts_with("tapegrad: transpose: "), "{msg}");
    assert!(
        msg.contains("(0, 1)") && msg.contains("[4]") && msg.contains(&here(line)),
        "{msg}"
    );
    let line = line!() + 1;
    let e = v.try_transpose(0, 1).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Shape);
    assert!(e.to_string().contains(&here(line)), "{e}");
}

#[test]
fn transpose_counts_negative_axes_from_the_end() {
    let tape = Tape::<f64>::new();
    let a = Tensor::<f64>::rand_normal([2, 3, 4], 0.0, 1.0, 7);
    let x = tape.var(a.clone());
    assert_eq!(x.transpose(-1, -2).value(), x.transpose(1, 2).value());
    assert_eq!(x.transpose(0, -1).shape().as_slice(), &[4, 3, 2]);
    assert_eq!(a.transpose(-3, 1), a.transpose(0, 1));
    assert_eq!(x.t().value(), a.transpose(-2, -1));
}

#[test]
fn t_of_a_0d_or_1d_value_is_the_value_itself() {
    // As in PyTorch: there is nothing to swap, so `t()` returns its input (no node).
    let tape = Tape::<f64>::new();
    for x in [
        tape.var(Tensor::scalar(2.0)),
        tape.var(Tensor::from_vec(vec![1.0, 2.0], [2])),
    ] {
        let before = tape.len();
        let y = x.t();
        assert_eq!(y.index(), x.index());
        assert_eq!(tape.len(), before);
        assert_eq!(y.sum().backward()[x], Tensor::ones(x.shape()));
    }
    // A 0-d value has no axes at all to transpose.
    let s = tape.var(Tensor::scalar(2.0));
    let line = line!() + 1;
    let msg = panic_message(|| s.transpose(0, 0));
    assert!(msg.starts_with("tapegrad: transpose: ") && msg.contains("[]"), "{msg}");
    assert!(msg.contains(&here(line)), "{msg}");
}

/// The line of a call and the message it panics with; the call must fit on the macro's line.
macro_rules! on_line {
    ($e:expr) => {
        (line!(), panic_message(|| $e))
    };
}

#[test]
fn cross_entropy_errors_name_the_op_the_shapes_and_the_line() {
    use tapegrad::softmax::{CrossEntropy, Reduction, Target};
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::zeros([2, 3]));
    let bad_probs = tape.constant(Tensor::zeros([3, 2]));
    // Broadcastable to the logits, but probability targets must have their shape exactly.
    let row_probs = tape.constant(Tensor::zeros([1, 3]));
    let d = CrossEntropy::default();
    let sum0 = CrossEntropy {
        axis: 0,
        reduction: Reduction::Sum,
        ..Default::default()
    };
    let axis2 = CrossEntropy {
        axis: 2,
        reduction: Reduction::Mean,
        ..Default::default()
    };
    let before = tape.len();
    // A class index out of range, the wrong number of targets, a bad axis, probabilities of the
    // wrong shape: each through the fused op (both entry points) and the composed one.
    let out_of_range: &[&str] = &["class 3", "3 classes", "[2, 3]"];
    let too_few: &[&str] = &["1 class targets", "[2, 3]", "axis 0", "3 rows"];
    let bad_axis: &[&str] = &["axis 2", "[2, 3]"];
    let transposed: &[&str] = &["[2, 3]", "[3, 2]"];
    let one_row: &[&str] = &["[2, 3]", "[1, 3]"];
    let fused = [
        (on_line!(x.cross_entropy(Target::Classes(&[0, 3]))), out_of_range),
        (
            on_line!(x.cross_entropy_with(Target::Classes(&[0]), sum0.clone())),
            too_few,
        ),
        (
            on_line!(x.cross_entropy_with(Target::Classes(&[0, 1]), axis2.clone())),
            bad_axis,
        ),
        (on_line!(x.cross_entropy(Target::Probs(bad_probs))), transposed),
        (on_line!(x.cross_entropy(Target::Probs(row_probs))), one_row),
    ];
    let composed = [
        (
            on_line!(x.cross_entropy_composed(Target::Classes(&[0, 3]), d.clone())),
            out_of_range,
        ),
        (
            on_line!(x.cross_entropy_composed(Target::Classes(&[0]), sum0.clone())),
            too_few,
        ),
        (
            on_line!(x.cross_entropy_composed(Target::Classes(&[0, 1]), axis2.clone())),
            bad_axis,
        ),
        (
            on_line!(x.cross_entropy_composed(Target::Probs(bad_probs), d.clone())),
            transposed,
        ),
        (
            on_line!(x.cross_entropy_composed(Target::Probs(row_probs), d.clone())),
            one_row,
        ),
    ];
    for (op, cases) in [("cross_entropy", fused), ("cross_entropy_composed", composed)] {
        for ((line, msg), parts) in cases {
            assert!(msg.starts_with(&format!("tapegrad: {op}: ")), "{msg}");
            for p in parts {
                assert!(msg.contains(p), "{p:?} missing: {msg}");
            }
            assert!(msg.contains(&here(line)), "{msg}");
        }
    }
    assert_eq!(tape.len(), before, "a failed call records nothing");
}

#[test]
fn cross_entropy_over_zero_classes() {
    use tapegrad::softmax::{CrossEntropy, Target};
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::zeros([2, 0]));
    let t = tape.constant(Tensor::zeros([2, 0]));
    let d = CrossEntropy::default();
    let cases = [
        ("cross_entropy", on_line!(x.cross_entropy(Target::Classes(&[0, 0])))),
        ("cross_entropy", on_line!(x.cross_entropy(Target::Classes(&[])))),
        ("cross_entropy", on_line!(x.cross_entropy(Target::Probs(t)))),
        (
            "cross_entropy_composed",
            on_line!(x.cross_entropy_composed(Target::Classes(&[0, 0]), d.clone())),
        ),
        (
            "cross_entropy_composed",
            on_line!(x.cross_entropy_composed(Target::Classes(&[]), d.clone())),
        ),
        (
            "cross_entropy_composed",
            on_line!(x.cross_entropy_composed(Target::Probs(t), d.clone())),
        ),
    ];
    for (op, (line, msg)) in cases {
        assert!(msg.starts_with(&format!("tapegrad: {op}: ")), "{msg}");
        assert!(
            msg.contains("no classes") && msg.contains("axis 1") && msg.contains("[2, 0]"),
            "{msg}"
        );
        assert!(!msg.contains("0 rows"), "{msg}");
        assert!(msg.contains(&here(line)), "{msg}");
    }
}

#[test]
fn cross_entropy_over_zero_rows_is_nan_for_a_mean_and_0_for_a_sum() {
    use tapegrad::softmax::{CrossEntropy, Reduction, Target};
    // PyTorch's answer: the mean of no rows is 0/0 = NaN, their sum is 0; the gradient is empty.
    for reduction in [Reduction::Mean, Reduction::Sum] {
        let opts = CrossEntropy {
            axis: -1,
            reduction,
            ..Default::default()
        };
        for composed in [false, true] {
            for probs in [false, true] {
                let tape = Tape::<f64>::new();
                let x = tape.var(Tensor::zeros([0, 5]));
                let t = tape.var(Tensor::zeros([0, 5]));
                let target = if probs { Target::Probs(t) } else { Target::Classes(&[]) };
                let loss = if composed {
                    x.cross_entropy_composed(target, opts.clone())
                } else {
                    x.cross_entropy_with(target, opts.clone())
                };
                let what = format!("{reduction:?} composed={composed} probs={probs}");
                assert_eq!(loss.shape().as_slice(), &[] as &[usize], "{what}");
                match reduction {
                    Reduction::Mean => assert!(loss.item().is_nan(), "{what}: {}", loss.item()),
                    Reduction::Sum => assert_eq!(loss.item(), 0.0, "{what}"),
                }
                let g = loss.backward();
                assert_eq!(g[x].shape(), &[0, 5], "{what}");
                if probs {
                    assert_eq!(g[t].shape(), &[0, 5], "{what}");
                }
                // The recorded gradient too.
                let gx = tape.grad_graph(&[loss], &[tape.scalar(1.0)], &[x])[0];
                assert_eq!(gx.shape().as_slice(), &[0, 5], "{what}");
                assert_eq!(gx.sum().backward()[x].shape(), &[0, 5], "{what}");
            }
        }
    }
}

#[test]
fn softmax_over_zero_rows_or_an_empty_axis_is_empty() {
    // [0, 5]: no rows; [5, 0] along axis 1: rows of length 0 (softmax of nothing is nothing, as
    // in PyTorch). In anomaly mode too: nothing here is NaN or infinite.
    for anomaly in [false, true] {
        for (shape, axis) in [
            ([0usize, 5], 1isize),
            ([0, 5], 0),
            ([5, 0], 1),
            ([5, 0], -1),
            ([5, 0], 0),
        ] {
            let tape = Tape::<f64>::new();
            tape.set_anomaly(anomaly);
            let x = tape.var(Tensor::zeros(shape));
            let ways: [(&str, Var<'_, f64>); 4] = [
                ("softmax", x.softmax(axis)),
                ("softmax_composed", x.softmax_composed(axis)),
                ("log_softmax", x.log_softmax(axis)),
                ("log_softmax_composed", x.log_softmax_composed(axis)),
            ];
            for (name, y) in ways {
                let what = format!("{name} {shape:?} axis {axis} anomaly={anomaly}");
                assert_eq!(y.shape().as_slice(), &shape, "{what}");
                assert_eq!(y.numel(), 0, "{what}");
                assert_eq!(y.sum().backward()[x].shape(), &shape, "{what}");
                let gx = tape.grad_graph(&[y.sum()], &[tape.scalar(1.0)], &[x])[0];
                assert_eq!(gx.shape().as_slice(), &shape, "{what}");
            }
        }
    }
}

/// 2^63: times any extent ≥ 2, the element count no longer fits a `usize` (it used to wrap).
const HUGE: usize = 1 << 63;

/// Asserts that `msg` is tapegrad's "too large" shape error from `op`, naming `shape` and `line`.
#[track_caller]
fn assert_too_large(msg: &str, op: &str, shape: &str, line: u32) {
    assert!(
        msg.starts_with(&format!("tapegrad: {op}: shape {shape} is too large")),
        "{msg}"
    );
    assert!(msg.contains(&here(line)), "{msg}");
}

#[test]
fn from_vec_with_a_shape_whose_size_overflows_is_an_error() {
    // The red-team repro: 2^63 · 2 wrapped to 0, so an empty Vec "filled" the shape, and a matmul
    // on the result segfaulted in release.
    let line = line!() + 1;
    let e = Tensor::<f64>::try_from_vec(vec![], [HUGE, 2]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Shape);
    assert_too_large(&e.to_string(), "from_vec", "[9223372036854775808, 2]", line);
    let line = line!() + 1;
    let msg = panic_message(|| Tensor::<f32>::from_vec(vec![], [2, HUGE]));
    assert_too_large(&msg, "from_vec", "[2, 9223372036854775808]", line);
    // An empty axis does not excuse the others: a sum over it would have 2^64 elements.
    let e = Tensor::<f64>::try_from_vec(vec![], [0, 1 << 62, 4]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Shape);
    // Empty shapes whose other extents fit are fine.
    assert_eq!(Tensor::<f64>::try_from_vec(vec![], [0, 1 << 40]).unwrap().numel(), 0);
}

#[test]
fn constructors_with_a_shape_whose_size_overflows_panic_with_a_tapegrad_message() {
    let line = line!() + 1;
    let msg = panic_message(|| Tensor::<f64>::zeros([HUGE, 4]));
    assert_too_large(&msg, "zeros", "[9223372036854775808, 4]", line);
    let line = line!() + 1;
    let msg = panic_message(|| Tensor::<f32>::ones([4, HUGE]));
    assert_too_large(&msg, "ones", "[4, 9223372036854775808]", line);
    // 3 · 2^63 wraps to 2^63, not 0: that used to die in the allocator instead.
    let line = line!() + 1;
    let msg = panic_message(|| Tensor::full([3, HUGE], 7.0f64));
    assert_too_large(&msg, "full", "[3, 9223372036854775808]", line);
    let line = line!() + 1;
    let msg = panic_message(|| Tensor::<f64>::from_fn([HUGE, 2], |i| i as f64));
    assert_too_large(&msg, "from_fn", "[9223372036854775808, 2]", line);
    let line = line!() + 1;
    let msg = panic_message(|| Tensor::<f64>::rand_uniform([HUGE, 2], 0.0, 1.0, 1));
    assert_too_large(&msg, "rand_uniform", "[9223372036854775808, 2]", line);
    let line = line!() + 1;
    let msg = panic_message(|| Tensor::<f32>::rand_normal([2, HUGE], 0.0, 1.0, 1));
    assert_too_large(&msg, "rand_normal", "[2, 9223372036854775808]", line);
    // The count fits a usize but not the address space in bytes (2^62 f64 = 2^65 bytes).
    let line = line!() + 1;
    let msg = panic_message(|| Tensor::<f64>::zeros([1 << 61, 2]));
    assert_too_large(&msg, "zeros", "[2305843009213693952, 2]", line);
}

#[test]
fn reshape_to_a_shape_whose_size_overflows() {
    let empty = Tensor::<f64>::zeros([0]);
    // 2^63 · 2 wrapped to 0 elements, which "matched" the empty tensor.
    let line = line!() + 1;
    let e = empty.try_reshape([HUGE, 2]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Shape);
    assert_too_large(&e.to_string(), "reshape", "[9223372036854775808, 2]", line);
    let tape = Tape::<f64>::new();
    let x = tape.var(empty);
    let line = line!() + 1;
    let msg = panic_message(|| x.reshape([2, HUGE]));
    assert_too_large(&msg, "reshape", "[2, 9223372036854775808]", line);
    assert_eq!(tape.len(), 1, "a failed op records nothing");
}

#[test]
fn broadcast_to_a_shape_whose_size_overflows() {
    let one = Tensor::<f64>::ones([1]);
    let line = line!() + 1;
    let msg = panic_message(|| one.broadcast_to([HUGE, 2]));
    assert_too_large(&msg, "broadcast_to", "[9223372036854775808, 2]", line);
    // An empty tensor broadcast to a shape that is empty only because of its last axis.
    let empty = Tensor::<f64>::zeros([0]);
    let line = line!() + 1;
    let msg = panic_message(|| empty.broadcast_to([1 << 40, 1 << 40, 0]));
    assert_too_large(&msg, "broadcast_to", "[1099511627776, 1099511627776, 0]", line);
    let tape = Tape::<f64>::new();
    let x = tape.var(one);
    let line = line!() + 1;
    let msg = panic_message(|| x.broadcast_to([HUGE, 2]));
    assert_too_large(&msg, "broadcast_to", "[9223372036854775808, 2]", line);
    assert_eq!(tape.len(), 1, "a failed op records nothing");
}

#[test]
fn ops_whose_output_size_overflows() {
    let tape = Tape::<f64>::new();
    // Both operands are valid (and empty); their broadcast [0, 2^40, 2^40] is not.
    let a = tape.var(Tensor::zeros([0, 1 << 40, 1]));
    let b = tape.var(Tensor::zeros([0, 1, 1 << 40]));
    let line = line!() + 1;
    let msg = panic_message(|| a + b);
    assert_too_large(&msg, "add", "[0, 1099511627776, 1099511627776]", line);
    let line = line!() + 1;
    let msg = panic_message(|| a.ge(a).select(a, b));
    assert_too_large(&msg, "select", "[0, 1099511627776, 1099511627776]", line);
    let line = line!() + 1;
    let msg = panic_message(|| a.value().zip_map(&b.value(), |x, y| x + y));
    assert_too_large(&msg, "zip_map", "[0, 1099511627776, 1099511627776]", line);
    // An inner size of 0 makes both operands empty, but the product has 2^32 · 2^32 = 2^64 elements.
    let p = tape.var(Tensor::zeros([1 << 32, 0]));
    let q = tape.var(Tensor::zeros([0, 1 << 32]));
    let line = line!() + 1;
    let msg = panic_message(|| p.matmul(q));
    assert_too_large(&msg, "matmul", "[4294967296, 4294967296]", line);
    // The same through the batch axes alone.
    let p = tape.var(Tensor::zeros([1 << 40, 1, 2, 0]));
    let q = tape.var(Tensor::zeros([1, 1 << 40, 0, 2]));
    let line = line!() + 1;
    let msg = panic_message(|| p.matmul(q));
    assert_too_large(&msg, "matmul", "[1099511627776, 1099511627776, 2, 2]", line);
    assert_eq!(tape.len(), 7, "failed ops record nothing");
}

#[test]
fn tensor_accessors_name_the_callers_line() {
    let t = Tensor::<f64>::zeros([2, 3]);
    let line = line!() + 1;
    let msg = panic_message(|| t.get(&[2, 0]));
    assert!(
        msg.contains("index [2, 0] is out of range for shape [2, 3]") && msg.contains(&here(line)),
        "{msg}"
    );
    let line = line!() + 1;
    let msg = panic_message(|| t.item());
    assert!(
        msg.contains("item") && msg.contains("[2, 3]") && msg.contains(&here(line)),
        "{msg}"
    );
    let line = line!() + 1;
    let msg = panic_message(|| t.max_abs_diff(&Tensor::zeros([3])));
    assert!(msg.contains("max_abs_diff") && msg.contains(&here(line)), "{msg}");
    let mut u = t.clone();
    let line = line!() + 1;
    let msg = panic_message(move || u.set(&[0, 3], 1.0));
    assert!(msg.contains(&here(line)), "{msg}");
}
