//! The bottom layer: the element types ([`float::Float`]), shapes and broadcasting, the seeded
//! random numbers, and the error type. Nothing here knows of tensors or tapes.

pub mod error;
pub mod float;
pub mod rng;
pub mod shape;
