//! What the registry cannot see about convolution and pooling: conv2d against a naive loop at
//! random configurations (groups and dilation included), the output-size rule against PyTorch's
//! formula, the errors, the max-pool tie rule, count_include_pad, and dropout's seed.

use tapegrad::nn::{Conv2d, Init, MaxPool2d, ParamStore};
use tapegrad::ops::conv::{ConvOptions, output_size};
use tapegrad::rng::Rng;
use tapegrad::{ErrorKind, Tape, Tensor, attempt};

/// `conv2d` by direct loops (PyTorch's definition: cross-correlation, zero padding).
fn naive_conv2d(x: &Tensor<f64>, w: &Tensor<f64>, b: Option<&Tensor<f64>>, o: &ConvOptions) -> Tensor<f64> {
    let (xs, ws) = (x.shape(), w.shape());
    let (n, h, wd) = (xs[0], xs[2], xs[3]);
    let (oc, cg, kh, kw) = (ws[0], ws[1], ws[2], ws[3]);
    let size = |n: usize, k: usize, a: usize| (n + 2 * o.padding[a] - o.dilation[a] * (k - 1) - 1) / o.stride[a] + 1;
    let (oh, ow) = (size(h, kh, 0), size(wd, kw, 1));
    let per_group = oc / o.groups;
    let mut y = vec![0.0; n * oc * oh * ow];
    for bi in 0..n {
        for co in 0..oc {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut s = b.map_or(0.0, |b| b.data()[co]);
                    for ci in 0..cg {
                        let cin = co / per_group * cg + ci;
                        for i in 0..kh {
                            for j in 0..kw {
                                let iy = (oy * o.stride[0] + i * o.dilation[0]) as isize - o.padding[0] as isize;
                                let ix = (ox * o.stride[1] + j * o.dilation[1]) as isize - o.padding[1] as isize;
                                if iy < 0 || ix < 0 || iy as usize >= h || ix as usize >= wd {
                                    continue;
                                }
                                s += x.get(&[bi, cin, iy as usize, ix as usize]) * w.get(&[co, ci, i, j]);
                            }
                        }
                    }
                    y[((bi * oc + co) * oh + oy) * ow + ox] = s;
                }
            }
        }
    }
    Tensor::from_vec(y, [n, oc, oh, ow])
}

/// A random valid configuration: input shape, weight shape, options.
fn random_config(rng: &mut Rng) -> ([usize; 4], [usize; 4], ConvOptions) {
    loop {
        let groups = 1 + rng.below(3);
        let c = groups * (1 + rng.below(2));
        let out = groups * (1 + rng.below(2));
        let (h, w) = (1 + rng.below(7), 1 + rng.below(7));
        let k = [1 + rng.below(3), 1 + rng.below(3)];
        let o = ConvOptions::new()
            .stride([1 + rng.below(3), 1 + rng.below(3)])
            .padding([rng.below(3), rng.below(3)])
            .dilation([1 + rng.below(3), 1 + rng.below(3)])
            .groups(groups);
        let fits = (0..2).all(|a| output_size([h, w][a], k[a], o.stride[a], o.padding[a], o.dilation[a]).is_some());
        if fits {
            return ([1 + rng.below(2), c, h, w], [out, c / groups, k[0], k[1]], o);
        }
    }
}

