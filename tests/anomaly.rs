//! Anomaly mode: the first non-finite value in the forward or the backward is reported with the
//! op, the user's line and (backward) the chain of ops to the output.

use tapegrad::{ErrorKind, Op, Result, Tape, Tensor};

fn t(v: &[f64], s: &[usize]) -> Tensor<f64> {
    Tensor::from_vec(v.to_vec(), s)
}

mod common;
use common::panic_message;

#[test]
fn off_by_default_nan_flows_silently() {
    let tape = Tape::<f64>::new();
    assert!(!tape.anomaly());
    let x = tape.var(t(&[-1.0, 4.0], &[2]));
    let y = x.log().sum();
    assert!(y.item().is_nan());
    assert!(y.try_backward().is_ok());
}

#[test]
fn forward_reports_the_op_the_element_and_the_users_line() {
    let tape = Tape::<f64>::with_anomaly();
    let x = tape.var(t(&[1.0, 2.0, -3.0], &[3]));
    let a = x * 2.0;
    let line = line!() + 1;
    let msg = panic_message(|| a.log());
    assert!(msg.contains("log"), "{msg}");
    assert!(msg.contains("NaN") && msg.contains("[2]"), "{msg}");
    assert!(msg.contains(&format!("anomaly.rs:{line}")), "{msg}");
    assert!(msg.contains("all inputs were finite"), "{msg}");
    // Nothing was recorded by the failed op.
    assert_eq!(tape.len(), 2);
}

#[test]
fn forward_report_blames_a_non_finite_input_leaf() {
    let tape = Tape::<f64>::new();
    tape.set_anomaly(true);
    let leaf_line = line!() + 1;
    let x = tape.var(t(&[1.0, f64::INFINITY], &[2]));
    let msg = panic_message(|| x * 2.0);
    assert!(msg.contains("+inf"), "{msg}");
    assert!(msg.contains("input 0 (var [2]"), "{msg}");
    assert!(msg.contains(&format!("anomaly.rs:{leaf_line}")), "{msg}");
}

#[test]
fn forward_error_through_try_apply_is_a_result() {
    struct Overflow;
    impl Op<f64> for Overflow {
        fn name(&self) -> &'static str {
            "overflow"
        }
        fn forward(&self, x: &[&Tensor<f64>]) -> Result<Tensor<f64>> {
            Ok(x[0].map(|v| v * 1e308 * 10.0))
        }
    }
    let tape = Tape::<f64>::with_anomaly();
    let x = tape.var(t(&[1.0], &[1]));
    let e = tape.try_apply(Overflow, &[x]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NonFinite);
    assert_eq!(e.op(), "overflow");
    assert_eq!(e.location().unwrap().file(), file!());
    assert_eq!(tape.len(), 1);
}

#[test]
fn backward_reports_the_rule_input_and_chain_to_the_loss() {
    let tape = Tape::<f64>::with_anomaly();
    let x = tape.var(t(&[0.0, 1.0], &[2]));
    let sqrt_line = line!() + 1;
    let r = x.sqrt();
    let h = r.tanh();
    let loss = h.exp().mean();
    let e = loss.try_backward().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NonFinite);
    assert_eq!(e.op(), "sqrt");
    let msg = e.to_string();
    assert_eq!(e.location().unwrap().line(), sqrt_line, "{msg}");
    assert!(msg.contains("+inf") && msg.contains("[0]"), "{msg}");
    assert!(msg.contains("for its input 0 (var [2]"), "{msg}");
    assert!(msg.contains("the gradient reaching it was finite"), "{msg}");
    let f = file!();
    let chain = format!(
        "sqrt ({f}:{}) → tanh ({f}:{}) → exp ({f}:{}) → mean ({f}:{})",
        sqrt_line,
        sqrt_line + 1,
        sqrt_line + 2,
        sqrt_line + 2
    );
    assert!(msg.contains(&chain), "expected {chain} in\n{msg}");
    // The panicking form panics with the same report.
    let p = panic_message(|| loss.backward());
    assert!(p.contains("anomaly mode") && p.contains("sqrt"), "{p}");
    // The tape is left as it was.
    assert_eq!(tape.len(), 5); // x, sqrt, tanh, exp, mean
}

