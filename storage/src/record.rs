//! Framing of one queue record: `[version u8][crc32c u32 BE][data]`.
//!
//! The CRC covers the data only; the version says how to read the rest and
//! lets later versions change the framing without a migration step.

use bytes::{BufMut, Bytes, BytesMut};

use crate::StorageError;

/// The framing version this build writes.
pub const RECORD_VERSION: u8 = 1;
const HEADER_LEN: usize = 5;

/// Frames `data` for storage.
pub fn encode(data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(HEADER_LEN + data.len());
    out.put_u8(RECORD_VERSION);
    out.put_u32(crc32c::crc32c(data));
    out.put_slice(data);
    out.freeze()
}

/// Checks a framed record and returns its data.
pub fn decode(framed: &[u8]) -> Result<Bytes, StorageError> {
    if framed.len() < HEADER_LEN {
        return Err(StorageError::Corrupt(format!(
            "{} bytes is shorter than the record header",
            framed.len()
        )));
    }
    let version = framed[0];
    if version != RECORD_VERSION {
        return Err(StorageError::Corrupt(format!(
            "unknown record version {version}"
        )));
    }
    let stored = u32::from_be_bytes([framed[1], framed[2], framed[3], framed[4]]);
    let data = &framed[HEADER_LEN..];
    let actual = crc32c::crc32c(data);
    if stored != actual {
        return Err(StorageError::Corrupt(format!(
            "checksum mismatch (stored {stored:08x}, computed {actual:08x})"
        )));
    }
    Ok(Bytes::copy_from_slice(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let framed = encode(b"hello");
        assert_eq!(framed.len(), 10);
        assert_eq!(&decode(&framed).unwrap()[..], b"hello");
    }

    #[test]
    fn detects_a_flipped_bit() {
        let mut framed = encode(b"hello").to_vec();
        framed[7] ^= 0x01;
        let err = decode(&framed).unwrap_err().to_string();
        assert!(err.contains("checksum mismatch"), "{err}");
    }

    #[test]
    fn rejects_unknown_versions_and_short_records() {
        let mut framed = encode(b"x").to_vec();
        framed[0] = 9;
        assert!(decode(&framed)
            .unwrap_err()
            .to_string()
            .contains("unknown record version 9"));
        assert!(decode(&[1, 2]).unwrap_err().to_string().contains("shorter"));
    }
}
