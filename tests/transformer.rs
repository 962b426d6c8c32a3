//! What the registry cannot see about the transformer layers: gradients of whole layers (many
//! ops, many parameters) against finite differences, the causal mask's exact zeros, layer norm
//! against a hand-written naive version and its composed twin, parameter names.

use tapegrad::check::{FusedOptions, GradcheckOptions, fused_vs_composed, gradcheck};
use tapegrad::nn::{Embedding, LayerNorm, MultiHeadAttention, ParamStore, Params, TransformerBlock};
use tapegrad::{Indices, Tape, Tensor, Var};

/// The store's tensors, in order (the inputs of a gradcheck over every parameter).
fn params_of(store: &ParamStore<f64>) -> Vec<Tensor<f64>> {
    store.iter().map(|(_, _, t)| t.clone()).collect()
}

#[test]
fn attention_gradients_match_finite_differences() {
    for causal in [false, true] {
        let mut store = ParamStore::<f64>::new();
        let attn = MultiHeadAttention::new(&mut store, "attn", 4, 2, 11);
        let mut inputs = vec![Tensor::rand_normal([2, 3, 4], 0.0, 1.0, 12)];
        inputs.extend(params_of(&store));
        let w = Tensor::rand_normal([2, 3, 4], 0.0, 1.0, 13);
        let r = gradcheck(
            |v: &[Var<'_, f64>]| {
                let p = Params::from_vars(v[1..].to_vec());
                (attn.forward(&p, v[0], causal) * v[0].tape().constant(w.clone())).sum()
            },
            &inputs,
            &GradcheckOptions::default(),
        );
        assert!(r.passed, "causal {causal}: {r}");
    }
}

#[test]
fn transformer_block_gradients_match_finite_differences() {
    let mut store = ParamStore::<f64>::new();
    let block = TransformerBlock::new(&mut store, "b", 4, 2, 6, 21);
    let mut inputs = vec![Tensor::rand_normal([1, 3, 4], 0.0, 1.0, 22)];
    inputs.extend(params_of(&store));
    let r = gradcheck(
        |v: &[Var<'_, f64>]| {
            let p = Params::from_vars(v[1..].to_vec());
            let y = block.forward(&p, v[0], true);
            (y * y).sum()
        },
        &inputs,
        &GradcheckOptions::default(),
    );
    assert!(r.passed, "{r}");
}

#[test]
fn causal_mask_gives_exact_zeros_and_no_nan() {
    let mut store = ParamStore::<f32>::new();
    let attn = MultiHeadAttention::new(&mut store, "attn", 8, 2, 31);
    let tape = Tape::new();
    let p = store.bind(&tape);
    // Huge activations: scores of order 10⁴, far past where an additive −1e4 mask would leak.
    let x = tape.var(Tensor::rand_normal([2, 5, 8], 0.0, 300.0, 32));
    let w = attn.weights(&p, x, true);
    let v = w.value();
    assert!(v.all_finite());
    for b in 0..2 {
        for h in 0..2 {
            for i in 0..5 {
                let mut row = 0.0;
                for j in 0..5 {
                    let a = v.get(&[b, h, i, j]);
                    if j > i {
                        assert_eq!(a, 0.0, "weight [{b},{h},{i},{j}] of a future position");
                    }
                    row += a;
                }
                assert!((row - 1.0).abs() < 1e-5);
            }
        }
    }
    // The gradient is finite too, and no gradient reaches x through a masked score: the output at
    // position 0 depends on position 0 only.
    let y = attn.forward(&p, x, true);
    let g = y.slice(1, 0..1).sum().backward();
    let gx = &g[x];
    assert!(gx.all_finite());
    for b in 0..2 {
        for t in 1..5 {
            for d in 0..8 {
                assert_eq!(gx.get(&[b, t, d]), 0.0);
            }
        }
    }
}

