//! The per-parameter updates of a training step as single passes on burn-flex, in place where
//! nothing else holds the buffers: AdamW with `main_dino.py`'s per-tensor gradient clipping
//! (read the parameter, its gradient and the two moments, write the three updated ones) and
//! the teacher's EMA. The same arithmetic as the tensor chains they replace
//! ([`super::optim`], [`super::ema`]), in the same order and precision (f32, the scalars
//! rounded to f32 as Burn rounds them); only the clipping norm is summed in f64 (the chain
//! sums in f32, in its own order).
//!
//! Why: AdamW's chain is thirteen element-wise operations, each a fresh buffer over every
//! parameter; with the DINO head's 65,536 x 256 last layer a ViT-S/16 student has 43 M
//! values, so one step of the chain moved ~6 GB through memory: 0.29-0.37 s of a 4-5 s
//! training step on 2 cores, 0.12-0.16 s in one pass (BENCHMARKS.md, "CPU speed"). Other
//! backends keep the chains (their compilers fuse them).

use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::tensor::{DType, Tensor};

use crate::cpu::parallel::{SharedMut, for_each_piece_mut, for_each_task, map_tasks};
use crate::model::flex_conv::flex_tensor;

/// Values per task.
const CHUNK: usize = 1 << 15;

/// The rates of one AdamW step, as the chain applies them.
#[derive(Clone, Copy, Debug)]
pub struct AdamW {
    pub lr: f64,
    pub weight_decay: f64,
    /// Per-tensor gradient-norm limit; 0 disables clipping.
    pub clip_grad: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// The parameter's step count, this step included (bias corrections).
    pub step: u64,
}

/// Whether `t` is a burn-flex f32 tensor.
fn on_flex(t: &Tensor<1>) -> bool {
    t.dtype() == DType::F32 && t.clone().try_into_primitive::<Flex>().is_ok()
}

/// The contiguous values of a burn-flex tensor (checked by [`on_flex`]).
fn contiguous(t: Tensor<1>) -> FlexTensor {
    t.try_into_primitive::<Flex>()
        .expect("checked by on_flex")
        .to_contiguous()
}

/// The values of a burn-flex tensor in a buffer of its own, to update in place: the tensor's
/// own when nothing else holds it, else a copy.
fn owned(t: Tensor<1>) -> FlexTensor {
    let mut f = contiguous(t);
    if f.try_storage_mut::<f32>().is_some() {
        return f;
    }
    let n = f.storage::<f32>().len();
    flex_tensor(f.storage::<f32>().to_vec(), vec![n])
}

/// Whether [`adamw_step`] applies: every tensor burn-flex f32 with the parameter's size.
pub fn adamw_applies(
    p: &Tensor<1>,
    g: &Tensor<1>,
    moments: Option<(&Tensor<1>, &Tensor<1>)>,
) -> bool {
    let n = p.shape().num_elements();
    let fits = |t: &Tensor<1>| on_flex(t) && t.shape().num_elements() == n;
    fits(p) && fits(g) && moments.is_none_or(|(m, v)| fits(m) && fits(v))
}

