//! Linear layers on weights packed once at load time, with a hand-written AVX-512 micro-kernel:
//! f32 FMAs, or bf16 inputs with f32 sums on AVX-512 BF16 (`vdpbf16ps`).
//!
//! Why: `gemm` (what [`super::matmul`] calls) packs the weights again on every call and sets
//! up its blocking per product; at the ViT's sizes (197 rows per image) that is a large share
//! of a linear layer. ONNX Runtime's MLAS packs them once, at load time; this does the same:
//! - the weights (`[k, n]`, row-major) are packed in panels of 16 columns (one 512-bit vector
//!   of f32), k steps one after another ([`PackedWeights`]); in bf16 each 32-bit lane holds
//!   a k pair of one column, as `vdpbf16ps` reads them, rounded to nearest even once;
//! - the activations are read in place (f32), or rounded to bf16 pairs per product (`m x k`,
//!   cheap against `m x k x n`), and broadcast one k step at a time;
//! - a 12 x 32 output tile lives in 24 of the 32 vector registers for the whole k loop; a
//!   thread's tile walks blocks of 12 rows (in L1) over the panels of its columns (in L2).
//!
//! The sums are in f32 in k order; the bias, GELU and residual epilogues run in f32 on the
//! tile, as in [`super::matmul`]. Where the CPU lacks AVX-512 BF16 the bf16 products run a
//! portable loop with the instruction's arithmetic (each bf16 product is exact in f32, two
//! roundings per pair, odd element first): the same numbers, much slower, for tests
//! ([`bf16_native`] tells which). The f32 kernel is used only where [`f32_native`].

use super::kernels::{add_bias, bias_gelu};
use super::matmul::{Epilogue, plan};
use super::parallel::{SharedMut, for_each_task_spinning};

/// Columns per packed panel (one 512-bit vector of f32).
const PANEL: usize = 16;

/// Whether this CPU runs the f32 micro-kernel (AVX-512F).
pub fn f32_native() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether this CPU runs the bf16 products in hardware (AVX-512F and AVX-512 BF16).
pub fn bf16_native() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `x` rounded to bf16 (nearest, ties to even; NaN stays NaN), as its 16 high bits.
pub fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    let rounding = 0x7fff + ((bits >> 16) & 1);
    (bits.wrapping_add(rounding) >> 16) as u16
}

/// The f32 value of a bf16.
pub fn from_bf16(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// Two bf16 in one lane: `lo` (even k) in the low half, as `vdpbf16ps` reads them.
fn pair(lo: f32, hi: f32) -> u32 {
    to_bf16(lo) as u32 | ((to_bf16(hi) as u32) << 16)
}

/// The inputs' precision of a packed product (sums are f32 in both).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inputs {
    F32,
    Bf16,
}

/// A `[k, n]` weight matrix packed in panels of 16 columns (see the module doc).
#[derive(Clone, Debug)]
pub struct PackedWeights {
    k: usize,
    n: usize,
    inputs: Inputs,
    /// k steps of the kernel: k in f32, k pairs in bf16 (k rounded up to even, padding zero).
    pairs: usize,
    /// `panels x pairs x 16` lanes (f32 bits, or two bf16); the columns past `n` are zero.
    data: Vec<u32>,
}

impl PackedWeights {
    /// Packs row-major `w` (`k x n`) for products with `inputs`.
    pub fn pack(w: &[f32], k: usize, n: usize, inputs: Inputs) -> Self {
        assert!(w.len() >= k * n, "weights of {k} x {n}");
        let pairs = match inputs {
            Inputs::F32 => k,
            Inputs::Bf16 => k.div_ceil(2),
        };
        let panels = n.div_ceil(PANEL);
        let mut data = vec![0u32; panels * pairs * PANEL];
        let at = |r: usize, c: usize| if r < k && c < n { w[r * n + c] } else { 0.0 };
        for (panel, out) in data.chunks_exact_mut(pairs * PANEL).enumerate() {
            for p in 0..pairs {
                for lane in 0..PANEL {
                    let c = panel * PANEL + lane;
                    out[p * PANEL + lane] = match inputs {
                        Inputs::F32 => at(p, c).to_bits(),
                        Inputs::Bf16 => pair(at(2 * p, c), at(2 * p + 1, c)),
                    };
                }
            }
        }
        Self {
            k,
            n,
            inputs,
            pairs,
            data,
        }
    }

    /// The inputs' precision.
    pub fn inputs(&self) -> Inputs {
        self.inputs
    }

    /// Input width.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Output width.
    pub fn n(&self) -> usize {
        self.n
    }

