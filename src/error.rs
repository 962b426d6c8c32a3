//! The error type, and tapegrad's error policy.
//!
//! # Policy
//!
//! Everything that can fail comes in two forms:
//!
//! * a **panicking** form (`x.matmul(y)`, `x + y`, `loss.backward()`), for code that reads like maths.
//!   It panics with the message of the [`Error`] it would have returned.
//! * a **`try_`** form (`tape.try_apply(..)`, `loss.try_backward()`, `Tensor::try_from_vec(..)`) that
//!   returns `Result<_, Error>`, for programs that must recover.
//!
//! Either way the message names the operation, the shapes involved and the line of *your* code that
//! built the node (every entry point is `#[track_caller]`). A failed operation leaves the tape as it
//! was: nothing is half-recorded.
//!
//! ```
//! use tapegrad::{ErrorKind, Tape, Tensor};
//! let tape = Tape::<f64>::new();
//! let y = tape.var(Tensor::ones([2, 3])).exp();
//! let err = y.try_backward().unwrap_err();         // 6 elements, no cotangent given
//! assert_eq!(err.kind(), ErrorKind::NonScalar);
//! assert!(err.to_string().contains("exp [2, 3]"));  // names the op and the shape
//! assert!(err.to_string().contains(file!()));       // and the line that called backward
//! ```

use std::fmt;
use std::panic::Location;

/// What kind of mistake an [`Error`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Operand shapes do not fit the operation (broadcasting, matmul inner size, reshape size, axis).
    Shape,
    /// A `Var` from one tape was used with another tape.
    ForeignVar,
    /// `backward` was called on a value with more than one element and no cotangent was given.
    NonScalar,
    /// A gradient reached an operation that has no vector-Jacobian product rule.
    NoVjp,
    /// A backward was asked of a value that does not require a gradient (no variable reaches it:
    /// it was built under `no_grad`, from detached values, or from constants only).
    NoGradient,
    /// A value that must be finite was NaN or infinite.
    NonFinite,
    /// Any other invalid argument (empty list, bad axis permutation, wrong number of inputs…).
    Invalid,
}

/// An error from tapegrad: which operation, what went wrong, and where in the caller's code.
///
/// ```
/// use tapegrad::{Tensor, ErrorKind};
/// let e = Tensor::<f64>::try_from_vec(vec![1.0, 2.0, 3.0], [2, 2]).unwrap_err();
/// assert_eq!(e.kind(), ErrorKind::Shape);
/// assert!(e.to_string().contains("from_vec"));
/// assert!(e.to_string().contains(file!()));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Error {
    kind: ErrorKind,
    op: String,
    message: String,
    location: Option<&'static Location<'static>>,
}

impl Error {
    /// A new error of `kind` raised by operation `op`.
    pub fn new(kind: ErrorKind, op: impl Into<String>, message: impl Into<String>) -> Self {
        Error {
            kind,
            op: op.into(),
            message: message.into(),
            location: None,
        }
    }

    /// Attaches the user's source location (kept if one is already set).
    pub fn at(mut self, location: &'static Location<'static>) -> Self {
        self.location.get_or_insert(location);
        self
    }

    /// A shape error raised by `op`.
    pub fn shape(op: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Shape, op, message)
    }

    /// The kind of mistake.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The operation that failed.
    pub fn op(&self) -> &str {
        &self.op
    }

    /// The message without the operation name and location.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The line of user code the error points at, when known.
    pub fn location(&self) -> Option<&'static Location<'static>> {
        self.location
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tapegrad: {}: {}", self.op, self.message)?;
        if let Some(l) = self.location {
            write!(f, " (at {}:{}:{})", l.file(), l.line(), l.column())?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

/// Shorthand for `Result<T, tapegrad::Error>`.
pub type Result<T> = std::result::Result<T, Error>;

/// Panics with the error's message (used by the panicking forms of the API).
#[track_caller]
#[cold]
pub(crate) fn fail(e: Error) -> ! {
    panic!("{e}")
}
