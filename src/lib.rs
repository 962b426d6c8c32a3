//! # tapegrad
//!
//! A reverse-mode automatic differentiation engine: a tape (Wengert list) of primitive
//! operations, each with its vector-Jacobian product rule, so the gradient of any expression you
//! build — softmax included, cross terms and all — falls out of composition.
//!
//! ```
//! use tapegrad::{Tape, Tensor};
//!
//! let tape = Tape::<f64>::new();
//! let x = tape.var(Tensor::from_vec(vec![1.0, 2.0, 3.0], [1, 3]));
//! let m = x.max_axis(1, true).detach();           // softmax is shift-invariant: no gradient here
//! let e = (x - m).exp();
//! let y = e / e.sum_axis(1, true);                // softmax from primitives
//! let g = Tensor::from_vec(vec![1.0, 0.0, 0.0], [1, 3]);
//! let loss = (y * tape.constant(g.clone())).sum();
//! let grads = loss.backward();
//!
//! // The closed form y ⊙ (g − ⟨g, y⟩) — every output depends on every input:
//! let yv = y.value();
//! let dot: f64 = yv.data().iter().zip(g.data()).map(|(a, b)| a * b).sum();
//! for j in 0..3 {
//!     let expect = yv.data()[j] * (g.data()[j] - dot);
//!     assert!((grads[x].data()[j] - expect).abs() < 1e-15);
//! }
//! ```
//!
//! **New here? Start with the [`guide`]**: the softmax gradient from a wrong rule to a checked one.
//!
//! Layers, bottom to top: [`Tensor`] (values, no gradients) → [`Tape`] and [`Var`] (the Wengert
//! list) → [`Op`]s and the [`Registry`] (primitives with their rules) → backward
//! ([`Var::backward`], [`Tape::grad`], [`Tape::grad_graph`]) → [`check`] (gradcheck, Jacobians).
//!
//! Errors: see [`error`] for the policy (panicking forms and `try_` forms, both naming the op,
//! the shapes and your source line).

#![deny(missing_docs)]
#![warn(missing_debug_implementations)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_op_in_unsafe_fn)]

// Layers, bottom to top; a module only uses the layers below it.
pub mod autodiff;
pub mod check;
pub mod compile;
pub mod core;
pub mod debug;
pub mod guide;
pub mod nn;
pub mod ops;
pub mod softmax;
pub mod tensor;
pub mod transforms;

// The paths of the first version, kept so code written against it still compiles.
pub use crate::autodiff::{backward, op, tape};
pub use crate::core::{error, float, rng, shape};
pub use crate::debug::{anomaly, graph, profile};
pub use crate::nn::optim;
#[cfg(feature = "ndarray")]
#[cfg_attr(docsrs, doc(cfg(feature = "ndarray")))]
pub use crate::tensor::ndarray as interop;
/// The function transforms at the path of the first version: [`transforms`], plus the
/// `gradgradcheck` family that now lives in [`check`].
pub mod functional {
    pub use crate::check::{GradgradcheckReport, gradgradcheck, gradgradcheck_registry};
    pub use crate::transforms::*;
}

pub use crate::autodiff::backward::Grads;
pub use crate::autodiff::checkpoint::CheckpointStats;
pub use crate::autodiff::rule::{Cotangents, Op, VjpCtx};
pub use crate::autodiff::rule::{Elem, Value};
pub use crate::autodiff::tape::{NoGradGuard, Tape, Var};
pub use crate::core::error::{Error, ErrorKind, Result, attempt};
pub use crate::core::float::Float;
pub use crate::core::shape::Shape;
pub use crate::ops::index::Indices;
pub use crate::ops::{Domain, Logic, Math, NanRule, OpInfo, Registry, Sample};
pub use crate::tensor::Tensor;
pub use crate::tensor::parallel::{num_threads, set_num_threads};

/// The names most programs need, in one import: `use tapegrad::prelude::*;`.
///
/// ```
/// use tapegrad::prelude::*;
/// let tape = Tape::<f64>::new();
/// let x = tape.var(Tensor::from_vec(vec![1.0, 2.0], [2]));
/// let g = (x * x).sum().backward();
/// assert_eq!(g[x].to_vec(), vec![2.0, 4.0]);
/// ```
pub mod prelude {
    pub use crate::autodiff::backward::Grads;
    pub use crate::autodiff::rule::{Cotangents, Elem, Op, Value, VjpCtx};
    pub use crate::autodiff::tape::{Tape, Var};
    pub use crate::check::{GradcheckOptions, gradcheck};
    pub use crate::core::error::{Error, ErrorKind, Result, attempt};
    pub use crate::core::float::Float;
    pub use crate::ops::fused::cross_entropy::{CrossEntropy, Reduction, Target};
    pub use crate::ops::index::Indices;
    pub use crate::ops::{Logic, Math};
    pub use crate::pointwise;
    pub use crate::tensor::Tensor;
}

/// The README's code blocks, compiled and run as doctests so the tour cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