#[test]
fn backward_without_anomaly_gives_inf_silently_and_with_it_fails() {
    let run = |anomaly: bool| {
        let tape = Tape::<f64>::new();
        tape.set_anomaly(anomaly);
        let x = tape.var(t(&[0.0], &[1]));
        let y = x.sqrt().sum();
        y.try_backward().map(|g| g[x].data()[0])
    };
    assert_eq!(run(false).unwrap(), f64::INFINITY);
    assert_eq!(run(true).unwrap_err().kind(), ErrorKind::NonFinite);
}

#[test]
fn finite_programs_are_unaffected_and_recorded_backward_is_checked() {
    let tape = Tape::<f64>::with_anomaly();
    let x = tape.var(Tensor::rand_normal([3, 4], 0.0, 1.0, 1));
    let w = tape.var(Tensor::rand_normal([4, 2], 0.0, 1.0, 2));
    let y = x.matmul(w).tanh().sum();
    let g = y.backward();
    let plain = {
        let t2 = Tape::<f64>::new();
        let (x2, w2) = (t2.var(x.value()), t2.var(w.value()));
        let y2 = x2.matmul(w2).tanh().sum();
        let g2 = y2.backward();
        (g2[x2].clone(), g2[w2].clone())
    };
    assert_eq!(g[x], plain.0);
    assert_eq!(g[w], plain.1);
    // grad_graph in anomaly mode: log at 0 gives an infinite first derivative.
    let z = tape.var(t(&[0.0], &[1]));
    let y = (z * z).sum(); // fine
    let dz = tape.grad_graph(&[y], &[tape.scalar(1.0)], &[z])[0];
    assert_eq!(dz.value().to_vec(), vec![0.0]);
    let bad = z.sqrt().sum();
    let e = tape.try_grad_graph(&[bad], &[tape.scalar(1.0)], &[z]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NonFinite);
    // Anomaly mode is still on after a failed backward.
    assert!(tape.anomaly());
}

#[test]
fn nan_safe_select_is_clean_in_anomaly_mode_with_a_safe_input() {
    let tape = Tape::<f64>::with_anomaly();
    let x = tape.var(t(&[4.0, 0.0, -1.0], &[3]));
    let zero = tape.scalar(0.0);
    let one = tape.scalar(1.0);
    let pos = x.gt(zero);
    let y = pos.select(pos.select(x, one).sqrt(), zero).sum();
    let g = y.try_backward().unwrap();
    assert_eq!(g[x].to_vec(), vec![0.25, 0.0, 0.0]);
}

#[test]
fn every_kind_of_non_finite_is_caught_at_every_position() {
    // The finiteness scan is branch-free and chunked by 8: check each position and the tail.
    for n in [1usize, 7, 8, 9, 17, 33] {
        for pos in 0..n {
            for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
                let tape = Tape::<f64>::with_anomaly();
                let mut v = vec![1e308; n];
                v[pos] = bad;
                let x = tape.var(Tensor::from_vec(v, [n]));
                let e = tape.try_apply(Id, &[x]).unwrap_err();
                assert_eq!(e.kind(), ErrorKind::NonFinite);
                assert!(e.to_string().contains(&format!("[{pos}]")), "{e}");
            }
        }
        // Huge but finite values (x · 0 = 0) and subnormals pass.
        let tape = Tape::<f64>::with_anomaly();
        let x = tape.var(Tensor::from_vec(vec![f64::MAX; n], [n]));
        assert!(tape.try_apply(Id, &[x]).is_ok());
        let x = tape.var(Tensor::from_vec(vec![5e-324; n], [n]));
        assert!(tape.try_apply(Id, &[x]).is_ok());
    }
}

struct Id;
impl Op<f64> for Id {
    fn name(&self) -> &'static str {
        "id"
    }
    fn forward(&self, x: &[&Tensor<f64>]) -> Result<Tensor<f64>> {
        Ok(x[0].clone())
    }
}