#[test]
fn conv2d_matches_a_naive_loop_at_random_configurations() {
    let mut rng = Rng::new(12);
    let (mut grouped, mut dilated, mut strided) = (0, 0, 0);
    for case in 0..60u64 {
        let (xs, ws, o) = random_config(&mut rng);
        grouped += usize::from(o.groups > 1);
        dilated += usize::from(o.dilation != [1, 1]);
        strided += usize::from(o.stride != [1, 1]);
        let x = Tensor::<f64>::rand_normal(xs, 0.0, 1.0, 100 + case);
        let w = Tensor::<f64>::rand_normal(ws, 0.0, 1.0, 200 + case);
        let b = Tensor::<f64>::rand_normal([ws[0]], 0.0, 1.0, 300 + case);
        let want = naive_conv2d(&x, &w, Some(&b), &o);
        let tape = Tape::new();
        let (xv, wv, bv) = (tape.var(x.clone()), tape.var(w.clone()), tape.var(b.clone()));
        let y = xv.conv2d(wv, Some(bv), o);
        assert_eq!(y.shape().as_slice(), want.shape(), "{xs:?} {ws:?} {o:?}");
        let diff = y.value().max_abs_diff(&want);
        assert!(diff < 1e-12, "{xs:?} * {ws:?} {o:?}: differs by {diff}");
        // The gradients are adjoints: <g, conv(x, w)> is linear in x and in w, so
        // <dx, x> = <dw, w> = <g, y − b>.
        let g = Tensor::<f64>::rand_normal(want.shape(), 0.0, 1.0, 400 + case);
        let grads = tape.grad(&[y], std::slice::from_ref(&g), &[xv, wv, bv]);
        let dot = |a: &Tensor<f64>, b: &Tensor<f64>| a.data().iter().zip(b.data()).map(|(p, q)| p * q).sum::<f64>();
        let unbiased = naive_conv2d(&x, &w, None, &o);
        let gy = dot(&g, &unbiased);
        assert!((dot(&grads[0], &x) - gy).abs() < 1e-9 * (1.0 + gy.abs()), "dx of {o:?}");
        assert!((dot(&grads[1], &w) - gy).abs() < 1e-9 * (1.0 + gy.abs()), "dw of {o:?}");
    }
    assert!(
        grouped > 5 && dilated > 5 && strided > 5,
        "{grouped} {dilated} {strided}"
    );
}

#[test]
fn conv1d_is_conv2d_over_a_height_of_one() {
    let tape = Tape::<f64>::new();
    let x = Tensor::rand_normal([2, 4, 9], 0.0, 1.0, 1);
    let w = Tensor::rand_normal([6, 2, 3], 0.0, 1.0, 2);
    let o = ConvOptions::new().stride(2).padding(2).dilation(2).groups(2);
    let y = tape.var(x.clone()).conv1d(tape.var(w.clone()), None, o);
    let want = naive_conv2d(
        &x.reshape([2, 4, 1, 9]),
        &w.reshape([6, 2, 1, 3]),
        None,
        &ConvOptions::new()
            .stride([1, 2])
            .padding([0, 2])
            .dilation([1, 2])
            .groups(2),
    );
    assert_eq!(y.shape().as_slice(), &[2, 6, 5]); // ⌊(9 + 4 − 4 − 1)/2⌋ + 1
    assert!(y.value().reshape([2, 6, 1, 5]).max_abs_diff(&want) < 1e-12);
}

#[test]
fn output_sizes_follow_pytorchs_formula() {
    // ⌊(H + 2p − d(k − 1) − 1)/s⌋ + 1, written out here independently.
    for h in 1..9usize {
        for k in 1..5 {
            for s in 1..4 {
                for p in 0..3 {
                    for d in 1..4 {
                        let num = (h + 2 * p) as isize - (d * (k - 1)) as isize - 1;
                        let want = (num >= 0).then(|| num as usize / s + 1);
                        assert_eq!(output_size(h, k, s, p, d), want, "h {h} k {k} s {s} p {p} d {d}");
                        if let Some(oh) = want {
                            let tape = Tape::<f64>::new();
                            let x = tape.var(Tensor::zeros([1, 1, h, 3]));
                            let w = tape.var(Tensor::zeros([1, 1, k, 1]));
                            let o = ConvOptions::new().stride([s, 1]).padding([p, 0]).dilation([d, 1]);
                            assert_eq!(x.conv2d(w, None, o).shape().as_slice(), &[1, 1, oh, 3]);
                        }
                    }
                }
            }
        }
    }
    // Values from PyTorch's documentation examples: 50×100 input, kernel (3, 5), stride (2, 1),
    // padding (4, 2), dilation (3, 1) gives 26×100.
    assert_eq!(output_size(50, 3, 2, 4, 3), Some(26));
    assert_eq!(output_size(100, 5, 1, 2, 1), Some(100));
    // Pooling: 8×8 by a 2×2 window with stride 2 is 4×4; 7 by 3, stride 2, padding 1 is 4.
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::zeros([1, 1, 8, 7]));
    assert_eq!(x.max_pool2d(2, 2, 0).shape().as_slice(), &[1, 1, 4, 3]);
    assert_eq!(x.avg_pool2d(3, 2, 1).shape().as_slice(), &[1, 1, 4, 4]);
}

