//! Parameters and layers: a [`ParamStore`] of named tensors, seeded initialisation ([`Init`]),
//! [`Linear`] and a small [`Mlp`], [`LayerNorm`], [`Embedding`], [`MultiHeadAttention`] and a
//! pre-norm [`TransformerBlock`]; [`checkpoint`] runs sequential models (an `Mlp`, or any chain of
//! [`Stage`](checkpoint::Stage)s) under a memory budget.
//!
//! Between training steps parameters are plain [`Tensor`]s owned by the store. Each step records
//! them on a fresh (or [cleared](crate::Tape::clear)) tape with [`ParamStore::bind`], builds the
//! loss, takes the gradients out with [`Params::grads`], and lets the tape go; the store is then
//! the sole owner of every buffer again, so an optimiser ([`optim`]) updates them in
//! place with no reallocation.
//!
//! The easy way is [`ParamStore::grad_step`]: it owns the tape for one step — records, takes the
//! gradients, drops the tape — so nothing can grow from step to step:
//!
//! ```
//! use tapegrad::nn::{Activation, Mlp, ParamStore};
//! use tapegrad::optim::{Optimizer, Sgd};
//! use tapegrad::Tensor;
//!
//! let mut store = ParamStore::<f64>::new();
//! let mlp = Mlp::new(&mut store, "mlp", &[2, 8, 1], Activation::Tanh, 42);
//! let x = Tensor::from_vec(vec![0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0], [4, 2]);
//! let y = Tensor::from_vec(vec![0.0, 1.0, 1.0, 0.0], [4, 1]); // XOR
//! let mut opt = Sgd::new(0.5).momentum(0.9);
//! let mut last = f64::INFINITY;
//! for _ in 0..300 {
//!     let (loss, grads) = store.grad_step(|tape, p| {
//!         let err = mlp.forward(p, tape.constant(x.clone())) - tape.constant(y.clone());
//!         (err * err).mean()
//!     });
//!     last = loss;
//!     opt.step(&mut store, &grads); // in place: the step's tape is gone
//! }
//! assert!(last < 0.01, "XOR not learnt: loss {last}");
//! assert_eq!((store.copies_on_write(), store.stale_binds()), (0, 0));
//! ```
//!
//! The same loop with a tape you manage yourself must [`clear`](crate::Tape::clear) it every
//! step; forgetting to makes the tape grow without bound and every update copy its buffer —
//! [`ParamStore::stale_binds`] and [`ParamStore::copies_on_write`] count both, so a training
//! loop can check them:
//!
//! ```
//! use tapegrad::nn::{Activation, Mlp, ParamStore};
//! use tapegrad::optim::{Optimizer, Sgd};
//! use tapegrad::{Tape, Tensor};
//!
//! let mut store = ParamStore::<f64>::new();
//! let mlp = Mlp::new(&mut store, "mlp", &[2, 8, 1], Activation::Tanh, 42);
//! let x = Tensor::from_vec(vec![0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0], [4, 2]);
//! let y = Tensor::from_vec(vec![0.0, 1.0, 1.0, 0.0], [4, 1]); // XOR
//! let mut opt = Sgd::new(0.5).momentum(0.9);
//! let mut tape = Tape::new();
//! let mut last = f64::INFINITY;
//! for _ in 0..300 {
//!     let grads = {
//!         let p = store.bind(&tape);
//!         let err = mlp.forward(&p, tape.constant(x.clone())) - tape.constant(y.clone());
//!         let loss = (err * err).mean();
//!         last = loss.item();
//!         p.grads(loss.backward())
//!     };
//!     tape.clear();                       // the store owns its buffers again
//!     opt.step(&mut store, &grads);       // in place
//! }
//! assert!(last < 0.01, "XOR not learnt: loss {last}");
//! assert_eq!(store.copies_on_write(), 0);
//! ```

pub mod attention;
pub mod checkpoint;
mod conv;
pub mod layers;
pub mod optim;
#[cfg(feature = "safetensors")]
#[cfg_attr(docsrs, doc(cfg(feature = "safetensors")))]
pub mod safetensors;

pub use conv::{Conv2d, MaxPool2d};

