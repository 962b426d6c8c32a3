//! Softmax three ways, side by side: composed from primitives, naive, and fused — the lesson this
//! library is built around. The composed and naive forms live here; the fused ops live with the
//! other fused ops ([`crate::ops::fused`]), their row kernels in the tensor layer.
//!
//! # The derivation
//!
//! With `h = softmax(z)`, `h_j = e^{z_j} / S`, `S = Σ_i e^{z_i}`:
//!
//! * `∂h_j/∂z_j = h_j − h_j² = h_j(1 − h_j)` — the learner's formula, right *on the diagonal only*;
//! * `∂h_j/∂z_k = −h_j h_k` for `k ≠ j` — because `S` depends on every `z_k`;
//! * so `J = diag(h) − h hᵀ`, and backpropagation never needs it as a matrix: the
//!   vector-Jacobian product is `Jᵀg = h ⊙ g − h ⟨h, g⟩ = h ⊙ (g − ⟨g, h⟩)`, O(n);
//! * with cross-entropy on top, `L = −Σ t_j log h_j` with `Σ t = 1`, the chain collapses to
//!   `∂L/∂z = h − t` (divided by the batch size for a mean).
//!
//! The composed form gets every one of these terms from the rules of `max`, `sub`, `exp`, `sum`
//! and `div`, with no rule of its own; the fused form writes the closed form once.
//!
//! # The three ways
//!
//! * [`Var::softmax_composed`]: `m = max(x)` (detached: softmax is shift-invariant, so this is
//!   exact), `e = exp(x − m)`, `y = e / Σe`. **No custom rule anywhere**: its gradient comes from
//!   the rules of `max`, `sub`, `exp`, `sum` and `div` alone — the cross terms `−y_j y_k` included.
//! * [`Var::softmax_naive`]: `exp(x) / Σ exp(x)`, for teaching. It overflows: `exp(710)` is `+∞`
//!   in `f64` (`exp(89)` in `f32`), so logits of a few hundred give `∞/∞ = NaN`.
//! * [`Var::softmax`]: one fused op. Its forward is one pass per row (max, exp and sum, scale);
//!   its VJP is the closed form `y ⊙ (g − Σ g⊙y)`, which needs only the saved output `y`. That VJP
//!   is itself an op (`softmax_backward`) with its own rule, so gradients of gradients work
//!   through the fused path too.
//! * [`Var::log_softmax`] (fused, VJP `g − softmax(x)·Σg`) and [`Var::log_softmax_composed`]
//!   (`x − m − log Σ exp(x − m)`).
//! * [`Var::cross_entropy`] with class-index or probability targets, mean or sum over the rows;
//!   its fused gradient is `(softmax(x) − t) / batch`. [`Var::cross_entropy_composed`] beside it.
//!
//! All work along any axis, in `f32` and `f64`.
//!
//! ```
//! use tapegrad::{Tape, Tensor};
//! use tapegrad::softmax::Target;
//! let tape = Tape::<f64>::new();
//! let x = tape.var(Tensor::from_vec(vec![1.0, 2.0, 3.0, 0.0, 0.0, 0.0], [2, 3]));
//! let fused = x.softmax(1);
//! let composed = x.softmax_composed(1);
//! assert!(fused.value().max_abs_diff(&composed.value()) < 1e-15);
//! let loss = x.cross_entropy(Target::Classes(&[2, 0]));
//! let g = loss.backward();
//! // (softmax(x) − onehot(t)) / batch
//! let y = fused.value();
//! assert!((g[x].get(&[0, 2]) - (y.get(&[0, 2]) - 1.0) / 2.0).abs() < 1e-15);
//! ```

use crate::autodiff::tape::Var;
use crate::core::error::fail;
use crate::core::float::Float;
use crate::ops::fused::common::softmax_axis;
use crate::tensor::Tensor;
use std::panic::Location;

pub use crate::ops::fused::cross_entropy::{CrossEntropy, Reduction, Target};