/// The error of `f`, checking that it named `op` and this file and recorded nothing.
fn error_of<'t>(tape: &'t Tape<f64>, op: &str, f: impl FnOnce() -> tapegrad::Var<'t, f64>) -> tapegrad::Error {
    let before = tape.len();
    let e = attempt(f).expect_err("the call should fail");
    let msg = e.to_string();
    assert!(msg.contains(op), "{msg}");
    assert!(msg.contains(file!()), "{msg}");
    assert_eq!(tape.len(), before, "a failed call recorded something: {msg}");
    e
}

#[test]
fn bad_shapes_and_options_are_clear_errors() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::zeros([2, 4, 5, 5]));
    let w = tape.var(Tensor::zeros([6, 2, 3, 3]));
    let o = ConvOptions::new();
    // The weight has 2 input channels per group: fine with 2 groups, not with 1 or 4.
    assert_eq!(x.conv2d(w, None, o.groups(2)).shape().as_slice(), &[2, 6, 3, 3]);
    let e = error_of(&tape, "conv2d", || x.conv2d(w, None, o));
    assert!(
        e.to_string().contains("[6, 2, 3, 3]") && e.to_string().contains("per group"),
        "{e}"
    );
    let e = error_of(&tape, "conv2d", || x.conv2d(w, None, o.groups(4)));
    assert!(e.to_string().contains("must divide"), "{e}");
    let e = error_of(&tape, "conv2d", || x.conv2d(w, None, o.groups(0)));
    assert_eq!(e.kind(), ErrorKind::Invalid);
    let e = error_of(&tape, "conv2d", || x.conv2d(w, None, o.groups(2).stride(0)));
    assert!(e.to_string().contains("stride"), "{e}");
    let e = error_of(&tape, "conv2d", || x.conv2d(w, None, o.groups(2).dilation([1, 0])));
    assert!(e.to_string().contains("dilation"), "{e}");
    let e = error_of(&tape, "conv2d", || x.conv2d(w, None, o.groups(2).dilation(3)));
    assert!(e.to_string().contains("spans more than"), "{e}");
    assert_eq!(e.kind(), ErrorKind::Shape);
    // Sizes that overflow are errors, never a panic or a wrapped size.
    let e = error_of(&tape, "conv2d", || {
        x.conv2d(w, None, o.groups(2).padding(usize::MAX / 4))
    });
    assert!(e.to_string().contains("too large"), "{e}");
    error_of(&tape, "conv2d", || x.conv2d(w, None, o.groups(2).padding(usize::MAX)));
    let b = tape.var(Tensor::zeros([4]));
    let e = error_of(&tape, "conv2d", || x.conv2d(w, Some(b), o.groups(2)));
    assert!(e.to_string().contains("bias"), "{e}");
    let flat = x.reshape([2, 4, 25]);
    let e = error_of(&tape, "conv2d", || flat.conv2d(w, None, o));
    assert!(e.to_string().contains("[batch, channels, height, width]"), "{e}");
    // conv1d names itself and its own shapes.
    let x1 = tape.var(Tensor::zeros([1, 2, 4]));
    let w1 = tape.var(Tensor::zeros([3, 2, 5]));
    let e = error_of(&tape, "conv1d", || x1.conv1d(w1, None, o));
    assert!(e.to_string().contains("[1, 2, 4]"), "{e}");
    let e = error_of(&tape, "conv1d", || x1.conv1d(w1, None, o.stride([2, 1])));
    assert_eq!(e.kind(), ErrorKind::Invalid);
    // Pooling: padding above half the window, a window larger than the input, a 3-D input.
    let e = error_of(&tape, "max_pool2d", || x.max_pool2d(2, 2, 2));
    assert!(e.to_string().contains("half the kernel"), "{e}");
    let e = error_of(&tape, "avg_pool2d", || x.avg_pool2d(6, 1, 0));
    assert_eq!(e.kind(), ErrorKind::Shape);
    error_of(&tape, "max_pool2d", || x1.max_pool2d(2, 2, 0));
    error_of(&tape, "max_pool2d", || x.max_pool2d(2, 0, 0));
    // Dropout probabilities outside [0, 1].
    for p in [-0.1, 1.5, f64::NAN] {
        let e = error_of(&tape, "dropout", || x.dropout(p, 1));
        assert_eq!(e.kind(), ErrorKind::Invalid);
    }
}

