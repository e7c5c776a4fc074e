//! Element-wise and row kernels of the CPU engine, written as straight-line loops that the
//! compiler vectorises; `multiversion` compiles AVX-512, AVX2+FMA (x86-64) and NEON (aarch64)
//! copies picked at run time, and a portable one (wasm32 uses simd128 when built with it).

use multiversion::multiversion;

/// `a * b + c`, as one fused multiply-add where `FMA` says the instruction exists (the
/// kernels below pass `true` from their FMA-compiled copies: half the instructions of the
/// polynomials) and as two operations elsewhere (`mul_add` without the instruction is a
/// slow library call).
#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

/// `exp` for f32 (Cephes `expf`: range reduction by ln 2, degree-6 polynomial), accurate
/// to about 1 ulp, branch-free so that loops over it vectorise. Below -87.3 (where the
/// result would be subnormal) it returns 0, as a flush-to-zero unit would: softmax
/// probabilities that small would otherwise make the products that use them run on
/// subnormal numbers.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    exp_with::<false>(x)
}

#[inline(always)]
fn exp_with<const FMA: bool>(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    // Adding 1.5 * 2^23 rounds to an integer held in the low mantissa bits: no float-to-int
    // conversion (saturating in Rust, which keeps loops scalar) and no `floor`.
    const MAGIC: f32 = 12_582_912.0;
    let underflow = x < -87.3;
    let x = x.clamp(-87.3, 88.7);
    let shifted = madd::<FMA>(x, LOG2E, MAGIC);
    let n = shifted - MAGIC;
    let r = madd::<FMA>(-n, C2, madd::<FMA>(-n, C1, x));
    let mut p = 1.987_569_1e-4f32;
    p = madd::<FMA>(p, r, 1.398_199_9e-3);
    p = madd::<FMA>(p, r, 8.333_452e-3);
    p = madd::<FMA>(p, r, 4.166_579_6e-2);
    p = madd::<FMA>(p, r, 1.666_666_5e-1);
    p = madd::<FMA>(p, r, 0.5);
    let y = madd::<FMA>(p * r, r, r) + 1.0;
    let bits = shifted
        .to_bits()
        .wrapping_sub(MAGIC.to_bits())
        .wrapping_add(127)
        << 23;
    if underflow {
        0.0
    } else {
        y * f32::from_bits(bits)
    }
}

/// `erf` by Abramowitz & Stegun 7.1.26 (max abs error 1.5e-7), the approximation PyTorch's
/// vectorised CPU `erf` uses.
#[inline(always)]
pub fn erf_f32(x: f32) -> f32 {
    erf_with::<false>(x)
}

#[inline(always)]
fn erf_with<const FMA: bool>(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_7,
        -1.453_152,
        1.061_405_4,
    ];
    let ax = x.abs();
    let t = 1.0 / madd::<FMA>(P, ax, 1.0);
    let mut poly = A[4];
    for a in [A[3], A[2], A[1], A[0]] {
        poly = madd::<FMA>(poly, t, a);
    }
    let y = madd::<FMA>(-(poly * t), exp_with::<FMA>(-ax * ax), 1.0);
    y.copysign(x)
}

/// Exact (erf) GELU, `nn.GELU()`'s default.
#[inline(always)]
pub fn gelu_f32(x: f32) -> f32 {
    gelu_with::<false>(x)
}

#[inline(always)]
fn gelu_with<const FMA: bool>(x: f32) -> f32 {
    let h = 0.5 * x;
    madd::<FMA>(h, erf_with::<FMA>(x * std::f32::consts::FRAC_1_SQRT_2), h)
}

/// Whether the copy of a multiversioned kernel being compiled has fused multiply-add
/// (FMA3 on x86-64; every AArch64 core).
macro_rules! has_fma {
    () => {
        multiversion::target::target_cfg_f!(any(target_feature = "fma", target_arch = "aarch64"))
    };
}

/// `row[i] = gelu(row[i] + bias[i])`.
#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512dq+avx512vl+avx2+fma",
    "x86_64+avx2+fma",
    "x86_64+sse4.1",
    "aarch64+neon"
))]
pub fn bias_gelu(row: &mut [f32], bias: &[f32]) {
    const FMA: bool = has_fma!();
    for (v, b) in row.iter_mut().zip(bias) {
        *v = gelu_with::<FMA>(*v + *b);
    }
}

