//! Arithmetic on plain tensors (no tape): the operators, `matmul` and the elementwise functions,
//! against naive loops, against what a `Var` records (bit for bit), and their errors.

use tapegrad::{ErrorKind, Tape, Tensor, Var, attempt};

/// The broadcast of two shapes, by hand (NumPy's rules).
fn broadcast(a: &[usize], b: &[usize]) -> Vec<usize> {
    let n = a.len().max(b.len());
    (0..n)
        .map(|k| {
            let ea = if k + a.len() >= n { a[k + a.len() - n] } else { 1 };
            let eb = if k + b.len() >= n { b[k + b.len() - n] } else { 1 };
            assert!(ea == eb || ea == 1 || eb == 1);
            ea.max(eb)
        })
        .collect()
}

/// Element `idx` (of the broadcast shape) of `x`, reading extent-1 axes at 0.
fn at(x: &Tensor<f64>, idx: &[usize]) -> f64 {
    let s = x.shape();
    let off = idx.len() - s.len();
    let mut flat = 0;
    for (k, &n) in s.iter().enumerate() {
        flat = flat * n + if n == 1 { 0 } else { idx[off + k] };
    }
    x.data()[flat]
}

/// `f(a, b)` over the two broadcast together, one element at a time.
fn naive_zip(a: &Tensor<f64>, b: &Tensor<f64>, f: impl Fn(f64, f64) -> f64) -> Tensor<f64> {
    let shape = broadcast(a.shape(), b.shape());
    let count: usize = shape.iter().product();
    let mut out = Vec::new();
    for i in 0..count {
        let mut idx = vec![0; shape.len()];
        let mut r = i;
        for k in (0..shape.len()).rev() {
            idx[k] = r % shape[k];
            r /= shape[k];
        }
        out.push(f(at(a, &idx), at(b, &idx)));
    }
    Tensor::from_vec(out, shape)
}

fn pairs() -> Vec<(Tensor<f64>, Tensor<f64>)> {
    vec![
        (
            Tensor::rand_normal([2, 3], 0.0, 1.0, 1),
            Tensor::rand_uniform([2, 3], 0.5, 2.0, 2),
        ),
        (
            Tensor::rand_normal([2, 3], 0.0, 1.0, 3),
            Tensor::rand_uniform([3], 0.5, 2.0, 4),
        ),
        (
            Tensor::rand_normal([4, 1], 0.0, 1.0, 5),
            Tensor::rand_uniform([1, 3], 0.5, 2.0, 6),
        ),
        (
            Tensor::rand_normal([2, 1, 3], 0.0, 1.0, 7),
            Tensor::rand_uniform([4, 1], 0.5, 2.0, 8),
        ),
        (Tensor::scalar(-1.25), Tensor::rand_uniform([3], 0.5, 2.0, 9)),
        (Tensor::rand_normal([3], 0.0, 1.0, 10), Tensor::scalar(0.75)),
        (Tensor::scalar(2.0), Tensor::scalar(0.5)),
    ]
}

