//! Mixed precision, as the official `--use_fp16` (PyTorch AMP) computes, written out because
//! Burn 0.22 has no autocast: the matrix products (every linear layer, the patch
//! convolution, the two products of attention, the head's last layer) take half-precision
//! inputs and give a half-precision result (f32 accumulation inside the kernels), and
//! everything CUDA autocast keeps in f32 stays f32: the residual stream, LayerNorm, softmax,
//! GELU's input, the L2 normalisation, BatchNorm and the loss. The parameters stay f32 (the
//! master weights): their half copies are made in the forward pass, so the gradients that
//! reach the optimiser are f32 and checkpoints do not change with the precision.
//!
//! A module holds its [`Precision`] (f32 by default, so inference is unchanged); the trainer
//! sets it on both networks from the run's config (`--precision`), as the official code runs
//! teacher and student under the same autocast.

use burn::nn::Linear;
use burn::tensor::{DType, FloatDType, Tensor};
use serde::{Deserialize, Serialize};

/// The precision of the matrix products (`--precision`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32 (dino-rs's default; `main_dino.py` defaults to f16 AMP).
    #[default]
    F32,
    /// bfloat16 products (f32's range, 8 bits of mantissa): no loss scaling needed; what
    /// GPUs with bf16 tensor cores (A100, H100/H200) and AVX-512 BF16 / AMX CPUs are fast at.
    Bf16,
    /// float16 products (10 bits of mantissa, range up to 65504) with dynamic loss scaling,
    /// as the official `--use_fp16` (`torch.cuda.amp.GradScaler`).
    F16,
}

impl Precision {
    /// The dtype of the products, `None` for f32.
    pub fn half(self) -> Option<FloatDType> {
        match self {
            Self::F32 => None,
            Self::Bf16 => Some(FloatDType::BF16),
            Self::F16 => Some(FloatDType::F16),
        }
    }

    /// As the flag spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
            Self::F16 => "f16",
        }
    }

    /// Whether the loss must be scaled so that small gradients survive (f16's range).
    pub fn scales_loss(self) -> bool {
        self == Self::F16
    }

    /// `x` in the products' dtype (unchanged in f32 or when it already is).
    pub fn narrow<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self.half() {
            Some(h) if x.dtype() != DType::from(h) => x.cast(h),
            _ => x,
        }
    }

    /// `x` back in f32 (unchanged when it is).
    pub fn widen<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        if x.dtype() == DType::F32 {
            x
        } else {
            x.cast(FloatDType::F32)
        }
    }

    /// `layer(x)` with half inputs and a half result (in f32: [`super::linear`], Burn's
    /// `Linear::forward` or the same products on burn-flex).
    pub fn linear<const D: usize>(self, layer: &Linear, x: Tensor<D>) -> Tensor<D> {
        if self.half().is_none() {
            return super::linear(layer, x);
        }
        burn::tensor::module::linear(
            self.narrow(x),
            self.narrow(layer.weight.val()),
            layer.bias.as_ref().map(|b| self.narrow(b.val())),
        )
    }

    /// `a @ b` with half inputs and a half result.
    pub fn matmul<const D: usize>(self, a: Tensor<D>, b: Tensor<D>) -> Tensor<D> {
        self.narrow(a).matmul(self.narrow(b))
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    #[test]
    fn products_round_their_inputs_and_result_and_widen_back() {
        let dev = Device::flex();
        // 1 + 2^-9 is not a bf16 (8 bits of mantissa): it rounds to 1
        let a = Tensor::<2>::from_data(TensorData::new(vec![1.0f32 + 1.0 / 512.0], [1, 1]), &dev);
        let b = Tensor::<2>::from_data(TensorData::new(vec![3.0f32], [1, 1]), &dev);
        let f32_out = Precision::F32.matmul(a.clone(), b.clone());
        assert_eq!(f32_out.dtype(), DType::F32);
        let got = |t: Tensor<2>| t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()[0];
        assert!((got(f32_out) - 3.0 * (1.0 + 1.0 / 512.0)).abs() < 1e-6);
        let bf = Precision::Bf16.matmul(a.clone(), b.clone());
        assert_eq!(bf.dtype(), DType::BF16);
        let bf = Precision::Bf16.widen(bf);
        assert_eq!(bf.dtype(), DType::F32);
        assert_eq!(got(bf), 3.0);
        // f16 has 10 bits: 1 + 2^-9 survives
        let h = Precision::F16.widen(Precision::F16.matmul(a, b));
        assert!((got(h) - 3.0 * (1.0 + 1.0 / 512.0)).abs() < 1e-3);
    }
}