/// `out[i] = gelu(x[i])` (exact GELU).
#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512dq+avx512vl+avx2+fma",
    "x86_64+avx2+fma",
    "x86_64+sse4.1",
    "aarch64+neon"
))]
pub fn gelu_into(x: &[f32], out: &mut [f32]) {
    const FMA: bool = has_fma!();
    for (o, v) in out.iter_mut().zip(x) {
        *o = gelu_with::<FMA>(*v);
    }
}

/// `dx[i] = dy[i] * gelu'(x[i])`, with `gelu'(x) = Phi(x) + x phi(x)` (the standard normal
/// distribution and density): the exact GELU's gradient, as PyTorch's `gelu_backward`.
#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512dq+avx512vl+avx2+fma",
    "x86_64+avx2+fma",
    "x86_64+sse4.1",
    "aarch64+neon"
))]
pub fn gelu_backward(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    const FMA: bool = has_fma!();
    // 1 / sqrt(2 pi)
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    for ((d, v), g) in dx.iter_mut().zip(x).zip(dy) {
        let x = *v;
        let cdf = madd::<FMA>(
            0.5,
            erf_with::<FMA>(x * std::f32::consts::FRAC_1_SQRT_2),
            0.5,
        );
        let pdf = INV_SQRT_2PI * exp_with::<FMA>(-0.5 * x * x);
        *d = *g * madd::<FMA>(x, pdf, cdf);
    }
}

/// `row[i] += bias[i]`.
#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512dq+avx512vl+avx2+fma",
    "x86_64+avx2+fma",
    "x86_64+sse4.1",
    "aarch64+neon"
))]
pub fn add_bias(row: &mut [f32], bias: &[f32]) {
    for (v, b) in row.iter_mut().zip(bias) {
        *v += *b;
    }
}

/// Lanes of the reductions below: 8 independent accumulators, which the compiler maps onto
/// one AVX register (a plain `fold` stays scalar: float addition is not associative).
const LANES: usize = 8;

#[inline(always)]
fn lanes_sum(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            acc[i] += f(c[i]);
        }
    }
    acc.iter().sum::<f32>() + tail.iter().map(|&v| f(v)).sum::<f32>()
}

#[inline(always)]
fn lanes_max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            acc[i] = if c[i] > acc[i] { c[i] } else { acc[i] };
        }
    }
    acc.iter()
        .chain(tail)
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m })
}

/// In-place softmax of one row (max-subtracted, as PyTorch).
#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512dq+avx512vl+avx2+fma",
    "x86_64+avx2+fma",
    "x86_64+sse4.1",
    "aarch64+neon"
))]
pub fn softmax(row: &mut [f32]) {
    const FMA: bool = has_fma!();
    let max = lanes_max(row);
    for v in row.iter_mut() {
        *v = exp_with::<FMA>(*v - max);
    }
    let inv = 1.0 / lanes_sum(row, |v| v);
    for v in row.iter_mut() {
        *v *= inv;
    }
}

/// One key block of an online softmax over the rows of `scores` (`width` columns each):
/// every row becomes `exp(row - m)` with `m` the running maximum over this and earlier
/// blocks (kept in `row_max`), `row_sum` accumulates the row sums in the same frame, and
/// `rescale[r] = exp(old max - new max)` is what earlier partial results of row `r` must
/// be multiplied by (the first block sees `-inf` as the old maximum: the factor is ~0 and
/// multiplies zeros).
#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512dq+avx512vl+avx2+fma",
    "x86_64+avx2+fma",
    "x86_64+sse4.1",
    "aarch64+neon"
))]
pub fn online_softmax_rows(
    scores: &mut [f32],
    width: usize,
    row_max: &mut [f32],
    row_sum: &mut [f32],
    rescale: &mut [f32],
) {
    const FMA: bool = has_fma!();
    for (r, row) in scores.chunks_exact_mut(width).enumerate() {
        let old = row_max[r];
        let max = lanes_max(row).max(old);
        // two plain loops: the exp loop vectorises cleanly, the row is in L1 for the sum
        for v in row.iter_mut() {
            *v = exp_with::<FMA>(*v - max);
        }
        let sum = lanes_sum(row, |v| v);
        let factor = exp_with::<FMA>(old - max);
        rescale[r] = factor;
        row_sum[r] = row_sum[r] * factor + sum;
        row_max[r] = max;
    }
}

