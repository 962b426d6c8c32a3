//! Bitwise the same at any thread count: the values and gradients of every registry sample, of
//! large versions of the kernels that split (elementwise, broadcast, reductions, row ops, matmul,
//! layout) and of the benchmark workloads W1–W4 and W6, with 1 thread (no pool) and with 2 and 3
//! threads — once with the default size threshold, once with every kernel split
//! (`set_min_parallel_elements(0)`).
//!
//! The thread count is process-wide, so everything runs in one test under a lock.

use std::sync::Mutex;
use tapegrad::compile::Compiled;
use tapegrad::ops::Registry;
use tapegrad::softmax::{CrossEntropy, Target};
use tapegrad::tensor::parallel::{min_parallel_elements, set_min_parallel_elements, split_count};
use tapegrad::{Float, Tape, Tensor, Var, set_num_threads};

static LOCK: Mutex<()> = Mutex::new(());

/// Everything a case produced, as bit patterns (an `f32` widens to `f64` exactly).
type Bits = Vec<u64>;

fn push<T: Float>(out: &mut Bits, t: &Tensor<T>) {
    out.push(t.numel() as u64);
    out.extend(t.data().iter().map(|v| v.to_f64().to_bits()));
}

/// A cotangent of `shape` drawn from a fixed seed.
fn cotangent<T: Float>(shape: &[usize], seed: u64) -> Tensor<T> {
    Tensor::rand_normal(shape, T::ZERO, T::ONE, seed)
}

/// The output of `f` on `inputs`, and the gradients of every input for a fixed cotangent, both
/// first order and through the recorded backward (errors recorded by their text).
fn run<T: Float>(inputs: &[Tensor<T>], f: impl for<'t> Fn(&[Var<'t, T>]) -> Var<'t, T>) -> Bits {
    let mut out = Bits::new();
    let tape = Tape::<T>::new();
    let vars: Vec<Var<'_, T>> = inputs.iter().map(|x| tape.var(x.clone())).collect();
    let y = f(&vars);
    push(&mut out, &y.value());
    let c = cotangent::<T>(&y.shape(), 7);
    match tape.try_grad(&[y], std::slice::from_ref(&c), &vars) {
        Ok(gs) => gs.iter().for_each(|g| push(&mut out, g)),
        Err(e) => out.extend(e.to_string().bytes().map(u64::from)),
    }
    let cv = tape.constant(c);
    match tape.try_grad_graph(&[y], &[cv], &vars) {
        Ok(gs) => gs.iter().for_each(|g| push(&mut out, &g.value())),
        Err(e) => out.extend(e.to_string().bytes().map(u64::from)),
    }
    out
}

fn registry_cases() -> Vec<(String, Bits)> {
    let mut cases = Vec::new();
    for info in Registry::builtin().iter() {
        for s in (info.samples)() {
            let x64 = s.inputs.clone();
            let x32: Vec<Tensor<f32>> = s.inputs.iter().map(|t| t.cast()).collect();
            cases.push((format!("{} / {} / f64", info.name, s.label), run(&x64, s.f64)));
            cases.push((format!("{} / {} / f32", info.name, s.label), run(&x32, s.f32)));
        }
    }
    cases
}

fn normal<T: Float>(shape: &[usize], seed: u64) -> Tensor<T> {
    Tensor::rand_normal(shape, T::ZERO, T::ONE, seed)
}

