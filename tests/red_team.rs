//! Regressions from the red-team pass (issue 10): each test failed on the engine before its fix.
//! The registry-wide halves (NaN propagation, first-order vs recorded) live in `tests/registry.rs`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use tapegrad::{Cotangents, ErrorKind, Float, Op, Result, Tape, Tensor, Value, VjpCtx};

mod common;
use common::panic_message;

fn here(line: u32) -> String {
    format!("{}:{line}", file!())
}

/// Item 1: the same variable twice in `wrt` gets its gradient twice (it got zeros the second time).
#[test]
fn the_same_variable_twice_in_wrt_gets_its_gradient_twice() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::from_vec(vec![1.0, 2.0], [2]));
    let y = (x * x).sum();
    let g = tape.grad(&[y], &[Tensor::scalar(1.0)], &[x, x]);
    assert_eq!(g[0].to_vec(), vec![2.0, 4.0]);
    assert_eq!(g[1].to_vec(), vec![2.0, 4.0]);
    // and a variable listed between two others
    let z = tape.var(Tensor::scalar(3.0));
    let w = (x.sum() * z).sum();
    let g = tape.grad(&[w], &[Tensor::scalar(1.0)], &[z, x, z]);
    assert_eq!((g[0].item(), g[2].item()), (3.0, 3.0));
    let gg = tape.grad_graph(&[y], &[tape.scalar(1.0)], &[x, x]);
    assert_eq!(gg[0].value().to_vec(), gg[1].value().to_vec());
}

/// Item 3: a recorded backward inside `no_grad` still records (as `create_graph`), so its
/// derivative is right instead of a silent 0.
#[test]
fn grad_graph_inside_no_grad_records_the_backward() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::scalar(2.0));
    let y = x * x * x;
    let d = tape.no_grad(|| tape.grad_graph(&[y], &[tape.scalar(1.0)], &[x])[0]);
    assert_eq!(d.item(), 12.0);
    assert!(d.requires_grad());
    let dd = tape.grad(&[d], &[Tensor::scalar(1.0)], &[x])[0].item();
    assert_eq!(dd, 12.0);
    // and the no_grad scope is back in force afterwards
    tape.no_grad(|| {
        let _ = tape.grad_graph(&[y], &[tape.scalar(1.0)], &[x]);
        assert!(!tape.grad_enabled());
        assert!(!(x * x).requires_grad());
    });
    assert!(tape.grad_enabled());
}

/// Item 4: a backward from a value that needs no gradient is an error saying why.
#[test]
fn backward_of_a_value_built_under_no_grad_is_an_error_naming_the_scope() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::from_vec(vec![1.0, 2.0], [2]));
    let line = line!() + 1;
    let loss = tape.no_grad(|| (x * x).sum());
    let e = loss.try_backward().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoGradient);
    let msg = e.to_string();
    assert!(msg.contains("no_grad") && msg.contains(&here(line)), "{msg}");
    // the panicking form panics with the same message
    let p = panic_message(|| loss.backward());
    assert!(p.contains("no_grad"), "{p}");
    // and tape.grad / grad_graph refuse too
    let e = tape.try_grad(&[loss], &[Tensor::scalar(1.0)], &[x]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoGradient);
    let e = tape.try_grad_graph(&[loss], &[tape.scalar(1.0)], &[x]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoGradient);
}

#[test]
fn backward_of_a_detached_value_is_an_error_naming_the_detach() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::from_vec(vec![1.0, 2.0], [2]));
    let line = line!() + 1;
    let d = x.exp().detach();
    let loss = (d * d).sum();
    let msg = loss.try_backward().unwrap_err().to_string();
    assert!(msg.contains("detached") && msg.contains(&here(line)), "{msg}");
    assert!(msg.contains("sum [] ("), "names the value: {msg}");
}

#[test]
fn backward_of_constants_only_says_no_variable_reaches_it() {
    let tape = Tape::<f64>::new();
    let c = tape.constant(Tensor::from_vec(vec![1.0, 2.0], [2]));
    let _unused = tape.var(Tensor::scalar(1.0));
    let msg = c.sum().try_backward().unwrap_err().to_string();
    assert!(msg.contains("no variable"), "{msg}");
}

#[test]
fn an_input_that_does_not_reach_a_tracked_loss_still_gets_zeros() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::from_vec(vec![1.0, 2.0], [2]));
    let unused = tape.var(Tensor::from_vec(vec![5.0, 6.0, 7.0], [3]));
    let g = (x * x).sum().backward();
    assert_eq!(g[unused].to_vec(), vec![0.0, 0.0, 0.0]);
    let g = tape.grad(&[(x * x).sum()], &[Tensor::scalar(1.0)], &[x, unused]);
    assert_eq!(g[1].to_vec(), vec![0.0, 0.0, 0.0]);
}

