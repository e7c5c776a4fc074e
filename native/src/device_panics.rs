//! What a failure on a GPU looks like to the user.
//!
//! CubeCL (Burn's GPU runtime) runs device work on threads of its own (`DSU-…`, `DSD-…`),
//! catches every panic there and hands the failure to the caller, whose own panic or error then
//! carries the message. Rust's default hook prints each of those caught panics first. On a
//! software adapter (SwiftShader, lavapipe) the memory-bandwidth probe CubeCL runs before
//! autotuning asks for more memory than the adapter grants. Every such process printed a few
//! caught "wgpu error: Out of Memory" panics (hundreds of lines with `RUST_BACKTRACE` set)
//! although nothing had failed. And a batch too large for the GPU ended in a panic whose
//! message was a chain of CubeCL errors ("Several failures at once ... can't allocate buffer of
//! size: 6000000000"), not a sentence saying what to change.
//!
//! [`install`] sets a panic hook:
//! - a panic on CubeCL's device threads prints nothing (the caller reports it if it matters);
//! - a panic elsewhere that says the device's memory is exhausted (CubeCL, wgpu or LibTorch's
//!   words) prints one error with what to change and ends the process with status 1; outputs
//!   and checkpoints are written atomically, so nothing half-written is left;
//! - any other panic goes to the default hook, as before.

/// Installs the hook (once, before the first GPU tensor). `advice` follows the error.
pub fn install(advice: &'static str) {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if is_device_thread(std::thread::current().name()) {
            return;
        }
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        match out_of_memory(&message) {
            Some(size) => {
                let size = size.map_or(String::new(), |b| {
                    format!(
                        " (a buffer of {:.1} GB could not be allocated)",
                        b as f64 / 1e9
                    )
                });
                eprintln!("\nerror: the GPU ran out of memory{size}. {advice}");
                std::process::exit(1);
            }
            None => default(info),
        }
    }));
}

/// Whether `name` is one of CubeCL's device threads: `DS` + `U`/`D` (upstream/downstream) +
/// `-<device type>-<device index>` (cubecl-common's `channel.rs`).
fn is_device_thread(name: Option<&str>) -> bool {
    let Some(rest) = name.and_then(|n| n.strip_prefix("DSU-").or(n.strip_prefix("DSD-"))) else {
        return false;
    };
    let mut parts = rest.split('-');
    let number =
        |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    number(parts.next()) && number(parts.next()) && parts.next().is_none()
}

/// Whether a panic message says the device's memory is exhausted, with the size of the
/// allocation that failed where the message gives it.
fn out_of_memory(message: &str) -> Option<Option<u64>> {
    const SIGNS: [&str; 4] = [
        // wgpu (through CubeCL's uncaptured-error handler)
        "wgpu error: Out of Memory",
        // CubeCL's IoError::BufferTooBig and IoError::OutOfMemory
        "can't allocate buffer of size",
        "out of device memory allocating",
        // LibTorch (--device cuda)
        "CUDA out of memory",
    ];
    if !SIGNS.iter().any(|s| message.contains(s)) {
        return None;
    }
    let number_after = |marker: &str| {
        let at = message.find(marker)? + marker.len();
        let digits: String = message[at..]
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        digits.parse::<u64>().ok()
    };
    Some(
        number_after("can't allocate buffer of size:")
            .or_else(|| number_after("out of device memory allocating")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The message `Tensor::into_scalar` panicked with on SwiftShader when a 6 GB tensor could
    /// not be allocated (CubeCL 0.11.3, copied from the run).
    const SWIFTSHADER_6GB: &str = "Error while reading data: use `try_into_scalar` instead to catch the error at runtime: Execution(An error happened during execution\nCaused by:\n  Several failures at once\nCaused by:\n  The bytes were never written (failure #1, still claiming 2 buffer(s))\n  skipped `ReduceKernel`: it needed memory ManagedMemoryId { value: 0 }, which carried the failure\nCaused by:\n  An IO error happened\nCaused by:\n  can't allocate buffer of size: 6000000000\nNo backtrace available\nAsked at:\nNo backtrace available)";

    #[test]
    fn cubecl_device_threads_are_told_from_others_by_name() {
        for name in ["DSD-4-0", "DSU-12-3"] {
            assert!(is_device_thread(Some(name)), "{name}");
        }
        for name in [
            "main",
            "DSD-4",
            "DSD-4-0-1",
            "DSD-x-0",
            "DSX-4-0",
            "DSD--0",
            "",
        ] {
            assert!(!is_device_thread(Some(name)), "{name}");
        }
        assert!(!is_device_thread(None));
    }

    #[test]
    fn out_of_memory_is_recognised_in_each_backends_words_with_its_size() {
        assert_eq!(out_of_memory(SWIFTSHADER_6GB), Some(Some(6_000_000_000)));
        assert_eq!(out_of_memory("wgpu error: Out of Memory"), Some(None));
        assert_eq!(
            out_of_memory(
                "Can't have an error when submitting a task: CallError(task panicked on device runner thread: wgpu error: Out of Memory)"
            ),
            Some(None)
        );
        assert_eq!(
            out_of_memory("out of device memory allocating 1048576 bytes\nbacktrace"),
            Some(Some(1_048_576))
        );
        assert_eq!(
            out_of_memory("CUDA out of memory. Tried to allocate 2.00 GiB"),
            Some(None)
        );
        for other in ["index out of bounds: the len is 3", "Out of range", ""] {
            assert_eq!(out_of_memory(other), None, "{other}");
        }
    }

    /// Run in a child process by the test below: panics as CubeCL does when the GPU's memory
    /// runs out (a caught panic on a device thread, then the caller's).
    #[test]
    fn child_panics_as_cubecl_does_out_of_memory() {
        if std::env::var_os("DINO_DEVICE_PANICS_CHILD").is_none() {
            return;
        }
        install("Lower --batch-size.");
        let device = std::thread::Builder::new()
            .name("DSD-4-0".into())
            .spawn(|| panic!("wgpu error: Out of Memory"))
            .unwrap();
        assert!(device.join().is_err());
        eprintln!("the device thread's panic was caught");
        panic!("{SWIFTSHADER_6GB}");
    }

    #[test]
    fn out_of_memory_ends_the_process_with_one_error_and_device_threads_stay_quiet() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "device_panics::tests::child_panics_as_cubecl_does_out_of_memory",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("DINO_DEVICE_PANICS_CHILD", "1")
            .env("RUST_BACKTRACE", "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("the device thread's panic was caught"),
            "{stderr}"
        );
        assert!(
            stderr.contains(
                "error: the GPU ran out of memory (a buffer of 6.0 GB could not be allocated). Lower --batch-size."
            ),
            "{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(!stderr.contains("stack backtrace"), "{stderr}");
    }
}
