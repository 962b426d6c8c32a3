//! Fuzz target: builds a tape from arbitrary bytes (see `src/program.rs`) and runs backward through
//! the `try_` API. A panic whose message is a documented tapegrad error is caught; anything else
//! (an index out of bounds, a failed debug assertion, an undocumented error) aborts, which
//! libFuzzer reports as a crash.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::Once;

#[path = "../src/program.rs"]
mod program;

static HOOK: Once = Once::new();

fuzz_target!(|data: &[u8]| {
    HOOK.call_once(|| {
        // libfuzzer-sys aborts on every panic, caught or not; let documented errors unwind to
        // the harness's catch_unwind and abort on the rest.
        std::panic::set_hook(Box::new(|info| {
            if !program::is_documented(info.payload()) {
                eprintln!("{info}");
                std::process::abort();
            }
        }));
    });
    program::run_bytes(data);
});
