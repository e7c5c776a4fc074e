//! The descriptor matrix of a feature index, either computed in memory or read straight from
//! the saved file through a memory map. A million 1536-d descriptors are 6 GB of f32: read
//! into memory they would be copied twice on load (the file's bytes, then the floats), while
//! mapped they cost no allocation at all, the operating system pages in what a search
//! touches and can drop it again under memory pressure. Either way the rows read as one
//! `&[f32]`.

use std::ops::Deref;
use std::sync::Arc;

/// `[N, D]` rows, row-major.
#[derive(Clone)]
pub enum FeatureRows {
    Owned(Vec<f32>),
    /// `len` floats at byte `start` of a mapped file (4-byte aligned, little-endian host).
    Mapped {
        map: Arc<memmap2::Mmap>,
        start: usize,
        len: usize,
    },
}

impl FeatureRows {
    /// The `len` little-endian f32 at byte `start` of `map`, without a copy where the host
    /// is little-endian and the data 4-byte aligned (safetensors aligns tensors to 8); else
    /// decoded into memory.
    pub fn of_map(map: Arc<memmap2::Mmap>, start: usize, len: usize) -> Self {
        let bytes = &map[start..start + len * 4];
        if cfg!(target_endian = "little") && bytes.as_ptr().cast::<f32>().is_aligned() {
            FeatureRows::Mapped { map, start, len }
        } else {
            FeatureRows::Owned(
                bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
            )
        }
    }

    /// Whether the rows are read from a mapped file.
    pub fn is_mapped(&self) -> bool {
        matches!(self, FeatureRows::Mapped { .. })
    }

    /// Little-endian bytes of the rows (what a safetensors F32 tensor holds).
    pub fn write_le(rows: &[f32], out: &mut impl std::io::Write) -> std::io::Result<()> {
        if cfg!(target_endian = "little") {
            out.write_all(bytemuck::cast_slice(rows))
        } else {
            for v in rows {
                out.write_all(&v.to_le_bytes())?;
            }
            Ok(())
        }
    }
}

impl Default for FeatureRows {
    fn default() -> Self {
        FeatureRows::Owned(Vec::new())
    }
}

impl From<Vec<f32>> for FeatureRows {
    fn from(v: Vec<f32>) -> Self {
        FeatureRows::Owned(v)
    }
}

impl Deref for FeatureRows {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        match self {
            FeatureRows::Owned(v) => v,
            FeatureRows::Mapped { map, start, len } => {
                // `of_map` checked the bounds, the alignment and the byte order
                bytemuck::cast_slice(&map[*start..*start + *len * 4])
            }
        }
    }
}

impl std::fmt::Debug for FeatureRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "FeatureRows({} values{})",
            self.len(),
            if self.is_mapped() { ", mapped" } else { "" }
        )
    }
}

impl PartialEq for FeatureRows {
    fn eq(&self, other: &Self) -> bool {
        self[..] == other[..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map_of(bytes: &[u8]) -> Arc<memmap2::Mmap> {
        let mut m = memmap2::MmapMut::map_anon(bytes.len()).unwrap();
        m.copy_from_slice(bytes);
        Arc::new(m.make_read_only().unwrap())
    }

    #[test]
    fn mapped_rows_read_in_place_and_misaligned_ones_are_decoded() {
        let values = [1.5f32, -2.0, 3.25, 0.0];
        let mut le = Vec::new();
        FeatureRows::write_le(&values, &mut le).unwrap();
        // aligned at byte 8: read in place (little-endian hosts)
        let mut bytes = vec![0u8; 8];
        bytes.extend(&le);
        let rows = FeatureRows::of_map(map_of(&bytes), 8, 4);
        assert_eq!(&rows[..], &values);
        assert_eq!(rows.is_mapped(), cfg!(target_endian = "little"));
        // at byte 3: decoded into memory, same values
        let mut bytes = vec![0u8; 3];
        bytes.extend(&le);
        let rows = FeatureRows::of_map(map_of(&bytes), 3, 4);
        assert_eq!(&rows[..], &values);
        assert!(!rows.is_mapped());
        assert_eq!(rows, FeatureRows::from(values.to_vec()));
    }
}
