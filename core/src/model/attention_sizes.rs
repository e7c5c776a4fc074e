//! The sizes of one call of a fused attention core (burn-flex's [`super::flex_attention`],
//! the GPU kernels of [`super::cube_attention`]): both take the `qkv` projection
//! `[B, N, 3D]` of `heads` heads and need the same split checks and the same scale.

/// `b` images of `n` tokens, width `d`, `heads` heads of `d / heads`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AttentionSizes {
    pub b: usize,
    pub n: usize,
    pub d: usize,
    pub heads: usize,
}

impl AttentionSizes {
    /// The sizes of `qkv` `[B, N, 3D]` with `heads` heads, or `None` where they do not split:
    /// a width that is not three equal parts, heads that do not divide it, no rows.
    pub fn of(qkv: [usize; 3], heads: usize) -> Option<Self> {
        let [b, n, d3] = qkv;
        let d = d3 / 3;
        let splits =
            heads > 0 && d3.is_multiple_of(3) && d.is_multiple_of(heads) && b * n > 0 && d > 0;
        splits.then_some(Self { b, n, d, heads })
    }

    /// The width of one head.
    pub fn hd(&self) -> usize {
        self.d / self.heads
    }

    /// The scores' scale `1 / sqrt(hd)`.
    pub fn scale(&self) -> f32 {
        (self.hd() as f32).powf(-0.5)
    }
}

#[cfg(test)]
mod tests {
    use super::AttentionSizes;

    #[test]
    fn sizes_that_do_not_split_are_refused() {
        let s = AttentionSizes::of([2, 197, 1152], 6).unwrap();
        assert_eq!((s.d, s.hd()), (384, 64));
        assert_eq!(s.scale(), 0.125);
        for (dims, heads) in [
            ([2, 197, 1152], 0),
            ([2, 197, 1151], 6),
            ([2, 197, 1152], 5),
            ([0, 197, 1152], 6),
            ([2, 0, 1152], 6),
            ([2, 197, 0], 1),
        ] {
            assert_eq!(AttentionSizes::of(dims, heads), None, "{dims:?} {heads}");
        }
    }
}
