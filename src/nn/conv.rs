//! Convolutional layers: [`Conv2d`] (parameters in a [`ParamStore`]) and the parameter-free
//! [`MaxPool2d`].

use super::{Init, ParamId, ParamStore, Params};
use crate::autodiff::tape::Var;
use crate::core::float::Float;
use crate::ops::conv::{ConvOptions, Hw};
use crate::tensor::Tensor;

/// A 2-D convolution layer, PyTorch's `nn.Conv2d`: `{name}.weight` of shape
/// `[out, in/groups, kh, kw]` and `{name}.bias` of shape `[out]` (the names and layouts of a
/// PyTorch `state_dict`), applied to `[batch, in, h, w]` inputs with [`Var::conv2d`].
///
/// ```
/// use tapegrad::nn::{Conv2d, Init, ParamStore};
/// use tapegrad::ops::conv::ConvOptions;
/// use tapegrad::{Tape, Tensor};
/// let mut store = ParamStore::<f32>::new();
/// let conv = Conv2d::new(&mut store, "conv1", 1, 8, 3, ConvOptions::new().padding(1), Init::HeUniform, 7);
/// assert_eq!(store.by_name("conv1.weight").unwrap().shape(), &[8, 1, 3, 3]);
/// assert_eq!(store.by_name("conv1.bias").unwrap().shape(), &[8]);
/// let tape = Tape::new();
/// let p = store.bind(&tape);
/// let y = conv.forward(&p, tape.constant(Tensor::zeros([2, 1, 8, 8])));
/// assert_eq!(y.shape().as_slice(), &[2, 8, 8, 8]);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Conv2d {
    /// The weight's id (`"{name}.weight"`, `[out, in/groups, kh, kw]`).
    pub weight: ParamId,
    /// The bias's id (`"{name}.bias"`, `[out]`).
    pub bias: ParamId,
    /// Input channels.
    pub inputs: usize,
    /// Output channels.
    pub outputs: usize,
    /// Kernel size `[kh, kw]`.
    pub kernel: [usize; 2],
    /// Stride, padding, dilation and groups.
    pub options: ConvOptions,
}

impl Conv2d {
    /// Adds `{name}.weight` (`[outputs, inputs/groups, kh, kw]`, drawn from `init` with fan-in
    /// `(inputs/groups)·kh·kw` and fan-out `(outputs/groups)·kh·kw` — `Init::HeUniform` is the
    /// Kaiming-uniform family PyTorch uses) and `{name}.bias` (zeros, `[outputs]`) to the store.
    /// Panics when `groups` is 0 or does not divide both channel counts, or the kernel is empty.
    #[track_caller]
    #[allow(clippy::too_many_arguments)]
    pub fn new<T: Float>(
        store: &mut ParamStore<T>,
        name: &str,
        inputs: usize,
        outputs: usize,
        kernel: impl Into<Hw>,
        options: ConvOptions,
        init: Init,
        seed: u64,
    ) -> Self {
        let kernel = kernel.into().0;
        let g = options.groups;
        assert!(
            g > 0 && inputs.is_multiple_of(g) && outputs.is_multiple_of(g),
            "tapegrad: Conv2d {name:?}: {g} groups must divide {inputs} input and {outputs} output channels"
        );
        assert!(
            !kernel.contains(&0),
            "tapegrad: Conv2d {name:?}: the kernel {kernel:?} is empty"
        );
        let kk = kernel[0] * kernel[1];
        let (fan_in, fan_out) = (inputs / g * kk, outputs / g * kk);
        let shape = [outputs, inputs / g, kernel[0], kernel[1]];
        let weight = store.insert(format!("{name}.weight"), init.tensor(shape, fan_in, fan_out, seed));
        let bias = store.insert(format!("{name}.bias"), Tensor::zeros([outputs]));
        Conv2d {
            weight,
            bias,
            inputs,
            outputs,
            kernel,
            options,
        }
    }

    /// The convolution of `x: [batch, inputs, h, w]` plus the bias: `[batch, outputs, oh, ow]`.
    #[track_caller]
    pub fn forward<'t, T: Float>(&self, p: &Params<'t, T>, x: Var<'t, T>) -> Var<'t, T> {
        x.conv2d(p[self.weight], Some(p[self.bias]), self.options)
    }
}

/// 2-D max pooling as a layer (no parameters): [`Var::max_pool2d`] with a fixed window.
///
/// ```
/// use tapegrad::nn::MaxPool2d;
/// use tapegrad::{Tape, Tensor};
/// let tape = Tape::<f64>::new();
/// let pool = MaxPool2d::new(2); // stride = kernel, no padding (PyTorch's defaults)
/// let y = pool.forward(tape.constant(Tensor::zeros([1, 3, 8, 8])));
/// assert_eq!(y.shape().as_slice(), &[1, 3, 4, 4]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxPool2d {
    /// Window `[kh, kw]`.
    pub kernel: [usize; 2],
    /// Stride `[sh, sw]`.
    pub stride: [usize; 2],
    /// Padding `[ph, pw]` (at most half the window).
    pub padding: [usize; 2],
}

impl MaxPool2d {
    /// A window of `kernel` moved by `kernel` (PyTorch's default stride), no padding.
    pub fn new(kernel: impl Into<Hw>) -> Self {
        let k = kernel.into().0;
        MaxPool2d {
            kernel: k,
            stride: k,
            padding: [0, 0],
        }
    }

    /// The same window with another stride.
    pub fn stride(mut self, s: impl Into<Hw>) -> Self {
        self.stride = s.into().0;
        self
    }

    /// The same window with padding.
    pub fn padding(mut self, p: impl Into<Hw>) -> Self {
        self.padding = p.into().0;
        self
    }

    /// The maximum of each window of `x: [batch, c, h, w]`.
    #[track_caller]
    pub fn forward<'t, T: Float>(&self, x: Var<'t, T>) -> Var<'t, T> {
        x.max_pool2d(self.kernel, self.stride, self.padding)
    }
}