#[test]
fn attention_without_mask_sees_the_future() {
    let mut store = ParamStore::<f64>::new();
    let attn = MultiHeadAttention::new(&mut store, "attn", 4, 1, 41);
    let tape = Tape::new();
    let p = store.bind(&tape);
    let x = tape.var(Tensor::rand_normal([1, 3, 4], 0.0, 1.0, 42));
    let w = attn.weights(&p, x, false).value();
    assert!(w.get(&[0, 0, 0, 2]) > 0.0);
    let g = attn.forward(&p, x, false).slice(1, 0..1).sum().backward();
    assert!(g[x].get(&[0, 2, 0]) != 0.0);
}

/// Naive layer norm over the last axis, written out in the test.
fn naive_layer_norm(x: &[f64], d: usize, w: &[f64], b: &[f64], eps: f64) -> Vec<f64> {
    let mut out = Vec::new();
    for row in x.chunks(d) {
        let m = row.iter().sum::<f64>() / d as f64;
        let v = row.iter().map(|a| (a - m) * (a - m)).sum::<f64>() / d as f64;
        out.extend(
            row.iter()
                .enumerate()
                .map(|(j, a)| (a - m) / (v + eps).sqrt() * w[j] + b[j]),
        );
    }
    out
}

#[test]
fn layer_norm_fused_composed_and_naive_agree() {
    let x = Tensor::<f64>::rand_normal([3, 4, 6], 2.0, 3.0, 51);
    let w = Tensor::<f64>::rand_normal([6], 1.0, 0.3, 52);
    let b = Tensor::<f64>::rand_normal([6], 0.0, 1.0, 53);
    let tape = Tape::new();
    let (xv, wv, bv) = (tape.var(x.clone()), tape.var(w.clone()), tape.var(b.clone()));
    let fused = xv.layer_norm(Some(wv), Some(bv), 1e-5).value();
    let composed = xv.layer_norm_composed(Some(wv), Some(bv), 1e-5).value();
    let naive = naive_layer_norm(x.data(), 6, w.data(), b.data(), 1e-5);
    for ((f, c), n) in fused.data().iter().zip(composed.data()).zip(&naive) {
        assert!((f - n).abs() < 1e-12 && (c - n).abs() < 1e-12, "{f} {c} {n}");
    }
    let r = fused_vs_composed(
        |v| v[0].layer_norm(Some(v[1]), Some(v[2]), 1e-5),
        |v| v[0].layer_norm_composed(Some(v[1]), Some(v[2]), 1e-5),
        &[x, w, b],
        &FusedOptions::default(),
    );
    assert!(r.passed, "{r}");
}

#[test]
fn layer_norm_is_stable_for_a_large_mean() {
    // A one-pass E[x²] − E[x]² would lose every digit here; two passes keep them.
    let x = Tensor::<f32>::from_vec(vec![1e4, 1e4 + 1.0, 1e4 + 2.0], [1, 3]);
    let tape = Tape::new();
    let y = tape.var(x).layer_norm(None, None, 0.0).value();
    let e = 1.5f32.sqrt();
    assert!(
        (y.get(&[0, 0]) + e).abs() < 1e-3 && (y.get(&[0, 2]) - e).abs() < 1e-3,
        "{:?}",
        y.to_vec()
    );
}

#[test]
fn layer_norm_rejects_a_misshapen_weight_naming_the_op_and_line() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::zeros([2, 3]));
    let w = tape.var(Tensor::ones([2]));
    let e = tapegrad::attempt(|| x.layer_norm(Some(w), None, 1e-5)).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("layer_norm") && msg.contains("[2]") && msg.contains("[2, 3]"),
        "{msg}"
    );
    assert!(msg.contains("transformer.rs"), "{msg}");
}

