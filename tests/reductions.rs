//! What the registry cannot see about the reductions: tie rules, values and gradients at zeros,
//! the variance's correction, the norm at 0, argmax ties and NaN, axis errors, closed forms.

use tapegrad::{ErrorKind, Tape, Tensor, Var, attempt};

fn t(v: &[f64], s: &[usize]) -> Tensor<f64> {
    Tensor::from_vec(v.to_vec(), s)
}

#[test]
fn max_axis_gives_the_whole_gradient_to_the_first_tie_amax_splits_it() {
    let tape = Tape::<f64>::new();
    let x = tape.var(t(&[1.0, 3.0, 3.0, 3.0, 2.0, 0.0], &[2, 3]));
    let g = x.max_axis(1, false).sum().backward()[x].to_vec();
    assert_eq!(g, vec![0.0, 1.0, 0.0, 1.0, 0.0, 0.0]);
    let g = x.amax([1], false).sum().backward()[x].to_vec();
    assert_eq!(g, vec![0.0, 0.5, 0.5, 1.0, 0.0, 0.0]);
    let g = x.max_all().backward()[x].to_vec();
    assert_eq!(g, vec![0.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0, 0.0, 0.0]);
    let g = x.min_all().backward()[x].to_vec();
    assert_eq!(g, vec![0.0, 0.0, 0.0, 0.0, 0.0, 1.0]);
    let y = tape.var(t(&[1.0, 2.0, 5.0, 1.0, 2.0, 0.0], &[2, 3]));
    let g = y.min_axis(0, false).sum().backward()[y].to_vec();
    assert_eq!(g, vec![1.0, 1.0, 0.0, 0.0, 0.0, 1.0]); // ties in columns 0 and 1: the first
    let g = y.amin([0], false).sum().backward()[y].to_vec();
    assert_eq!(g, vec![0.5, 0.5, 0.0, 0.5, 0.5, 1.0]);
}

#[test]
fn amax_over_several_axes_and_keepdim() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::from_fn([2, 3, 2], |i| ((i * 7) % 5) as f64));
    let m = x.amax([0, -1], true);
    assert_eq!(m.shape().as_slice(), &[1, 3, 1]);
    let xv = x.value();
    for j in 0..3 {
        let mut want = f64::NEG_INFINITY;
        for i in 0..2 {
            for k in 0..2 {
                want = want.max(xv.get(&[i, j, k]));
            }
        }
        assert_eq!(m.value().get(&[0, j, 0]), want);
    }
    // The gradient of each group sums to the incoming gradient, whatever the ties.
    let g = m.sum().backward()[x].clone();
    assert!((g.sum_all() - 3.0).abs() < 1e-12);
}

#[test]
fn amax_with_nan_is_nan_and_sends_the_gradient_to_the_nan() {
    let tape = Tape::<f64>::new();
    let x = tape.var(t(&[1.0, f64::NAN, 5.0], &[3]));
    let m = x.amax([0], false);
    assert!(m.value().item().is_nan());
    assert_eq!(m.backward()[x].to_vec(), vec![0.0, 1.0, 0.0]);
    assert!(x.min_all().value().item().is_nan());
    assert!(x.max_axis(0, false).value().item().is_nan());
    assert!(x.min_axis(0, false).value().item().is_nan());
}

#[test]
fn argmax_and_argmin_take_the_first_tie_and_nan_counts_as_extreme() {
    let x = t(&[1.0, 4.0, 4.0, 2.0, f64::NAN, 7.0, f64::NAN, -1.0], &[2, 4]);
    assert_eq!(x.argmax(1, false).data(), &[1, 0]);
    assert_eq!(x.argmin(1, false).data(), &[0, 0]);
    assert_eq!(x.argmin(-1, true).shape(), &[2, 1]);
    assert_eq!(x.argmax(0, false).data(), &[1, 1, 1, 0]); // NaN in columns 0 and 2
    let y = t(&[3.0, -2.0, -2.0, 3.0], &[4]);
    assert_eq!(y.argmax(0, false).data(), &[0]);
    assert_eq!(y.argmin(0, false).data(), &[1]);
    let tape = Tape::<f64>::new();
    let v = tape.var(y);
    assert_eq!(v.argmax(-1, false).data(), &[0]);
}

#[test]
fn argmax_errors_name_the_op_and_the_axis() {
    let x = t(&[1.0, 2.0], &[2]);
    let e = attempt(|| x.argmax(1, false)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Shape);
    assert!(
        e.to_string().contains("argmax") && e.to_string().contains("axis 1"),
        "{e}"
    );
    let e = attempt(|| Tensor::<f64>::zeros([2, 0]).argmin(1, false)).unwrap_err();
    assert!(e.to_string().contains("argmin"), "{e}");
}