use crate::autodiff::backward::Grads;
use crate::autodiff::tape::{Tape, Var};
use crate::core::float::Float;
use crate::core::rng::Rng;
use crate::tensor::Tensor;
use indexmap::IndexMap;

pub use attention::{MultiHeadAttention, TransformerBlock, TransformerStage, causal_mask};
pub use layers::{Embedding, LayerNorm};

/// A parameter's position in a [`ParamStore`] (its insertion order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParamId(pub usize);

/// Named parameters, in the order they were added (an `IndexMap`).
#[derive(Clone, Debug, Default)]
pub struct ParamStore<T: Float> {
    params: IndexMap<String, Tensor<T>>,
    copies: usize,
    /// The tape the store was last bound to and its length then (to notice a tape not cleared).
    last_bind: std::cell::Cell<Option<(u64, usize)>>,
    stale: std::cell::Cell<usize>,
}

impl<T: Float> ParamStore<T> {
    /// An empty store.
    pub fn new() -> Self {
        ParamStore {
            params: IndexMap::new(),
            copies: 0,
            last_bind: std::cell::Cell::new(None),
            stale: std::cell::Cell::new(0),
        }
    }

    /// Adds a parameter. Panics when the name is taken.
    #[track_caller]
    pub fn insert(&mut self, name: impl Into<String>, value: Tensor<T>) -> ParamId {
        let name = name.into();
        if self.params.contains_key(&name) {
            panic!("tapegrad: parameter {name:?} is already in the store");
        }
        let (i, _) = self.params.insert_full(name, value);
        ParamId(i)
    }

    /// The id of the parameter called `name`.
    pub fn id(&self, name: &str) -> Option<ParamId> {
        self.params.get_index_of(name).map(ParamId)
    }

    /// The parameter's value.
    pub fn get(&self, id: ParamId) -> &Tensor<T> {
        &self.params[id.0]
    }

    /// The parameter's name.
    pub fn name(&self, id: ParamId) -> &str {
        self.params.get_index(id.0).map(|(k, _)| k.as_str()).unwrap_or("")
    }

    /// The parameter called `name`.
    pub fn by_name(&self, name: &str) -> Option<&Tensor<T>> {
        self.params.get(name)
    }

    /// `(id, name, value)` in order.
    pub fn iter(&self) -> impl Iterator<Item = (ParamId, &str, &Tensor<T>)> {
        self.params
            .iter()
            .enumerate()
            .map(|(i, (k, v))| (ParamId(i), k.as_str(), v))
    }

    /// The number of parameters (tensors).
    pub fn len(&self) -> usize {
        self.params.len()
    }

    /// True when the store is empty.
    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    /// The total number of scalars.
    pub fn numel(&self) -> usize {
        self.params.values().map(Tensor::numel).sum()
    }

