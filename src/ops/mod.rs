//! The primitive operations and the registry that lists them.
//!
//! Each family file (`arith`, `elementwise`, `select`, `reduce`, `layout`, `index`, `linalg`, `conv`, `loss`,
//! `fused`)
//! holds, side by side, every op's forward kernel, its VJP rule, the `Var` method that records it
//! and its registry entry: samples (with naive references from `reference.rs`), domain and the
//! recipe random programs and the fuzzer call it with. The registry-driven tests walk
//! [`Registry::builtin`] and check every sample by finite differences, so an op that is
//! registered is tested with no new test code.
//!
//! ```
//! let reg = tapegrad::Registry::builtin();
//! assert!(reg.get("exp").is_some());
//! assert!(reg.iter().all(|info| !(info.samples)().is_empty()));
//! ```

pub mod arith;
pub(crate) mod common;
pub mod conv;
pub mod elementwise;
pub mod fused;
pub mod index;
pub mod layout;
pub mod linalg;
pub mod loss;
pub mod reduce;
pub mod reduce_more;
pub(crate) mod reference;
pub mod registry;
pub mod select;
mod var;

pub use elementwise::Math;
pub use index::{Branch, Indices, SliceRange};
pub use layout::{Axes, IndexInt};
pub use registry::{Choice, Domain, NanRule, OpInfo, Recipe, RecipeFn, Reference, Registry, Sample};
pub use select::Logic;

use std::sync::OnceLock;

impl Registry {
    /// The registry of every built-in op.
    pub fn builtin() -> &'static Registry {
        static REG: OnceLock<Registry> = OnceLock::new();
        REG.get_or_init(|| {
            let mut r = Registry::new();
            arith::register(&mut r);
            elementwise::register(&mut r);
            reduce::register(&mut r);
            reduce_more::register(&mut r);
            layout::register(&mut r);
            linalg::register(&mut r);
            fused::register(&mut r);
            select::register(&mut r);
            index::register(&mut r);
            conv::register(&mut r);
            loss::register(&mut r);
            r
        })
    }
}