/// LayerNorm of one row into `out` (two-pass mean and biased variance, as PyTorch).
#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512dq+avx512vl+avx2+fma",
    "x86_64+avx2+fma",
    "x86_64+sse4.1",
    "aarch64+neon"
))]
pub fn layer_norm(x: &[f32], gamma: &[f32], beta: &[f32], eps: f32, out: &mut [f32]) {
    let n = x.len() as f32;
    let mean = lanes_sum(x, |v| v) / n;
    let var = lanes_sum(x, |v| (v - mean) * (v - mean)) / n;
    let rstd = 1.0 / (var + eps).sqrt();
    for i in 0..x.len() {
        out[i] = (x[i] - mean) * rstd * gamma[i] + beta[i];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate() {
        let mut worst = 0f32;
        let mut x = -80.0f32;
        while x < 80.0 {
            let e = (exp_f32(x) - x.exp()).abs() / x.exp();
            worst = worst.max(e);
            x += 0.0137;
        }
        assert!(worst < 3e-7, "relative error {worst}");
    }

    #[test]
    fn erf_and_gelu_are_accurate() {
        let mut x = -6.0f64;
        while x < 6.0 {
            let want = libm_erf(x);
            // A&S 7.1.26 is 1.5e-7 in exact arithmetic; f32 rounding brings it to ~4e-7
            assert!((erf_f32(x as f32) as f64 - want).abs() < 5e-7, "erf({x})");
            x += 0.001;
        }
        assert_eq!(gelu_f32(0.0), 0.0);
        assert!((gelu_f32(1.0) - 0.841_344_7).abs() < 1e-6);
        assert!((gelu_f32(-3.0) - (-0.004_049_8)).abs() < 1e-6);
    }

    // erf by its Taylor series / continued fraction, in f64, for the test only
    fn libm_erf(x: f64) -> f64 {
        // high-precision series for |x| < 3, asymptotic 1 - erfc beyond
        if x.abs() < 3.0 {
            let mut sum = 0.0f64;
            let mut term = x;
            let mut n = 0.0;
            while term.abs() > 1e-17 * sum.abs().max(1e-300) {
                sum += term / (2.0 * n + 1.0);
                n += 1.0;
                term *= -x * x / n;
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            let s = x.signum();
            let x = x.abs();
            // continued fraction for erfc
            let mut f = 0.0;
            for k in (1..60).rev() {
                f = (k as f64 / 2.0) / (x + f);
            }
            s * (1.0 - (-x * x).exp() / std::f64::consts::PI.sqrt() / (x + f))
        }
    }

    /// The dispatched copies (FMA on this machine's x86-64 or AArch64) against f64.
    #[test]
    fn dispatched_gelu_and_softmax_are_accurate() {
        let xs: Vec<f32> = (0..12_000).map(|i| i as f32 * 0.001 - 6.0).collect();
        let mut got = xs.clone();
        bias_gelu(&mut got, &vec![0.0; xs.len()]);
        for (&x, &g) in xs.iter().zip(&got) {
            let want = 0.5 * x as f64 * (1.0 + libm_erf(x as f64 / std::f64::consts::SQRT_2));
            assert!(
                (g as f64 - want).abs() < 1e-6 * (x.abs() as f64).max(1.0),
                "gelu({x})"
            );
        }
        let mut row: Vec<f32> = (0..1000).map(|i| (i % 97) as f32 * 0.37 - 20.0).collect();
        let max = row.iter().cloned().fold(f32::MIN, f32::max) as f64;
        let z: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
        let want: Vec<f64> = row.iter().map(|&v| (v as f64 - max).exp() / z).collect();
        softmax(&mut row);
        for (g, w) in row.iter().zip(&want) {
            assert!(
                (*g as f64 - w).abs() <= 1e-6 * w + 1e-12,
                "softmax {g} vs {w}"
            );
        }
    }

    #[test]
    fn softmax_and_layer_norm() {
        let mut r = vec![1.0, 2.0, 3.0, 1000.0];
        softmax(&mut r);
        assert!((r.iter().sum::<f32>() - 1.0).abs() < 1e-6 && r[3] > 0.999);
        let x = [1.0, 2.0, 3.0, 4.0];
        let mut out = [0.0; 4];
        layer_norm(&x, &[1.0; 4], &[0.0; 4], 1e-6, &mut out);
        let want = [-1.341_640_6, -0.447_213_6, 0.447_213_6, 1.341_640_6];
        for (a, b) in out.iter().zip(want) {
            assert!((a - b).abs() < 1e-5);
        }
    }
}
