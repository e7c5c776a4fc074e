//! Writing NumPy `.npy` arrays (read them with `np.load`).

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use npyz::WriterBuilder;

/// Writes `data` with `shape` as a C-order `.npy` (f32 `<f4`, u8 `|u1`, i64 `<i8`), atomically
/// and streamed to the file (no second copy of the array in memory).
pub fn write<T: npyz::Serialize + npyz::AutoSerialize + Copy>(
    path: &Path,
    shape: &[usize],
    data: &[T],
) -> anyhow::Result<()> {
    let shape: Vec<u64> = shape.iter().map(|&s| s as u64).collect();
    dino_core::atomic_replace(path, |tmp| -> anyhow::Result<()> {
        let mut f = std::io::BufWriter::new(std::fs::File::create(tmp)?);
        let mut w = npyz::WriteOptions::<T>::new()
            .default_dtype()
            .shape(&shape)
            .writer(&mut f)
            .begin_nd()?;
        w.extend(data.iter().copied())?;
        w.finish()?;
        f.flush()?;
        Ok(())
    })
    .with_context(|| format!("writing {}", path.display()))
}
