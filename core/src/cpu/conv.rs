//! 2-D convolution forward and backward on host memory, as one matrix product per image over
//! its im2col columns (what PyTorch's CPU path does without oneDNN).
//!
//! Why: burn-flex computes a convolution's weight gradient as a convolution of the input with
//! the output gradient as the kernel (a 28 x 28 "kernel" for a 3 x 3 layer at 28 px), whose
//! im2col copies the activations nine times into skinny products, and its forward converts
//! every input to NHWC on one thread. On the ResNets of the PAWS benchmark (WRN-10-2, 248
//! images of 28 px) that made burn-flex's convolutions 2.3x slower than PyTorch's, most of a
//! training step. Here every gradient is one well-shaped product per image:
//! `y = W @ cols`, `dW += dy @ colsᵀ`, `dcols = Wᵀ @ dy` scattered back by col2im, with
//! images spread over threads; a large image's columns are built in bands of output rows, so a
//! task never holds more than 4 MiB of them. The weight gradient builds the columns again
//! rather than keeping the forward pass's (nine times a 3 x 3 layer's input, per layer, for the
//! whole step). The Burn model reaches these through
//! [`crate::model::flex_conv`] on burn-flex (training and inference); other backends keep
//! their own kernels.

use std::ops::Range;

use gemm::Parallelism;

use super::matmul::gemm_strided_with;
use super::parallel::{SharedMut, for_each_task, map_tasks, threads};

/// Shape of a convolution: groups 1, dilation 1, zero padding on both sides of each axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    pub batch: usize,
    pub in_ch: usize,
    pub height: usize,
    pub width: usize,
    pub out_ch: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
}

impl ConvShape {
    /// Output height and width, or `None` when the kernel does not fit the padded input or a
    /// size is zero.
    pub fn output(&self) -> Option<[usize; 2]> {
        let out = |i: usize, k: usize, s: usize, p: usize| {
            let padded = i + 2 * p;
            (s > 0 && k > 0 && padded >= k).then(|| (padded - k) / s + 1)
        };
        let h = out(self.height, self.kernel[0], self.stride[0], self.padding[0])?;
        let w = out(self.width, self.kernel[1], self.stride[1], self.padding[1])?;
        (self.batch > 0 && self.in_ch > 0 && self.out_ch > 0).then_some([h, w])
    }

    /// Rows of the im2col matrix: `in_ch * kh * kw`.
    fn rows(&self) -> usize {
        self.in_ch * self.kernel[0] * self.kernel[1]
    }

    /// Output positions per image.
    fn positions(&self) -> usize {
        let [h, w] = self.output().expect("validated shape");
        h * w
    }

    /// A 1x1 convolution with stride 1 and no padding: the image itself is the column matrix.
    fn is_pointwise(&self) -> bool {
        self.kernel == [1, 1] && self.stride == [1, 1] && self.padding == [0, 0]
    }
}

/// The output columns `x_out` whose input column `x_out * stride + tap - pad` lies inside
/// `0..size`, and the input column of the first.
fn valid_span(
    out: usize,
    size: usize,
    stride: usize,
    tap: usize,
    pad: usize,
) -> (usize, usize, usize) {
    // first x_out with x_out * stride + tap >= pad
    let first = pad.saturating_sub(tap).div_ceil(stride).min(out);
    // x_out * stride + tap - pad <= size - 1  <=>  x_out <= (size - 1 + pad - tap) / stride
    let end = if size + pad > tap {
        ((size - 1 + pad - tap) / stride + 1).min(out)
    } else {
        0
    };
    let end = end.max(first);
    (first, end, (first * stride + tap).saturating_sub(pad))
}

