//! Transparent huge pages for the HNSW graph while it is built and searched.
//!
//! A graph of a million nodes is a few hundred megabytes visited at random: every step of a
//! traversal reads a neighbour list and a vector on pages no other recent step touched, so
//! with 4 KiB pages nearly every read also misses the TLB (and, in a virtual machine, pays a
//! two-level page walk). USearch maps its arenas itself (`mmap`), and most Linux systems
//! (`/sys/kernel/mm/transparent_hugepage/enabled` = `madvise`, the default of Debian, Ubuntu
//! and Fedora) grant 2 MiB pages only to memory that asks for them. The library has no option
//! for it, so [`HugePages`] asks from outside: a watcher thread marks every large
//! private anonymous mapping of the process `MADV_HUGEPAGE` as it appears (the arenas are
//! added as the graph grows), and [`collapse`] turns pages touched before the advice into
//! huge pages before a long search (`MADV_COLLAPSE`, Linux 6.1+; refused elsewhere, which is
//! harmless). Nothing changes what is computed; where the kernel says no, it is a no-op.
//! `DINO_HUGE_PAGES=0` turns it off.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Mappings smaller than this are left alone (a huge page is 2 MiB).
const MIN_BYTES: u64 = 8 << 20;

/// How often the watcher looks for new mappings while the graph grows.
const PERIOD: Duration = Duration::from_millis(100);

/// Whether the user left it on (`DINO_HUGE_PAGES=0` turns it off).
pub fn enabled() -> bool {
    std::env::var("DINO_HUGE_PAGES").map_or(true, |v| v != "0")
}

/// The private anonymous read-write mappings of this process of at least `min` bytes, as
/// `(start, end)` addresses, from `/proc/self/maps`.
#[cfg(target_os = "linux")]
fn anonymous_mappings(min: u64) -> Vec<(u64, u64)> {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return Vec::new();
    };
    maps.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let range = f.next()?;
            let perms = f.next()?;
            let _offset = f.next()?;
            let _dev = f.next()?;
            let inode = f.next()?;
            let path = f.next();
            // anonymous: no file (inode 0, no path or [heap]); private, readable, writable
            if inode != "0"
                || !matches!(path, None | Some("[heap]"))
                || !perms.starts_with("rw")
                || !perms.ends_with('p')
            {
                return None;
            }
            let (a, b) = range.split_once('-')?;
            let (a, b) = (
                u64::from_str_radix(a, 16).ok()?,
                u64::from_str_radix(b, 16).ok()?,
            );
            (b.saturating_sub(a) >= min).then_some((a, b))
        })
        .collect()
}

/// `madvise(advice)` on the 2 MiB-aligned inside of `[start, end)`.
#[cfg(target_os = "linux")]
fn advise(start: u64, end: u64, advice: libc::c_int) -> bool {
    const HUGE: u64 = 2 << 20;
    let a = start.div_ceil(HUGE) * HUGE;
    let b = end / HUGE * HUGE;
    if b <= a {
        return false;
    }
    // SAFETY: the range lies inside a mapping of this process (read from /proc/self/maps just
    // before); these advices change how its pages are backed, never their contents. A mapping
    // unmapped in between makes the call fail with ENOMEM, which is ignored.
    unsafe { libc::madvise(a as *mut libc::c_void, (b - a) as usize, advice) == 0 }
}

/// Asks for huge pages for every large anonymous mapping not in `done` (and adds it there).
#[cfg(target_os = "linux")]
fn advise_all(done: &mut Vec<(u64, u64)>) {
    for m in anonymous_mappings(MIN_BYTES) {
        if !done.contains(&m) {
            advise(m.0, m.1, libc::MADV_HUGEPAGE);
            done.push(m);
        }
    }
}

/// Marks the process's large anonymous mappings for huge pages while it lives (see the
/// module doc); dropping it stops the watcher.
pub struct HugePages {
    stop: Arc<AtomicBool>,
    watcher: Option<std::thread::JoinHandle<()>>,
}

impl HugePages {
    /// Starts the watcher (a no-op off Linux or with `DINO_HUGE_PAGES=0`).
    pub fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        #[cfg(target_os = "linux")]
        let watcher = enabled().then(|| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut done = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    advise_all(&mut done);
                    std::thread::sleep(PERIOD);
                }
            })
        });
        #[cfg(not(target_os = "linux"))]
        let watcher = None;
        HugePages { stop, watcher }
    }
}

impl Drop for HugePages {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(w) = self.watcher.take() {
            let _ = w.join();
        }
    }
}

/// Turns the pages already touched in large anonymous mappings into huge pages where the
/// kernel can (`MADV_COLLAPSE`). Before a long search of a graph built (or read) without the
/// advice.
pub fn collapse() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if enabled() {
        for (a, b) in anonymous_mappings(MIN_BYTES) {
            advise(a, b, libc::MADV_HUGEPAGE);
            advise(a, b, libc::MADV_COLLAPSE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the mapping holding `address` is marked `MADV_HUGEPAGE` (`/proc/self/smaps`).
    #[cfg(target_os = "linux")]
    fn advised(address: u64) -> bool {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ')
                && let Some((a, b)) = range.split_once('-')
                && let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16))
            {
                inside = a <= address && address < b;
            } else if inside && let Some(flags) = line.strip_prefix("VmFlags:") {
                return flags.split_whitespace().any(|f| f == "hg");
            }
        }
        false
    }

    /// A mapping made as USearch makes its arenas (`mmap`, not the allocator, which may
    /// advise huge pages itself), filled with `fill`.
    #[cfg(target_os = "linux")]
    fn arena(bytes: usize, fill: u8) -> &'static mut [u8] {
        // SAFETY: a fresh private anonymous mapping, never unmapped (the test process ends)
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            let s = std::slice::from_raw_parts_mut(p as *mut u8, bytes);
            s.fill(fill);
            s
        }
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn advises_the_large_anonymous_mappings_without_changing_them() {
        let thp = std::path::Path::new("/sys/kernel/mm/transparent_hugepage/enabled").exists();
        let first = arena(64 << 20, 7);
        let p = first.as_ptr() as u64;
        assert!(
            anonymous_mappings(MIN_BYTES)
                .iter()
                .any(|&(a, b)| a <= p && p < b),
            "the mapping is listed"
        );
        // (not asserted unadvised here: another test's index, running beside this one, has
        // its own watcher that advises every mapping of the process)
        // the watcher advises what appears while it runs
        let second = {
            let _on = HugePages::start();
            let s = arena(32 << 20, 3);
            std::thread::sleep(3 * PERIOD);
            s
        };
        let q = second.as_ptr() as u64;
        if thp && enabled() {
            assert!(
                advised(p) && advised(q),
                "both mappings carry MADV_HUGEPAGE"
            );
        }
        collapse();
        assert!(first.iter().all(|&v| v == 7) && second.iter().all(|&v| v == 3));
    }
}
