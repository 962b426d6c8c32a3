//! # A guide: the softmax gradient, from a wrong rule to a checked one
//!
//! This chapter walks the story tapegrad is built around, end to end. Every code block is a
//! doctest: `cargo test --doc guide` runs them.
//!
//! ## 1. The learner's rule
//!
//! A learner adds a softmax layer `h = softmax(z)`, differentiates `h_j = e^{z_j} / Σ_i e^{z_i}`,
//! and writes `∂h_j/∂z_j = h_j(1 − h_j)` — the logistic-regression formula. As an op of their own
//! it reads:
//!
//! ```
//! use tapegrad::prelude::*;
//!
//! /// Softmax over the last axis, with the learner's diagonal-only rule `g ⊙ h ⊙ (1 − h)`.
//! struct LearnerSoftmax;
//! impl<T: Float> Op<T> for LearnerSoftmax {
//!     fn name(&self) -> &'static str { "learner_softmax" }
//!     fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
//!         // Borrow the library's forward (the value is right; only the rule is wrong).
//!         let tape = Tape::<T>::new();
//!         Ok(tape.constant(x[0].clone()).softmax(-1).value())
//!     }
//!     fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
//!         let h = cx.output();
//!         Ok(cx.grads([Some(pointwise!(T; g, h => g * h * (-h + T::ONE)))]))
//!     }
//! }
//! # let tape = Tape::<f64>::new();
//! # let z = tape.var(Tensor::from_vec(vec![1.0, 2.0, 3.0], [3]));
//! # let _ = tape.apply(LearnerSoftmax, &[z]);
//! ```
//!
//! The rule is written once, generic over the value type `V` (see [`crate::Value`]): tapegrad
//! runs it on tensors for a plain `backward()` and on recorded `Var`s for a second derivative.
//! `pointwise!` writes its elementwise body: one fused loop on tensors.
//!
//! ## 2. The gradient check catches it
//!
//! [`gradcheck`](crate::check::gradcheck) compares the rule with central finite differences in
//! `f64`. The learner's rule fails, and the report says where:
//!
//! ```
//! # use tapegrad::prelude::*;
//! # struct LearnerSoftmax;
//! # impl<T: Float> Op<T> for LearnerSoftmax {
//! #     fn name(&self) -> &'static str { "learner_softmax" }
//! #     fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
//! #         let tape = Tape::<T>::new();
//! #         Ok(tape.constant(x[0].clone()).softmax(-1).value())
//! #     }
//! #     fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
//! #         let h = cx.output();
//! #         Ok(cx.grads([Some(pointwise!(T; g, h => g * h * (-h + T::ONE)))]))
//! #     }
//! # }
//! let z = Tensor::from_vec(vec![0.5, -0.3, 1.2], [3]);
//! let report = gradcheck(|v| v[0].tape().apply(LearnerSoftmax, &[v[0]]), &[z], &GradcheckOptions::default());
//! assert!(!report.passed);
//! println!("{report}");   // gradcheck FAILED (...); worst: input 0 element [1], output [0]: ...
//! let worst = report.worst.unwrap();
//! assert_ne!(worst.index, worst.output_index, "an off-diagonal entry: a cross term is missing");
//! ```
//!
//! The worst entry is off the diagonal: `∂h_j/∂z_k` for `j ≠ k`, which the learner's formula sets
//! to zero. Every output depends on every input: `∂h_j/∂z_k = −h_j h_k`.
//!
//! ## 3. The Jacobian falls out of the primitives
//!
//! Written from primitives — `max` (detached: softmax is shift-invariant), `sub`, `exp`, `sum`,
//! `div` — softmax needs no rule of its own: each primitive's rule is right, and the chain rule
//! composes them, cross terms included. The full Jacobian is `diag(h) − h hᵀ`:
//!
//! ```
//! use tapegrad::check::jacobian;
//! use tapegrad::Tensor;
//! let z = Tensor::from_vec(vec![0.5, -0.3, 1.2], [3]);
//! let j = jacobian(|z| z.softmax_composed(0), &z);       // one backward per output
//! let h = {
//!     let t = tapegrad::Tape::<f64>::new();
//!     t.constant(z.clone()).softmax(0).value()
//! };
//! for a in 0..3 {
//!     for b in 0..3 {
//!         let want = if a == b { h.get(&[a]) * (1.0 - h.get(&[a])) } else { -h.get(&[a]) * h.get(&[b]) };
//!         assert!((j.get(&[a, b]) - want).abs() < 1e-15);
//!     }
//! }
//! ```
//!
//! Backpropagation never builds that matrix: the vector-Jacobian product is
//! `g ↦ h ⊙ (g − ⟨g, h⟩)`, O(n).
//!
//! ## 4. The fused op, checked against its composed twin
//!
//! [`Var::softmax`](crate::Var::softmax) is one op with that closed-form rule (itself an op,
//! `softmax_backward`, so it is differentiable again). [`fused_vs_composed`](crate::check::fused_vs_composed)
//! proves it equals the composed definition — forward values and VJPs on random cotangents:
//!
//! ```
//! use tapegrad::check::{fused_vs_composed, FusedOptions};
//! use tapegrad::Tensor;
//! let x = Tensor::rand_normal([4, 7], 0.0, 2.0, 1);
//! let r = fused_vs_composed(|v| v[0].softmax(-1), |v| v[0].softmax_composed(-1), &[x], &FusedOptions::default());
//! assert!(r.passed, "{r}");
//! ```
//!
//! With cross-entropy on top the chain collapses to `softmax(z) − t`:
//!
//! ```
//! use tapegrad::prelude::*;
//! let tape = Tape::<f64>::new();
//! let z = tape.var(Tensor::from_vec(vec![1.0, 2.0, 0.5], [1, 3]));
//! let loss = z.cross_entropy(Target::Classes(&[1]));
//! let g = loss.backward();
//! let h = z.softmax(-1).value();
//! for k in 0..3 {
//!     let t = if k == 1 { 1.0 } else { 0.0 };
//!     assert!((g[z].get(&[0, k]) - (h.get(&[0, k]) - t)).abs() < 1e-15);
//! }
//! ```
//!
//! ## 5. Your own op, right this time
//!
//! The learner's op with the right rule `h ⊙ (g − ⟨g, h⟩)`, written with the rule vocabulary:
//! `mul`, `sum_to` a per-row sum, and an elementwise expression. It passes the gradient check
//! *and* the second-order check, because every step of the rule is itself an op:
//!
//! ```
//! use tapegrad::prelude::*;
//! use tapegrad::check::gradgradcheck;
//!
//! struct MySoftmax;
//! impl<T: Float> Op<T> for MySoftmax {
//!     fn name(&self) -> &'static str { "my_softmax" }
//!     fn forward(&self, x: &[&Tensor<T>]) -> Result<Tensor<T>> {
//!         let tape = Tape::<T>::new();
//!         Ok(tape.constant(x[0].clone()).softmax(-1).value())
//!     }
//!     fn vjp<V: Value<T>>(&self, cx: &VjpCtx<'_, V>, g: &V) -> Result<Cotangents<V>> {
//!         let h = cx.output();
//!         let mut row = h.shape();
//!         *row.last_mut().unwrap() = 1;                 // ⟨g, h⟩ per row, kept as an axis
//!         let s = g.mul(h).sum_to(&row);
//!         let s = &s;
//!         Ok(cx.grads([Some(pointwise!(T; g, h, s => h * (g - s)))]))
//!     }
//! }
//! let z = Tensor::rand_normal([2, 4], 0.0, 1.0, 3);
//! // (`func_n` gives a closure stored in a `let` the signature the checks take)
//! let f = tapegrad::transforms::func_n(|v| v[0].tape().apply(MySoftmax, &[v[0]]));
//! assert!(gradcheck(&f, std::slice::from_ref(&z), &GradcheckOptions::default()).passed);
//! assert!(gradgradcheck(&f, &[z], &GradcheckOptions::default()).passed);
//! ```
//!
//! ## 6. What the backward costs
//!
//! [`profile`](crate::profile::profile) replays a recorded loss op type by op type: forward time,
//! backward time and the bytes each op keeps alive for the backward. The composed softmax keeps
//! the values of six nodes; the fused op keeps only its output:
//!
//! ```
//! use tapegrad::prelude::*;
//! use tapegrad::profile::{profile, ProfileOptions};
//! let x = Tensor::<f32>::rand_normal([64, 100], 0.0, 1.0, 1);
//! let tape = Tape::<f32>::new();
//! let xv = tape.var(x.clone());
//! let composed = profile(xv.softmax_composed(-1).sum(), &ProfileOptions::quick());
//! let tape2 = Tape::<f32>::new();
//! let fused = profile(tape2.var(x).softmax(-1).sum(), &ProfileOptions::quick());
//! assert!(composed.bytes_saved_by_ops() > 2 * fused.bytes_saved_by_ops());
//! println!("{composed}\n{fused}");
//! ```
//!
//! ## 7. Second derivatives
//!
//! Because every rule is written in ops, the backward can be recorded
//! ([`Tape::grad_graph`](crate::Tape::grad_graph)) and differentiated again. The Hessian of
//! log-sum-exp is the softmax Jacobian `diag(h) − h hᵀ` once more:
//!
//! ```
//! use tapegrad::transforms::{func, hessian};
//! use tapegrad::Tensor;
//! let lse = func(|x| x.log_softmax(0).mul_scalar(-1.0).sum() * (1.0 / 3.0) + x.sum() * (1.0 / 3.0));
//! // (the mean of −log_softmax plus the mean of x is log Σ eˣ)
//! let x = Tensor::from_vec(vec![0.5, -0.3, 1.2], [3]);
//! let h = hessian(&lse, &x);
//! let y = { let t = tapegrad::Tape::<f64>::new(); t.constant(x.clone()).softmax(0).value() };
//! assert!((h.get(&[0, 1]) + y.get(&[0]) * y.get(&[1])).abs() < 1e-14);
//! assert!((h.get(&[2, 2]) - y.get(&[2]) * (1.0 - y.get(&[2]))).abs() < 1e-14);
//! ```
//!
//! ## Where to go next
//!
//! `ARCHITECTURE.md`, in the repository, explains the layers and how to add an op; [`crate::ops`] lists every op with its rule; [`crate::check`] has every checker;
//! [`crate::debug::anomaly`] finds the first NaN.