#[test]
fn repeated_or_out_of_range_axes_are_errors_naming_the_op_and_the_axis() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::zeros([2, 3]));
    fn check<'t>(what: &str, f: impl FnOnce() -> Var<'t, f64>) {
        let e = attempt(f).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Shape, "{what}: {e}");
        let msg = e.to_string();
        assert!(msg.contains(what), "{what}: {msg}");
        assert!(msg.contains("axis"), "{what}: {msg}");
        assert!(
            msg.contains("reductions.rs"),
            "{what}: the error names the caller's line: {msg}"
        );
    }
    check("sum_axes", || x.sum_axes([1, -1], false));
    check("mean_axes", || x.mean_axes([0, 0], false));
    check("amax", || x.amax([2], false));
    check("amin", || x.amin([-3], true));
    check("var", || x.var([0, -2], 1, false));
    check("std", || x.std([5], 1, false));
    check("norm", || x.norm(2.0, [1, 1], false));
    check("prod", || x.prod_axis(2, false));
    check("cumsum", || x.cumsum(-3));
    check("logsumexp", || x.logsumexp(2, false));
    let e = attempt(|| x.sum_axes([1, -1], false)).unwrap_err();
    assert!(e.to_string().contains("repeated"), "{e}");
    let e = attempt(|| x.norm(0.0, [0], false)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid);
    let e = attempt(|| tape.var(Tensor::zeros([0, 2])).amax([0], false)).unwrap_err();
    assert!(e.to_string().contains("amax"), "{e}");
}

#[test]
fn sum_axes_matches_repeated_sum_axis_and_the_empty_set_is_the_identity() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::rand_normal([2, 3, 4], 0.0, 1.0, 5));
    let a = x.sum_axes([0, 2], false).value();
    let b = x.sum_axis(2, false).sum_axis(0, false).value();
    assert!(a.max_abs_diff(&b) < 1e-12);
    let m = x.mean_axes([-1, 0], true).value();
    assert_eq!(m.shape(), &[1, 3, 1]);
    assert!(m.reshape([3]).max_abs_diff(&b.map(|v| v / 8.0)) < 1e-12);
    assert_eq!(x.sum_axes([] as [isize; 0], false).value(), x.value());
    let g = x.mean_axes([0, 1, 2], false).backward()[x].clone();
    assert!(g.to_vec().iter().all(|&v| (v - 1.0 / 24.0).abs() < 1e-15));
}

#[test]
fn prod_gradient_at_zeros() {
    let tape = Tape::<f64>::new();
    // Row 0: no zero; row 1: one zero; row 2: two zeros.
    let x = tape.var(t(&[2.0, 3.0, 4.0, 2.0, 0.0, 5.0, 0.0, 3.0, 0.0], &[3, 3]));
    let p = x.prod_axis(1, false);
    assert_eq!(p.value().to_vec(), vec![24.0, 0.0, 0.0]);
    let g = p.sum().backward()[x].to_vec();
    assert_eq!(g, vec![12.0, 8.0, 6.0, 0.0, 10.0, 0.0, 0.0, 0.0, 0.0]);
    // The recorded gradient agrees, and its derivative (the Hessian of a row) is exact at zeros.
    let gr = tape.grad_graph(&[p.sum()], &[tape.scalar(1.0)], &[x])[0];
    assert_eq!(gr.value().to_vec(), g);
    let w = tape.constant(t(&[1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0], &[3, 3]));
    let h = tape.grad(&[(gr * w).sum()], &[Tensor::scalar(1.0)], &[x])[0].to_vec();
    // Row 0: ∂(x1·x2)/∂x = [0, x2, x1]; row 1: ∂(x1·x2)/∂x = [0, 5, 0] (x1 = 0);
    // row 2: ∂(x1·x2)/∂x = [0, 0, 3] (two zeros: only the other zero's derivative survives).
    assert_eq!(h, vec![0.0, 4.0, 3.0, 0.0, 5.0, 0.0, 0.0, 0.0, 3.0]);
    let h = tape.grad(&[gr.sum()], &[Tensor::scalar(1.0)], &[x])[0].to_vec();
    // Σ_i ∂P_i/∂x_k, with P_i the product of the others: row 2 (two zeros at 0 and 2) is [3, 0, 3].
    assert_eq!(&h[6..], &[3.0, 0.0, 3.0]);
    let all = tape.var(t(&[0.0, 2.0, 0.0, 0.0], &[4]));
    assert_eq!(all.prod_all().backward()[all].to_vec(), vec![0.0; 4]);
}