    /// The packed lanes of panel `j`.
    fn panel(&self, j: usize) -> &[u32] {
        &self.data[j * self.pairs * PANEL..(j + 1) * self.pairs * PANEL]
    }
}

/// `a` (`m x k`, row-major) rounded to bf16 pairs: `m` rows of `k / 2` (rounded up) lanes.
fn pack_rows(a: &[f32], m: usize, k: usize) -> Vec<u32> {
    let pairs = k.div_ceil(2);
    let mut out = vec![0u32; m * pairs];
    let dst = SharedMut(out.as_mut_ptr());
    let chunk = 64;
    for_each_task_spinning(m.div_ceil(chunk), |c| {
        for r in c * chunk..((c + 1) * chunk).min(m) {
            // SAFETY: each task writes its own rows.
            let row = unsafe { std::slice::from_raw_parts_mut(dst.ptr().add(r * pairs), pairs) };
            let src = &a[r * k..(r + 1) * k];
            for (p, lane) in row.iter_mut().enumerate() {
                let hi = if 2 * p + 1 < k { src[2 * p + 1] } else { 0.0 };
                *lane = pair(src[2 * p], hi);
            }
        }
    });
    out
}

/// `out (m x n) = epilogue(a (m x k) @ w)` in `w`'s input precision with f32 sums; on the
/// micro-kernel where the CPU has it, else the portable loop.
pub fn matmul_packed(a: &[f32], m: usize, w: &PackedWeights, out: &mut [f32], ep: Epilogue) {
    matmul_packed_with(a, m, w, out, ep, w.inputs.native())
}

impl Inputs {
    /// Whether this CPU runs the micro-kernel of these inputs.
    pub fn native(self) -> bool {
        match self {
            Inputs::F32 => f32_native(),
            Inputs::Bf16 => bf16_native(),
        }
    }
}