/// Large enough that every kernel splits into several chunks.
fn large_cases<T: Float>() -> Vec<(String, Bits)> {
    let t = |s: &str| format!("{s} / {}", std::any::type_name::<T>());
    let a = normal::<T>(&[96, 1000], 1);
    let b = normal::<T>(&[1000], 2);
    let c3 = normal::<T>(&[24, 40, 70], 3);
    let col = normal::<T>(&[24, 1, 70], 4);
    let long = normal::<T>(&[1 << 20], 5);
    let labels: Vec<usize> = (0..96).map(|i| (i * 37) % 1000).collect();
    vec![
        (
            t("unary chain"),
            run(std::slice::from_ref(&a), |v| (v[0].tanh() * v[0]).exp().sqrt()),
        ),
        (
            t("bias broadcast"),
            run(&[a.clone(), b.clone()], |v| (v[0] + v[1]) * v[1]),
        ),
        (
            t("middle-axis broadcast"),
            run(&[c3.clone(), col.clone()], |v| (v[0] - v[1]) / (v[1] * v[1]).exp()),
        ),
        (t("sum of a million"), run(std::slice::from_ref(&long), |v| v[0].sum())),
        (
            t("mean of a million"),
            run(std::slice::from_ref(&long), |v| (v[0] * v[0]).mean()),
        ),
        (
            t("sum axis 0"),
            run(std::slice::from_ref(&a), |v| v[0].sum_axis(0, false)),
        ),
        (
            t("sum axis 1 of 3-d"),
            run(std::slice::from_ref(&c3), |v| v[0].sum_axis(1, true)),
        ),
        (
            t("sum axis 2 of 3-d"),
            run(std::slice::from_ref(&c3), |v| v[0].sum_axis(-1, false)),
        ),
        (
            t("max axis 1"),
            run(std::slice::from_ref(&a), |v| v[0].max_axis(1, false)),
        ),
        (
            t("softmax last axis"),
            run(std::slice::from_ref(&a), |v| v[0].softmax(-1)),
        ),
        (t("softmax axis 0"), run(std::slice::from_ref(&a), |v| v[0].softmax(0))),
        (
            t("log_softmax"),
            run(std::slice::from_ref(&a), |v| v[0].log_softmax(-1)),
        ),
        (
            t("softmax composed"),
            run(std::slice::from_ref(&a), |v| v[0].softmax_composed(-1)),
        ),
        (
            t("cross entropy"),
            run(std::slice::from_ref(&a), |v| {
                v[0].cross_entropy(Target::Classes(&labels))
            }),
        ),
        (
            t("cross entropy composed"),
            run(std::slice::from_ref(&a), |v| {
                v[0].cross_entropy_composed(Target::Classes(&labels), CrossEntropy::default())
            }),
        ),
        (t("transpose"), run(std::slice::from_ref(&a), |v| v[0].t() * v[0].t())),
        (
            t("permute 3-d"),
            run(std::slice::from_ref(&c3), |v| v[0].permute([2, 0, 1]).exp()),
        ),
        (
            t("broadcast_to"),
            run(std::slice::from_ref(&col), |v| v[0].broadcast_to([24, 40, 70]).sin()),
        ),
        (
            t("matmul"),
            run(&[normal::<T>(&[300, 200], 6), normal::<T>(&[200, 310], 7)], |v| {
                v[0].matmul(v[1])
            }),
        ),
        (
            // wider than tall: split by bands of columns
            t("wide matmul"),
            run(&[normal::<T>(&[70, 150], 10), normal::<T>(&[150, 501], 11)], |v| {
                v[0].matmul(v[1])
            }),
        ),
        (
            t("batched matmul"),
            run(&[normal::<T>(&[8, 100, 120], 8), normal::<T>(&[120, 90], 9)], |v| {
                v[0].matmul(v[1])
            }),
        ),
    ]
}

/// W1–W3 at 256×1000 and 1024×4096's row count with fewer columns, W4 at n = 256, W6's MLP step.
fn workload_cases() -> Vec<(String, Bits)> {
    let x = normal::<f32>(&[256, 1000], 11);
    let wide = normal::<f32>(&[32, 32768], 12);
    let labels: Vec<usize> = (0..256).map(|i| (i * 131) % 1000).collect();
    let mut cases = vec![
        (
            "W1 fused 256x1000".into(),
            run(std::slice::from_ref(&x), |v| v[0].softmax(-1)),
        ),
        (
            "W1 fused 32x32768".into(),
            run(std::slice::from_ref(&wide), |v| v[0].softmax(-1)),
        ),
        (
            "W2 composed 256x1000".into(),
            run(std::slice::from_ref(&x), |v| v[0].softmax_composed(-1)),
        ),
        (
            "W2 naive 32x32768".into(),
            run(std::slice::from_ref(&wide), |v| v[0].softmax_naive(-1)),
        ),
        (
            "W3 cross entropy 256x1000".into(),
            run(std::slice::from_ref(&x), |v| {
                v[0].cross_entropy(Target::Classes(&labels))
            }),
        ),
        (
            "W4 matmul 256".into(),
            run(&[normal::<f32>(&[256, 256], 13), normal::<f32>(&[256, 256], 14)], |v| {
                v[0].matmul(v[1]).sum()
            }),
        ),
    ];
    // W6: MLP 784-256-10, batch 128, ReLU, cross-entropy.
    let inputs = [
        normal::<f32>(&[128, 784], 15),
        Tensor::rand_normal([784, 256], 0.0f32, 0.05, 16),
        Tensor::rand_normal([256], 0.0f32, 0.1, 17),
        Tensor::rand_normal([256, 10], 0.0f32, 0.1, 18),
        Tensor::rand_normal([10], 0.0f32, 0.1, 19),
    ];
    let classes: Vec<usize> = (0..128).map(|i| i % 10).collect();
    cases.push((
        "W6 MLP step".into(),
        run(&inputs, |v| {
            let h = (v[0].matmul(v[1]) + v[2]).relu();
            (h.matmul(v[3]) + v[4]).cross_entropy(Target::Classes(&classes))
        }),
    ));
    cases
}

