//! CRC32C of record frames: the same checksum as the `crc32c` crate, with
//! a plain loop of 8-byte `crc32` instructions for buffers the size of a
//! record.
//!
//! Every record is checksummed once when it is written and once when it
//! is read, and for a 200-byte record the crate's general routine (which
//! aligns the buffer, then runs three interleaved streams meant for
//! kilobytes) spent about 350 instructions per call: two thirds of what a
//! replay spent per record (callgrind, `BENCHMARKS.md`). Buffers from
//! [`LONG`] bytes on still go to the crate, whose interleaving pays off
//! there; machines without SSE 4.2 use it for everything.

/// From this many bytes on, the crate's interleaved routine is faster.
const LONG: usize = 1024;

/// The CRC32C of `data` continued from `crc` (the CRC of the bytes before
/// it; 0 to start), as [`crc32c::crc32c_append`] computes it.
pub fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        if data.len() < LONG && std::arch::is_x86_feature_detected!("sse4.2") {
            // SAFETY: the CPU has SSE 4.2, checked just above.
            return unsafe { short_sse42(crc, data) };
        }
    }
    crc32c::crc32c_append(crc, data)
}

/// The CRC32C of `data`.
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c_append(0, data)
}

/// One `crc32` instruction per 8 bytes, then one per remaining byte.
/// Callers must make sure the CPU supports SSE 4.2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
unsafe fn short_sse42(crc: u32, data: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u64, _mm_crc32_u8};
    let mut words = data.chunks_exact(8);
    let mut state = u64::from(!crc);
    for word in &mut words {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        state = _mm_crc32_u64(state, u64::from_le_bytes(bytes));
    }
    // The instruction keeps the state in the low 32 bits.
    let mut state = state as u32;
    for &byte in words.remainder() {
        state = _mm_crc32_u8(state, byte);
    }
    !state
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic bytes (an LCG), so failures replay.
    fn bytes(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        (0..len)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (x >> 56) as u8
            })
            .collect()
    }

    #[test]
    fn matches_the_crate_at_every_length_and_alignment() {
        let data = bytes(3 * LONG, 7);
        for start in 0..9 {
            for len in (0..LONG + 40).chain([2 * LONG, 3 * LONG - start]) {
                let slice = &data[start..start + len];
                for seed in [0u32, 1, 0xdead_beef] {
                    assert_eq!(
                        crc32c_append(seed, slice),
                        crc32c::crc32c_append(seed, slice),
                        "start {start}, len {len}, seed {seed:#x}"
                    );
                }
            }
        }
    }

    #[test]
    fn known_value_and_continuation() {
        // The CRC32C check value (RFC 3720, B.4 gives the same polynomial).
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        let data = bytes(300, 3);
        let (head, tail) = data.split_at(123);
        assert_eq!(crc32c_append(crc32c(head), tail), crc32c(&data));
    }
}