#[test]
fn max_pool_gives_the_gradient_to_the_first_maximum_of_each_window() {
    let tape = Tape::<f64>::new();
    // Two 2×2 windows; the left one has its maximum 5 twice, the right one everywhere.
    let x = tape.var(Tensor::from_vec(
        vec![1.0, 5.0, 2.0, 2.0, 5.0, 0.0, 2.0, 2.0],
        [1, 1, 2, 4],
    ));
    let y = x.max_pool2d(2, 2, 0);
    assert_eq!(y.value().to_vec(), vec![5.0, 2.0]);
    let g = tape.grad(&[y], &[Tensor::from_vec(vec![10.0, 20.0], [1, 1, 1, 2])], &[x])[0].clone();
    assert_eq!(g.to_vec(), vec![0.0, 10.0, 20.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    // Overlapping windows (stride 1) that share their maximum: its gradients add up.
    let z = tape.var(Tensor::from_vec(vec![0.0, 3.0, 1.0], [1, 1, 1, 3]));
    let p = z.max_pool2d([1, 2], 1, 0);
    assert_eq!(p.value().to_vec(), vec![3.0, 3.0]);
    assert_eq!(p.sum().backward()[z].to_vec(), vec![0.0, 2.0, 0.0]);
    // Padding never wins, even over negative values.
    let m = tape.var(Tensor::from_vec(vec![-3.0, -1.0], [1, 1, 1, 2]));
    assert_eq!(m.max_pool2d([1, 2], 1, [0, 1]).value().to_vec(), vec![-3.0, -1.0, -1.0]);
    // A NaN in a window makes its output NaN (and is the element that gets the gradient).
    let q = tape.var(Tensor::from_vec(vec![1.0, f64::NAN, 7.0, 2.0], [1, 1, 1, 4]));
    let r = q.max_pool2d([1, 2], 2, 0);
    let rv = r.value().to_vec();
    assert!(rv[0].is_nan() && rv[1] == 7.0, "{rv:?}");
    assert_eq!(r.sum().backward()[q].to_vec(), vec![0.0, 1.0, 1.0, 0.0]);
    // The same in 2×2 windows (their own unrolled scan): the first NaN gets the gradient, before
    // and after a larger value; infinities are ordinary maxima.
    let n = f64::NAN;
    let w = tape.var(Tensor::from_vec(
        vec![9.0, n, 5.0, 1.0, f64::INFINITY, 2.0, 3.0, n, n, 1.0, 0.0, f64::INFINITY],
        [1, 1, 2, 6],
    ));
    let v = w.max_pool2d(2, 2, 0);
    let vv = v.value().to_vec();
    assert!(vv[0].is_nan() && vv[1].is_nan() && vv[2] == f64::INFINITY, "{vv:?}");
    assert_eq!(
        v.sum().backward()[w].to_vec(),
        vec![0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]
    );
    // The layer form.
    assert_eq!(MaxPool2d::new(2).forward(x).value().to_vec(), vec![5.0, 2.0]);
}

#[test]
fn avg_pool_counts_the_padding() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::ones([1, 1, 2, 2]));
    // 3×3 windows with padding 1 and stride 1: each window holds the 4 ones and 5 zeros of padding.
    let y = x.avg_pool2d(3, 1, 1);
    assert_eq!(y.shape().as_slice(), &[1, 1, 2, 2]);
    assert!(y.value().data().iter().all(|&v| (v - 4.0 / 9.0).abs() < 1e-15));
    // Each input element is in all four windows: gradient 4/9.
    assert!(
        y.sum().backward()[x]
            .data()
            .iter()
            .all(|&v| (v - 4.0 / 9.0).abs() < 1e-15)
    );
}

