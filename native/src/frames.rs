//! Video frames in and out: a folder of images, or a video file decoded by `ffmpeg`; an
//! animated GIF written here, an MP4 through `ffmpeg` when it is installed.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// Whether `ffmpeg` runs.
pub fn has_ffmpeg() -> bool {
    Command::new("ffmpeg")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The frames of `input`, in order: the images of a folder (sorted by name), or a video
/// decoded to PNGs in `scratch` (every `step`-th frame, at most `max` frames).
pub fn frames_of(input: &Path, scratch: &Path, max: Option<usize>) -> anyhow::Result<Vec<PathBuf>> {
    if input.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(input)
            .with_context(|| format!("{}", input.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && dino_core::data::is_image(p))
            .collect();
        files.sort();
        if files.is_empty() {
            bail!("{}: no image frames in this folder", input.display());
        }
        if let Some(m) = max {
            files.truncate(m);
        }
        return Ok(files);
    }
    if !input.is_file() {
        bail!("{}: no such file or folder", input.display());
    }
    if !has_ffmpeg() {
        bail!(
            "{} looks like a video: decoding it needs ffmpeg, which is not installed \
             (Debian/Ubuntu: `sudo apt-get install ffmpeg`), or give a folder of frames",
            input.display()
        );
    }
    std::fs::create_dir_all(scratch)?;
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-v", "error", "-nostdin", "-i"]).arg(input);
    if let Some(m) = max {
        cmd.args(["-frames:v", &m.to_string()]);
    }
    let out = cmd
        .arg(scratch.join("%06d.png"))
        .output()
        .context("running ffmpeg")?;
    if !out.status.success() {
        bail!(
            "ffmpeg could not decode {}: {}",
            input.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    frames_of(scratch, scratch, max)
}

/// Frame rate of a video as `ffprobe` reports it (None for folders or without ffprobe).
pub fn video_fps(input: &Path) -> Option<f32> {
    if input.is_dir() {
        return None;
    }
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=r_frame_rate",
        ])
        .args(["-of", "default=nokey=1:noprint_wrappers=1"])
        .arg(input)
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout);
    let (a, b) = s.trim().split_once('/')?;
    let fps = a.parse::<f32>().ok()? / b.parse::<f32>().ok()?;
    fps.is_finite().then_some(fps)
}

/// An animated GIF of the frames (looping).
pub fn write_gif(frames: &[image::RgbImage], fps: f32, path: &Path) -> anyhow::Result<()> {
    use image::codecs::gif::{GifEncoder, Repeat};
    let file = std::fs::File::create(path).with_context(|| format!("{}", path.display()))?;
    let mut enc = GifEncoder::new_with_speed(std::io::BufWriter::new(file), 10);
    enc.set_repeat(Repeat::Infinite)?;
    let delay = image::Delay::from_numer_denom_ms(1000, fps.max(0.1).round() as u32);
    for f in frames {
        let rgba = image::DynamicImage::ImageRgb8(f.clone()).to_rgba8();
        enc.encode_frame(image::Frame::from_parts(rgba, 0, 0, delay))?;
    }
    Ok(())
}

/// An H.264 MP4 of numbered PNG frames through ffmpeg.
pub fn write_mp4(pattern: &Path, fps: f32, path: &Path) -> anyhow::Result<()> {
    let out = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-nostdin",
            "-y",
            "-framerate",
            &format!("{fps}"),
            "-i",
        ])
        .arg(pattern)
        .args([
            "-vf",
            "pad=ceil(iw/2)*2:ceil(ih/2)*2",
            "-pix_fmt",
            "yuv420p",
        ])
        .arg(path)
        .output()
        .context("running ffmpeg")?;
    if !out.status.success() {
        bail!(
            "ffmpeg could not write {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
