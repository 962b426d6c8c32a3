//! Registry-driven checks: every registered op, every sample, no per-op test code.

use tapegrad::check::{
    GradcheckOptions, check_backward_paths_agree, check_nan_propagation, check_references, check_registry, gradcheck,
};
use tapegrad::ops::Choice;
use tapegrad::{OpInfo, Registry, Tape, Tensor, Var, attempt};

#[test]
fn every_registered_op_passes_gradcheck_in_f64() {
    let failures = check_registry(Registry::builtin(), &GradcheckOptions::default());
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.iter().map(|f| f.to_string()).collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn registry_lists_the_required_primitives() {
    let reg = Registry::builtin();
    for name in [
        "add",
        "sub",
        "mul",
        "div",
        "neg",
        "exp",
        "log",
        "sqrt",
        "powf",
        "tanh",
        "sigmoid",
        "relu",
        "abs",
        "sum",
        "mean",
        "max",
        "min",
        "sum_axes",
        "mean_axes",
        "amax",
        "amin",
        "prod",
        "var",
        "std",
        "norm",
        "logsumexp",
        "cumsum",
        "matmul",
        "permute",
        "reshape",
        "broadcast_to",
        "sum_to",
        "slice",
        "slice_backward",
        "index_select",
        "index_select_backward",
        "embedding",
        "gather",
        "scatter_add",
        "concat",
        "pad",
        "select",
        "conv2d",
        "im2col",
        "col2im",
        "max_pool2d",
        "avg_pool2d",
        "dropout",
        "layer_norm",
        "layer_norm_backward",
        "mse_loss",
        "binary_cross_entropy_with_logits",
    ] {
        assert!(reg.get(name).is_some(), "op {name} is not registered");
    }
}

#[test]
fn samples_cover_broadcast_one_element_and_3d_inputs() {
    let reg = Registry::builtin();
    let mut saw_1 = false;
    let mut saw_3d = false;
    for info in reg.iter() {
        for s in (info.samples)() {
            saw_1 |= s.inputs.iter().any(|x| x.numel() == 1);
            saw_3d |= s.inputs.iter().any(|x| x.ndim() == 3);
        }
    }
    assert!(saw_1 && saw_3d);
    let add = (reg.get("add").unwrap().samples)();
    assert!(
        add.iter().any(|s| s.inputs[0].shape() != s.inputs[1].shape()),
        "add has no broadcast sample"
    );
}

#[test]
fn an_op_registered_without_samples_fails_the_check() {
    let mut reg = Registry::new();
    reg.register(OpInfo::new("exp", "test entry with no samples", Vec::new));
    let failures = check_registry(&reg, &GradcheckOptions::default());
    assert_eq!(failures.len(), 1);
    assert!(failures[0].problem.contains("without samples"));
}

#[test]
fn a_sample_that_does_not_record_its_op_fails_the_check() {
    let mut reg = Registry::new();
    reg.register(OpInfo::new("tanh", "mislabelled sample", || {
        vec![tapegrad::sample!("exp instead", [Tensor::scalar(0.5)], |v| v[0].exp())]
    }));
    let failures = check_registry(&reg, &GradcheckOptions::default());
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(failures[0].problem.contains("never records"));
}

#[test]
fn every_registered_op_runs_in_f32_and_agrees_with_f64() {
    for info in Registry::builtin().iter() {
        for s in (info.samples)() {
            let t64 = Tape::<f64>::new();
            let v64: Vec<Var<'_, f64>> = s.inputs.iter().map(|x| t64.var(x.clone())).collect();
            let o64 = (s.f64)(&v64);
            let t32 = Tape::<f32>::new();
            let v32: Vec<Var<'_, f32>> = s.inputs.iter().map(|x| t32.var(x.cast())).collect();
            let o32 = (s.f32)(&v32);
            let diff = o32.value().cast::<f64>().max_abs_diff(&o64.value());
            assert!(
                diff < 1e-4,
                "{} [{}]: f32 forward differs by {diff}",
                info.name,
                s.label
            );
            let g64 = t64.grad(&[o64], &[Tensor::ones(o64.shape())], &v64);
            let g32 = t32.grad(&[o32], &[Tensor::ones(o32.shape())], &v32);
            for (a, b) in g32.iter().zip(&g64) {
                let d = a.cast::<f64>().max_abs_diff(b);
                assert!(
                    d < 1e-3 * (1.0 + b.data().iter().fold(0.0f64, |m, x| m.max(x.abs()))),
                    "{} [{}]: f32 gradient differs by {d}",
                    info.name,
                    s.label
                );
            }
            // gradcheck in f32 with f32 tolerances.
            let inputs32: Vec<Tensor<f32>> = s.inputs.iter().map(|x| x.cast()).collect();
            let r = gradcheck(s.f32, &inputs32, &GradcheckOptions::for_f32());
            assert!(r.passed, "{} [{}] in f32: {r}", info.name, s.label);
        }
    }
}

fn report(failures: &[tapegrad::check::RegistryFailure]) -> String {
    failures.iter().map(|f| f.to_string()).collect::<Vec<_>>().join("\n")
}

#[test]
fn nan_propagates_through_every_registered_op() {
    let failures = check_nan_propagation(Registry::builtin());
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        report(&failures)
    );
}

