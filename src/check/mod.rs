//! Checking gradients: finite differences ([`gradcheck`]), full Jacobians ([`jacobian`],
//! [`numeric_jacobian`]), second derivatives ([`gradgradcheck`]), fused against composed
//! ([`fused_vs_composed`]), and the registry-wide checks ([`check_registry`],
//! [`check_nan_propagation`], [`check_backward_paths_agree`], [`gradgradcheck_registry`]), and
//! [`localize`]: which node of a recorded program has the wrong rule.
//!
//! ```
//! use tapegrad::{check::{gradcheck, GradcheckOptions}, Tensor};
//! let x = Tensor::<f64>::rand_normal([2, 3], 0.0, 1.0, 1);
//! let report = gradcheck(|v| (v[0].exp() / v[0].exp().sum_axis(1, true)).log(), &[x], &GradcheckOptions::default());
//! assert!(report.passed, "{report}");
//! ```

mod fused;
mod gradcheck;
mod gradgrad;
mod localize;
mod registry;

pub use fused::{FusedOptions, FusedReport, fused_vs_composed};
pub use gradcheck::{CheckMode, GradcheckOptions, GradcheckReport, Mismatch, gradcheck, jacobian, numeric_jacobian};
pub use gradgrad::{GradgradcheckReport, gradgradcheck, gradgradcheck_registry};
pub use localize::{
    Comparison, Enclosing, Entry, LocalizeOptions, LocalizeReport, NodeCheck, SecondOrder, Slot, TwinCheck, localize,
};
pub use registry::{
    RegistryFailure, check_backward_paths_agree, check_nan_propagation, check_references, check_registry,
};
