//! The shapes and sizes of the workloads W1–W8, read from `benches/workloads.json`: the one
//! definition that the PyTorch and JAX references (`benches/peers/`) and `scripts/bench_report.py`
//! read too, so that both sides of every comparison run the same table.
//!
//! The file is compiled in (`include_str!`), so a bench runs from any directory.

// Each bench uses a part of this module.
#![allow(dead_code)]

use serde_json::Value;

/// The workload `id` (`"W1"` …) of `benches/workloads.json`.
pub fn workload(id: &str) -> Value {
    let all: Value =
        serde_json::from_str(include_str!("../workloads.json")).expect("benches/workloads.json is valid JSON");
    all["workloads"]
        .as_array()
        .and_then(|ws| ws.iter().find(|w| w["id"] == id))
        .unwrap_or_else(|| panic!("workload {id} is not in benches/workloads.json"))
        .clone()
}

/// A list of sizes as `usize`s.
fn sizes(v: &Value) -> Vec<usize> {
    v.as_array()
        .expect("a list of sizes")
        .iter()
        .map(|n| n.as_u64().expect("a size") as usize)
        .collect()
}

/// The shapes of workload `id`, one report row per shape.
pub fn shapes(id: &str) -> Vec<Vec<usize>> {
    workload(id)["shapes"]
        .as_array()
        .expect("a list of shapes")
        .iter()
        .map(sizes)
        .collect()
}

/// The shapes of a workload of `[b, n]` matrices, as pairs.
pub fn matrix_shapes(id: &str) -> Vec<(usize, usize)> {
    shapes(id)
        .into_iter()
        .map(|s| match s[..] {
            [b, n] => (b, n),
            _ => panic!("{id}: {s:?} is not a matrix shape"),
        })
        .collect()
}

/// The size `params.<key>` of workload `id`.
pub fn param(id: &str, key: &str) -> usize {
    workload(id)["params"][key]
        .as_u64()
        .unwrap_or_else(|| panic!("{id}: params.{key} is not a size")) as usize
}

/// The list of sizes `params.<key>` of workload `id`.
pub fn param_sizes(id: &str, key: &str) -> Vec<usize> {
    sizes(&workload(id)["params"][key])
}