    /// Records every parameter on `tape` as a variable ([`Tape::var`]), in order. The tape shares
    /// the buffers (no copy): drop or [clear](Tape::clear) it before the optimiser updates them.
    ///
    /// Binding again to a tape that still holds an earlier binding (it was not cleared) counts a
    /// [stale bind](Self::stale_binds): the tape keeps growing and the next update copies.
    #[track_caller]
    pub fn bind<'t>(&self, tape: &'t Tape<T>) -> Params<'t, T> {
        if let Some((id, len)) = self.last_bind.get()
            && id == tape.id()
            && tape.len() >= len
        {
            self.stale.set(self.stale.get() + 1);
        }
        let params = Params {
            vars: self.params.values().map(|v| tape.var(v.clone())).collect(),
        };
        self.last_bind.set(Some((tape.id(), tape.len())));
        params
    }

    /// One training step's gradients, with the tape owned for the step: records the parameters
    /// on a fresh tape, builds the loss with `f`, runs the backward, takes the gradients out and
    /// drops the tape — so the store owns its buffers again and the optimiser updates them in
    /// place. Returns the loss (which must have one element) and the gradients. Panics on error;
    /// see [`try_grad_step`](Self::try_grad_step).
    #[track_caller]
    pub fn grad_step<F>(&mut self, f: F) -> (T, ParamGrads<T>)
    where
        F: for<'t> FnOnce(&'t Tape<T>, &Params<'t, T>) -> Var<'t, T>,
    {
        self.try_grad_step(|tape, p| Ok(f(tape, p)))
            .unwrap_or_else(|e| crate::core::error::fail(e))
    }

    /// Like [`grad_step`](Self::grad_step) for a loss that may fail: `f` returns a `Result`, and
    /// its error — or the backward's — is returned.
    #[track_caller]
    pub fn try_grad_step<F>(&mut self, f: F) -> crate::Result<(T, ParamGrads<T>)>
    where
        F: for<'t> FnOnce(&'t Tape<T>, &Params<'t, T>) -> crate::Result<Var<'t, T>>,
    {
        let tape = Tape::new();
        let p = self.bind(&tape);
        let loss = f(&tape, &p)?;
        let grads = p.grads(loss.try_backward()?);
        let value = loss.item();
        drop(p);
        drop(tape);
        self.last_bind.set(None);
        Ok((value, grads))
    }

    /// Updates a parameter in place through `f`. When the buffer is shared (a tape or a clone
    /// still holds it), it is copied first — correct but slow — and
    /// [`copies_on_write`](Self::copies_on_write) counts it.
    pub fn update(&mut self, id: ParamId, f: impl FnOnce(&mut [T])) {
        let t = &mut self.params[id.0];
        let before = t.data().as_ptr();
        let data = t.data_mut();
        if data.as_ptr() != before {
            self.copies += 1;
        }
        f(data);
    }

    /// How many in-place updates had to copy a shared buffer (0 when the store owned every buffer
    /// when it was updated).
    pub fn copies_on_write(&self) -> usize {
        self.copies
    }

    /// How many times the store was bound to a tape that still held an earlier binding (a
    /// training loop that forgot [`Tape::clear`]: the tape grows every step). 0 in a healthy loop.
    pub fn stale_binds(&self) -> usize {
        self.stale.get()
    }
}

/// The parameters of a [`ParamStore`] recorded on one tape, indexed by [`ParamId`].
#[derive(Clone, Debug)]
pub struct Params<'t, T: Float> {
    vars: Vec<Var<'t, T>>,
}

impl<'t, T: Float> Params<'t, T> {
    /// Parameters from variables listed in store order (for checks that record the values
    /// themselves, e.g. [`gradcheck`](crate::check::gradcheck) over a layer's parameters).
    pub fn from_vars(vars: Vec<Var<'t, T>>) -> Self {
        Params { vars }
    }

    /// The variable of parameter `id`.
    pub fn get(&self, id: ParamId) -> Var<'t, T> {
        self.vars[id.0]
    }

    /// All variables, in store order.
    pub fn vars(&self) -> &[Var<'t, T>] {
        &self.vars
    }

    /// Takes the parameters' gradients out of a backward pass's result (consuming it, so the
    /// gradients are not shared and can be clipped in place).
    #[track_caller]
    pub fn grads(&self, grads: Grads<T>) -> ParamGrads<T> {
        ParamGrads {
            grads: self.vars.iter().map(|&v| grads[v].clone()).collect(),
        }
    }
}

impl<'t, T: Float> std::ops::Index<ParamId> for Params<'t, T> {
    type Output = Var<'t, T>;
    fn index(&self, id: ParamId) -> &Var<'t, T> {
        &self.vars[id.0]
    }
}

/// One gradient per parameter of a store, in store order.
#[derive(Clone, Debug)]
pub struct ParamGrads<T: Float> {
    grads: Vec<Tensor<T>>,
}

impl<T: Float> ParamGrads<T> {
    /// Gradients from a list in store order (e.g. computed by hand or with [`Tape::grad`]).
    pub fn from_vec(grads: Vec<Tensor<T>>) -> Self {
        ParamGrads { grads }
    }

    /// The gradient of parameter `id`.
    pub fn get(&self, id: ParamId) -> &Tensor<T> {
        &self.grads[id.0]
    }

    /// The number of gradients.
    pub fn len(&self) -> usize {
        self.grads.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.grads.is_empty()
    }

    /// `(id, gradient)` in store order.
    pub fn iter(&self) -> impl Iterator<Item = (ParamId, &Tensor<T>)> {
        self.grads.iter().enumerate().map(|(i, g)| (ParamId(i), g))
    }