#[test]
fn layer_parameters_have_pytorch_names_and_layouts() {
    let mut store = ParamStore::<f32>::new();
    let _ = TransformerBlock::new(&mut store, "h.0", 8, 2, 32, 1);
    let _ = Embedding::new(&mut store, "wte", 50, 8, 2);
    let _ = LayerNorm::new(&mut store, "ln_f", 8);
    let shape = |n: &str| store.by_name(n).unwrap_or_else(|| panic!("no {n}")).shape().to_vec();
    for p in ["q_proj", "k_proj", "v_proj", "out_proj"] {
        assert_eq!(shape(&format!("h.0.attn.{p}.weight")), vec![8, 8]);
        assert_eq!(shape(&format!("h.0.attn.{p}.bias")), vec![8]);
    }
    assert_eq!(shape("h.0.ln1.weight"), vec![8]);
    assert_eq!(shape("h.0.ln2.bias"), vec![8]);
    assert_eq!(shape("h.0.mlp.0.weight"), vec![32, 8]);
    assert_eq!(shape("h.0.mlp.1.weight"), vec![8, 32]);
    assert_eq!(shape("wte.weight"), vec![50, 8]);
    assert_eq!(shape("ln_f.weight"), vec![8]);
    let tape = Tape::new();
    let p = store.bind(&tape);
    let emb = Embedding {
        weight: store.id("wte.weight").unwrap(),
        vocab: 50,
        dim: 8,
    };
    assert_eq!(emb.forward(&p, Indices::from([3, 49])).shape().as_slice(), &[2, 8]);
}

mod cross_entropy_options {
    use tapegrad::check::{FusedOptions, fused_vs_composed};
    use tapegrad::softmax::{CrossEntropy, Reduction, Target};
    use tapegrad::{Tape, Tensor};

    /// `log softmax` of one row, by hand.
    fn log_softmax(row: &[f64]) -> Vec<f64> {
        let lse = row.iter().map(|v| v.exp()).sum::<f64>().ln();
        row.iter().map(|v| v - lse).collect()
    }

    const X: [f64; 9] = [1.0, 2.0, 3.0, 0.5, -1.0, 0.0, 2.0, 2.0, -3.0];

    fn both(targets: &[usize], opts: &CrossEntropy) -> [f64; 2] {
        let tape = Tape::<f64>::new();
        let x = tape.var(Tensor::from_vec(X.to_vec(), [3, 3]));
        [
            x.cross_entropy_with(Target::Classes(targets), opts.clone()).item(),
            x.cross_entropy_composed(Target::Classes(targets), opts.clone()).item(),
        ]
    }

    #[test]
    fn weighted_mean_divides_by_the_weights_of_the_targets_not_ignored() {
        let lp: Vec<Vec<f64>> = X.chunks(3).map(log_softmax).collect();
        let w = [0.2, 1.0, 3.0];
        // Targets 2, 1 (ignored), 0: (w₂·(−lp₀[2]) + w₀·(−lp₂[0])) / (w₂ + w₀).
        let expect = (w[2] * -lp[0][2] + w[0] * -lp[2][0]) / (w[2] + w[0]);
        let opts = CrossEntropy::default().ignore_index(1).weight(&w);
        for got in both(&[2, 1, 0], &opts) {
            assert!((got - expect).abs() < 1e-14, "{got} vs {expect}");
        }
        let sum = w[2] * -lp[0][2] + w[0] * -lp[2][0];
        for got in both(&[2, 1, 0], &opts.reduction(Reduction::Sum)) {
            assert!((got - sum).abs() < 1e-14, "{got} vs {sum}");
        }
    }

    #[test]
    #[allow(clippy::needless_range_loop)]
    fn label_smoothing_mixes_the_target_with_uniform() {
        let lp: Vec<Vec<f64>> = X.chunks(3).map(log_softmax).collect();
        let (eps, t) = (0.3, [0usize, 2, 1]);
        let mut expect = 0.0;
        for r in 0..3 {
            for c in 0..3 {
                let q = (1.0 - eps) * f64::from(u8::from(c == t[r])) + eps / 3.0;
                expect -= q * lp[r][c];
            }
        }
        expect /= 3.0;
        for got in both(&t, &CrossEntropy::default().label_smoothing(eps)) {
            assert!((got - expect).abs() < 1e-14, "{got} vs {expect}");
        }
        // Weights and smoothing together, PyTorch's way: the smoothing term is weighted per class
        // and both terms are divided by the weights of the targets.
        let w = [2.0, 0.5, 1.0];
        let (mut nll, mut smooth, mut den) = (0.0, 0.0, 0.0);
        for r in 0..3 {
            nll -= w[t[r]] * lp[r][t[r]];
            den += w[t[r]];
            for c in 0..3 {
                smooth -= w[c] * lp[r][c];
            }
        }
        let expect = (1.0 - eps) * nll / den + eps / 3.0 * smooth / den;
        for got in both(&t, &CrossEntropy::default().label_smoothing(eps).weight(&w)) {
            assert!((got - expect).abs() < 1e-14, "{got} vs {expect}");
        }
    }

