//! The process's allocator: mimalloc, tuned for tensor work.
//!
//! Tensor ops free and allocate buffers of the same sizes at every training step. The system
//! allocator hands them back to the kernel, which zeroes fresh pages again on the next touch
//! (page faults were ~6% of a training step); mimalloc keeps freed memory for reuse, but by
//! default still returns ("purges") it after a second, which cost another 13% of a
//! Fashion-MNIST training step (49.2 -> 55.2 img/s, alternating runs on 2 cores). [`keep_freed_memory`] turns that off.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc v3's `mi_option_e` (libmimalloc-sys, pinned, exports no
/// name for it; checked by the test below).
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Never return freed memory to the OS during the run (mimalloc's purge delay -1), unless the
/// user set `MIMALLOC_PURGE_DELAY` themselves. The process's peak memory stays reserved until
/// it exits, which long tensor work reaches again at every step anyway.
pub fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one integer option; mimalloc reads it when it next purges.
        unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, -1) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        // SAFETY: reads and sets integer options.
        unsafe {
            // v3 defaults: purge delay 1000 ms, the next option (use_numa_nodes) 0
            assert_eq!(libmimalloc_sys::mi_option_get(PURGE_DELAY), 1000);
            assert_eq!(libmimalloc_sys::mi_option_get(PURGE_DELAY + 1), 0);
            keep_freed_memory();
            assert_eq!(libmimalloc_sys::mi_option_get(PURGE_DELAY), -1);
        }
    }
}
