//! The types a user moves between threads are `Send` (checked at compile time), and a tape really
//! can be recorded on one thread and differentiated on another.

use tapegrad::nn::ParamStore;
use tapegrad::{Error, Grads, Tape, Tensor};

fn assert_send<T: Send>() {}
fn assert_sync<T: Sync>() {}

#[test]
fn the_core_types_are_send() {
    assert_send::<Tape<f32>>();
    assert_send::<Tape<f64>>();
    assert_send::<Tensor<f32>>();
    assert_send::<Grads<f64>>();
    assert_send::<ParamStore<f32>>();
    assert_send::<Error>();
    // Values (tensors, gradients, errors) can also be shared between threads.
    assert_sync::<Tensor<f64>>();
    assert_sync::<Grads<f32>>();
    assert_sync::<Error>();
}

#[test]
fn a_tape_moves_to_a_worker_thread_and_back() {
    let tape = Tape::<f64>::new();
    let x0 = tape.var(Tensor::from_vec(vec![1.0, 2.0, 3.0], [3])).index();
    // Record and differentiate on a worker; the tape (with what it recorded) comes back.
    let (tape, grads) = std::thread::spawn(move || {
        let grads = {
            let x = tape.var(Tensor::from_vec(vec![0.5, -1.0], [2]));
            (x * x).sum().backward()
        };
        (tape, grads)
    })
    .join()
    .unwrap();
    assert_eq!(tape.len(), 4); // x0, x, mul, sum
    let g: Vec<(usize, Vec<f64>)> = grads.iter().map(|(i, t)| (i, t.to_vec())).collect();
    assert_eq!(g, vec![(x0, vec![0.0, 0.0, 0.0]), (1, vec![1.0, -2.0])]);
}