    /// The Euclidean norm of all gradients taken together (accumulated in `f64`).
    pub fn global_norm(&self) -> f64 {
        self.grads
            .iter()
            .flat_map(|g| g.data())
            .map(|&x| x.to_f64() * x.to_f64())
            .sum::<f64>()
            .sqrt()
    }

    /// Scales every gradient by `max_norm / norm` when their [global norm](Self::global_norm)
    /// exceeds `max_norm`, keeping their direction. Returns the norm before clipping.
    ///
    /// ```
    /// use tapegrad::{Tensor, nn::ParamGrads};
    /// let mut g = ParamGrads::from_vec(vec![Tensor::from_vec(vec![3.0, 0.0], [2]), Tensor::scalar(4.0)]);
    /// assert_eq!(g.clip_global_norm(1.0), 5.0);
    /// assert!((g.global_norm() - 1.0).abs() < 1e-12);
    /// ```
    pub fn clip_global_norm(&mut self, max_norm: f64) -> f64 {
        let norm = self.global_norm();
        if norm > max_norm && norm > 0.0 {
            let s = T::from_f64(max_norm / norm);
            for g in &mut self.grads {
                g.data_mut().iter_mut().for_each(|x| *x *= s);
            }
        }
        norm
    }
}

/// How to draw a layer's initial weights. Fan-in and fan-out are the weight matrix's input and
/// output sizes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// All zeros (biases).
    Zeros,
    /// Glorot/Xavier uniform: `U(−a, a)`, `a = √(6 / (fan_in + fan_out))` — for tanh/sigmoid.
    XavierUniform,
    /// Glorot/Xavier normal: `N(0, 2 / (fan_in + fan_out))`.
    XavierNormal,
    /// He/Kaiming uniform: `U(−a, a)`, `a = √(6 / fan_in)` — for ReLU.
    HeUniform,
    /// He/Kaiming normal: `N(0, 2 / fan_in)`.
    HeNormal,
    /// `N(0, σ²)` with the given σ.
    Normal(f64),
}

impl Init {
    /// A `[fan_in, fan_out]` (or any `shape`) tensor drawn from this distribution, reproducible
    /// from `seed`.
    ///
    /// ```
    /// use tapegrad::nn::Init;
    /// let w = Init::HeNormal.tensor::<f64>([400, 300], 400, 300, 7);
    /// let var = w.data().iter().map(|x| x * x).sum::<f64>() / w.numel() as f64;
    /// assert!((var - 2.0 / 400.0).abs() < 0.05 * 2.0 / 400.0);
    /// ```
    pub fn tensor<T: Float>(self, shape: impl AsRef<[usize]>, fan_in: usize, fan_out: usize, seed: u64) -> Tensor<T> {
        let (fi, fo) = (fan_in.max(1) as f64, fan_out.max(1) as f64);
        let mut rng = Rng::new(seed);
        let mut uniform = |a: f64| Tensor::from_fn(&shape, |_| T::from_f64(a * (2.0 * rng.uniform() - 1.0)));
        match self {
            Init::Zeros => Tensor::zeros(shape),
            Init::XavierUniform => uniform((6.0 / (fi + fo)).sqrt()),
            Init::HeUniform => uniform((6.0 / fi).sqrt()),
            Init::XavierNormal => Tensor::rand_normal(shape, T::ZERO, T::from_f64((2.0 / (fi + fo)).sqrt()), seed),
            Init::HeNormal => Tensor::rand_normal(shape, T::ZERO, T::from_f64((2.0 / fi).sqrt()), seed),
            Init::Normal(s) => Tensor::rand_normal(shape, T::ZERO, T::from_f64(s), seed),
        }
    }