    #[test]
    fn ignored_rows_get_no_gradient_even_with_nan_logits_and_all_ignored_is_nan() {
        let mut x = X.to_vec();
        x[3] = f64::NAN; // row 1, which is ignored
        for composed in [false, true] {
            let tape = Tape::<f64>::new();
            let xv = tape.var(Tensor::from_vec(x.clone(), [3, 3]));
            let opts = CrossEntropy::default().ignore_index(9).label_smoothing(0.1);
            let t = Target::Classes(&[2, 9, 0]);
            let l = if composed {
                xv.cross_entropy_composed(t, opts)
            } else {
                xv.cross_entropy_with(t, opts)
            };
            assert!(l.item().is_finite(), "composed {composed}: {}", l.item());
            let g = l.backward()[xv].clone();
            assert!(g.all_finite(), "composed {composed}: {:?}", g.to_vec());
            assert_eq!(&g.to_vec()[3..6], &[0.0; 3]);
            // Every row ignored: a mean of nothing (NaN), a zero gradient, as in PyTorch.
            let tape = Tape::<f64>::new();
            let xv = tape.var(Tensor::from_vec(X.to_vec(), [3, 3]));
            let opts = CrossEntropy::default().ignore_index(1);
            let t = Target::Classes(&[1, 1, 1]);
            let l = if composed {
                xv.cross_entropy_composed(t, opts)
            } else {
                xv.cross_entropy_with(t, opts)
            };
            assert!(l.item().is_nan());
            assert_eq!(l.backward()[xv].to_vec(), vec![0.0; 9]);
        }
    }

    #[test]
    fn probability_targets_with_weight_and_smoothing_fused_vs_composed() {
        let x = Tensor::<f64>::rand_normal([4, 5], 0.0, 2.0, 61);
        let t = Tensor::<f64>::rand_uniform([4, 5], 0.0, 1.0, 62);
        for reduction in [Reduction::Mean, Reduction::Sum] {
            let opts = || {
                CrossEntropy::default()
                    .weight(&[1.0, 0.5, 2.0, 1.5, 0.25])
                    .label_smoothing(0.15)
                    .reduction(reduction)
            };
            let r = fused_vs_composed(
                |v| v[0].cross_entropy_with(Target::Probs(v[1]), opts()),
                |v| v[0].cross_entropy_composed(Target::Probs(v[1]), opts()),
                &[x.clone(), t.clone()],
                &FusedOptions::default(),
            );
            assert!(r.passed, "{reduction:?}: {r}");
        }
    }

    #[test]
    fn bad_options_are_errors_naming_the_op() {
        let tape = Tape::<f64>::new();
        let x = tape.var(Tensor::zeros([2, 3]));
        let e = tapegrad::attempt(|| {
            x.cross_entropy_with(Target::Classes(&[0, 1]), CrossEntropy::default().weight(&[1.0, 2.0]))
        })
        .unwrap_err();
        assert!(
            e.to_string().contains("cross_entropy") && e.to_string().contains("2 class weights"),
            "{e}"
        );
        let e = tapegrad::attempt(|| {
            x.cross_entropy_composed(Target::Classes(&[0, 1]), CrossEntropy::default().label_smoothing(1.5))
        })
        .unwrap_err();
        assert!(
            e.to_string().contains("cross_entropy_composed") && e.to_string().contains("[0, 1]"),
            "{e}"
        );
    }
}