/// A user op whose rule returns one gradient too many (item 7) or panics (item 8).
struct Misbehaving {
    panics: bool,
}
impl<T: Float> Op<T> for Misbehaving {
    fn name(&self) -> &'static str {
        "misbehaving"
    }
    fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
        Ok(x[0].clone())
    }
    fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
        let doubled = g.mul(g); // records a node (in a recorded backward) before failing
        if self.panics {
            panic!("a bug in the user's rule");
        }
        Ok(cx.grads([Some(doubled), Some(g.clone())]))
    }
}

/// Item 7: too many gradients is the library's error, naming the op and its line.
#[test]
fn a_rule_returning_too_many_gradients_is_an_error_not_a_raw_panic() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::from_vec(vec![1.0, 2.0], [2]));
    let line = line!() + 1;
    let y = tape.apply(Misbehaving { panics: false }, &[x]).sum();
    let one = tape.scalar(1.0);
    let len = tape.len();
    let e = y.try_backward().unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("misbehaving"), "{msg}");
    assert!(msg.contains("returned 2 gradients for 1 input"), "{msg}");
    assert!(msg.contains(&here(line)), "{msg}");
    assert_eq!(tape.len(), len);
    let e = tape.try_grad_graph(&[y], &[one], &[x]).unwrap_err();
    assert!(e.to_string().contains("returned 2 gradients for 1 input"), "{e}");
    assert_eq!(tape.len(), len, "a failed recorded backward leaves nothing behind");
}

/// Item 8: a panicking rule leaves the tape as it was (first-order and recorded backward).
#[test]
fn a_panic_inside_a_user_rule_leaves_the_tape_unchanged() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::from_vec(vec![1.0, 2.0], [2]));
    let y = tape.apply(Misbehaving { panics: true }, &[x]).sum();
    let one = tape.scalar(1.0);
    let len = tape.len();
    assert!(catch_unwind(AssertUnwindSafe(|| y.try_backward())).is_err());
    assert_eq!(tape.len(), len, "first-order backward");
    assert!(catch_unwind(AssertUnwindSafe(|| tape.try_grad_graph(&[y], &[one], &[x]))).is_err());
    assert_eq!(tape.len(), len, "recorded backward");
    // the tape still works, and gradient tracking is on again
    assert!(tape.grad_enabled());
    let g = (x * x).sum().backward();
    assert_eq!(g[x].to_vec(), vec![2.0, 4.0]);
}

/// Item 9 (one of its messages): indexing `Grads` with a `Var` recorded after the loss says so.
#[test]
fn indexing_grads_with_a_var_recorded_after_the_loss_says_so() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::scalar(2.0));
    let g = (x * x).backward();
    let line = line!() + 1;
    let late = tape.var(Tensor::scalar(1.0));
    let msg = panic_message(|| g[late].item());
    assert!(msg.contains("recorded after"), "{msg}");
    assert!(msg.contains(&here(line)), "names where the var was built: {msg}");
}

/// Item 11 (the `try_` half): one mechanism gives every op a fallible form.
#[test]
fn attempt_turns_any_tapegrad_error_into_err_and_lets_other_panics_through() {
    use tapegrad::attempt;
    let tape = Tape::<f64>::new();
    let a = tape.var(Tensor::zeros([2, 3]));
    let b = tape.var(Tensor::zeros([4]));
    let len = tape.len();
    let line = line!() + 1;
    let e = attempt(|| (a + b).sum()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Shape);
    assert!(
        e.to_string().contains("add") && e.to_string().contains(&here(line)),
        "{e}"
    );
    assert_eq!(tape.len(), len, "the failed op recorded nothing");
    let e = attempt(|| a.sum_axis(7, true)).unwrap_err();
    assert!(e.to_string().contains("axis 7"), "{e}");
    let e = attempt(|| Tensor::<f64>::from_vec(vec![1.0], [2])).unwrap_err();
    assert!(e.to_string().contains("from_vec"), "{e}");
    assert_eq!(attempt(|| (a * a).sum().item()).unwrap(), 0.0);
    // nested scopes, and a scope that ends leaves the panicking form as it was
    let inner = attempt(|| attempt(|| a.matmul(b)).is_err()).unwrap();
    assert!(inner);
    let msg = panic_message(|| a + b);
    assert!(msg.starts_with("tapegrad: add:"), "{msg}");
    // a panic that is not a tapegrad error propagates
    assert!(catch_unwind(AssertUnwindSafe(|| attempt(|| panic!("user bug")))).is_err());
}
