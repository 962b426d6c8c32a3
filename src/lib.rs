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
//! Layers, bottom to top: [`Tensor`] (values, no gradients) → [`Tape`] and [`Var`] (the Wengert
//! list) → [`Op`]s and the [`Registry`] (primitives with their rules) → backward
//! ([`Var::backward`], [`Tape::grad`], [`Tape::grad_graph`]) → [`check`] (gradcheck, Jacobians).
//!
//! Errors: see [`error`] for the policy (panicking forms and `try_` forms, both naming the op,
//! the shapes and your source line).

#![deny(missing_docs)]
#![forbid(unsafe_op_in_unsafe_fn)]

pub mod anomaly;
pub mod backward;
pub mod check;
pub mod error;
pub mod float;
pub mod functional;
pub mod graph;
#[cfg(feature = "ndarray")]
pub mod interop;
pub mod nn;
pub mod op;
pub mod ops;
pub mod optim;
pub mod profile;
pub mod rng;
pub mod shape;
pub mod softmax;
pub mod tape;
pub mod tensor;

pub use backward::Grads;
pub use error::{Error, ErrorKind, Result, attempt};
pub use float::Float;
pub use op::{Cotangents, EagerCtx, Op, TensorGrads, VjpCtx};
pub use ops::{NanRule, OpInfo, Registry, Sample};
pub use shape::Shape;
pub use tape::{NoGradGuard, Tape, Var};
pub use tensor::Tensor;

/// The README's code blocks, compiled and run as doctests so the tour cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
