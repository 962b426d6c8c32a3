//! [`Jit`]: one compiled program per set of input shapes, traced on first use.

use super::{Compiled, StepOutput};
use crate::core::error::Result;
use crate::core::float::Float;
use crate::tensor::Tensor;
use crate::{Tape, Var};
use std::panic::Location;

/// How many programs a [`Jit`] keeps unless told otherwise ([`Jit::with_capacity`]).
const DEFAULT_CAPACITY: usize = 8;

/// A function compiled on demand, once per set of input shapes.
///
/// [`Compiled::trace`] fixes the shapes; a `Jit` keeps the function and a small cache of compiled
/// programs keyed by the shapes of the parameters and data inputs. [`run`](Self::run) replays the
/// program traced for the inputs' shapes, tracing (and checking) a new one on a miss; when the
/// cache is full the least recently used program is dropped. A training loop whose last batch is
/// shorter costs one more trace, not an error.
///
/// ```
/// use tapegrad::compile::Jit;
/// use tapegrad::Tensor;
///
/// // Mean squared error of x·w against y, for batches of any length.
/// let mut step = Jit::new(|_tape, p, d| {
///     let r = d[0].matmul(p[0]) - d[1];
///     (r * r).mean()
/// });
/// let w = Tensor::from_vec(vec![0.5, -1.0], [2, 1]);
/// for rows in [4, 4, 3] {
///     let x = Tensor::<f64>::from_vec((0..2 * rows).map(|i| i as f64).collect(), [rows, 2]);
///     let y = Tensor::<f64>::zeros([rows, 1]);
///     let out = step.run(&[&w], &[&x, &y]).unwrap();
///     assert_eq!(out.grads[0].shape(), &[2, 1]);
/// }
/// assert_eq!(step.traces(), 2); // one program for 4 rows, one for 3
/// ```
pub struct Jit<T: Float, F> {
    f: F,
    /// The compiled programs, the most recently used last.
    programs: Vec<Compiled<T>>,
    capacity: usize,
    traces: usize,
    anomaly: bool,
    created_at: &'static Location<'static>,
}

impl<T: Float, F> std::fmt::Debug for Jit<T, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jit")
            .field("programs", &self.programs)
            .field("capacity", &self.capacity)
            .field("traces", &self.traces)
            .field("created_at", &format_args!("{}", self.created_at))
            .finish()
    }
}

impl<T: Float, F> Jit<T, F>
where
    F: for<'t> Fn(&'t Tape<T>, &[Var<'t, T>], &[Var<'t, T>]) -> Var<'t, T>,
{
    /// Wraps `f` (the function [`Compiled::trace`] takes); nothing is traced until the first
    /// [`run`](Self::run). The compiled programs report this line as where they were traced.
    #[track_caller]
    pub fn new(f: F) -> Self {
        Jit {
            f,
            programs: Vec::new(),
            capacity: DEFAULT_CAPACITY,
            traces: 0,
            anomaly: false,
            created_at: Location::caller(),
        }
    }

    /// Keeps at most `n` programs (at least one; 8 by default).
    pub fn with_capacity(mut self, n: usize) -> Self {
        self.capacity = n.max(1);
        self.programs.truncate(self.capacity);
        self
    }

    /// Runs the program compiled for these inputs' shapes (tracing it first if there is none):
    /// the loss and the parameters' gradients, as [`Compiled::run`].
    ///
    /// Errors: those of [`Compiled::trace`] when a trace is needed (nothing is cached then), and
    /// those of [`Compiled::run`].
    pub fn run(&mut self, params: &[&Tensor<T>], data: &[&Tensor<T>]) -> Result<StepOutput<T>> {
        let k = match self.position(params, data) {
            Some(k) => k,
            None => {
                let mut c = Compiled::trace_at(params, data, &self.f, self.created_at)?;
                self.traces += 1;
                c.set_anomaly(self.anomaly);
                if self.programs.len() == self.capacity {
                    self.programs.remove(0);
                }
                self.programs.push(c);
                self.programs.len() - 1
            }
        };
        let c = self.programs.remove(k);
        self.programs.push(c);
        self.programs.last_mut().expect("just pushed").run(params, data)
    }

    /// The program compiled for inputs of these shapes, if there is one (to read its
    /// [`summary`](Compiled::summary), say).
    pub fn get(&self, params: &[&Tensor<T>], data: &[&Tensor<T>]) -> Option<&Compiled<T>> {
        self.position(params, data).map(|k| &self.programs[k])
    }

    /// How many times the function was traced (misses of the cache, evictions included).
    pub fn traces(&self) -> usize {
        self.traces
    }

    /// How many programs are cached.
    pub fn len(&self) -> usize {
        self.programs.len()
    }

    /// True before the first successful [`run`](Self::run).
    pub fn is_empty(&self) -> bool {
        self.programs.is_empty()
    }

    /// Anomaly checks for every program, cached and future (see [`Compiled::set_anomaly`]).
    pub fn set_anomaly(&mut self, on: bool) {
        self.anomaly = on;
        for c in &mut self.programs {
            c.set_anomaly(on);
        }
    }

    fn position(&self, params: &[&Tensor<T>], data: &[&Tensor<T>]) -> Option<usize> {
        self.programs.iter().position(|c| c.traced_for(params, data))
    }
}