/// `(parameter, exp_avg, exp_avg_sq)` after one step from `p`, gradient `g` and the moments
/// (`None`: zeros, the first step), updated in place where nothing else holds them.
///
/// # Panics
/// Where [`adamw_applies`] does not hold.
pub fn adamw_step(
    p: Tensor<1>,
    g: &Tensor<1>,
    moments: Option<(Tensor<1>, Tensor<1>)>,
    h: &AdamW,
) -> (Tensor<1>, Tensor<1>, Tensor<1>) {
    assert!(
        adamw_applies(&p, g, moments.as_ref().map(|(m, v)| (m, v))),
        "adamw_step: burn-flex f32 tensors of one size"
    );
    let n = p.shape().num_elements();
    let gf = contiguous(g.clone());
    let gv = gf.storage::<f32>();
    let mut pf = owned(p);
    let (mut mf, mut vf) = match moments {
        Some((m, v)) => (owned(m), owned(v)),
        None => (
            flex_tensor(vec![0.0; n], vec![n]),
            flex_tensor(vec![0.0; n], vec![n]),
        ),
    };
    // clip_coef = clip / (||g|| + 1e-6), applied when < 1 (utils.clip_gradients)
    let coef = if h.clip_grad > 0.0 {
        let norm = sum_of_squares(gv).sqrt();
        (h.clip_grad as f32 * (norm as f32 + 1e-6).recip()).min(1.0)
    } else {
        1.0
    };
    let clip = coef < 1.0;
    let t = h.step as i32;
    let decay = (1.0 - h.lr * h.weight_decay) as f32;
    let (b1, b1c) = (h.beta1 as f32, (1.0 - h.beta1) as f32);
    let (b2, b2c) = (h.beta2 as f32, (1.0 - h.beta2) as f32);
    let bc2_sqrt = (1.0 - h.beta2.powi(t)).sqrt() as f32;
    let step_size = (h.lr / (1.0 - h.beta1.powi(t))) as f32;
    let eps = h.eps as f32;
    let unique = "owned buffers";
    let pd = SharedMut(pf.try_storage_mut::<f32>().expect(unique).as_mut_ptr());
    let md = SharedMut(mf.try_storage_mut::<f32>().expect(unique).as_mut_ptr());
    let vd = SharedMut(vf.try_storage_mut::<f32>().expect(unique).as_mut_ptr());
    for_each_task(n.div_ceil(CHUNK), |c| {
        let r = c * CHUNK..((c + 1) * CHUNK).min(n);
        // SAFETY: the three buffers hold n values each, nothing else holds them, and each
        // task updates its own range.
        let (p, m, v) = unsafe {
            (
                std::slice::from_raw_parts_mut(pd.ptr().add(r.start), r.len()),
                std::slice::from_raw_parts_mut(md.ptr().add(r.start), r.len()),
                std::slice::from_raw_parts_mut(vd.ptr().add(r.start), r.len()),
            )
        };
        for (i, &g) in gv[r].iter().enumerate() {
            let g = if clip { g * coef } else { g };
            let mi = m[i] * b1 + g * b1c;
            let vi = v[i] * b2 + g * g * b2c;
            let denom = vi.sqrt() / bc2_sqrt + eps;
            p[i] = p[i] * decay - mi / denom * step_size;
            m[i] = mi;
            v[i] = vi;
        }
    });
    let tensor = |f: FlexTensor| Tensor::from_primitive::<Flex>(f);
    (tensor(pf), tensor(mf), tensor(vf))
}

/// Whether [`ema_step`] applies: both burn-flex f32 of one size.
pub fn ema_applies(teacher: &Tensor<1>, student: &Tensor<1>) -> bool {
    on_flex(teacher)
        && on_flex(student)
        && student.shape().num_elements() == teacher.shape().num_elements()
}

/// `teacher * m + student * (1 - m)` (the EMA of one parameter), in place in the teacher's
/// buffer where nothing else holds it.
///
/// # Panics
/// Where [`ema_applies`] does not hold.
pub fn ema_step(teacher: Tensor<1>, student: &Tensor<1>, m: f64) -> Tensor<1> {
    assert!(
        ema_applies(&teacher, student),
        "ema_step: burn-flex f32 tensors of one size"
    );
    let sf = contiguous(student.clone());
    let sv = sf.storage::<f32>();
    let mut tf = owned(teacher);
    let (keep, take) = (m as f32, (1.0 - m) as f32);
    let tv = tf.try_storage_mut::<f32>().expect("owned buffer");
    for_each_piece_mut(tv, CHUNK, |r, t| {
        t.iter_mut()
            .zip(&sv[r])
            .for_each(|(t, &s)| *t = *t * keep + s * take);
    });
    Tensor::from_primitive::<Flex>(tf)
}