impl<'t, T: Float> Var<'t, T> {
    /// Softmax along `axis` composed from primitives: `m = max(x)` detached, `e = exp(x − m)`,
    /// `e / Σe`. Its gradient comes from the primitives' rules alone.
    ///
    /// Along an empty axis (shape `[5, 0]`, axis 1) the result is empty, as for the fused op; the
    /// max is skipped there (it has no value, and there is nothing to overflow).
    #[track_caller]
    pub fn softmax_composed(self, axis: isize) -> Var<'t, T> {
        let a = composed_axis("softmax_composed", self, axis, Location::caller());
        let shifted = if self.peek().shape()[a] == 0 {
            self
        } else {
            self - self.max_keepdim(axis).detach()
        };
        let e = shifted.exp();
        e / e.sum_keepdim(axis)
    }

    /// Softmax along `axis` as the textbook writes it, `exp(x) / Σ exp(x)`. For teaching only:
    /// `exp` overflows for logits above ~709 (`f64`) or ~88 (`f32`), giving NaN.
    #[track_caller]
    pub fn softmax_naive(self, axis: isize) -> Var<'t, T> {
        let e = self.exp();
        e / e.sum_keepdim(axis)
    }

    /// Log-softmax composed from primitives: `s = x − max(x)` (max detached), `s − log Σ exp(s)`.
    /// Along an empty axis the result is empty (`log(softmax_composed(x))`, which never takes the
    /// `log 0` of an empty sum).
    #[track_caller]
    pub fn log_softmax_composed(self, axis: isize) -> Var<'t, T> {
        let a = composed_axis("log_softmax_composed", self, axis, Location::caller());
        if self.peek().shape()[a] == 0 {
            return self.softmax_composed(axis).log();
        }
        let s = self - self.max_keepdim(axis).detach();
        s - s.exp().sum_keepdim(axis).log()
    }
}

/// Resolves the axis of a composed softmax-family function before anything is recorded, failing
/// with the function's name, the shape and the caller's line.
fn composed_axis<T: Float>(op: &str, x: Var<'_, T>, axis: isize, loc: &'static Location<'static>) -> usize {
    softmax_axis(op, axis, &x.peek()).unwrap_or_else(|e| fail(e.at(loc)))
}

/// A fused op and its composed definition, for [`check::fused_vs_composed`](crate::check::fused_vs_composed).
pub struct FusedPair {
    /// The fused op's name.
    pub name: &'static str,
    /// The fused expression.
    pub fused: for<'t> fn(&[Var<'t, f64>]) -> Var<'t, f64>,
    /// The same function composed from primitives.
    pub composed: for<'t> fn(&[Var<'t, f64>]) -> Var<'t, f64>,
    /// Inputs to compare them on.
    pub inputs: fn() -> Vec<Vec<Tensor<f64>>>,
}

