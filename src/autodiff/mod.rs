//! Reverse mode: the [`tape::Tape`] (Wengert list) and its [`tape::Var`] handles, the
//! [`op::Op`] trait every primitive implements, and the backward sweep ([`backward`]).

pub mod backward;
pub mod op;
pub mod tape;
