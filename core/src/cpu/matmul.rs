//! Matrix products with fused epilogues, tiled over threads.
//!
//! Each task multiplies one tile of the output with the `gemm` crate single-threaded and
//! applies the epilogue (bias, GELU, residual add) while the tile is still in cache. Tiles are
//! independent, so two cores scale nearly 2x, where gemm's own splitting reaches ~1.6x on
//! these ViT shapes.

use gemm::{Parallelism, gemm};

use super::kernels::{add_bias, bias_gelu};
use super::parallel::{
    SharedMut, for_each_piece_mut, for_each_task, for_each_task_spinning, threads,
};

/// What happens to the product before it lands in `out`.
#[derive(Clone, Copy)]
pub enum Epilogue<'a> {
    /// `out = a @ w + bias`
    Bias(&'a [f32]),
    /// `out = gelu(a @ w + bias)`
    BiasGelu(&'a [f32]),
    /// `out += a @ w + bias` (residual connection)
    AccumulateBias(&'a [f32]),
}

/// Unchecked strided product `dst (m x n) (= | +=) scale * lhs (m x k) @ rhs (k x n)`,
/// single-threaded. Strides are in elements: (row, column).
///
/// # Safety
/// Pointers must cover the regions the sizes and strides describe; `dst` must not alias
/// `lhs` or `rhs`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_strided(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: *const f32,
    lhs_strides: (usize, usize),
    rhs: *const f32,
    rhs_strides: (usize, usize),
    scale: f32,
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        gemm_strided_with(
            (m, n, k),
            dst,
            dst_rs,
            accumulate,
            lhs,
            lhs_strides,
            rhs,
            rhs_strides,
            scale,
            Parallelism::None,
        )
    }
}

