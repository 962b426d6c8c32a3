//! Replays the fuzz harness (`fuzz/src/program.rs`) on stable: every input that the fuzzer found
//! interesting and that is checked in under `fuzz/regressions/`, plus a few thousand
//! pseudo-random byte strings. Any panic that is not a documented tapegrad error fails the test.

#[path = "../fuzz/src/program.rs"]
#[allow(dead_code)]
mod program;

use std::panic::{AssertUnwindSafe, catch_unwind};

fn replay(data: &[u8]) -> Result<(), String> {
    catch_unwind(AssertUnwindSafe(|| program::run_bytes(data))).map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    })
}

fn quiet() {
    // The harness catches documented errors; do not print each one (print the rest).
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !program::is_documented(info.payload()) {
            default(info)
        }
    }));
}

#[test]
fn regressions_found_by_the_fuzzer_stay_fixed() {
    quiet();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("fuzz/regressions exists") {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        if let Err(msg) = replay(&data) {
            panic!("{}: {msg}", path.display());
        }
        n += 1;
    }
    assert!(n > 0, "no regression inputs in {}", dir.display());
}

#[test]
fn pseudo_random_byte_strings() {
    quiet();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for case in 0..3000 {
        let len = (next() % 96) as usize;
        let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if let Err(msg) = replay(&data) {
            panic!("case {case}, bytes {data:?}: {msg}");
        }
    }
}