#[test]
fn tensor_tensor_operators_broadcast_like_naive_loops_by_value_and_by_reference() {
    for (a, b) in pairs() {
        type Case = (&'static str, Tensor<f64>, fn(f64, f64) -> f64);
        let cases: [Case; 4] = [
            ("+", &a + &b, |x, y| x + y),
            ("-", &a - &b, |x, y| x - y),
            ("*", &a * &b, |x, y| x * y),
            ("/", &a / &b, |x, y| x / y),
        ];
        for (op, got, f) in cases {
            let want = naive_zip(&a, &b, f);
            assert_eq!(got, want, "{op} on {:?} and {:?}", a.shape(), b.shape());
        }
        // The four forms of one operator agree.
        let want = &a * &b;
        assert_eq!(a.clone() * b.clone(), want);
        assert_eq!(a.clone() * &b, want);
        assert_eq!(&a * b.clone(), want);
        // And a `Var` records the same values, bit for bit.
        let tape = Tape::<f64>::new();
        let (va, vb) = (tape.var(a.clone()), tape.var(b.clone()));
        type Op2 = for<'t> fn(Var<'t, f64>, Var<'t, f64>) -> Var<'t, f64>;
        let recorded: [(Tensor<f64>, Op2); 4] = [
            (&a + &b, |x, y| x + y),
            (&a - &b, |x, y| x - y),
            (&a * &b, |x, y| x * y),
            (&a / &b, |x, y| x / y),
        ];
        for (t, f) in recorded {
            let v = f(va, vb).value();
            assert!(t.data().iter().zip(v.data()).all(|(x, y)| x.to_bits() == y.to_bits()));
        }
    }
}

#[test]
fn scalar_operators_on_either_side_match_naive_loops() {
    let a = Tensor::rand_normal([2, 3], 0.0, 1.0, 11);
    let each = |f: fn(f64) -> f64| Tensor::from_vec(a.data().iter().map(|&x| f(x)).collect(), a.shape());
    assert_eq!(&a + 1.5, each(|x| x + 1.5));
    assert_eq!(&a - 1.5, each(|x| x - 1.5));
    assert_eq!(&a * 1.5, each(|x| x * 1.5));
    assert_eq!(&a / 3.0, each(|x| x / 3.0)); // a true division
    assert_eq!(1.5 + &a, each(|x| 1.5 + x));
    assert_eq!(1.5 - &a, each(|x| 1.5 - x));
    assert_eq!(1.5 * &a, each(|x| 1.5 * x));
    assert_eq!(3.0 / &a, each(|x| 3.0 / x));
    assert_eq!(-&a, each(|x| -x));
    // By value.
    assert_eq!(a.clone() + 1.5, &a + 1.5);
    assert_eq!(2.0 / a.clone(), 2.0 / &a);
    assert_eq!(-a.clone(), -&a);
    // f32, and a 0-d tensor.
    let b = Tensor::from_vec(vec![1.0f32, -2.0, 4.0], [3]);
    assert_eq!((2.0f32 * &b - 1.0).to_vec(), vec![1.0, -5.0, 7.0]);
    assert_eq!((1.0f32 / b).to_vec(), vec![1.0, -0.5, 0.25]);
    let s = Tensor::scalar(4.0f64);
    assert_eq!(((&s - 1.0) * 2.0).shape(), &[] as &[usize]);
    assert_eq!((10.0 - s).item(), 6.0);
    // IEEE: division by zero and NaN go through.
    let z = Tensor::from_vec(vec![0.0, -0.0, f64::NAN], [3]);
    let q = (1.0 / &z).to_vec();
    assert_eq!(q[..2], [f64::INFINITY, f64::NEG_INFINITY]);
    assert!(q[2].is_nan());
}

#[test]
fn matmul_matches_a_triple_loop_and_broadcasts_batches() {
    let naive = |a: &Tensor<f64>, b: &Tensor<f64>, batch_a: usize, batch_b: usize| {
        let (m, k) = (a.shape()[a.ndim() - 2], a.shape()[a.ndim() - 1]);
        let n = b.shape()[b.ndim() - 1];
        let batches = batch_a.max(batch_b);
        let mut out = Vec::new();
        for p in 0..batches {
            let (pa, pb) = (if batch_a == 1 { 0 } else { p }, if batch_b == 1 { 0 } else { p });
            for i in 0..m {
                for j in 0..n {
                    let mut s = 0.0;
                    for l in 0..k {
                        s += a.data()[pa * m * k + i * k + l] * b.data()[pb * k * n + l * n + j];
                    }
                    out.push(s);
                }
            }
        }
        out
    };
    let a = Tensor::rand_normal([3, 4], 0.0, 1.0, 20);
    let b = Tensor::rand_normal([4, 2], 0.0, 1.0, 21);
    let c = a.matmul(&b);
    assert_eq!(c.shape(), &[3, 2]);
    for (x, y) in c.data().iter().zip(naive(&a, &b, 1, 1)) {
        assert!((x - y).abs() <= 1e-12 * (1.0 + y.abs()));
    }
    let a3 = Tensor::rand_normal([2, 3, 4], 0.0, 1.0, 22);
    let c3 = a3.matmul(&b);
    assert_eq!(c3.shape(), &[2, 3, 2]);
    for (x, y) in c3.data().iter().zip(naive(&a3, &b, 2, 1)) {
        assert!((x - y).abs() <= 1e-12 * (1.0 + y.abs()));
    }
    // The same kernel as the recorded op.
    let tape = Tape::<f64>::new();
    assert_eq!(tape.var(a3.clone()).matmul(tape.var(b.clone())).value(), c3);
}

#[test]
fn elementwise_functions_on_tensors_equal_what_a_var_records_and_std() {
    let x = Tensor::rand_uniform([2, 3], 0.1, 0.9, 30);
    let tape = Tape::<f64>::new();
    let v = tape.var(x.clone());
    type F = (
        fn(&Tensor<f64>) -> Tensor<f64>,
        for<'t> fn(Var<'t, f64>) -> Var<'t, f64>,
        fn(f64) -> f64,
    );
    let fs: Vec<(&str, F)> = vec![
        ("exp", (|t| t.exp(), |v| v.exp(), f64::exp)),
        ("log", (|t| t.log(), |v| v.log(), f64::ln)),
        ("sqrt", (|t| t.sqrt(), |v| v.sqrt(), f64::sqrt)),
        ("tanh", (|t| t.tanh(), |v| v.tanh(), f64::tanh)),
        ("sin", (|t| t.sin(), |v| v.sin(), f64::sin)),
        ("cos", (|t| t.cos(), |v| v.cos(), f64::cos)),
        ("tan", (|t| t.tan(), |v| v.tan(), f64::tan)),
        ("asin", (|t| t.asin(), |v| v.asin(), f64::asin)),
        ("acos", (|t| t.acos(), |v| v.acos(), f64::acos)),
        ("atan", (|t| t.atan(), |v| v.atan(), f64::atan)),
        ("sinh", (|t| t.sinh(), |v| v.sinh(), f64::sinh)),
        ("cosh", (|t| t.cosh(), |v| v.cosh(), f64::cosh)),
        ("asinh", (|t| t.asinh(), |v| v.asinh(), f64::asinh)),
        ("atanh", (|t| t.atanh(), |v| v.atanh(), f64::atanh)),
        ("log1p", (|t| t.log1p(), |v| v.log1p(), f64::ln_1p)),
        ("expm1", (|t| t.expm1(), |v| v.expm1(), f64::exp_m1)),
        ("log2", (|t| t.log2(), |v| v.log2(), f64::log2)),
        ("log10", (|t| t.log10(), |v| v.log10(), f64::log10)),
        ("exp2", (|t| t.exp2(), |v| v.exp2(), f64::exp2)),
        ("reciprocal", (|t| t.reciprocal(), |v| v.reciprocal(), |a| 1.0 / a)),
        ("rsqrt", (|t| t.rsqrt(), |v| v.rsqrt(), |a| 1.0 / a.sqrt())),
        ("square", (|t| t.square(), |v| v.square(), |a| a * a)),
        ("abs", (|t| t.abs(), |v| v.abs(), f64::abs)),
        ("relu", (|t| t.relu(), |v| v.relu(), |a| a.max(0.0))),
        (
            "sigmoid",
            (|t| t.sigmoid(), |v| v.sigmoid(), |a| 1.0 / (1.0 + (-a).exp())),
        ),
        (
            "softplus",
            (|t| t.softplus(), |v| v.softplus(), |a| (1.0 + a.exp()).ln()),
        ),
        ("silu", (|t| t.silu(), |v| v.silu(), |a| a / (1.0 + (-a).exp()))),
        ("sign", (|t| t.sign(), |v| v.sign(), f64::signum)),
        ("erf", (|t| t.erf(), |v| v.erf(), |a| a)), // no std erf: compared with the Var only
        ("erfc", (|t| t.erfc(), |v| v.erfc(), |a| a)),
        ("gelu", (|t| t.gelu(), |v| v.gelu(), |a| a)),
        ("gelu_tanh", (|t| t.gelu_tanh(), |v| v.gelu_tanh(), |a| a)),
        ("leaky_relu", (|t| t.leaky_relu(0.1), |v| v.leaky_relu(0.1), |a| a)),
        ("elu", (|t| t.elu(1.0), |v| v.elu(1.0), |a| a)),
        (
            "clamp",
            (|t| t.clamp(0.2, 0.7), |v| v.clamp(0.2, 0.7), |a| a.clamp(0.2, 0.7)),
        ),
    ];
    let no_std = ["erf", "erfc", "gelu", "gelu_tanh", "leaky_relu", "elu"];
    for (name, (on_tensor, on_var, naive)) in fs {
        let t = on_tensor(&x);
        let r = on_var(v).value();
        assert!(
            t.data().iter().zip(r.data()).all(|(a, b)| a.to_bits() == b.to_bits()),
            "{name}: the tensor function differs from the recorded op"
        );
        if !no_std.contains(&name) {
            for (&a, &got) in x.data().iter().zip(t.data()) {
                let want = naive(a);
                assert!(
                    (got - want).abs() <= 1e-14 * (1.0 + want.abs()),
                    "{name}({a}) = {got}, want {want}"
                );
            }
        }
    }
    // acosh needs x > 1.
    let y = &x + 1.5;
    for (&a, &got) in y.data().iter().zip(y.acosh().data()) {
        assert!((got - a.acosh()).abs() <= 1e-14);
    }
}