#[test]
fn dropout_masks_come_from_the_seed() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::rand_normal([50, 40], 0.0, 1.0, 3));
    assert_eq!(x.dropout(0.0, 9).value().to_vec(), x.value().to_vec());
    assert!(x.dropout(1.0, 9).value().data().iter().all(|&v| v == 0.0));
    let a = x.dropout(0.3, 9);
    assert_eq!(a.value().to_vec(), x.dropout(0.3, 9).value().to_vec());
    assert_ne!(a.value().to_vec(), x.dropout(0.3, 10).value().to_vec());
    let kept = a.value().data().iter().filter(|&&v| v != 0.0).count();
    assert!((1300..1500).contains(&kept), "{kept} of 2000 kept at p = 0.3");
    // Kept elements are scaled by 1/(1 − p); the gradient goes through the same mask.
    let g = a.sum().backward()[x].clone();
    for ((&xi, &yi), &gi) in x.value().data().iter().zip(a.value().data()).zip(g.data()) {
        if yi == 0.0 {
            assert_eq!(gi, 0.0);
        } else {
            assert!((yi - xi / 0.7).abs() < 1e-12 && (gi - 1.0 / 0.7).abs() < 1e-12);
        }
    }
    // A checkpointed segment replays the dropout with the same mask: the same gradient.
    let plain = (x.dropout(0.5, 4) * x).sum().backward()[x].clone();
    let ck = tape.checkpoint(&[x], |v| v[0].dropout(0.5, 4) * v[0]).sum().backward()[x].clone();
    assert_eq!(plain.to_vec(), ck.to_vec());
}

#[test]
fn the_conv2d_layer_has_pytorchs_names_and_layouts() {
    let mut store = ParamStore::<f64>::new();
    let conv = Conv2d::new(
        &mut store,
        "features.0",
        4,
        6,
        [3, 2],
        ConvOptions::new().groups(2),
        Init::HeUniform,
        1,
    );
    let names: Vec<&str> = store.iter().map(|(_, n, _)| n).collect();
    assert_eq!(names, vec!["features.0.weight", "features.0.bias"]);
    let w = store.get(conv.weight);
    assert_eq!(w.shape(), &[6, 2, 3, 2]);
    // Kaiming uniform over the fan-in (in/groups)·kh·kw = 12.
    let a = (6.0f64 / 12.0).sqrt();
    assert!(w.data().iter().all(|v| v.abs() <= a));
    assert!(w.data().iter().any(|v| v.abs() > a / 2.0));
    assert!(store.get(conv.bias).data().iter().all(|&v| v == 0.0));
    let tape = Tape::new();
    let p = store.bind(&tape);
    let y = conv.forward(&p, tape.constant(Tensor::ones([1, 4, 5, 5])));
    assert_eq!(y.shape().as_slice(), &[1, 6, 3, 4]);
}