/// `cols [in_ch * kh * kw, rows.len() * ow]` of one image `x [in_ch, h, w]` for the output
/// rows `rows`; row `(c, i, j)` holds the input under kernel tap `(i, j)` of channel `c` for
/// each of those output positions (0 in the padding).
fn im2col(x: &[f32], s: &ConvShape, rows: Range<usize>, cols: &mut [f32]) {
    let [oh, ow] = s.output().expect("validated shape");
    let ([kh, kw], [sh, sw], [ph, pw]) = (s.kernel, s.stride, s.padding);
    let t = rows.len() * ow;
    let mut row = 0;
    for c in 0..s.in_ch {
        let plane = &x[c * s.height * s.width..(c + 1) * s.height * s.width];
        for i in 0..kh {
            let (y0, y1, iy0) = valid_span(oh, s.height, sh, i, ph);
            for j in 0..kw {
                let (x0, x1, ix0) = valid_span(ow, s.width, sw, j, pw);
                let dst = &mut cols[row * t..(row + 1) * t];
                for (y, out_row) in rows.clone().zip(dst.chunks_exact_mut(ow)) {
                    if y < y0 || y >= y1 {
                        out_row.fill(0.0);
                        continue;
                    }
                    let iy = iy0 + (y - y0) * sh;
                    let src = &plane[iy * s.width..(iy + 1) * s.width];
                    out_row[..x0].fill(0.0);
                    out_row[x1..].fill(0.0);
                    let inner = &mut out_row[x0..x1];
                    if sw == 1 {
                        inner.copy_from_slice(&src[ix0..ix0 + inner.len()]);
                    } else {
                        for (v, &a) in inner.iter_mut().zip(src[ix0..].iter().step_by(sw)) {
                            *v = a;
                        }
                    }
                }
                row += 1;
            }
        }
    }
}

/// The adjoint of [`im2col`] for the same output rows: adds every column entry back onto the
/// input position it was read from.
fn col2im(cols: &[f32], s: &ConvShape, rows: Range<usize>, dx: &mut [f32]) {
    let [oh, ow] = s.output().expect("validated shape");
    let ([kh, kw], [sh, sw], [ph, pw]) = (s.kernel, s.stride, s.padding);
    let t = rows.len() * ow;
    let mut row = 0;
    for c in 0..s.in_ch {
        let plane = &mut dx[c * s.height * s.width..(c + 1) * s.height * s.width];
        for i in 0..kh {
            let (y0, y1, iy0) = valid_span(oh, s.height, sh, i, ph);
            for j in 0..kw {
                let (x0, x1, ix0) = valid_span(ow, s.width, sw, j, pw);
                let src = &cols[row * t..(row + 1) * t];
                for (y, in_row) in rows.clone().zip(src.chunks_exact(ow)) {
                    if y < y0 || y >= y1 {
                        continue;
                    }
                    let iy = iy0 + (y - y0) * sh;
                    let dst = &mut plane[iy * s.width..(iy + 1) * s.width];
                    let inner = &in_row[x0..x1];
                    if sw == 1 {
                        for (d, &g) in dst[ix0..ix0 + inner.len()].iter_mut().zip(inner) {
                            *d += g;
                        }
                    } else {
                        for (d, &g) in dst[ix0..].iter_mut().step_by(sw).zip(inner) {
                            *d += g;
                        }
                    }
                }
                row += 1;
            }
        }
    }
}

/// At most this many floats of im2col columns per task (4 MiB): whole images for the small
/// networks here, bands of output rows for large images, so memory stays bounded.
const MAX_COLUMNS: usize = 1 << 20;

/// Bands of output rows whose columns fit `max_columns` (at least one row each); one band for
/// a pointwise convolution, whose columns are the image itself.
#[allow(clippy::single_range_in_vec_init)] // one band of rows `0..oh`, not `oh` bands
fn bands(s: &ConvShape, max_columns: usize) -> Vec<Range<usize>> {
    let [oh, ow] = s.output().expect("validated shape");
    if s.is_pointwise() {
        return vec![0..oh];
    }
    let per_row = s.rows() * ow;
    let rows = (max_columns / per_row.max(1)).clamp(1, oh);
    (0..oh.div_ceil(rows))
        .map(|b| b * rows..((b + 1) * rows).min(oh))
        .collect()
}

/// The column matrix of output rows `rows` of image `xn` as `(pointer, row stride)`: the image
/// itself for a pointwise convolution (its positions are the output's), else im2col into `buf`.
fn columns(
    xn: &[f32],
    s: &ConvShape,
    rows: Range<usize>,
    buf: &mut Vec<f32>,
) -> (*const f32, usize) {
    let ow = s.output().expect("validated shape")[1];
    if s.is_pointwise() {
        return (xn[rows.start * ow..].as_ptr(), s.positions());
    }
    let t = rows.len() * ow;
    buf.resize(s.rows() * t, 0.0);
    im2col(xn, s, rows, buf);
    (buf.as_ptr(), t)
}