/// `sum(x^2)` in f64, in parallel chunks.
fn sum_of_squares(x: &[f32]) -> f64 {
    map_tasks(x.len().div_ceil(CHUNK), |c| {
        x[c * CHUNK..((c + 1) * CHUNK).min(x.len())]
            .iter()
            .map(|&v| (v as f64) * (v as f64))
            .sum::<f64>()
    })
    .iter()
    .sum()
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Tensor, TensorData};

    use super::*;

    fn flex(values: &[f32]) -> Tensor<1> {
        Tensor::from_data(
            TensorData::new(values.to_vec(), [values.len()]),
            &Device::flex(),
        )
    }

    fn values(t: &Tensor<1>) -> Vec<f32> {
        t.clone().into_data().try_to_vec::<f32>().unwrap()
    }

    /// The EMA against its formula in f64, in place and with the teacher's buffer shared.
    #[test]
    fn ema_matches_its_formula() {
        let n = CHUNK + 77;
        let t: Vec<f32> = (0..n).map(|i| ((i * 3) % 19) as f32 * 0.1 - 0.9).collect();
        let s: Vec<f32> = (0..n).map(|i| ((i * 5) % 23) as f32 * 0.1 - 1.1).collect();
        let m = 0.996;
        let shared = flex(&t);
        for teacher in [flex(&t), shared.clone()] {
            let out = values(&ema_step(teacher, &flex(&s), m));
            for j in 0..n {
                let want = t[j] as f64 * m + s[j] as f64 * (1.0 - m);
                assert!((out[j] as f64 - want).abs() < 1e-6, "{j}");
            }
        }
        // the shared buffer was copied, not written
        assert_eq!(values(&shared), t);
    }

    /// Three steps against `torch.optim.AdamW`'s arithmetic in f64 with `clip_gradients`
    /// before each, clipping active (a large gradient) and not, over more than one chunk.
    #[test]
    fn three_steps_match_adamw_in_f64() {
        let n = CHUNK + 1001;
        let p0: Vec<f32> = (0..n)
            .map(|i| ((i * 13) % 29) as f32 * 0.01 - 0.14)
            .collect();
        for (scale, clip) in [(1e-3f32, 3.0), (1.0, 3.0), (1.0, 0.0)] {
            let grads: Vec<Vec<f32>> = (0..3)
                .map(|s| {
                    (0..n)
                        .map(|i| (((i * 7 + s * 5) % 17) as f32 - 8.0) * scale)
                        .collect()
                })
                .collect();
            let (lr, wd) = (5e-4, 0.04);
            let (mut p, mut m, mut v) = (flex(&p0), None::<Tensor<1>>, None::<Tensor<1>>);
            let mut r: Vec<(f64, f64, f64)> = p0.iter().map(|&x| (x as f64, 0.0, 0.0)).collect();
            for (step, g) in grads.iter().enumerate() {
                let h = AdamW {
                    lr,
                    weight_decay: wd,
                    clip_grad: clip,
                    beta1: 0.9,
                    beta2: 0.999,
                    eps: 1e-8,
                    step: step as u64 + 1,
                };
                let moments = m.take().zip(v.take());
                let (p1, m1, v1) = adamw_step(p, &flex(g), moments, &h);
                (p, m, v) = (p1, Some(m1), Some(v1));
                // the reference
                let norm = g.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
                let coef = if clip > 0.0 {
                    (clip / (norm + 1e-6)).min(1.0)
                } else {
                    1.0
                };
                let t = step as i32 + 1;
                for (j, (rp, rm, rv)) in r.iter_mut().enumerate() {
                    let gj = g[j] as f64 * coef;
                    *rp *= 1.0 - lr * wd;
                    *rm = 0.9 * *rm + 0.1 * gj;
                    *rv = 0.999 * *rv + 0.001 * gj * gj;
                    let denom = rv.sqrt() / (1.0 - 0.999f64.powi(t)).sqrt() + 1e-8;
                    *rp -= lr / (1.0 - 0.9f64.powi(t)) * *rm / denom;
                }
            }
            let (pv, mv, vv) = (
                values(&p),
                values(m.as_ref().unwrap()),
                values(v.as_ref().unwrap()),
            );
            // f32 against f64: errors on the scale of the largest gradient
            let gmax = 8.0 * scale as f64;
            for (j, (rp, rm, rv)) in r.iter().enumerate() {
                assert!((pv[j] as f64 - rp).abs() < 1e-6, "p[{j}] {} vs {rp}", pv[j]);
                assert!(
                    (mv[j] as f64 - rm).abs() <= 1e-6 * gmax,
                    "m[{j}] {} vs {rm} (scale {scale}, clip {clip})",
                    mv[j]
                );
                assert!((vv[j] as f64 - rv).abs() <= 1e-6 * gmax * gmax, "v[{j}]");
            }
        }
    }
}
