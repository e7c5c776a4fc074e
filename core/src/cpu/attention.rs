//! Multi-head self-attention straight from the fused `qkv` buffer: no head split, no
//! permute, no merge. Q, K and V of a head are strided views of `qkv` (`[B*T, 3D]`); the
//! output of a head is written into its columns of `out` (`[B*T, D]`).
//!
//! Tasks are (image, head, block of queries). Inside a task the keys are taken a block at
//! a time with an online softmax (the running row maximum and sum of FlashAttention): the
//! score tile stays in the core's L2 cache however long the sequence is (ViT-S/8 at 480 px
//! has 3,601 tokens: one full score row block would be 3.7 MB), and the division by the
//! softmax sum is applied once to the `hd` output columns instead of to every score.
//! Measured on the 2-core benchmark machine this is as fast as the full-row softmax it
//! replaced (within the machine's noise at 197, 785 and 3,601 tokens) with a bounded score
//! buffer per task (256 KiB instead of 256 x T floats).

use super::kernels::{online_softmax_rows, softmax};
use super::matmul::gemm_strided;
use super::parallel::{SharedMut, for_each_task_spinning};

/// Query rows per task.
const QUERY_BLOCK: usize = 256;
/// Keys per score tile: 256 x 256 floats = 256 KiB, half of this machine's L2.
const KEY_BLOCK: usize = 256;

/// `out = softmax(Q K^T / sqrt(hd)) V` for every image and head.
pub fn attention(qkv: &[f32], out: &mut [f32], b: usize, t: usize, d: usize, heads: usize) {
    assert!(qkv.len() >= b * t * 3 * d && out.len() >= b * t * d);
    let hd = d / heads;
    let scale = (hd as f32).powf(-0.5);
    // Blocks of near-equal size: 3,601 tokens make 15 blocks of at most 241 rows, not 14 of
    // 256 and one of 17.
    let qblocks = t.div_ceil(QUERY_BLOCK);
    let qrows = t.div_ceil(qblocks);
    let kblocks = t.div_ceil(KEY_BLOCK);
    let krows = t.div_ceil(kblocks);
    let dst = SharedMut(out.as_mut_ptr());
    for_each_task_spinning(b * heads * qblocks, |task| {
        let (bi, rest) = (task / (heads * qblocks), task % (heads * qblocks));
        let (h, qb) = (rest / qblocks, rest % qblocks);
        let q0 = qb * qrows;
        let qn = qrows.min(t - q0);
        let base = bi * t * 3 * d;
        let mut scores = vec![0f32; qn * krows];
        let mut row_max = vec![f32::NEG_INFINITY; qn];
        let mut row_sum = vec![0f32; qn];
        let mut rescale = vec![0f32; qn];
        let o = dst.ptr().wrapping_add((bi * t + q0) * d + h * hd);
        // SAFETY: reads stay inside image `bi` of `qkv`; each task writes its own
        // (rows q0..q0+qn of image bi) x (columns of head h) region of `out`.
        unsafe {
            let q = qkv.as_ptr().add(base + q0 * 3 * d + h * hd);
            for kb in 0..kblocks {
                let k0 = kb * krows;
                let kn = krows.min(t - k0);
                let k = qkv.as_ptr().add(base + k0 * 3 * d + d + h * hd);
                let v = qkv.as_ptr().add(base + k0 * 3 * d + 2 * d + h * hd);
                // scores = scale * Q K^T: K^T is K read with swapped strides
                gemm_strided(
                    qn,
                    kn,
                    hd,
                    scores.as_mut_ptr(),
                    kn,
                    false,
                    q,
                    (3 * d, 1),
                    k,
                    (1, 3 * d),
                    scale,
                );
                let first = kb == 0;
                // scores -> exp(scores - running max); earlier output rows rescaled to it
                online_softmax_rows(
                    &mut scores[..qn * kn],
                    kn,
                    &mut row_max,
                    &mut row_sum,
                    &mut rescale,
                );
                if !first {
                    scale_rows(o, d, hd, &rescale);
                }
                gemm_strided(
                    qn,
                    hd,
                    kn,
                    o,
                    d,
                    !first,
                    scores.as_ptr(),
                    (kn, 1),
                    v,
                    (3 * d, 1),
                    1.0,
                );
            }
            let inv: Vec<f32> = row_sum.iter().map(|s| 1.0 / s).collect();
            scale_rows(o, d, hd, &inv);
        }
    });
}

/// Multiplies row `r` of the `rows.len() x cols` block at `o` (row stride `stride`) by
/// `rows[r]`.
///
/// # Safety
/// `o` must cover the block, and no other thread may touch it meanwhile.
unsafe fn scale_rows(o: *mut f32, stride: usize, cols: usize, rows: &[f32]) {
    for (r, &s) in rows.iter().enumerate() {
        // SAFETY: forwarded from the caller.
        let row = unsafe { std::slice::from_raw_parts_mut(o.add(r * stride), cols) };
        row.iter_mut().for_each(|v| *v *= s);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Attention in f64 with a plain softmax, one head at a time.
    fn naive(qkv: &[f32], b: usize, t: usize, d: usize, heads: usize) -> Vec<f64> {
        let hd = d / heads;
        let scale = (hd as f64).powf(-0.5);
        let at = |bi: usize, i: usize, c: usize| qkv[(bi * t + i) * 3 * d + c] as f64;
        let mut out = vec![0f64; b * t * d];
        for bi in 0..b {
            for h in 0..heads {
                for i in 0..t {
                    let s: Vec<f64> = (0..t)
                        .map(|j| {
                            (0..hd)
                                .map(|c| at(bi, i, h * hd + c) * at(bi, j, d + h * hd + c))
                                .sum::<f64>()
                                * scale
                        })
                        .collect();
                    let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = s.iter().map(|v| (v - m).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for c in 0..hd {
                        out[(bi * t + i) * d + h * hd + c] = (0..t)
                            .map(|j| e[j] / z * at(bi, j, 2 * d + h * hd + c))
                            .sum();
                    }
                }
            }
        }
        out
    }

    #[test]
    fn blocked_online_softmax_equals_plain_attention() {
        // 1,100 tokens: five key and five query blocks of 220; 5 tokens: one of each; large
        // scores, so the running maximum really moves between key blocks
        for &(b, t) in &[(2, 1100), (1, 5)] {
            let (d, heads) = (32, 2);
            let qkv: Vec<f32> = (0..b * t * 3 * d)
                .map(|i: usize| ((i.wrapping_mul(2_654_435_761) >> 7) % 1000) as f32 / 125.0 - 4.0)
                .collect();
            let mut out = vec![0f32; b * t * d];
            attention(&qkv, &mut out, b, t, d, heads);
            let want = naive(&qkv, b, t, d, heads);
            let worst = out
                .iter()
                .zip(&want)
                .map(|(&a, &w)| (a as f64 - w).abs())
                .fold(0.0, f64::max);
            assert!(worst < 2e-5, "t = {t}: max abs error {worst:e}");
        }
    }
}
