//! Seeing what the tape does: anomaly mode (the first NaN or infinity and where it came from),
//! graph pictures (Graphviz DOT) and the backward profiler.

pub mod anomaly;
pub mod graph;
pub mod profile;