/// [`gemm_strided`] with `gemm`'s own threads inside the product (`parallelism`).
///
/// # Safety
/// As for [`gemm_strided`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_strided_with(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: *const f32,
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: *const f32,
    (rhs_rs, rhs_cs): (usize, usize),
    scale: f32,
    parallelism: Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: forwarded from the caller.
    unsafe {
        gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            lhs,
            lhs_cs as isize,
            lhs_rs as isize,
            rhs,
            rhs_cs as isize,
            rhs_rs as isize,
            if accumulate { 1.0 } else { 0.0 },
            scale,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// Tile shape of [`matmul_strided`]: fixed (see [`Tiles::fixed`]). Each tile packs its own
/// operands, so larger tiles pack less: 256 x 256 made a ViT-S/16 training step 4% faster
/// than 128 x 128 on 2 cores (256 x 512 another 2%, 384 x 384 nothing; alternating runs,
/// BENCHMARKS.md), and still cuts a block's products (~400 rows a part) into several tasks
/// and the DINO head's narrow ones (40 x 256 x 65,536) into 256.
const TRAINING_TILE: (usize, usize) = (256, 256);

/// How many row and column tiles to cut an `m x n` output into (also [`super::packed`]'s).
pub(super) fn plan(m: usize, n: usize) -> (usize, usize) {
    let t = threads();
    if t == 1 {
        return (1, 1);
    }
    let target = 2 * t;
    let cols = target.min(n.div_ceil(64)).max(1);
    let rows = target.div_ceil(cols).min(m.div_ceil(64)).max(1);
    (rows, cols)
}

/// The output tiles of an `m x n` product: [`plan`]'s numbers, widths a multiple of 16
/// columns, the last row and column of tiles possibly narrower.
#[derive(Clone, Copy)]
struct Tiles {
    m: usize,
    n: usize,
    height: usize,
    width: usize,
    columns: usize,
    rows: usize,
}

impl Tiles {
    fn new(m: usize, n: usize) -> Self {
        let (row_tiles, col_tiles) = plan(m, n);
        // at least one row and 16 columns: an empty product has no tiles
        let width = (n.div_ceil(col_tiles).div_ceil(16) * 16).max(16);
        let height = m.div_ceil(row_tiles).max(1);
        Self::of(m, n, height, width)
    }

    /// Tiles of `height x width` whatever the number of threads: `gemm` picks its blocking
    /// over k from the shape it is given, so the tile shape decides how each sum is rounded,
    /// and a product tiled by thread count would differ between machines and between a
    /// process with 2 threads and MPI ranks of 1 (training promises the same bytes).
    fn fixed(m: usize, n: usize, height: usize, width: usize) -> Self {
        Self::of(m, n, height.min(m).max(1), width.min(n).max(1))
    }

    fn of(m: usize, n: usize, height: usize, width: usize) -> Self {
        Self {
            m,
            n,
            height,
            width,
            columns: n.div_ceil(width),
            rows: m.div_ceil(height),
        }
    }

    fn count(&self) -> usize {
        self.rows * self.columns
    }

    /// Tile `task`: its first row and column, and its numbers of rows and columns.
    fn get(&self, task: usize) -> (usize, usize, usize, usize) {
        let (r0, c0) = (
            (task / self.columns) * self.height,
            (task % self.columns) * self.width,
        );
        (
            r0,
            c0,
            self.height.min(self.m - r0),
            self.width.min(self.n - c0),
        )
    }

    /// `dst (m x n, row-major) (= | +=) lhs @ rhs` over tile `task` only (the tile reads rows
    /// of `lhs` and columns of `rhs` from its first row and column); returns the tile.
    ///
    /// # Safety
    /// The operands must cover `m x k` and `k x n` with their (row, column) strides, `dst`
    /// `m x n`, and no other thread may write the tile meanwhile.
    #[allow(clippy::type_complexity)]
    unsafe fn product(
        &self,
        task: usize,
        dst: *mut f32,
        k: usize,
        accumulate: bool,
        (lhs, lhs_strides): (*const f32, (usize, usize)),
        (rhs, rhs_strides): (*const f32, (usize, usize)),
    ) -> (usize, usize, usize, usize) {
        let (r0, c0, rows, cols) = self.get(task);
        // SAFETY: forwarded from the caller.
        unsafe {
            gemm_strided(
                rows,
                cols,
                k,
                dst.add(r0 * self.n + c0),
                self.n,
                accumulate,
                lhs.add(r0 * lhs_strides.0),
                lhs_strides,
                rhs.add(c0 * rhs_strides.1),
                rhs_strides,
                1.0,
            );
        }
        (r0, c0, rows, cols)
    }
}

/// `out (m x n) = epilogue(a (m x k) @ w (k x n))`, all row-major.
pub fn matmul(a: &[f32], m: usize, k: usize, w: &[f32], n: usize, out: &mut [f32], ep: Epilogue) {
    assert!(
        a.len() >= m * k && w.len() >= k * n && out.len() >= m * n,
        "matmul sizes"
    );
    let tiles = Tiles::new(m, n);
    let dst = SharedMut(out.as_mut_ptr());
    for_each_task_spinning(tiles.count(), |task| {
        // SAFETY: tiles are disjoint regions of `out`; `a` and `w` cover the sizes asserted.
        unsafe {
            let accumulate = matches!(ep, Epilogue::AccumulateBias(_));
            let (r0, c0, rows, cols) = tiles.product(
                task,
                dst.ptr(),
                k,
                accumulate,
                (a.as_ptr(), (k, 1)),
                (w.as_ptr(), (n, 1)),
            );
            for r in r0..r0 + rows {
                let row = std::slice::from_raw_parts_mut(dst.ptr().add(r * n + c0), cols);
                match ep {
                    Epilogue::Bias(b) | Epilogue::AccumulateBias(b) => {
                        add_bias(row, &b[c0..c0 + cols])
                    }
                    Epilogue::BiasGelu(b) => bias_gelu(row, &b[c0..c0 + cols]),
                }
            }
        }
    });
}

/// `out (m x n) = lhs (m x k) @ rhs (k x n) (+ bias)` with operands of any (row, column)
/// strides, in tiles of a fixed shape, so the same bytes on any number of threads: a
/// transposed operand is the same buffer with its strides swapped, so the products of a
/// linear layer's backward pass (`dy @ w^T`, `x^T @ dy`) read their operands where they lie.
/// For training: the tiles run on rayon's threads, which Burn's own operations share (the
/// engine's spinning pool would compete with them).
///
/// # Panics
/// When an operand, `bias` or `out` does not cover the sizes and strides given.
pub fn matmul_strided(
    (m, n, k): (usize, usize, usize),
    (lhs, lhs_strides): (&[f32], (usize, usize)),
    (rhs, rhs_strides): (&[f32], (usize, usize)),
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    let covers = |len: usize, rows: usize, cols: usize, (rs, cs): (usize, usize)| {
        rows == 0 || cols == 0 || (rows - 1) * rs + (cols - 1) * cs < len
    };
    assert!(
        covers(lhs.len(), m, k, lhs_strides)
            && covers(rhs.len(), k, n, rhs_strides)
            && out.len() >= m * n
            && bias.is_none_or(|b| b.len() >= n),
        "matmul_strided sizes"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for row in out[..m * n].chunks_mut(n) {
            match bias {
                Some(b) => row.copy_from_slice(&b[..n]),
                None => row.fill(0.0),
            }
        }
        return;
    }
    let tiles = Tiles::fixed(m, n, TRAINING_TILE.0, TRAINING_TILE.1);
    let dst = SharedMut(out.as_mut_ptr());
    for_each_task(tiles.count(), |task| {
        // SAFETY: tiles are disjoint regions of `out`; the operands cover the sizes and
        // strides asserted.
        unsafe {
            let (r0, c0, rows, cols) = tiles.product(
                task,
                dst.ptr(),
                k,
                false,
                (lhs.as_ptr(), lhs_strides),
                (rhs.as_ptr(), rhs_strides),
            );
            if let Some(b) = bias {
                for r in r0..r0 + rows {
                    let row = std::slice::from_raw_parts_mut(dst.ptr().add(r * n + c0), cols);
                    add_bias(row, &b[c0..c0 + cols]);
                }
            }
        }
    });
}

/// The sums of the columns of a row-major `rows x cols` matrix (a bias's gradient), in
/// parallel over blocks of columns; each column summed in row order.
pub fn column_sums(a: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    assert!(a.len() >= rows * cols, "column_sums sizes");
    const BLOCK: usize = 256;
    let mut out = vec![0f32; cols];
    for_each_piece_mut(&mut out, BLOCK, |c, sums| {
        for r in 0..rows {
            let row = &a[r * cols + c.start..r * cols + c.end];
            sums.iter_mut().zip(row).for_each(|(s, v)| *s += v);
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `a (m x k)`, `w (k x n)`, a bias of `n` and the naive `a @ w`.
    fn operands(m: usize, k: usize, n: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7) % 13) as f32 * 0.1 - 0.6)
            .collect();
        let w: Vec<f32> = (0..k * n)
            .map(|i| ((i * 5) % 11) as f32 * 0.1 - 0.5)
            .collect();
        let b: Vec<f32> = (0..n).map(|i| i as f32 * 0.01).collect();
        let want = naive(&a, m, k, &w, n);
        (a, w, b, want)
    }

    /// Every transposition of both operands, with and without a bias, against the naive
    /// product; sizes that leave partial tiles.
    #[test]
    fn strided_products_read_transposed_operands_in_place() {
        let (m, k, n) = (70, 45, 150);
        let (a, w, b, want) = operands(m, k, n);
        // the same matrices stored transposed
        let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
        let wt: Vec<f32> = (0..n * k).map(|i| w[(i % k) * n + i / k]).collect();
        for (lhs, rhs) in [
            ((&a, (k, 1)), (&w, (n, 1))),
            ((&at, (1, m)), (&w, (n, 1))),
            ((&a, (k, 1)), (&wt, (1, k))),
            ((&at, (1, m)), (&wt, (1, k))),
        ] {
            for bias in [None, Some(&b[..])] {
                let mut out = vec![f32::NAN; m * n];
                matmul_strided((m, n, k), (lhs.0, lhs.1), (rhs.0, rhs.1), bias, &mut out);
                for i in 0..m * n {
                    let extra = bias.map_or(0.0, |b| b[i % n]);
                    assert!((out[i] - want[i] - extra).abs() < 1e-4, "{i}");
                }
            }
        }
        let sums = column_sums(&want, m, n);
        for (j, s) in sums.iter().enumerate() {
            let expected: f32 = (0..m).map(|i| want[i * n + j]).sum();
            assert!((s - expected).abs() < 1e-3 * expected.abs().max(1.0));
        }
    }

    fn naive(a: &[f32], m: usize, k: usize, w: &[f32], n: usize) -> Vec<f32> {
        let mut o = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                o[i * n + j] = (0..k).map(|p| a[i * k + p] * w[p * n + j]).sum();
            }
        }
        o
    }

    /// The training products give the same bytes whatever the number of threads (MPI ranks
    /// of one thread train as one process of two), also for shapes larger than a tile.
    #[cfg(feature = "parallel")]
    #[test]
    fn strided_products_do_not_depend_on_the_thread_count() {
        // a forward product, a weight gradient (few rows summed) and an input gradient of the
        // tiny test ViT's MLP, and one larger than a tile both ways
        for (m, k, n) in [
            (34, 192, 768),
            (192, 34, 768),
            (34, 768, 192),
            (300, 1000, 260),
        ] {
            let (a, w, b, _) = operands(m, k, n);
            let run = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let mut out = vec![0f32; m * n];
                pool.install(|| {
                    matmul_strided((m, n, k), (&a, (k, 1)), (&w, (n, 1)), Some(&b), &mut out)
                });
                out
            };
            let one = run(1);
            for threads in [2, 3, 8] {
                let other = run(threads);
                assert!(
                    one.iter()
                        .zip(&other)
                        .all(|(x, y)| x.to_bits() == y.to_bits()),
                    "{m} x {k} x {n}, {threads} threads"
                );
            }
        }
    }

    #[test]
    fn tiled_products_with_epilogues() {
        let (m, k, n) = (67, 45, 150);
        let (a, w, b, want) = operands(m, k, n);
        let mut out = vec![0f32; m * n];
        matmul(&a, m, k, &w, n, &mut out, Epilogue::Bias(&b));
        for i in 0..m * n {
            assert!((out[i] - want[i] - b[i % n]).abs() < 1e-4);
        }
        let mut acc = vec![1f32; m * n];
        matmul(&a, m, k, &w, n, &mut acc, Epilogue::AccumulateBias(&b));
        for i in 0..m * n {
            assert!((acc[i] - 1.0 - want[i] - b[i % n]).abs() < 1e-4);
        }
        matmul(&a, m, k, &w, n, &mut out, Epilogue::BiasGelu(&b));
        for i in 0..m * n {
            let g = super::super::kernels::gelu_f32(want[i] + b[i % n]);
            assert!((out[i] - g).abs() < 1e-4);
        }
    }
}