#[test]
fn var_correction_and_std_at_zero_variance() {
    let tape = Tape::<f64>::new();
    let x = tape.var(t(&[1.0, 2.0, 3.0, 4.0, 2.0, 2.0, 2.0, 2.0], &[2, 4]));
    assert_eq!(x.var([1], 1, false).value().to_vec(), vec![5.0 / 3.0, 0.0]);
    assert_eq!(x.var([1], 0, false).value().to_vec(), vec![1.25, 0.0]);
    assert!((x.var_all(1).value().item() - 5.5 / 7.0).abs() < 1e-12); // mean 2.25, Σd² = 5.5
    let g = x.var([1], 1, false).sum().backward()[x].to_vec();
    let want = [-1.0, -1.0 / 3.0, 1.0 / 3.0, 1.0, 0.0, 0.0, 0.0, 0.0];
    assert!(g.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-12), "{g:?}");
    // std: the gradient is 0 where the standard deviation is 0 (row 1).
    let s = x.std([1], 1, false);
    let g = s.sum().backward()[x].to_vec();
    assert!(g[4..].iter().all(|&v| v == 0.0), "{g:?}");
    let sd = (5.0f64 / 3.0).sqrt();
    assert!((g[0] - (-1.5 / (3.0 * sd))).abs() < 1e-12);
    // One element, correction 1: 0/0 = NaN, as in PyTorch.
    let one = tape.var(t(&[3.0], &[1]));
    assert!(one.var_all(1).value().item().is_nan());
    assert_eq!(one.var_all(0).value().item(), 0.0);
}

#[test]
fn norm_values_and_the_subgradient_at_zero() {
    let tape = Tape::<f64>::new();
    let x = tape.var(t(&[3.0, -4.0, 0.0, 0.0, 0.0, 0.0], &[3, 2]));
    let l2 = x.norm(2.0, [1], false);
    assert_eq!(l2.value().to_vec(), vec![5.0, 0.0, 0.0]);
    assert_eq!(l2.sum().backward()[x].to_vec(), vec![0.6, -0.8, 0.0, 0.0, 0.0, 0.0]);
    let l1 = x.norm(1.0, [0, 1], false);
    assert_eq!(l1.value().item(), 7.0);
    assert_eq!(l1.backward()[x].to_vec(), vec![1.0, -1.0, 0.0, 0.0, 0.0, 0.0]);
    let l3 = x.norm_all(3.0);
    assert!((l3.value().item() - 91f64.cbrt()).abs() < 1e-12);
    let z = tape.var(Tensor::zeros([3]));
    for p in [1.0, 1.5, 2.0, 3.0] {
        let n = z.norm_all(p);
        assert_eq!(n.value().item(), 0.0);
        assert_eq!(n.backward()[z].to_vec(), vec![0.0; 3], "p = {p}");
    }
    // Scaled: no overflow or underflow.
    let big = tape.var(t(&[3e200, 4e200], &[2]));
    assert!((big.norm_all(2.0).value().item() / 5e200 - 1.0).abs() < 1e-12);
    let tiny = tape.var(t(&[3e-200, 4e-200], &[2]));
    assert!((tiny.norm_all(2.0).value().item() / 5e-200 - 1.0).abs() < 1e-12);
}

#[test]
fn logsumexp_is_stable_and_its_gradient_is_softmax() {
    let tape = Tape::<f64>::new();
    let x = tape.var(t(&[1000.0, 999.0, -1000.0, f64::NEG_INFINITY], &[2, 2]));
    let y = x.logsumexp(1, false);
    let v = y.value().to_vec();
    assert!((v[0] - (1000.0 + (1.0 + (-1.0f64).exp()).ln())).abs() < 1e-9);
    assert_eq!(v[1], -1000.0);
    let g = y.sum().backward()[x].to_vec();
    let s = x.softmax(1).value().to_vec();
    assert!(g.iter().zip(&s).all(|(a, b)| (a - b).abs() < 1e-15), "{g:?} vs {s:?}");
    let inf = tape.var(t(&[f64::NEG_INFINITY, f64::NEG_INFINITY, f64::INFINITY, 1.0], &[2, 2]));
    assert_eq!(
        inf.logsumexp(-1, true).value().to_vec(),
        vec![f64::NEG_INFINITY, f64::INFINITY]
    );
    let nan = tape.var(t(&[f64::NAN, 1.0], &[2]));
    assert!(nan.logsumexp(0, false).value().item().is_nan());
}

#[test]
fn cumsum_and_its_reverse_closed_forms() {
    let tape = Tape::<f64>::new();
    let x = tape.var(t(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]));
    assert_eq!(x.cumsum(1).value().to_vec(), vec![1.0, 3.0, 6.0, 4.0, 9.0, 15.0]);
    assert_eq!(x.cumsum(0).value().to_vec(), vec![1.0, 2.0, 3.0, 5.0, 7.0, 9.0]);
    assert_eq!(
        x.reverse_cumsum(-1).value().to_vec(),
        vec![6.0, 5.0, 3.0, 15.0, 11.0, 6.0]
    );
    let w = tape.constant(t(&[1.0, 10.0, 100.0, 1.0, 10.0, 100.0], &[2, 3]));
    let g = (x.cumsum(1) * w).sum().backward()[x].to_vec();
    assert_eq!(g, vec![111.0, 110.0, 100.0, 111.0, 110.0, 100.0]);
}