impl std::fmt::Debug for FusedPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FusedPair")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Every fused op of the softmax family (softmax, log_softmax, logsumexp, cross_entropy) with its
/// composed definition.
pub fn fused_pairs() -> Vec<FusedPair> {
    fn inputs() -> Vec<Vec<Tensor<f64>>> {
        [[1usize, 1], [1, 2], [3, 5], [8, 64], [4, 1000]]
            .iter()
            .enumerate()
            .map(|(i, s)| vec![Tensor::rand_normal(s, 0.0, 3.0, 700 + i as u64)])
            .collect()
    }
    fn ce_inputs() -> Vec<Vec<Tensor<f64>>> {
        vec![
            vec![Tensor::rand_normal([4, 7], 0.0, 2.0, 710)],
            vec![Tensor::rand_normal([4, 5, 6], 0.0, 2.0, 711)],
        ]
    }
    fn ln_inputs() -> Vec<Vec<Tensor<f64>>> {
        [&[1usize, 1][..], &[3, 5], &[2, 3, 8], &[4, 256]]
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let d = [s[s.len() - 1]];
                let seed = 720 + 3 * i as u64;
                vec![
                    Tensor::rand_normal(s, 0.5, 2.0, seed),
                    Tensor::rand_normal(d, 1.0, 0.5, seed + 1),
                    Tensor::rand_normal(d, 0.0, 1.0, seed + 2),
                ]
            })
            .collect()
    }
    vec![
        FusedPair {
            name: "layer_norm (weight, bias)",
            fused: |v| v[0].layer_norm(Some(v[1]), Some(v[2]), 1e-5),
            composed: |v| v[0].layer_norm_composed(Some(v[1]), Some(v[2]), 1e-5),
            inputs: ln_inputs,
        },
        FusedPair {
            name: "layer_norm (plain, eps 0.1)",
            fused: |v| v[0].layer_norm(None, None, 0.1),
            composed: |v| v[0].layer_norm_composed(None, None, 0.1),
            inputs: ln_inputs,
        },
        FusedPair {
            name: "softmax (axis -1)",
            fused: |v| v[0].softmax(-1),
            composed: |v| v[0].softmax_composed(-1),
            inputs,
        },
        FusedPair {
            name: "softmax (axis 0)",
            fused: |v| v[0].softmax(0),
            composed: |v| v[0].softmax_composed(0),
            inputs,
        },
        FusedPair {
            name: "log_softmax (axis -1)",
            fused: |v| v[0].log_softmax(-1),
            composed: |v| v[0].log_softmax_composed(-1),
            inputs,
        },
        FusedPair {
            name: "log_softmax (axis 0)",
            fused: |v| v[0].log_softmax(0),
            composed: |v| v[0].log_softmax_composed(0),
            inputs,
        },
        FusedPair {
            name: "logsumexp (axis -1)",
            fused: |v| v[0].logsumexp(-1, false),
            composed: |v| v[0].logsumexp_composed(-1, false),
            inputs,
        },
        FusedPair {
            name: "logsumexp (axis 0, keepdim)",
            fused: |v| v[0].logsumexp(0, true),
            composed: |v| v[0].logsumexp_composed(0, true),
            inputs,
        },
        FusedPair {
            name: "cross_entropy (classes, axis 1, mean)",
            fused: |v| v[0].cross_entropy_with(Target::Classes(&CE_CLASSES[..rows(v[0], 1)]), ce(1, Reduction::Mean)),
            composed: |v| {
                v[0].cross_entropy_composed(Target::Classes(&CE_CLASSES[..rows(v[0], 1)]), ce(1, Reduction::Mean))
            },
            inputs: ce_inputs,
        },
        FusedPair {
            name: "cross_entropy (classes, axis 1, ignore_index, weight, label smoothing, mean)",
            fused: |v| {
                let n = rows(v[0], 1);
                v[0].cross_entropy_with(Target::Classes(&CE_CLASSES[..n]), ce_options(v[0], 1, Reduction::Mean))
            },
            composed: |v| {
                let n = rows(v[0], 1);
                v[0].cross_entropy_composed(Target::Classes(&CE_CLASSES[..n]), ce_options(v[0], 1, Reduction::Mean))
            },
            inputs: ce_inputs,
        },
        FusedPair {
            name: "cross_entropy (classes, axis 0, ignore_index, weight, label smoothing, sum)",
            fused: |v| {
                let n = rows(v[0], 0);
                v[0].cross_entropy_with(Target::Classes(&CE_CLASSES[..n]), ce_options(v[0], 0, Reduction::Sum))
            },
            composed: |v| {
                let n = rows(v[0], 0);
                v[0].cross_entropy_composed(Target::Classes(&CE_CLASSES[..n]), ce_options(v[0], 0, Reduction::Sum))
            },
            inputs: ce_inputs,
        },
        FusedPair {
            name: "cross_entropy (classes, axis 0, sum)",
            fused: |v| v[0].cross_entropy_with(Target::Classes(&CE_CLASSES[..rows(v[0], 0)]), ce(0, Reduction::Sum)),
            composed: |v| {
                v[0].cross_entropy_composed(Target::Classes(&CE_CLASSES[..rows(v[0], 0)]), ce(0, Reduction::Sum))
            },
            inputs: ce_inputs,
        },
    ]
}

/// Class indices valid for at least 4 classes, used by samples.
const CE_CLASSES: [usize; 32] = [
    2, 0, 3, 1, 1, 3, 0, 2, 3, 3, 1, 0, 2, 1, 0, 3, 0, 0, 2, 1, 3, 2, 2, 1, 0, 3, 1, 2, 3, 0, 1, 2,
];

fn rows<T: Float>(x: Var<'_, T>, axis: usize) -> usize {
    let s = x.shape();
    crate::core::shape::numel(&s) / s[axis]
}

/// Options with every extra set: class 1 ignored, weights `0.5 + k/4` per class, smoothing 0.1.
fn ce_options<T: Float>(x: Var<'_, T>, axis: usize, reduction: Reduction) -> CrossEntropy {
    let w: Vec<f64> = (0..x.shape()[axis]).map(|k| 0.5 + k as f64 / 4.0).collect();
    ce(axis as isize, reduction)
        .ignore_index(1)
        .weight(&w)
        .label_smoothing(0.1)
}

fn ce(axis: isize, reduction: Reduction) -> CrossEntropy {
    CrossEntropy::default().axis(axis).reduction(reduction)
}
