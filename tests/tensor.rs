//! Tensors: construction, layout, broadcasting, printing, comparisons.

use approx::{assert_abs_diff_eq, assert_relative_eq};
use tapegrad::{ErrorKind, Tensor};

#[test]
fn from_vec_checks_the_size() {
    let e = Tensor::<f32>::try_from_vec(vec![1.0; 5], [2, 3]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Shape);
    assert!(e.to_string().contains("5 elements") && e.to_string().contains("[2, 3]"));
}

#[test]
fn constructors() {
    assert_eq!(Tensor::<f64>::zeros([2, 2]).to_vec(), vec![0.0; 4]);
    assert_eq!(Tensor::<f64>::ones([3]).to_vec(), vec![1.0; 3]);
    assert_eq!(Tensor::full([2], 7.0f32).to_vec(), vec![7.0, 7.0]);
    let s = Tensor::scalar(2.5f64);
    assert_eq!((s.ndim(), s.numel(), s.item()), (0, 1, 2.5));
    let v: Tensor<f64> = vec![1.0, 2.0].into();
    assert_eq!(v.shape(), &[2]);
    let back: Vec<f64> = v.into();
    assert_eq!(back, vec![1.0, 2.0]);
}

#[test]
fn random_tensors_are_reproducible_and_distributed() {
    let a = Tensor::<f64>::rand_normal([100_000], 1.0, 2.0, 5);
    assert_eq!(a, Tensor::rand_normal([100_000], 1.0, 2.0, 5));
    assert_ne!(a, Tensor::rand_normal([100_000], 1.0, 2.0, 6));
    let n = a.numel() as f64;
    let mean = a.sum_all() / n;
    let var = a.data().iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    assert!((mean - 1.0).abs() < 0.03, "mean {mean}");
    assert!((var.sqrt() - 2.0).abs() < 0.03, "std {}", var.sqrt());
    let u = Tensor::<f32>::rand_uniform([10_000], 2.0, 3.0, 1);
    assert!(u.data().iter().all(|&x| (2.0..3.0).contains(&x)));
    assert!((u.sum_all() / 10_000.0 - 2.5).abs() < 0.02);
}

#[test]
fn element_access_and_mutation() {
    let mut a = Tensor::from_vec((0..6).map(|x| x as f64).collect(), [2, 3]);
    assert_eq!(a.get(&[1, 2]), 5.0);
    let b = a.clone();
    a.set(&[0, 1], -1.0);
    assert_eq!(a.get(&[0, 1]), -1.0);
    assert_eq!(b.get(&[0, 1]), 1.0, "mutation copies a shared buffer");
    assert!(std::panic::catch_unwind(|| b.get(&[2, 0])).is_err());
}

#[test]
fn reshape_shares_and_permute_reorders() {
    let a = Tensor::from_vec((0..24).map(|x| x as f64).collect(), [2, 3, 4]);
    let r = a.reshape([6, 4]);
    assert!(r.shares_buffer(&a));
    assert!(a.try_reshape([5, 5]).is_err());
    let p = a.permute([2, 0, 1]);
    assert_eq!(p.shape(), &[4, 2, 3]);
    for i in 0..2 {
        for j in 0..3 {
            for k in 0..4 {
                assert_eq!(p.get(&[k, i, j]), a.get(&[i, j, k]));
            }
        }
    }
    let t = Tensor::from_vec((0..6).map(|x| x as f64).collect(), [2, 3]).transpose(0, 1);
    assert_eq!(t.to_vec(), vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    assert!(a.try_permute([0, 1]).is_err());
}

#[test]
fn large_transpose_matches_index_formula() {
    let a = Tensor::<f32>::rand_normal([67, 45], 0.0, 1.0, 2);
    let t = a.transpose(0, 1);
    for i in 0..67 {
        for j in 0..45 {
            assert_eq!(t.get(&[j, i]), a.get(&[i, j]));
        }
    }
}

#[test]
fn numpy_broadcasting() {
    let a = Tensor::from_vec(vec![1.0, 2.0, 3.0], [3, 1]);
    let b = Tensor::from_vec(vec![10.0, 20.0], [2]);
    let c = a.zip_map(&b, |x, y| x + y);
    assert_eq!(c.shape(), &[3, 2]);
    assert_eq!(c.to_vec(), vec![11.0, 21.0, 12.0, 22.0, 13.0, 23.0]);
    let d = Tensor::from_vec(vec![1.0, 2.0], [2, 1, 1]).zip_map(&Tensor::ones([3, 2]), |x, y| x * y);
    assert_eq!(d.shape(), &[2, 3, 2]);
    assert_eq!(d.sum_all(), 18.0);
    let e = Tensor::scalar(2.0).broadcast_to([2, 2]);
    assert_eq!(e.to_vec(), vec![2.0; 4]);
    assert!(std::panic::catch_unwind(|| Tensor::<f64>::zeros([2, 3]).zip_map(&Tensor::zeros([2]), |x, _| x)).is_err());
}

#[test]
fn display_prints_nested_arrays() {
    let a = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], [2, 2]);
    assert_eq!(format!("{a}"), "[[1, 2],\n [3, 4]]");
    assert_eq!(
        format!("{:.1}", Tensor::from_vec(vec![0.25f64, 1.0], [2])),
        "[0.2, 1.0]"
    );
    assert_eq!(format!("{}", Tensor::scalar(1.5f32)), "1.5");
    let long = Tensor::from_vec((0..10).map(|x| x as f64).collect(), [10]);
    assert_eq!(format!("{long}"), "[0, 1, 2, ..., 7, 8, 9]");
    assert!(format!("{:?}", a).starts_with("Tensor<f64>[2, 2]"));
}

#[test]
fn approx_comparisons() {
    let a = Tensor::from_vec(vec![1.0, 2.0], [2]);
    let b = Tensor::from_vec(vec![1.0 + 1e-12, 2.0], [2]);
    assert_relative_eq!(a, b, max_relative = 1e-10);
    assert_abs_diff_eq!(a, b, epsilon = 1e-9);
    assert!(!approx::relative_eq!(a, Tensor::from_vec(vec![1.0, 2.0], [1, 2])));
    assert_eq!(a.max_abs_diff(&Tensor::from_vec(vec![1.5, 1.0], [2])), 1.0);
}

#[test]
fn cast_between_precisions() {
    let a = Tensor::from_vec(vec![0.1f64, 1e40], [2]);
    let b: Tensor<f32> = a.cast();
    assert_eq!(b.data()[0], 0.1f32);
    assert!(b.data()[1].is_infinite());
}