    /// Like [`tensor`](Self::tensor), drawing from your own random number generator (any
    /// `rand::Rng` of the `rand` 0.10 family; the `rand` feature) instead of the built-in seeded
    /// one — which stays the reproducible default.
    ///
    /// ```
    /// # #[cfg(feature = "rand")] {
    /// use tapegrad::nn::Init;
    /// /// A tiny generator of your own (any `rand::Rng` works the same way).
    /// struct Counter(u64);
    /// impl rand::TryRng for Counter {
    ///     type Error = std::convert::Infallible;
    ///     fn try_next_u32(&mut self) -> Result<u32, Self::Error> { Ok(self.try_next_u64()? as u32) }
    ///     fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
    ///         self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    ///         Ok(self.0)
    ///     }
    ///     fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
    ///         for b in dst { *b = self.try_next_u64()? as u8 }
    ///         Ok(())
    ///     }
    /// }
    /// let w = Init::XavierUniform.tensor_with_rng::<f64, _>([30, 20], 30, 20, &mut Counter(1));
    /// let a = (6.0f64 / 50.0).sqrt();
    /// assert!(w.data().iter().all(|x| x.abs() <= a));
    /// # }
    /// ```
    #[cfg(feature = "rand")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rand")))]
    pub fn tensor_with_rng<T: Float, R: rand::Rng + ?Sized>(
        self,
        shape: impl AsRef<[usize]>,
        fan_in: usize,
        fan_out: usize,
        rng: &mut R,
    ) -> Tensor<T> {
        let (fi, fo) = (fan_in.max(1) as f64, fan_out.max(1) as f64);
        let mut uniform = || (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
        let mut normal = |sd: f64| {
            let (u1, u2) = (1.0 - uniform(), uniform());
            sd * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
        };
        let draw = |f: &mut dyn FnMut() -> f64| Tensor::from_fn(&shape, |_| T::from_f64(f()));
        match self {
            Init::Zeros => Tensor::zeros(&shape),
            Init::XavierUniform => {
                let a = (6.0 / (fi + fo)).sqrt();
                draw(&mut || a * (2.0 * uniform() - 1.0))
            }
            Init::HeUniform => {
                let a = (6.0 / fi).sqrt();
                draw(&mut || a * (2.0 * uniform() - 1.0))
            }
            Init::XavierNormal => draw(&mut || normal((2.0 / (fi + fo)).sqrt())),
            Init::HeNormal => draw(&mut || normal((2.0 / fi).sqrt())),
            Init::Normal(s) => draw(&mut || normal(s)),
        }
    }
}

/// A fully connected layer `y = x Wᵀ + b`, `W: [out, in]` (PyTorch's layout), `b: [out]`;
/// `x: [batch, in]`.
#[derive(Clone, Copy, Debug)]
pub struct Linear {
    /// The weight's id (`"{name}.weight"`).
    pub weight: ParamId,
    /// The bias's id (`"{name}.bias"`).
    pub bias: ParamId,
    /// Input size.
    pub inputs: usize,
    /// Output size.
    pub outputs: usize,
}

impl Linear {
    /// Adds `{name}.weight` (drawn from `init`, shape `[outputs, inputs]` — PyTorch's layout, so a
    /// `state_dict` loads as it is) and `{name}.bias` (zeros, `[outputs]`) to the store.
    #[track_caller]
    pub fn new<T: Float>(
        store: &mut ParamStore<T>,
        name: &str,
        inputs: usize,
        outputs: usize,
        init: Init,
        seed: u64,
    ) -> Self {
        let weight = store.insert(
            format!("{name}.weight"),
            // (drawn as [inputs, outputs] and transposed: the same seeded values as before the
            // layout became PyTorch's, so a seed gives the same model)
            init.tensor([inputs, outputs], inputs, outputs, seed).transpose(0, 1),
        );
        let bias = store.insert(format!("{name}.bias"), Tensor::zeros([outputs]));
        Linear {
            weight,
            bias,
            inputs,
            outputs,
        }
    }

    /// `x Wᵀ + b` (as PyTorch's `nn.Linear`; the transpose is read through strides, not copied).
    #[track_caller]
    pub fn forward<'t, T: Float>(&self, p: &Params<'t, T>, x: Var<'t, T>) -> Var<'t, T> {
        x.matmul_t(p[self.weight], false, true) + p[self.bias]
    }
}

/// A hidden-layer nonlinearity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `max(x, 0)`; layers get He initialisation.
    Relu,
    /// `tanh x`; layers get Xavier initialisation.
    Tanh,
    /// `1 / (1 + e^−x)`; layers get Xavier initialisation.
    Sigmoid,
}

