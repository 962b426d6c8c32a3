//! The error type, and tapegrad's error policy.
//!
//! # Policy
//!
//! Everything that can fail has a **panicking** form (`x.matmul(y)`, `x + y`, `loss.backward()`),
//! for code that reads like maths: it panics with the message of the [`Error`] it would have
//! returned. Programs that must recover have two ways to get the `Error` instead:
//!
//! * [`attempt`]`(|| …)` runs any code and returns the first tapegrad error raised inside it as
//!   `Err` — the fallible form of every operation at once, with nothing printed;
//! * explicit **`try_`** forms for the calls most worth handling one by one: [`Tape::try_apply`]
//!   (user ops), [`Var::try_backward`], [`Var::try_backward_with`], [`Tape::try_grad`],
//!   [`Tape::try_grad_graph`], [`Tensor::try_from_vec`], [`Tensor::try_reshape`] and
//!   [`Tensor::try_permute`].
//!
//! [`Tape::try_apply`]: crate::Tape::try_apply
//! [`Var::try_backward`]: crate::Var::try_backward
//! [`Var::try_backward_with`]: crate::Var::try_backward_with
//! [`Tape::try_grad`]: crate::Tape::try_grad
//! [`Tape::try_grad_graph`]: crate::Tape::try_grad_graph
//! [`Tensor::try_from_vec`]: crate::Tensor::try_from_vec
//! [`Tensor::try_reshape`]: crate::Tensor::try_reshape
//! [`Tensor::try_permute`]: crate::Tensor::try_permute
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
#[non_exhaustive]
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
    /// Reading or writing a file failed, or its contents are not what was expected.
    Io,
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

thread_local! {
    /// How many [`attempt`] scopes are open on this thread.
    static ATTEMPTS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Panics with the error's message (used by the panicking forms of the API). Inside an
/// [`attempt`] scope it unwinds with the [`Error`] itself instead (no panic message is printed),
/// for `attempt` to return.
#[track_caller]
#[cold]
pub(crate) fn fail(e: Error) -> ! {
    if ATTEMPTS.with(|a| a.get()) > 0 {
        std::panic::resume_unwind(Box::new(e));
    }
    panic!("{e}")
}

/// Runs `f` and returns the first tapegrad error raised inside it as `Err`, instead of the panic
/// the panicking forms would raise: the fallible form of **every** operation at once.
///
/// Any call of the panicking API inside — `x.matmul(y)`, `a + b`, `x.sum_axis(5, true)`,
/// `loss.backward()`, `Tensor::from_vec(..)` — that fails stops `f` and becomes the `Err`,
/// with the same message (op, shapes, your line). A failed op records nothing, so the tape is
/// still consistent afterwards; values `f` computed before the failure are still on it. A panic
/// that is not a tapegrad error (a bug in your closure, an index out of range) is not caught: it
/// propagates as usual. Nothing is printed for a caught error.
///
/// ```
/// use tapegrad::{attempt, ErrorKind, Tape, Tensor};
/// let tape = Tape::<f64>::new();
/// let a = tape.var(Tensor::zeros([2, 3]));
/// let b = tape.var(Tensor::zeros([4, 5]));
/// let e = attempt(|| a.matmul(b).sum()).unwrap_err();   // inner sizes differ
/// assert_eq!(e.kind(), ErrorKind::Shape);
/// assert!(e.to_string().contains("matmul"));
/// let ok = attempt(|| (a * a).sum().item()).unwrap();
/// assert_eq!(ok, 0.0);
/// ```
pub fn attempt<R>(f: impl FnOnce() -> R) -> Result<R> {
    struct Scope;
    impl Drop for Scope {
        fn drop(&mut self) {
            ATTEMPTS.with(|a| a.set(a.get() - 1));
        }
    }
    ATTEMPTS.with(|a| a.set(a.get() + 1));
    let scope = Scope;
    // The library's own state is consistent after any of its errors (a failed op records
    // nothing), so unwinding out of `f` is safe for it; what `f` itself captured is the caller's.
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    drop(scope);
    match r {
        Ok(v) => Ok(v),
        Err(payload) => match payload.downcast::<Error>() {
            Ok(e) => Err(*e),
            Err(other) => std::panic::resume_unwind(other),
        },
    }
}
