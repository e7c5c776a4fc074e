//! Writing NumPy `.npy` arrays (read them with `np.load`).

use std::path::Path;

use anyhow::Context;
use npyz::WriterBuilder;

/// Writes `data` with `shape` as a C-order `.npy` (f32 `<f4` or u8 `|u1`).
pub fn write<T: npyz::Serialize + npyz::AutoSerialize + Copy>(
    path: &Path,
    shape: &[usize],
    data: &[T],
) -> anyhow::Result<()> {
    let shape: Vec<u64> = shape.iter().map(|&s| s as u64).collect();
    let mut buf = Vec::new();
    {
        let mut w = npyz::WriteOptions::<T>::new()
            .default_dtype()
            .shape(&shape)
            .writer(&mut buf)
            .begin_nd()?;
        w.extend(data.iter().copied())?;
        w.finish()?;
    }
    dino_core::atomic_write(path, &buf).with_context(|| format!("writing {}", path.display()))
}