/// A compiled step (`tapegrad::compile`): traced and run once on `inputs` (all parameters); the
/// loss and the gradients. Its fused loops split into fixed chunks of tiles on the pool.
fn compiled<T: Float>(inputs: &[Tensor<T>], f: impl for<'t> Fn(&[Var<'t, T>]) -> Var<'t, T>) -> Bits {
    let refs: Vec<&Tensor<T>> = inputs.iter().collect();
    let mut step = Compiled::trace(&refs, &[], |_, p, _| f(p)).expect("the case compiles");
    let out = step.run(&refs, &[]).expect("the case runs");
    let mut bits = Bits::new();
    push(&mut bits, &out.loss);
    out.grads.iter().for_each(|g| push(&mut bits, g));
    bits
}

/// Compiled W1–W3 (one fused loop each for the composed forms), and sums that span chunks: a
/// bias's gradient (a column sum), a full sum and the MLP step.
fn compiled_cases() -> Vec<(String, Bits)> {
    let x = normal::<f32>(&[256, 1000], 21);
    let wide = normal::<f32>(&[32, 32768], 22);
    let g = normal::<f32>(&[256, 1000], 23);
    let labels: Vec<usize> = (0..256).map(|i| (i * 131) % 1000).collect();
    let bias = normal::<f64>(&[1000], 24);
    vec![
        (
            "compiled W1 256x1000".into(),
            compiled(&[x.clone(), g.clone()], |v| (v[0].softmax(-1) * v[1]).sum()),
        ),
        (
            "compiled W2 composed 256x1000".into(),
            compiled(&[x.clone(), g.clone()], |v| (v[0].softmax_composed(-1) * v[1]).sum()),
        ),
        (
            "compiled W2 naive 32x32768".into(),
            compiled(std::slice::from_ref(&wide), |v| v[0].softmax_naive(-1).sum()),
        ),
        (
            "compiled W3 composed 256x1000".into(),
            compiled(std::slice::from_ref(&x), |v| {
                v[0].cross_entropy_composed(Target::Classes(&labels), CrossEntropy::default())
            }),
        ),
        (
            "compiled bias column sum f64".into(),
            compiled(&[normal::<f64>(&[512, 1000], 25), bias], |v| {
                (v[0] + v[1]).tanh().square().mean()
            }),
        ),
    ]
}

fn all_cases() -> Vec<(String, Bits)> {
    let mut cases = registry_cases();
    cases.extend(large_cases::<f64>());
    cases.extend(large_cases::<f32>());
    cases.extend(workload_cases());
    cases.extend(compiled_cases());
    cases
}

#[test]
fn values_and_gradients_are_bitwise_the_same_at_any_thread_count() {
    let _lock = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let default_min = min_parallel_elements();
    set_num_threads(1);
    let reference = all_cases();
    assert!(reference.len() > 300, "{} cases", reference.len());
    for (threads, min) in [(2, default_min), (2, 0), (3, 0)] {
        set_num_threads(threads);
        set_min_parallel_elements(min);
        let splits = split_count();
        let got = all_cases();
        // The comparison means something only if kernels did split.
        assert!(
            split_count() - splits > 50,
            "{threads} threads: only {} splits",
            split_count() - splits
        );
        assert_eq!(got.len(), reference.len());
        for ((name, want), (_, have)) in reference.iter().zip(&got) {
            let first = want.iter().zip(have).position(|(a, b)| a != b);
            assert!(
                want.len() == have.len() && first.is_none(),
                "{name}: {threads} threads (split above {min} elements) differ from 1 thread at \
                 word {first:?} of {}",
                want.len()
            );
        }
    }
    set_min_parallel_elements(default_min);
    set_num_threads(0);
}
