//! Multi-head self-attention straight from the fused `qkv` buffer: no head split, no
//! permute, no merge. Q, K and V of a head are strided views of `qkv` (`[B*T, 3D]`); the
//! output of a head is written into its columns of `out` (`[B*T, D]`). Tasks are
//! (image, head, block of queries), so memory stays O(block x T) for long sequences.

use super::kernels::softmax;
use super::matmul::gemm_strided;
use super::parallel::{SharedMut, for_each_task};

/// Query rows per task: bounds the score scratch to 256 x T floats.
const QUERY_BLOCK: usize = 256;

/// `out = softmax(Q K^T / sqrt(hd)) V` for every image and head.
pub fn attention(qkv: &[f32], out: &mut [f32], b: usize, t: usize, d: usize, heads: usize) {
    assert!(qkv.len() >= b * t * 3 * d && out.len() >= b * t * d);
    let hd = d / heads;
    let scale = (hd as f32).powf(-0.5);
    let qblocks = t.div_ceil(QUERY_BLOCK);
    let dst = SharedMut(out.as_mut_ptr());
    for_each_task(b * heads * qblocks, |task| {
        let (bi, rest) = (task / (heads * qblocks), task % (heads * qblocks));
        let (h, qb) = (rest / qblocks, rest % qblocks);
        let q0 = qb * QUERY_BLOCK;
        let qn = QUERY_BLOCK.min(t - q0);
        let base = bi * t * 3 * d;
        let mut scores = vec![0f32; qn * t];
        // SAFETY: reads stay inside image `bi` of `qkv`; each task writes its own
        // (rows q0..q0+qn of image bi) x (columns of head h) region of `out`.
        unsafe {
            let q = qkv.as_ptr().add(base + q0 * 3 * d + h * hd);
            let k = qkv.as_ptr().add(base + d + h * hd);
            let v = qkv.as_ptr().add(base + 2 * d + h * hd);
            // scores = scale * Q K^T: K^T is K read with swapped strides
            gemm_strided(
                qn,
                t,
                hd,
                scores.as_mut_ptr(),
                t,
                false,
                q,
                (3 * d, 1),
                k,
                (1, 3 * d),
                scale,
            );
            for row in scores.chunks_exact_mut(t) {
                softmax(row);
            }
            let o = dst.ptr().add((bi * t + q0) * d + h * hd);
            gemm_strided(
                qn,
                hd,
                t,
                o,
                d,
                false,
                scores.as_ptr(),
                (t, 1),
                v,
                (3 * d, 1),
                1.0,
            );
        }
    });
}

/// The CLS row of every head's attention probabilities, `[B, H, T]` (CLS itself included).
pub fn cls_attention(qkv: &[f32], b: usize, t: usize, d: usize, heads: usize) -> Vec<f32> {
    let hd = d / heads;
    let scale = (hd as f32).powf(-0.5);
    let mut out = vec![0f32; b * heads * t];
    for bi in 0..b {
        let base = bi * t * 3 * d;
        for h in 0..heads {
            let q = &qkv[base + h * hd..base + h * hd + hd];
            let row = &mut out[(bi * heads + h) * t..(bi * heads + h + 1) * t];
            for (j, s) in row.iter_mut().enumerate() {
                let k = &qkv[base + j * 3 * d + d + h * hd..][..hd];
                *s = q.iter().zip(k).map(|(a, b)| a * b).sum::<f32>() * scale;
            }
            softmax(row);
        }
    }
    out
}
