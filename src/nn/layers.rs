//! Layers a transformer needs besides [`Linear`](super::Linear): [`LayerNorm`] (the fused
//! [`Var::layer_norm`]) and [`Embedding`] (a lookup table, the [`Var::embedding`] op). Parameter
//! names and layouts are PyTorch's (`{name}.weight`, `{name}.bias`), so a `state_dict` loads as it is.

use super::{Init, ParamId, ParamStore, Params};
use crate::autodiff::tape::Var;
use crate::core::float::Float;
use crate::ops::index::Indices;
use crate::tensor::Tensor;

/// Layer normalisation over the last axis, as PyTorch's `nn.LayerNorm(dim)`: a weight
/// `{name}.weight` (ones) and a bias `{name}.bias` (zeros), both `[dim]`, and `eps`.
///
/// ```
/// use tapegrad::nn::{LayerNorm, ParamStore};
/// use tapegrad::{Tape, Tensor};
/// let mut store = ParamStore::<f64>::new();
/// let ln = LayerNorm::new(&mut store, "ln", 4);
/// assert_eq!(store.by_name("ln.weight").unwrap().to_vec(), vec![1.0; 4]);
/// let tape = Tape::new();
/// let p = store.bind(&tape);
/// let y = ln.forward(&p, tape.constant(Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], [1, 4])));
/// assert!(y.value().sum_all().abs() < 1e-12);   // each row has mean 0
/// ```
#[derive(Clone, Copy, Debug)]
pub struct LayerNorm {
    /// The weight's id (`"{name}.weight"`, `[dim]`).
    pub weight: ParamId,
    /// The bias's id (`"{name}.bias"`, `[dim]`).
    pub bias: ParamId,
    /// The normalised (last) extent.
    pub dim: usize,
    /// Added to the variance (PyTorch's default, `1e-5`, from [`new`](Self::new)).
    pub eps: f64,
}

impl LayerNorm {
    /// Adds `{name}.weight` (ones) and `{name}.bias` (zeros), `[dim]` each, with `eps = 1e-5`.
    #[track_caller]
    pub fn new<T: Float>(store: &mut ParamStore<T>, name: &str, dim: usize) -> Self {
        let weight = store.insert(format!("{name}.weight"), Tensor::ones([dim]));
        let bias = store.insert(format!("{name}.bias"), Tensor::zeros([dim]));
        LayerNorm {
            weight,
            bias,
            dim,
            eps: 1e-5,
        }
    }

    /// The same layer with another `eps`.
    pub fn eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }

    /// Normalises `x: [.., dim]` over its last axis, then scales and shifts.
    #[track_caller]
    pub fn forward<'t, T: Float>(&self, p: &Params<'t, T>, x: Var<'t, T>) -> Var<'t, T> {
        x.layer_norm(Some(p[self.weight]), Some(p[self.bias]), self.eps)
    }
}

/// A lookup table of `vocab` vectors of size `dim`, as PyTorch's `nn.Embedding`: the weight
/// `{name}.weight` is `[vocab, dim]`, drawn from `N(0, 1)` by [`new`](Self::new).
///
/// ```
/// use tapegrad::nn::{Embedding, ParamStore};
/// use tapegrad::{Indices, Tape};
/// let mut store = ParamStore::<f64>::new();
/// let emb = Embedding::new(&mut store, "tok", 10, 3, 7);
/// let tape = Tape::new();
/// let p = store.bind(&tape);
/// let e = emb.forward(&p, Indices::new(vec![1, 4, 4, 9], [2, 2]));
/// assert_eq!(e.shape().as_slice(), &[2, 2, 3]);
/// let g = e.sum().backward();
/// assert_eq!(g[p[emb.weight]].get(&[4, 0]), 2.0);   // row 4 was looked up twice
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Embedding {
    /// The table's id (`"{name}.weight"`, `[vocab, dim]`).
    pub weight: ParamId,
    /// The number of rows (tokens).
    pub vocab: usize,
    /// The size of each vector.
    pub dim: usize,
}

impl Embedding {
    /// Adds `{name}.weight`, `[vocab, dim]`, drawn from `N(0, 1)` (PyTorch's default), seeded.
    #[track_caller]
    pub fn new<T: Float>(store: &mut ParamStore<T>, name: &str, vocab: usize, dim: usize, seed: u64) -> Self {
        Self::with_init(store, name, vocab, dim, Init::Normal(1.0), seed)
    }

    /// Like [`new`](Self::new), the table drawn from `init`.
    #[track_caller]
    pub fn with_init<T: Float>(
        store: &mut ParamStore<T>,
        name: &str,
        vocab: usize,
        dim: usize,
        init: Init,
        seed: u64,
    ) -> Self {
        let weight = store.insert(format!("{name}.weight"), init.tensor([vocab, dim], vocab, dim, seed));
        Embedding { weight, vocab, dim }
    }

    /// The rows of the table at `ids`: shape `ids.shape() + [dim]`. Panics (naming `embedding`)
    /// for an id out of range.
    #[track_caller]
    pub fn forward<'t, T: Float>(&self, p: &Params<'t, T>, ids: impl Into<Indices>) -> Var<'t, T> {
        p[self.weight].embedding(ids)
    }
}
