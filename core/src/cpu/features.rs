//! Which instruction sets the CPU engine runs on here, chosen at run time: a benchmark table
//! means little without it (the same binary runs AVX2 kernels on one server and AVX-512 ones
//! on the next), so `dino-bench` prints this next to every table.

use multiversion::multiversion;
use multiversion::target::match_target;

/// What the engine picked on this CPU, and the CPU's features that matter for it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CpuFeatures {
    /// Micro-kernels of the matrix products (the `gemm` crate's run-time choice).
    pub matmul: &'static str,
    /// Copy of the element-wise kernels (exp, GELU, softmax, LayerNorm) in use.
    pub elementwise: &'static str,
    /// Features this CPU reports among those that matter for f32/bf16 products (AMX cannot be
    /// detected on stable Rust yet).
    pub available: Vec<&'static str>,
}

impl std::fmt::Display for CpuFeatures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "matrix products {}, element-wise kernels {}; CPU has {}",
            self.matmul,
            self.elementwise,
            if self.available.is_empty() {
                "none of avx2/fma/avx512f/avx512bf16/avxvnni/neon".to_string()
            } else {
                self.available.join(" ")
            }
        )
    }
}

/// The features in use on this machine.
pub fn cpu_features() -> CpuFeatures {
    CpuFeatures {
        matmul: matmul_kernels(),
        elementwise: elementwise_kernels(),
        available: available(),
    }
}

/// Mirrors gemm 0.19's dispatch (`gemm-common`'s `init_gemm_fn`, built with `x86-v4` on
/// x86-64 and `wasm-simd128-enable` on wasm32).
fn matmul_kernels() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            "avx512f"
        } else if std::arch::is_x86_feature_detected!("fma") {
            "avx2+fma"
        } else {
            "scalar"
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("neon") {
            "neon"
        } else {
            "scalar"
        }
    }
    #[cfg(target_arch = "wasm32")]
    {
        if cfg!(target_feature = "simd128") {
            "simd128"
        } else {
            "scalar"
        }
    }
    #[cfg(not(any(
        target_arch = "x86_64",
        target_arch = "aarch64",
        target_arch = "wasm32"
    )))]
    {
        "scalar"
    }
}

/// The copy `multiversion` dispatches to, with the same target list as the kernels.
fn elementwise_kernels() -> &'static str {
    [
        "avx512f+fma",
        "avx2+fma",
        "sse4.1",
        "neon",
        "simd128",
        "portable",
    ][elementwise_copy()]
}

#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512dq+avx512vl+avx2+fma",
    "x86_64+avx2+fma",
    "x86_64+sse4.1",
    "aarch64+neon"
))]
fn elementwise_copy() -> usize {
    match_target! {
        "x86_64+avx512f+avx512bw+avx512dq+avx512vl+avx2+fma" => 0,
        "x86_64+avx2+fma" => 1,
        "x86_64+sse4.1" => 2,
        "aarch64+neon" => 3,
        _ => if cfg!(target_feature = "simd128") { 4 } else { 5 },
    }
}

fn available() -> Vec<&'static str> {
    #[allow(unused_mut)]
    let mut out = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        for (name, present) in [
            ("avx2", has!("avx2")),
            ("fma", has!("fma")),
            ("avx512f", has!("avx512f")),
            ("avx512bf16", has!("avx512bf16")),
            ("avxvnni", has!("avxvnni")),
        ] {
            if present {
                out.push(name);
            }
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        use std::arch::is_aarch64_feature_detected as has;
        for (name, present) in [("neon", has!("neon")), ("bf16", has!("bf16"))] {
            if present {
                out.push(name);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernels_in_use_are_among_those_the_cpu_has() {
        let f = cpu_features();
        let line = f.to_string();
        assert!(
            line.contains(f.matmul) && line.contains(f.elementwise),
            "{line}"
        );
        #[cfg(target_arch = "x86_64")]
        {
            if f.matmul == "avx512f" {
                assert!(f.available.contains(&"avx512f"));
            }
            if f.elementwise == "avx512f+fma" {
                assert!(f.available.contains(&"avx512f") && f.available.contains(&"fma"));
            }
            if f.elementwise == "avx2+fma" {
                assert!(f.available.contains(&"avx2") && f.available.contains(&"fma"));
            }
        }
    }
}
