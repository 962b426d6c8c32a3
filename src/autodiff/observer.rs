//! The one hook through which tools watch a tape: an [`Observer`] sees every node as it is
//! recorded and every gradient as a backward sweep produces it. Anomaly mode
//! ([`crate::debug::anomaly`]) and the profiler ([`crate::debug::profile`]) are observers; the
//! tape and the sweep call no tool by name.
//!
//! ```
//! use std::sync::{Arc, atomic::{AtomicUsize, Ordering}};
//! use tapegrad::{autodiff::Observer, Tape, Tensor};
//!
//! /// Counts the rules a backward runs.
//! #[derive(Debug, Default)]
//! struct CountRules(AtomicUsize);
//! impl Observer<f64> for CountRules {
//!     fn rule_begin(&self, _tape: &Tape<f64>, _node: usize) {
//!         self.0.fetch_add(1, Ordering::Relaxed);
//!     }
//! }
//!
//! let tape = Tape::<f64>::new();
//! let counter = Arc::new(CountRules::default());
//! tape.add_observer(counter.clone());
//! let x = tape.var(Tensor::scalar(2.0));
//! let _ = (x.exp() * x).backward();
//! assert_eq!(counter.0.load(Ordering::Relaxed), 2); // mul, exp
//! ```

use crate::autodiff::tape::Tape;
use crate::core::error::Result;
use crate::core::float::Float;
use crate::tensor::Tensor;

/// Watches a tape: recorded nodes and produced gradients. Every method has an empty default.
///
/// Methods receive the tape, so they can describe nodes (`tape.describe(i)`-style messages go
/// through the public `Var`/graph API); they must not record on it.
pub trait Observer<T: Float>: Send + Sync + std::fmt::Debug {
    /// A name, so the observer can be found and detached ([`Tape::remove_observers`]).
    fn name(&self) -> &'static str {
        "observer"
    }
    /// An op named `op` with input nodes `inputs` computed `value` and is about to be recorded;
    /// an error refuses it (nothing is recorded and the op's caller gets the error).
    fn recording(&self, tape: &Tape<T>, op: &'static str, inputs: &[usize], value: &Tensor<T>) -> Result<()> {
        let _ = (tape, op, inputs, value);
        Ok(())
    }
    /// A backward sweep from node `output` starts.
    fn backward_begin(&self, tape: &Tape<T>, output: usize) {
        let _ = (tape, output);
    }
    /// The sweep is about to run node `node`'s rule.
    fn rule_begin(&self, tape: &Tape<T>, node: usize) {
        let _ = (tape, node);
    }
    /// Node `node`'s rule produced `grad` for its input `input`, from the cotangent `incoming`;
    /// an error stops the backward (which returns it).
    fn gradient(
        &self,
        tape: &Tape<T>,
        node: usize,
        input: usize,
        grad: &Tensor<T>,
        incoming: &Tensor<T>,
    ) -> Result<()> {
        let _ = (tape, node, input, grad, incoming);
        Ok(())
    }
    /// Node `node`'s gradients have been accumulated into its inputs.
    fn rule_end(&self, tape: &Tape<T>, node: usize) {
        let _ = (tape, node);
    }
    /// The sweep ended: successfully, with an error, or by a panic in a rule (always called once
    /// for each `backward_begin`).
    fn backward_end(&self, tape: &Tape<T>) {
        let _ = tape;
    }
}
