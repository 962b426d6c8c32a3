//! W5 under an instruction counter: the chain of 1000 scalar ops (`x*a`, `x+b`, `tanh`, `exp`,
//! cycling) recorded and differentiated `N` times (first argument, default 100).
//!
//! Instructions per op, independent of machine load:
//!
//! ```sh
//! cargo build --release --example w5_instructions
//! for n in 10 110; do valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/w5_instructions $n 2>&1 | grep refs; done
//! # (refs(110) − refs(10)) / (100 · 1000) = instructions per op, forward + backward
//! ```
//!
//! With `W5_FORWARD_ONLY=1` the chain is recorded but not differentiated.

use tapegrad::{Tape, Tensor};

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(100);
    let mut acc = 0.0f32;
    for _ in 0..n {
        let tape = Tape::<f32>::new();
        let x0 = tape.var(Tensor::scalar(0.5));
        let (a, b) = (
            tape.constant(Tensor::scalar(1.0001)),
            tape.constant(Tensor::scalar(0.001)),
        );
        let mut x = x0;
        for i in 0..1000 {
            x = match i & 3 {
                0 => x * a,
                1 => x + b,
                2 => x.tanh(),
                _ => x.exp(),
            };
        }
        if std::env::var_os("W5_FORWARD_ONLY").is_some() {
            acc += x.item();
        } else {
            acc += tape.grad(&[x], &[Tensor::scalar(1.0)], &[x0])[0].item();
        }
    }
    println!("{acc}");
}