/// How images are spread: one task per image chunk when there are enough images to keep every
/// thread busy (each product single-threaded), else the images in turn with `gemm`'s own
/// threads inside each product.
fn plan(batch: usize) -> (usize, Parallelism) {
    let t = threads();
    if t > 1 && batch >= 2 * t {
        return ((4 * t).min(batch), Parallelism::None);
    }
    #[cfg(feature = "parallel")]
    if t > 1 {
        return (1, Parallelism::Rayon(t));
    }
    (1, Parallelism::None)
}

/// The images of chunk `task` of `tasks`.
fn chunk(batch: usize, tasks: usize, task: usize) -> std::ops::Range<usize> {
    (task * batch / tasks)..((task + 1) * batch / tasks)
}

fn check(s: &ConvShape, x: &[f32], w: &[f32]) {
    assert!(s.output().is_some(), "convolution shape {s:?}");
    assert_eq!(
        x.len(),
        s.batch * s.in_ch * s.height * s.width,
        "input size"
    );
    assert_eq!(w.len(), s.out_ch * s.rows(), "weight size");
}

/// `y [batch, out_ch, oh, ow] = conv(x [batch, in_ch, h, w], w [out_ch, in_ch, kh, kw]) + bias`.
pub fn conv2d_forward(x: &[f32], w: &[f32], bias: Option<&[f32]>, s: &ConvShape) -> Vec<f32> {
    forward_in_bands(x, w, bias, s, MAX_COLUMNS)
}

fn forward_in_bands(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    s: &ConvShape,
    max_columns: usize,
) -> Vec<f32> {
    check(s, x, w);
    let (k, p, co, ow) = (s.rows(), s.positions(), s.out_ch, s.output().unwrap()[1]);
    let image = s.in_ch * s.height * s.width;
    let bands = bands(s, max_columns);
    let mut y = vec![0f32; s.batch * co * p];
    let dst = SharedMut(y.as_mut_ptr());
    let (tasks, par) = plan(s.batch);
    for_each_task(tasks, |task| {
        let mut buf = Vec::new();
        for n in chunk(s.batch, tasks, task) {
            let xn = &x[n * image..(n + 1) * image];
            // SAFETY: image n's output is this task's alone; sizes checked above.
            unsafe {
                let out = dst.ptr().add(n * co * p);
                for rows in &bands {
                    let (cols, cs) = columns(xn, s, rows.clone(), &mut buf);
                    let (o, wp) = (out.add(rows.start * ow), w.as_ptr());
                    let t = rows.len() * ow;
                    gemm_strided_with((co, t, k), o, p, false, wp, (k, 1), cols, (cs, 1), 1.0, par);
                }
                if let Some(b) = bias {
                    let out = std::slice::from_raw_parts_mut(out, co * p);
                    for (row, &b) in out.chunks_exact_mut(p).zip(b) {
                        row.iter_mut().for_each(|v| *v += b);
                    }
                }
            }
        }
    });
    y
}

/// `(dx, dw, db)`, each where it was asked for.
pub type ConvGradients = (Option<Vec<f32>>, Option<Vec<f32>>, Option<Vec<f32>>);

/// Gradients of [`conv2d_forward`] from the output gradient `dy [batch, out_ch, oh, ow]`:
/// `(dx, dw, db)`, each computed only when asked for.
pub fn conv2d_backward(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    s: &ConvShape,
    wanted: (bool, bool, bool),
) -> ConvGradients {
    backward_in_bands(x, w, dy, s, wanted, MAX_COLUMNS)
}