#[test]
fn binary_functions_on_tensors_match_naive_loops() {
    for (a, b) in pairs() {
        let nan_max = |x: f64, y: f64| if x.is_nan() || y.is_nan() { f64::NAN } else { x.max(y) };
        let nan_min = |x: f64, y: f64| if x.is_nan() || y.is_nan() { f64::NAN } else { x.min(y) };
        assert_eq!(a.maximum(&b), naive_zip(&a, &b, nan_max));
        assert_eq!(a.minimum(&b), naive_zip(&a, &b, nan_min));
        assert_eq!(b.pow(&a), naive_zip(&b, &a, f64::powf));
        assert_eq!(a.atan2(&b), naive_zip(&a, &b, f64::atan2));
    }
}

#[test]
fn mismatched_shapes_name_the_op_the_shapes_and_the_line() {
    let a = Tensor::<f64>::zeros([2, 3]);
    let b = Tensor::<f64>::zeros([4]);
    type F = fn(&Tensor<f64>, &Tensor<f64>) -> Tensor<f64>;
    let ops: [(&str, F); 4] = [
        ("add", |a, b| a + b),
        ("sub", |a, b| a - b),
        ("mul", |a, b| a * b),
        ("div", |a, b| a / b),
    ];
    for (name, f) in ops {
        let e = attempt(|| f(&a, &b)).unwrap_err();
        assert_eq!((e.kind(), e.op()), (ErrorKind::Shape, name));
        let msg = e.to_string();
        assert!(msg.contains("[2, 3]") && msg.contains("[4]"), "{msg}");
        assert!(msg.contains(&format!("(at {}:", file!())), "{msg}");
    }
    let line = line!() + 1;
    let e = attempt(|| a.clone() + b.clone()).unwrap_err();
    assert!(e.to_string().contains(&format!("{}:{line}", file!())), "{e}");
    let line = line!() + 1;
    let e = attempt(|| a.matmul(&b)).unwrap_err();
    assert_eq!((e.kind(), e.op()), (ErrorKind::Shape, "matmul"));
    assert!(e.to_string().contains(&format!("{}:{line}", file!())), "{e}");
}

#[test]
#[should_panic(expected = "tapegrad: mul: shapes [2] and [3] do not broadcast")]
fn outside_attempt_a_mismatch_panics_with_the_message() {
    let _ = Tensor::<f32>::ones([2]) * Tensor::ones([3]);
}
