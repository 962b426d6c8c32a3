//! Reverse mode: the [`tape::Tape`] (Wengert list) and its [`tape::Var`] handles, the
//! [`op::Op`] trait every primitive implements with **one** derivative rule, the traits that rule
//! is written in ([`value::Value`], [`value::Elem`]), the one backward sweep ([`sweep`]) and the
//! calls that run it ([`backward`]), and the hook tools watch a tape through ([`observer`]).

pub mod backward;
pub mod observer;
pub mod op;
pub mod sweep;
pub mod tape;
pub mod value;

pub use observer::Observer;
pub use value::{Binary, Elem, Pointwise, Scalar, Ternary, Unary, Value};
