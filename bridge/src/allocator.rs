//! The binary's allocator: mimalloc, with its arenas committed lazily.
//!
//! mimalloc is faster than glibc's malloc for the per-message work (the
//! mapping language's JSON trees above all allocate and free small blocks;
//! glibc's free was the largest single cost in the mapping benchmark). By
//! default on Linux it commits each arena eagerly and purges freed pages by
//! resetting them, and those pages stay in the resident set: after an ingest
//! burst the appliance held 93–122 MB instead of ~30 MB (BENCHMARKS.md,
//! session 3). Lazy arena commit keeps the speed and gives the memory back.
//!
//! The option must be set before mimalloc makes its first arena, which
//! happens on the first allocation, before `main` (setting it at the top of
//! `main` was measured not to help). So it is set from an ELF constructor
//! that runs ahead of mimalloc's own (`constructor(101)`) and of the Rust
//! runtime's allocations. It only changes the default: the environment
//! variable `MIMALLOC_ARENA_EAGER_COMMIT` still wins.

use std::ffi::{c_int, c_long};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_arena_eager_commit` in mimalloc's `mi_option_e` (v2 and v3).
const MI_OPTION_ARENA_EAGER_COMMIT: c_int = 4;

extern "C" {
    fn mi_option_set_default(option: c_int, value: c_long);
    #[cfg(test)]
    fn mi_option_get(option: c_int) -> c_long;
}

extern "C" fn commit_arenas_lazily() {
    // SAFETY: sets a plain integer in mimalloc's option table; the option
    // index is in range, and nothing runs concurrently this early.
    unsafe { mi_option_set_default(MI_OPTION_ARENA_EAGER_COMMIT, 0) }
}

/// Priority 100: after the Rust runtime's argument capture (99), before
/// mimalloc's initialisation (101); lower numbers run first.
#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array.00100"]
static COMMIT_ARENAS_LAZILY: extern "C" fn() = commit_arenas_lazily;

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn arenas_are_committed_lazily_unless_the_environment_says_otherwise() {
        let expected = match std::env::var("MIMALLOC_ARENA_EAGER_COMMIT") {
            Ok(value) => value.parse().unwrap_or(0),
            Err(_) => 0,
        };
        // SAFETY: reads mimalloc's option table.
        assert_eq!(
            unsafe { mi_option_get(MI_OPTION_ARENA_EAGER_COMMIT) },
            expected
        );
    }
}
