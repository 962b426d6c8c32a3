//! The registry-driven checks: every registered op and sample, with no per-op test code —
//! gradients against finite differences, NaN propagation, the two backward paths agreeing.

use super::gradcheck::{GradcheckOptions, gradcheck, unravel};
use crate::autodiff::tape::{Tape, Var};
use crate::core::rng::Rng;
use crate::core::shape::fmt_shape;
use crate::ops::{NanRule, Registry, Sample};
use crate::tensor::Tensor;
use std::fmt;

/// One failure found by [`check_registry`].
#[derive(Clone, Debug)]
pub struct RegistryFailure {
    /// The op's registered name.
    pub op: &'static str,
    /// The sample's label (empty for a registry-level problem such as "no samples").
    pub sample: String,
    /// What went wrong.
    pub problem: String,
}

impl fmt::Display for RegistryFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}]: {}", self.op, self.sample, self.problem)
    }
}

/// Runs the generic checks over every op of a registry, in `f64`: each op has samples; each
/// sample's expression records the op it is listed under; its gradients pass [`gradcheck`]
/// with `opts`. Returns every failure (empty when all pass).
pub fn check_registry(reg: &Registry, opts: &GradcheckOptions) -> Vec<RegistryFailure> {
    let mut failures = Vec::new();
    for info in reg.iter() {
        let samples = (info.samples)();
        if samples.is_empty() {
            failures.push(RegistryFailure {
                op: info.name,
                sample: String::new(),
                problem: "registered without samples, so nothing checks its gradient".into(),
            });
        }
        for s in samples {
            let fail = |problem: String| RegistryFailure {
                op: info.name,
                sample: s.label.clone(),
                problem,
            };
            // The sample must actually exercise the op it is listed under.
            let tape = Tape::<f64>::new();
            let vars: Vec<Var<'_, f64>> = s.inputs.iter().map(|x| tape.var(x.clone())).collect();
            let out = (s.f64)(&vars);
            let used = (0..tape.len()).any(|i| tape.node(i).op.as_ref().is_some_and(|o| o.get().name() == info.name));
            if !used {
                failures.push(fail(format!("the sample never records op {:?}", info.name)));
                continue;
            }
            let _ = out;
            let r = gradcheck(s.f64, &s.inputs, opts);
            if !r.passed {
                failures.push(fail(format!(
                    "{r} (inputs {})",
                    s.inputs
                        .iter()
                        .map(|x| fmt_shape(x.shape()))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
    }
    failures
}

/// Records `sample` in `f64` on a fresh tape and returns its output value.
fn eval_sample(s: &Sample, inputs: &[Tensor<f64>]) -> Tensor<f64> {
    let tape = Tape::<f64>::new();
    let vars: Vec<Var<'_, f64>> = inputs.iter().map(|x| tape.var(x.clone())).collect();
    (s.f64)(&vars).value()
}

/// Checks that NaN propagates through every op of a registry (unless the op declares
/// [`NanRule::Absorbs`], with its reason): for every sample, input and element, a NaN planted
/// there reaches every output element that depends on it. An output element *depends* on an
/// input element when replacing that element by other values (a few finite perturbations)
/// changes it — so a `relu` at a negative input depends on it (its output changes when the input
/// turns positive) and must become NaN when the input is NaN.
pub fn check_nan_propagation(reg: &Registry) -> Vec<RegistryFailure> {
    let mut failures = Vec::new();
    for info in reg.iter() {
        if let NanRule::Absorbs(_) = info.nan {
            continue;
        }
        for s in (info.samples)() {
            let base = eval_sample(&s, &s.inputs);
            'inputs: for (k, x) in s.inputs.iter().enumerate() {
                for j in 0..x.numel() {
                    let v = x.data()[j];
                    let mut depends = vec![false; base.numel()];
                    for p in [v + 0.37, v - 1.3, 3.1, -2.2, 0.05] {
                        let mut xs = s.inputs.clone();
                        xs[k].data_mut()[j] = p;
                        let out = eval_sample(&s, &xs);
                        for (d, (a, b)) in depends.iter_mut().zip(out.data().iter().zip(base.data())) {
                            *d |= a.to_bits() != b.to_bits();
                        }
                    }
                    let mut xs = s.inputs.clone();
                    xs[k].data_mut()[j] = f64::NAN;
                    let out = eval_sample(&s, &xs);
                    if let Some(o) = (0..base.numel()).find(|&o| depends[o] && !out.data()[o].is_nan()) {
                        failures.push(RegistryFailure {
                            op: info.name,
                            sample: s.label.clone(),
                            problem: format!(
                                "a NaN at element {:?} of input {k} ({}) does not reach output element {:?}, which depends on it (it is {})",
                                unravel(j, x.shape()),
                                fmt_shape(x.shape()),
                                unravel(o, base.shape()),
                                out.data()[o]
                            ),
                        });
                        break 'inputs;
                    }
                }
            }
        }
    }
    failures
}

/// True when two gradient entries agree: bitwise equal, both NaN, or finite and within a relative
/// `1e-12` (the two paths may round in another order).
fn same_entry(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits()
        || (a.is_nan() && b.is_nan())
        || (a.is_finite() && b.is_finite() && (a - b).abs() <= 1e-12 * (1.0 + a.abs().max(b.abs())))
}

/// Checks that the two backward paths agree on every sample of a registry, in `f64`: the
/// first-order backward ([`Tape::grad`], on values) and the recorded one ([`Tape::grad_graph`],
/// on `Var`s) give the same gradients for an ordinary random cotangent and for cotangents holding
/// `0`, `+∞`, `−∞` and NaN. A recorded rule that computes the wrong *value* fails here even when
/// it is differentiable.
pub fn check_backward_paths_agree(reg: &Registry) -> Vec<RegistryFailure> {
    let mut failures = Vec::new();
    for info in reg.iter() {
        for s in (info.samples)() {
            let tape = Tape::<f64>::new();
            let vars: Vec<Var<'_, f64>> = s.inputs.iter().map(|x| tape.var(x.clone())).collect();
            let out = (s.f64)(&vars);
            let mut rng = Rng::new(0xa9ee);
            let n = out.numel();
            let ordinary = Tensor::<f64>::from_fn(out.shape(), |_| rng.normal());
            let specials = [0.0, f64::INFINITY, f64::NEG_INFINITY, f64::NAN];
            let mut cotangents = vec![("random".to_string(), ordinary.clone())];
            for (r, &sp) in specials.iter().enumerate() {
                // The special value at every position in turn (one cotangent per position for
                // small outputs, a stride through larger ones), the rest ordinary.
                for o in (0..n).step_by((n / 4).max(1)) {
                    let mut c = ordinary.clone();
                    c.data_mut()[o] = sp;
                    if r == 0 && n > 1 {
                        c.data_mut()[(o + 1) % n] = 0.0;
                    }
                    cotangents.push((format!("{sp} at {:?}", unravel(o, &out.shape())), c));
                }
            }
            for (what, c) in cotangents {
                let first = tape.grad_lenient(&[out], std::slice::from_ref(&c), &vars);
                let cv = tape.constant(c);
                let recorded: Vec<Tensor<f64>> = tape
                    .grad_graph_lenient(&[out], &[cv], &vars)
                    .iter()
                    .map(|v| v.value())
                    .collect();
                let bad = first.iter().zip(&recorded).enumerate().find_map(|(k, (a, b))| {
                    (0..a.numel())
                        .find(|&e| !same_entry(a.data()[e], b.data()[e]))
                        .map(|e| (k, e, a.data()[e], b.data()[e], a.shape().to_vec()))
                });
                if let Some((k, e, a, b, shape)) = bad {
                    failures.push(RegistryFailure {
                        op: info.name,
                        sample: s.label.clone(),
                        problem: format!(
                            "cotangent {what}: the gradient of input {k} at {:?} is {a} first-order but {b} recorded",
                            unravel(e, &shape)
                        ),
                    });
                    break;
                }
            }
        }
    }
    failures
}

/// Checks every sample that carries a [reference](crate::Sample::reference): its forward value in
/// `f64` equals the independent implementation's, within `1e-12` relative (the vectorised `exp`
/// and `ln` are within ~1 ulp), NaN where the reference is NaN.
pub fn check_references(reg: &Registry) -> Vec<RegistryFailure> {
    let mut failures = Vec::new();
    for info in reg.iter() {
        for s in (info.samples)() {
            let Some(reference) = s.reference else { continue };
            let want = reference(&s.inputs);
            let got = eval_sample(&s, &s.inputs);
            let problem = if want.shape() != got.shape() {
                Some(format!(
                    "the forward has shape {} but the reference {}",
                    fmt_shape(got.shape()),
                    fmt_shape(want.shape())
                ))
            } else {
                (0..got.numel())
                    .find(|&e| !same_entry(got.data()[e], want.data()[e]))
                    .map(|e| {
                        format!(
                            "element {:?}: the forward gives {:e}, the reference {:e}",
                            unravel(e, got.shape()),
                            got.data()[e],
                            want.data()[e]
                        )
                    })
            };
            if let Some(problem) = problem {
                failures.push(RegistryFailure {
                    op: info.name,
                    sample: s.label.clone(),
                    problem,
                });
            }
        }
    }
    failures
}
