//! `ndarray` interop (run with `--features ndarray`).
#![cfg(feature = "ndarray")]

use ndarray::{Array2, ArrayD, Axis, IxDyn, array, s};
use tapegrad::{Tape, Tensor};

mod common;

#[test]
fn round_trips_keep_shape_and_row_major_order() {
    let a = Array2::from_shape_fn((3, 4), |(i, j)| (10 * i + j) as f64);
    let t = Tensor::from_ndarray(&a);
    assert_eq!(t.shape(), &[3, 4]);
    for i in 0..3 {
        for j in 0..4 {
            assert_eq!(t.get(&[i, j]), a[[i, j]]);
        }
    }
    assert_eq!(t.to_ndarray(), a.clone().into_dyn());
    // 0-d and 3-d
    let z = Tensor::from_ndarray(&ndarray::arr0(2.5f32));
    assert_eq!((z.shape().len(), z.item()), (0, 2.5));
    let c = ArrayD::from_shape_fn(IxDyn(&[2, 3, 2]), |ix| (ix[0] * 6 + ix[1] * 2 + ix[2]) as f32);
    assert_eq!(
        Tensor::from(c.clone()).to_vec(),
        (0..12).map(|x| x as f32).collect::<Vec<_>>()
    );
}

#[test]
fn views_slices_and_transposes_are_copied_in_logical_order() {
    let a = array![[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]];
    let t = Tensor::from_ndarray(&a.t());
    assert_eq!(t.to_vec(), vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    let col = Tensor::from_ndarray(&a.slice(s![.., 1]));
    assert_eq!((col.shape(), col.to_vec()), (&[2usize][..], vec![2.0, 5.0]));
    let stepped = Tensor::from_ndarray(&a.slice(s![.., ..;2]));
    assert_eq!(stepped.to_vec(), vec![1.0, 3.0, 4.0, 6.0]);
    // an owned array that is a sub-slice of a bigger buffer
    let mut big = ArrayD::from_shape_fn(IxDyn(&[4, 3]), |ix| (ix[0] * 3 + ix[1]) as f64);
    big.slice_axis_inplace(Axis(0), ndarray::Slice::from(1..3));
    assert_eq!(Tensor::from(big).to_vec(), vec![3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
}

#[test]
fn owned_conversions_move_the_buffer() {
    let a = ArrayD::<f32>::from_elem(IxDyn(&[64, 64]), 1.5);
    let p = a.as_ptr();
    let t = Tensor::from(a);
    assert_eq!(
        t.data().as_ptr(),
        p,
        "standard-layout owned array should be moved, not copied"
    );
    let back: ArrayD<f32> = t.into();
    assert_eq!(back.as_ptr(), p);
}

#[test]
fn arrays_feed_the_tape() {
    let x = array![[0.0, 1.0], [2.0, 3.0]];
    let tape = Tape::<f64>::new();
    let v = tape.var(Tensor::from_ndarray(&x));
    let g = (v * v).sum().backward();
    assert_eq!(g[v].to_ndarray(), (&x * 2.0).into_dyn());
}

#[test]
fn arrays_too_large_for_a_tensor_are_refused() {
    // ndarray accepts an empty [0, 2^61, 2] (2^62 ≤ isize::MAX), but a sum over its empty axis
    // would need 2^62 f64 = 2^65 bytes: tapegrad refuses it, naming the conversion and the line.
    let a = ArrayD::<f64>::zeros(IxDyn(&[0, 1 << 61, 2]));
    let line = line!() + 1;
    let msg = common::panic_message(|| Tensor::from_ndarray(&a));
    assert!(
        msg.starts_with("tapegrad: from_ndarray: shape [0, 2305843009213693952, 2] is too large"),
        "{msg}"
    );
    assert!(msg.contains(&format!("{}:{line}", file!())), "{msg}");
    let msg = common::panic_message(|| Tensor::from(a));
    assert!(
        msg.starts_with("tapegrad: from_ndarray: shape [0, 2305843009213693952, 2]"),
        "{msg}"
    );
}
