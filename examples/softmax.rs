//! The learner's softmax story: the Jacobian that falls out of composing primitives, next to the
//! closed form `diag(y) − y yᵀ`, and the diagonal-only mistake `h(1 − h)`.
//!
//! Run: `cargo run --release --example softmax`

use tapegrad::check::{GradcheckOptions, gradcheck, jacobian};
use tapegrad::{Tape, Tensor, Var};

fn softmax_composed<'t>(x: Var<'t, f64>) -> Var<'t, f64> {
    let m = x.max_axis(-1, true).detach();
    let e = (x - m).exp();
    e / e.sum_axis(-1, true)
}

fn main() {
    let x = Tensor::from_vec(vec![1.0, 2.0, 0.5], [3]);
    let tape = Tape::<f64>::new();
    let y = softmax_composed(tape.constant(x.clone())).value();
    println!("x = {x}\ny = softmax(x) = {y:.6}\n");

    let j = jacobian(softmax_composed, &x);
    let analytic = Tensor::from_fn([3, 3], |f| {
        let (a, b) = (f / 3, f % 3);
        (if a == b { y.data()[a] } else { 0.0 }) - y.data()[a] * y.data()[b]
    });
    println!("Jacobian from the primitives' rules:\n{j:.6}\n");
    println!("diag(y) - y yT:\n{analytic:.6}\n");
    println!("largest difference: {:.3e}\n", j.max_abs_diff(&analytic));

    let report = gradcheck(
        |v| softmax_composed(v[0]),
        std::slice::from_ref(&x),
        &GradcheckOptions::default(),
    );
    println!("{report}\n");

    let diag = Tensor::from_fn([3, 3], |f| {
        let (a, b) = (f / 3, f % 3);
        if a == b { y.data()[a] * (1.0 - y.data()[a]) } else { 0.0 }
    });
    println!("the learner's diagonal-only Jacobian h(1-h):\n{diag:.6}");
    println!(
        "off by up to {:.3e}: the cross terms -h_j h_k are missing",
        diag.max_abs_diff(&analytic)
    );
}