impl Activation {
    /// Applies the nonlinearity.
    #[track_caller]
    pub fn apply<'t, T: Float>(self, x: Var<'t, T>) -> Var<'t, T> {
        match self {
            Activation::Relu => x.relu(),
            Activation::Tanh => x.tanh(),
            Activation::Sigmoid => x.sigmoid(),
        }
    }

    /// The initialisation suited to layers feeding this nonlinearity.
    pub fn init(self) -> Init {
        match self {
            Activation::Relu => Init::HeNormal,
            Activation::Tanh | Activation::Sigmoid => Init::XavierUniform,
        }
    }
}

/// A multi-layer perceptron: [`Linear`] layers with an [`Activation`] between them (none after
/// the last, which returns raw scores, e.g. logits).
#[derive(Clone, Debug)]
pub struct Mlp {
    /// The layers, input first.
    pub layers: Vec<Linear>,
    /// The hidden nonlinearity.
    pub activation: Activation,
}

impl Mlp {
    /// Layers of sizes `sizes[0] → sizes[1] → … → sizes[n]`, named `{name}.{k}.weight` /
    /// `{name}.{k}.bias`, initialised for `activation` (the output layer with Xavier), seeded.
    /// The names and layouts are those of a PyTorch module holding the layers as
    /// `self.{name} = nn.ModuleList([nn.Linear(..), ..])`, so its `state_dict` loads directly
    /// (see `ParamStore::load` behind the `safetensors` feature).
    #[track_caller]
    pub fn new<T: Float>(
        store: &mut ParamStore<T>,
        name: &str,
        sizes: &[usize],
        activation: Activation,
        seed: u64,
    ) -> Self {
        assert!(
            sizes.len() >= 2,
            "tapegrad: an Mlp needs at least an input and an output size"
        );
        let n = sizes.len() - 1;
        let layers = (0..n)
            .map(|k| {
                let init = if k + 1 == n {
                    Init::XavierUniform
                } else {
                    activation.init()
                };
                let s = seed.wrapping_mul(0x9E37_79B9).wrapping_add(k as u64);
                Linear::new(store, &format!("{name}.{k}"), sizes[k], sizes[k + 1], init, s)
            })
            .collect();
        Mlp { layers, activation }
    }

    /// Runs the layers on `x: [batch, sizes[0]]`, returning `[batch, sizes[n]]`.
    #[track_caller]
    pub fn forward<'t, T: Float>(&self, p: &Params<'t, T>, x: Var<'t, T>) -> Var<'t, T> {
        let mut h = x;
        for (k, l) in self.layers.iter().enumerate() {
            h = l.forward(p, h);
            if k + 1 < self.layers.len() {
                h = self.activation.apply(h);
            }
        }
        h
    }
}

/// One-hot rows: `[labels.len(), classes]` with a 1 at each label.
///
/// ```
/// let t = tapegrad::nn::one_hot::<f32>(&[2, 0], 3);
/// assert_eq!(t.to_vec(), vec![0.0, 0.0, 1.0, 1.0, 0.0, 0.0]);
/// ```
#[track_caller]
pub fn one_hot<T: Float>(labels: &[usize], classes: usize) -> Tensor<T> {
    let mut t = Tensor::zeros([labels.len(), classes]);
    let d = t.data_mut();
    for (r, &l) in labels.iter().enumerate() {
        assert!(l < classes, "tapegrad: label {l} out of range for {classes} classes");
        d[r * classes + l] = T::ONE;
    }
    t
}

/// The index of the largest entry of each row of a `[rows, cols]` tensor (first one on ties).
///
/// ```
/// let s = tapegrad::Tensor::from_vec(vec![0.1, 0.7, 0.2, 0.9, 0.05, 0.05], [2, 3]);
/// assert_eq!(tapegrad::nn::argmax_rows(&s), vec![1, 0]);
/// ```
pub fn argmax_rows<T: Float>(scores: &Tensor<T>) -> Vec<usize> {
    let cols = *scores.shape().last().unwrap_or(&1);
    scores
        .data()
        .chunks(cols.max(1))
        .map(|row| {
            let mut best = 0;
            for (j, &v) in row.iter().enumerate() {
                if v > row[best] {
                    best = j;
                }
            }
            best
        })
        .collect()
}
