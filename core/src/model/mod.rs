//! The networks, one concept per file: the DINO Vision Transformer, the ResNet (DINO's and
//! PAWS's ImageNet backbone) and, for PAWS, the Wide ResNet; every module built from a parameter source ([`params`]).

mod attention;
mod attention_kernel;
#[cfg(any(feature = "flex", feature = "cube"))]
mod attention_sizes;
mod batch_norm;
mod block;
pub mod conv;
#[cfg(feature = "cube")]
pub mod cube_attention;
mod cube_gelu;
mod drop_path;
#[cfg(feature = "flex")]
pub mod flex_attention;
#[cfg(feature = "flex")]
pub mod flex_batch_norm;
#[cfg(feature = "flex")]
pub mod flex_conv;
#[cfg(feature = "flex")]
pub mod flex_gelu;
#[cfg(feature = "flex")]
pub mod flex_layer_norm;
#[cfg(feature = "flex")]
pub mod flex_linear;
#[cfg(all(test, feature = "flex"))]
mod flex_test_support;
#[cfg(feature = "flex")]
pub mod flex_weight_norm;
mod l2_norm;
pub mod params;
mod patch_embed;
pub mod pos_embed;
mod precision;
pub mod resnet;
mod vit;
pub mod weight_norm;
pub mod wide_resnet;

pub use attention::{SelfAttention, composed_attention};
pub use attention_kernel::AttentionKernel;
pub use batch_norm::{BN_EPS, BN_MOMENTUM, BatchNorm};
pub use block::{Block, BlockParams, Mlp};
pub use drop_path::DropPath;
pub use l2_norm::l2_normalize_rows;
pub use patch_embed::PatchEmbed;
pub use precision::Precision;
pub use vit::{Features, VisionTransformer, VitParams};

/// The exact (erf) GELU of the ViT's MLPs and the DINO head: on burn-flex through
/// [`flex_gelu`]'s kernels (with the `flex` feature), elsewhere Burn's, with its exact
/// gradient on CubeCL devices ([`cube_gelu`]).
pub fn gelu<const D: usize>(x: burn::tensor::Tensor<D>) -> burn::tensor::Tensor<D> {
    #[cfg(feature = "flex")]
    {
        flex_gelu::gelu(x)
    }
    #[cfg(not(feature = "flex"))]
    {
        cube_gelu::gelu(x)
    }
}

/// `norm(x)` (Burn's `LayerNorm::forward`; `eps` its epsilon, which Burn keeps private): under
/// autodiff on burn-flex through [`flex_layer_norm`] (with the `flex` feature), elsewhere
/// Burn's.
pub fn layer_norm<const D: usize>(
    norm: &burn::nn::LayerNorm,
    eps: f64,
    x: burn::tensor::Tensor<D>,
) -> burn::tensor::Tensor<D> {
    #[cfg(feature = "flex")]
    if let Some(y) = flex_layer_norm::layer_norm(norm, eps, &x) {
        return y;
    }
    let _ = eps;
    norm.forward(x)
}

/// `layer(x)` (Burn's `Linear::forward`): on burn-flex through [`flex_linear`]'s products
/// (with the `flex` feature), elsewhere Burn's.
pub fn linear<const D: usize>(
    layer: &burn::nn::Linear,
    x: burn::tensor::Tensor<D>,
) -> burn::tensor::Tensor<D> {
    linear_with(x, layer.weight.val(), layer.bias.as_ref().map(|b| b.val()))
}

/// `x @ weight (+ bias)` over the last dimension of `x`, `weight` `[in, out]` (Burn's
/// `module::linear`): on burn-flex through [`flex_linear`], elsewhere Burn's.
pub fn linear_with<const D: usize>(
    x: burn::tensor::Tensor<D>,
    weight: burn::tensor::Tensor<2>,
    bias: Option<burn::tensor::Tensor<1>>,
) -> burn::tensor::Tensor<D> {
    #[cfg(feature = "flex")]
    {
        flex_linear::linear(x, weight, bias)
    }
    #[cfg(not(feature = "flex"))]
    {
        burn::tensor::module::linear(x, weight, bias)
    }
}