fn backward_in_bands(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    s: &ConvShape,
    (want_dx, want_dw, want_db): (bool, bool, bool),
    max_columns: usize,
) -> ConvGradients {
    check(s, x, w);
    let (k, p, co, ow) = (s.rows(), s.positions(), s.out_ch, s.output().unwrap()[1]);
    assert_eq!(dy.len(), s.batch * co * p, "output gradient size");
    let image = s.in_ch * s.height * s.width;
    let bands = bands(s, max_columns);
    let (tasks, par) = plan(s.batch);

    let db = want_db.then(|| {
        let mut db = vec![0f32; co];
        for dyn_ in dy.chunks_exact(co * p) {
            for (acc, row) in db.iter_mut().zip(dyn_.chunks_exact(p)) {
                *acc += row.iter().sum::<f32>();
            }
        }
        db
    });

    // dW = sum_n dy[n] (co x p) @ cols[n]ᵀ (p x k): one partial sum per task, added in order
    let dw = want_dw.then(|| {
        let partials = map_tasks(tasks, |task| {
            let mut acc = vec![0f32; co * k];
            let mut buf = Vec::new();
            let mut first = true;
            for n in chunk(s.batch, tasks, task) {
                let xn = &x[n * image..(n + 1) * image];
                for rows in &bands {
                    let (cols, cs) = columns(xn, s, rows.clone(), &mut buf);
                    let t = rows.len() * ow;
                    // SAFETY: `acc` is this task's; sizes checked above.
                    unsafe {
                        let (a, g) = (
                            acc.as_mut_ptr(),
                            dy.as_ptr().add(n * co * p + rows.start * ow),
                        );
                        gemm_strided_with(
                            (co, k, t),
                            a,
                            k,
                            !first,
                            g,
                            (p, 1),
                            cols,
                            (1, cs),
                            1.0,
                            par,
                        );
                    }
                    first = false;
                }
            }
            acc
        });
        let mut partials = partials.into_iter();
        let mut dw = partials.next().expect("at least one task");
        for part in partials {
            dw.iter_mut().zip(&part).for_each(|(a, b)| *a += b);
        }
        dw
    });

    // dcols[n] = Wᵀ (k x co) @ dy[n] (co x p), scattered back onto dx[n]
    let dx = want_dx.then(|| {
        let mut dx = vec![0f32; s.batch * image];
        let dst = SharedMut(dx.as_mut_ptr());
        for_each_task(tasks, |task| {
            let mut cols = Vec::new();
            for n in chunk(s.batch, tasks, task) {
                // SAFETY: image n's gradient is this task's alone; sizes checked above.
                unsafe {
                    let dxn = dst.ptr().add(n * image);
                    for rows in &bands {
                        let t = rows.len() * ow;
                        // a pointwise convolution's column gradient is the image's gradient
                        let (d, ds) = if s.is_pointwise() {
                            (dxn.add(rows.start * ow), p)
                        } else {
                            cols.resize(k * t, 0.0);
                            (cols.as_mut_ptr(), t)
                        };
                        let (wp, g) = (w.as_ptr(), dy.as_ptr().add(n * co * p + rows.start * ow));
                        gemm_strided_with(
                            (k, t, co),
                            d,
                            ds,
                            false,
                            wp,
                            (1, k),
                            g,
                            (p, 1),
                            1.0,
                            par,
                        );
                        if !s.is_pointwise() {
                            let dxn = std::slice::from_raw_parts_mut(dxn, image);
                            col2im(&cols, s, rows.clone(), dxn);
                        }
                    }
                }
            }
        });
        dx
    });
    (dx, dw, db)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(x: &[f32], w: &[f32], b: &[f32], s: &ConvShape) -> Vec<f32> {
        let [oh, ow] = s.output().unwrap();
        let [kh, kw] = s.kernel;
        let mut y = vec![0f32; s.batch * s.out_ch * oh * ow];
        for n in 0..s.batch {
            for o in 0..s.out_ch {
                for yy in 0..oh {
                    for xx in 0..ow {
                        let mut acc = b[o] as f64;
                        for c in 0..s.in_ch {
                            for i in 0..kh {
                                for j in 0..kw {
                                    let iy =
                                        (yy * s.stride[0] + i) as isize - s.padding[0] as isize;
                                    let ix =
                                        (xx * s.stride[1] + j) as isize - s.padding[1] as isize;
                                    if iy < 0
                                        || ix < 0
                                        || iy >= s.height as isize
                                        || ix >= s.width as isize
                                    {
                                        continue;
                                    }
                                    let xv = x[((n * s.in_ch + c) * s.height + iy as usize)
                                        * s.width
                                        + ix as usize];
                                    let wv = w[((o * s.in_ch + c) * kh + i) * kw + j];
                                    acc += xv as f64 * wv as f64;
                                }
                            }
                        }
                        y[((n * s.out_ch + o) * oh + yy) * ow + xx] = acc as f32;
                    }
                }
            }
        }
        y
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(2654435761).wrapping_add(12345);
        (0..n)
            .map(|_| {
                state = state.wrapping_mul(1664525).wrapping_add(1013904223);
                (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    }

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{i}: {x} vs {y}");
        }
    }

    fn shapes() -> Vec<ConvShape> {
        let s = |batch, in_ch, hw: [usize; 2], out_ch, kernel, stride, padding| ConvShape {
            batch,
            in_ch,
            height: hw[0],
            width: hw[1],
            out_ch,
            kernel,
            stride,
            padding,
        };
        vec![
            s(3, 2, [7, 6], 4, [3, 3], [1, 1], [1, 1]),
            s(9, 3, [8, 8], 5, [3, 3], [2, 2], [1, 1]),
            s(2, 4, [5, 7], 3, [1, 1], [1, 1], [0, 0]),
            s(5, 4, [6, 6], 3, [1, 1], [2, 2], [0, 0]),
            s(1, 3, [9, 9], 2, [7, 7], [2, 2], [3, 3]),
            s(4, 2, [5, 5], 3, [2, 3], [1, 2], [0, 1]),
            // every tap but the centre in the padding; a kernel wider than the image
            s(2, 3, [1, 1], 2, [3, 3], [1, 1], [1, 1]),
            s(2, 2, [2, 3], 2, [5, 5], [3, 1], [2, 2]),
        ]
    }

    #[test]
    fn the_forward_pass_is_the_convolution() {
        for s in shapes() {
            let x = values(s.batch * s.in_ch * s.height * s.width, 1);
            let w = values(s.out_ch * s.rows(), 2);
            let b = values(s.out_ch, 3);
            close(
                &conv2d_forward(&x, &w, Some(&b), &s),
                &naive(&x, &w, &b, &s),
            );
        }
    }

    /// Each gradient equals the derivative of `sum(y * g)` taken through the naive
    /// convolution: it is linear in x and in w, so the gradient entries are the responses to
    /// unit inputs.
    #[test]
    fn the_backward_pass_is_the_adjoint() {
        for s in shapes() {
            let nx = s.batch * s.in_ch * s.height * s.width;
            let x = values(nx, 4);
            let w = values(s.out_ch * s.rows(), 5);
            let zero_b = vec![0f32; s.out_ch];
            let g = values(naive(&x, &w, &zero_b, &s).len(), 6);
            let (dx, dw, db) = conv2d_backward(&x, &w, &g, &s, (true, true, true));
            let banded = backward_in_bands(&x, &w, &g, &s, (true, true, true), 1);
            close(banded.0.as_ref().unwrap(), dx.as_ref().unwrap());
            close(banded.1.as_ref().unwrap(), dw.as_ref().unwrap());
            let dot = |y: Vec<f32>| y.iter().zip(&g).map(|(a, b)| a * b).sum::<f32>();
            let mut e = vec![0f32; nx];
            let want_dx: Vec<f32> = (0..nx)
                .map(|i| {
                    e.fill(0.0);
                    e[i] = 1.0;
                    dot(naive(&e, &w, &zero_b, &s))
                })
                .collect();
            close(&dx.unwrap(), &want_dx);
            let mut e = vec![0f32; w.len()];
            let want_dw: Vec<f32> = (0..w.len())
                .map(|i| {
                    e.fill(0.0);
                    e[i] = 1.0;
                    dot(naive(&x, &e, &zero_b, &s))
                })
                .collect();
            close(&dw.unwrap(), &want_dw);
            let want_db: Vec<f32> = (0..s.out_ch)
                .map(|o| {
                    let mut b = zero_b.clone();
                    b[o] = 1.0;
                    dot(naive(&vec![0f32; nx], &w, &b, &s))
                })
                .collect();
            close(&db.unwrap(), &want_db);
        }
    }

    #[test]
    fn shapes_that_do_not_fit_have_no_output() {
        let mut s = shapes()[0];
        s.kernel = [11, 3];
        assert_eq!(s.output(), None);
        s.kernel = [3, 3];
        s.stride = [0, 1];
        assert_eq!(s.output(), None);
        s.stride = [1, 1];
        s.batch = 0;
        assert_eq!(s.output(), None);
    }
}
