//! Helpers shared by the integration tests.

use std::panic::{AssertUnwindSafe, catch_unwind};

/// Runs `f`, which must panic, and returns the panic message.
pub fn panic_message<R>(f: impl FnOnce() -> R) -> String {
    let Err(e) = catch_unwind(AssertUnwindSafe(f)) else {
        panic!("expected a panic")
    };
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap()
}
