//! GELU with its exact gradient on Burn's CubeCL backends (wgpu, Vulkan, Metal, CUDA).
//!
//! Why: Burn 0.22's GELU forward is the exact one (erf), but its default `gelu_backward`, which
//! the CubeCL backends do not override, is the derivative of the *tanh approximation*: every
//! gradient through an MLP on a GPU was off by up to ~7e-4 of the exact one (found by
//! `dino-device-ops`, `d/dx gelu`, on SwiftShader; burn-flex, with `flex_gelu`, and LibTorch
//! implement the exact gradient themselves). PyTorch's `nn.GELU()`, which the official code
//! uses, is the exact one both ways. Under autodiff on a CubeCL device the GELU is written
//! out as `x / 2 * (1 + erf(x / sqrt 2))`, whose derivative autodiff takes exactly from erf's
//! (`2 / sqrt(pi) * exp(-t^2)`); the forward values are the same ops Burn's own GELU runs.

use burn::tensor::Tensor;

/// Whether `x` lives on a CubeCL device under autodiff (where Burn's GELU gradient is the
/// approximate one). Burn exposes the backend only through its dispatch enum, whose variants
/// depend on Burn's features, so its debug form names it.
fn needs_exact_gradient<const D: usize>(x: &Tensor<D>) -> bool {
    let device = x.device();
    device.is_autodiff() && format!("{:?}", device.inner()).starts_with("Device<Cube")
}

/// `gelu(x)` (exact, erf) with the exact gradient on every backend this is used for.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if needs_exact_gradient(&x) {
        let cdf = (x.clone() / std::f32::consts::SQRT_2).erf() + 1.0;
        x * cdf / 2.0
    } else {
        burn::tensor::activation::gelu(x)
    }
}