/// [`matmul_packed`] with the path chosen by the caller (`hardware` only where the CPU has
/// it).
pub fn matmul_packed_with(
    a: &[f32],
    m: usize,
    w: &PackedWeights,
    out: &mut [f32],
    ep: Epilogue,
    hardware: bool,
) {
    let (k, n) = (w.k, w.n);
    assert!(
        a.len() >= m * k && out.len() >= m * n,
        "matmul_packed sizes"
    );
    assert!(
        !hardware || w.inputs.native(),
        "this CPU lacks the micro-kernel's instructions"
    );
    if m == 0 || n == 0 {
        return;
    }
    // f32: the rows in place (their bits); bf16: rounded pairs
    let rounded;
    let lanes: &[u32] = match w.inputs {
        Inputs::F32 => {
            // SAFETY: f32 and u32 have the same size and alignment; only bits are read.
            unsafe { std::slice::from_raw_parts(a.as_ptr() as *const u32, m * k) }
        }
        Inputs::Bf16 => {
            rounded = pack_rows(a, m, k);
            &rounded
        }
    };
    let (row_tiles, col_tiles) = plan(m, n);
    // tiles of whole panels, so that a tile's columns are whole panels but the last
    let tile_w = n.div_ceil(col_tiles).div_ceil(PANEL) * PANEL;
    let tile_h = m.div_ceil(row_tiles);
    let col_tiles = n.div_ceil(tile_w);
    let row_tiles = m.div_ceil(tile_h);
    let dst = SharedMut(out.as_mut_ptr());
    let accumulate = matches!(ep, Epilogue::AccumulateBias(_));
    for_each_task_spinning(row_tiles * col_tiles, |task| {
        let (r0, c0) = ((task / col_tiles) * tile_h, (task % col_tiles) * tile_w);
        let (rows, cols) = (tile_h.min(m - r0), tile_w.min(n - c0));
        let tile = Tile {
            a: &lanes[r0 * w.pairs..],
            w,
            c0,
            rows,
            cols,
            // SAFETY: tiles are disjoint regions of `out`
            out: unsafe { dst.ptr().add(r0 * n) },
            accumulate,
        };
        // SAFETY: the tile's rows and columns lie inside `out` (m x n) and `packed`.
        unsafe {
            if hardware {
                #[cfg(target_arch = "x86_64")]
                x86::tile(&tile);
            } else {
                portable_tile(&tile);
            }
            for r in 0..rows {
                let row = std::slice::from_raw_parts_mut(dst.ptr().add((r0 + r) * n + c0), cols);
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

/// One thread's share of a product: rows `0..rows` of `a` (lanes: f32 bits or bf16 pairs,
/// `w.pairs` per row) times columns
/// `c0..c0 + cols` of `w`, into `out` (row `r`, column `c` at `out[r * w.n + c]`).
struct Tile<'a> {
    a: &'a [u32],
    w: &'a PackedWeights,
    c0: usize,
    rows: usize,
    cols: usize,
    out: *mut f32,
    accumulate: bool,
}

/// The portable loop: f32 multiply-adds, or `vdpbf16ps`'s arithmetic, lane by lane.
///
/// # Safety
/// `tile.out` covers the tile's rows and columns.
unsafe fn portable_tile(tile: &Tile) {
    let (pairs, n) = (tile.w.pairs, tile.w.n);
    for c in tile.c0..tile.c0 + tile.cols {
        let panel = tile.w.panel(c / PANEL);
        let lane = c % PANEL;
        for r in 0..tile.rows {
            let a = &tile.a[r * pairs..(r + 1) * pairs];
            let mut acc = 0f32;
            for (p, &ap) in a.iter().enumerate() {
                let bp = panel[p * PANEL + lane];
                match tile.w.inputs {
                    Inputs::F32 => acc = f32::from_bits(ap).mul_add(f32::from_bits(bp), acc),
                    Inputs::Bf16 => {
                        acc += from_bf16((ap >> 16) as u16) * from_bf16((bp >> 16) as u16);
                        acc += from_bf16(ap as u16) * from_bf16(bp as u16);
                    }
                }
            }
            // SAFETY: inside the tile.
            unsafe {
                let o = tile.out.add(r * n + c);
                *o = if tile.accumulate { *o + acc } else { acc };
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Inputs, PANEL, Tile};

    /// Output rows per micro-kernel call.
    const MR: usize = 12;

    /// The tile in blocks of [`MR`] rows, each over the tile's panels two at a time.
    ///
    /// # Safety
    /// AVX-512F and AVX-512 BF16 are available; `tile.out` covers the tile.
    pub unsafe fn tile(tile: &Tile) {
        let (pairs, n) = (tile.w.pairs, tile.w.n);
        let first = tile.c0 / PANEL;
        let panels = tile.cols.div_ceil(PANEL);
        let mut r = 0;
        while r < tile.rows {
            let mr = MR.min(tile.rows - r);
            let a = tile.a[r * pairs..].as_ptr();
            let mut j = 0;
            while j < panels {
                let np = 2.min(panels - j);
                let c = tile.c0 + j * PANEL;
                let cols = (np * PANEL).min(tile.c0 + tile.cols - c);
                let b0 = tile.w.panel(first + j).as_ptr();
                let b1 = if np == 2 {
                    tile.w.panel(first + j + 1).as_ptr()
                } else {
                    b0
                };
                // SAFETY: rows r..r+mr and columns c..c+cols are inside the tile.
                unsafe {
                    let out = tile.out.add(r * n + c);
                    let args = Call {
                        pairs,
                        a,
                        b0,
                        b1,
                        out,
                        out_rs: n,
                        cols,
                        accumulate: tile.accumulate,
                    };
                    match tile.w.inputs {
                        Inputs::F32 => dispatch_f32(mr, np, &args),
                        Inputs::Bf16 => dispatch_bf16(mr, np, &args),
                    }
                }
                j += np;
            }
            r += mr;
        }
    }

    /// One micro-kernel call's operands.
    struct Call {
        pairs: usize,
        a: *const u32,
        b0: *const u32,
        b1: *const u32,
        out: *mut f32,
        out_rs: usize,
        cols: usize,
        accumulate: bool,
    }

    macro_rules! rows_match {
        ($kernel:ident, $mr:expr, $np:expr, $args:expr, $($r:literal)*) => {
            match ($mr, $np) {
                $(($r, 1) => $kernel::<$r, 1>($args), ($r, _) => $kernel::<$r, 2>($args),)*
                _ => unreachable!("1..=12 rows"),
            }
        };
    }

    /// # Safety
    /// As [`tile`]; `mr` in 1..=12, `np` 1 or 2.
    unsafe fn dispatch_bf16(mr: usize, np: usize, args: &Call) {
        // SAFETY: forwarded.
        unsafe { rows_match!(kernel_bf16, mr, np, args, 1 2 3 4 5 6 7 8 9 10 11 12) }
    }

    /// # Safety
    /// As [`tile`]; `mr` in 1..=12, `np` 1 or 2.
    unsafe fn dispatch_f32(mr: usize, np: usize, args: &Call) {
        // SAFETY: forwarded.
        unsafe { rows_match!(kernel_f32, mr, np, args, 1 2 3 4 5 6 7 8 9 10 11 12) }
    }

    /// The f32 kernel: as [`kernel_bf16`] with one FMA per k step.
    ///
    /// # Safety
    /// As [`kernel_bf16`], `a` and the panels holding f32 bits, one lane per k step.
    #[target_feature(enable = "avx512f")]
    unsafe fn kernel_f32<const R: usize, const NP: usize>(c: &Call) {
        let mut acc = [[_mm512_setzero_ps(); NP]; R];
        let b = [c.b0, c.b1];
        for p in 0..c.pairs {
            let mut bv = [_mm512_setzero_ps(); NP];
            for (q, v) in bv.iter_mut().enumerate() {
                // SAFETY: panel q holds `pairs x 16` lanes.
                *v = unsafe { _mm512_loadu_ps(b[q].add(p * PANEL) as *const f32) };
            }
            for (r, row) in acc.iter_mut().enumerate() {
                // SAFETY: row r of `a` holds `pairs` lanes.
                let av = _mm512_set1_ps(unsafe { *(c.a.add(r * c.pairs + p) as *const f32) });
                for q in 0..NP {
                    row[q] = _mm512_fmadd_ps(av, bv[q], row[q]);
                }
            }
        }
        // SAFETY: forwarded.
        unsafe { store::<R, NP>(c, &acc) }
    }

    /// `R x (16 * NP)` outputs: `R * NP` accumulators for the whole k loop.
    ///
    /// # Safety
    /// As [`tile`]: `a` holds R rows of `pairs` lanes (row stride `pairs`), `b0`/`b1`
    /// `pairs x 16` lanes each, `out` R rows of `cols` floats (row stride `out_rs`).
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn kernel_bf16<const R: usize, const NP: usize>(c: &Call) {
        let mut acc = [[_mm512_setzero_ps(); NP]; R];
        let b = [c.b0, c.b1];
        for p in 0..c.pairs {
            let mut bv = [_mm512_setzero_si512(); NP];
            for (q, v) in bv.iter_mut().enumerate() {
                // SAFETY: panel q holds `pairs x 16` lanes.
                *v = unsafe { _mm512_loadu_si512(b[q].add(p * PANEL) as *const _) };
            }
            for (r, row) in acc.iter_mut().enumerate() {
                // SAFETY: row r of `a` holds `pairs` lanes.
                let av = _mm512_set1_epi32(unsafe { *c.a.add(r * c.pairs + p) } as i32);
                for q in 0..NP {
                    // SAFETY: bit casts between 512-bit vector types.
                    row[q] = _mm512_dpbf16_ps(
                        row[q],
                        unsafe { std::mem::transmute::<__m512i, __m512bh>(av) },
                        unsafe { std::mem::transmute::<__m512i, __m512bh>(bv[q]) },
                    );
                }
            }
        }
        // SAFETY: forwarded.
        unsafe { store::<R, NP>(c, &acc) }
    }

    /// Writes (or adds) the accumulators to the `R x cols` outputs.
    ///
    /// # Safety
    /// `out` holds R rows of `cols` floats (row stride `out_rs`).
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn store<const R: usize, const NP: usize>(c: &Call, acc: &[[__m512; NP]; R]) {
        for (r, row) in acc.iter().enumerate() {
            for (q, v) in row.iter().enumerate() {
                let first = q * PANEL;
                if first >= c.cols {
                    break;
                }
                let left = (c.cols - first).min(PANEL);
                let mask: __mmask16 = if left == PANEL {
                    0xffff
                } else {
                    (1u16 << left) - 1
                };
                // SAFETY: the masked lanes are inside row r's `cols` floats.
                unsafe {
                    let o = c.out.add(r * c.out_rs + first);
                    let v = if c.accumulate {
                        _mm512_add_ps(*v, _mm512_maskz_loadu_ps(mask, o))
                    } else {
                        *v
                    };
                    _mm512_mask_storeu_ps(o, mask, v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| (((i * 7919 + seed * 104729) % 2003) as f32 / 1001.0 - 1.0) * 0.7)
            .collect()
    }

    fn rounded(x: &[f32]) -> Vec<f32> {
        x.iter().map(|&v| from_bf16(to_bf16(v))).collect()
    }

    /// The product of the bf16-rounded inputs in f64, plus the epilogue.
    fn reference(a: &[f32], m: usize, k: usize, w: &[f32], n: usize) -> Vec<f32> {
        let (a, w) = (rounded(a), rounded(w));
        let mut o = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                o[i * n + j] = (0..k)
                    .map(|p| a[i * k + p] as f64 * w[p * n + j] as f64)
                    .sum::<f64>() as f32;
            }
        }
        o
    }

    /// The f32 micro-kernel against the f64 product (odd sizes as below) and the portable
    /// loop (same FMAs in the same order: equal to the bit).
    #[test]
    fn f32_products_match_the_reference_on_every_path() {
        for &(m, k, n) in &[(1, 1, 1), (29, 45, 150), (13, 384, 40), (40, 7, 33)] {
            let a = data(m * k, 4);
            let w = data(k * n, 5);
            let b = data(n, 6);
            let mut want = vec![0f32; m * n];
            for i in 0..m {
                for j in 0..n {
                    let s: f64 = (0..k)
                        .map(|p| a[i * k + p] as f64 * w[p * n + j] as f64)
                        .sum();
                    want[i * n + j] = s as f32 + b[j];
                }
            }
            let packed = PackedWeights::pack(&w, k, n, Inputs::F32);
            let mut results = Vec::new();
            for hw in [false, f32_native()] {
                let mut out = vec![0f32; m * n];
                matmul_packed_with(&a, m, &packed, &mut out, Epilogue::Bias(&b), hw);
                for i in 0..m * n {
                    let d = (out[i] - want[i]).abs();
                    assert!(d <= 1e-5 * k as f32, "{m}x{k}x{n} hw {hw} at {i}: {d}");
                }
                let mut acc = vec![0.5f32; m * n];
                matmul_packed_with(&a, m, &packed, &mut acc, Epilogue::AccumulateBias(&b), hw);
                for i in 0..m * n {
                    assert!((acc[i] - 0.5 - out[i]).abs() <= 1e-5, "accumulate, hw {hw}");
                }
                results.push(out);
            }
            assert_eq!(results[0], results[1], "{m}x{k}x{n}: hardware vs portable");
        }
    }

    #[test]
    fn rounding_is_to_nearest_even() {
        assert_eq!(to_bf16(1.0), 0x3f80);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to the even 1.0
        assert_eq!(to_bf16(1.0 + 2f32.powi(-8)), 0x3f80);
        // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6: up
        assert_eq!(to_bf16(1.0 + 3.0 * 2f32.powi(-8)), 0x3f82);
        assert_eq!(to_bf16(-2.5), 0xc020);
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
        assert_eq!(from_bf16(to_bf16(f32::INFINITY)), f32::INFINITY);
        assert_eq!(from_bf16(to_bf16(f32::MAX)), f32::INFINITY);
    }

    /// Odd sizes (row tails of every length, a half panel, an odd k) on both paths: equal to
    /// the product of the rounded inputs up to f32 summation, and the paths to each other.
    #[test]
    fn products_match_the_rounded_reference_on_every_path() {
        for &(m, k, n) in &[(1, 1, 1), (29, 45, 150), (13, 384, 40), (40, 7, 33)] {
            let a = data(m * k, 1);
            let w = data(k * n, 2);
            let b = data(n, 3);
            let want = reference(&a, m, k, &w, n);
            let packed = PackedWeights::pack(&w, k, n, Inputs::Bf16);
            let mut paths = vec![false];
            if bf16_native() {
                paths.push(true);
            }
            let mut results = Vec::new();
            for &hw in &paths {
                let mut out = vec![0f32; m * n];
                matmul_packed_with(&a, m, &packed, &mut out, Epilogue::Bias(&b), hw);
                let tol = 1e-5 * k as f32;
                for i in 0..m * n {
                    let d = (out[i] - want[i] - b[i % n]).abs();
                    assert!(d <= tol, "{m}x{k}x{n} hw {hw} at {i}: {d}");
                }
                let mut acc = vec![1f32; m * n];
                matmul_packed_with(&a, m, &packed, &mut acc, Epilogue::AccumulateBias(&b), hw);
                for i in 0..m * n {
                    assert!((acc[i] - 1.0 - out[i]).abs() <= 1e-5, "accumulate, hw {hw}");
                }
                let mut g = vec![0f32; m * n];
                matmul_packed_with(&a, m, &packed, &mut g, Epilogue::BiasGelu(&b), hw);
                for i in 0..m * n {
                    let e = crate::cpu::gelu_f32(out[i]);
                    assert!((g[i] - e).abs() <= 1e-5, "gelu, hw {hw}");
                }
                results.push(out);
            }
            if results.len() == 2 {
                // same arithmetic in the same order: equal to the bit
                assert_eq!(results[0], results[1], "{m}x{k}x{n}: hardware vs portable");
            }
        }
    }
}