#[test]
fn first_order_and_recorded_backward_agree_on_every_registered_op() {
    let failures = check_backward_paths_agree(Registry::builtin());
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        report(&failures)
    );
}

#[test]
fn every_forward_matches_its_reference() {
    let failures = check_references(Registry::builtin());
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        report(&failures)
    );
}

#[test]
fn references_cover_at_least_80_percent_of_the_samples() {
    let (mut total, mut with_reference) = (0, 0);
    for info in Registry::builtin().iter() {
        for s in (info.samples)() {
            total += 1;
            with_reference += usize::from(s.reference.is_some());
        }
    }
    eprintln!("{with_reference} of {total} samples carry a reference");
    assert!(
        with_reference * 5 >= total * 4,
        "only {with_reference} of {total} samples carry a reference"
    );
}

#[test]
fn every_op_a_user_calls_has_a_recipe() {
    for info in Registry::builtin().iter() {
        if info.name.ends_with("_backward") {
            // Reached through the fused op's recorded rule, never called directly.
            assert!(info.recipe.is_none(), "{} is a backward op but has a recipe", info.name);
        } else {
            assert!(info.recipe.is_some(), "{} has no recipe", info.name);
        }
    }
}

/// Values of assorted shapes for the recipe smoke tests.
fn pool_values() -> Vec<Tensor<f64>> {
    [&[2, 3][..], &[3], &[2, 3, 2], &[], &[3, 1]]
        .iter()
        .enumerate()
        .map(|(k, s)| Tensor::rand_normal(s, 0.0, 1.0, 7 + k as u64))
        .collect()
}

#[test]
fn tame_recipes_make_valid_differentiable_calls() {
    for info in Registry::builtin().iter() {
        let Some(recipe) = info.recipe else { continue };
        let mut calls = 0;
        for seed in 0..64u8 {
            let tape = Tape::<f64>::new();
            let v: Vec<Var<'_, f64>> = pool_values().into_iter().map(|x| tape.var(x)).collect();
            let bytes: Vec<u8> = (0..16u8)
                .map(|i| seed.wrapping_mul(37).wrapping_add(i.wrapping_mul(11)))
                .collect();
            let mut c = Choice::new(&bytes, false);
            // In tame mode a recipe either declines or makes a call that succeeds.
            let Some(out) = (recipe.f64)(&mut c, &v) else { continue };
            assert!(
                out.value().all_finite(),
                "{}: tame call gave a non-finite value",
                info.name
            );
            // (`sum_to` and `broadcast_to` to the value's own shape record nothing: that is fine.)
            calls += usize::from(tape.nodes_info().iter().any(|n| n.op == info.name));
            if out.requires_grad() {
                assert!(out.sum().try_backward().is_ok(), "{}: backward failed", info.name);
            }
        }
        assert!(
            calls > 0,
            "{}: the tame recipe never made a call on the test pool",
            info.name
        );
    }
}

#[test]
fn wild_recipes_answer_with_a_value_or_a_documented_error() {
    for info in Registry::builtin().iter() {
        let Some(recipe) = info.recipe else { continue };
        for seed in 0..64u8 {
            let tape = Tape::<f32>::new();
            let v: Vec<Var<'_, f32>> = pool_values().iter().map(|x| tape.var(x.cast())).collect();
            let bytes: Vec<u8> = (0..16u8)
                .map(|i| seed.wrapping_mul(53).wrapping_add(i.wrapping_mul(29)))
                .collect();
            let before = tape.len();
            if let Err(e) = attempt(|| (recipe.f32)(&mut Choice::new(&bytes, true), &v)) {
                assert!(e.to_string().starts_with("tapegrad: "), "{}: {e}", info.name);
                assert_eq!(
                    tape.len(),
                    before,
                    "{}: a failed wild call recorded something",
                    info.name
                );
            }
        }
    }
}

#[test]
fn a_wrong_forward_fails_the_reference_check() {
    let mut reg = Registry::new();
    reg.register(tapegrad::OpInfo::new(
        "exp",
        "exp checked against the wrong reference",
        || {
            vec![
                tapegrad::sample!("[3]", [Tensor::from_vec(vec![0.0, 1.0, 2.0], [3])], |v| v[0].exp())
                    .with_reference(|x| x[0].map(|v| v.exp() + 1e-9)),
            ]
        },
    ));
    let failures = check_references(&reg);
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(failures[0].problem.contains("reference"));
}
