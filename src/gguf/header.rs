//! The fixed start of a GGUF file, shared by the reader and the model loader's precheck.

use std::io::Read;

/// The fixed 24-byte start of every GGUF file, checked: magic, a version Tandem reads,
/// and the tensor and metadata counts (not yet checked against anything).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// GGUF format version (2 or 3).
    pub version: u32,
    /// Number of entries in the tensor directory.
    pub n_tensors: u64,
    /// Number of metadata key/value pairs.
    pub n_kv: u64,
}

/// Why the start of a file is not a GGUF header Tandem reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer than the 4 magic bytes.
    TooShort(usize),
    /// The first 4 bytes (shown) are not `GGUF`.
    BadMagic([u8; 4]),
    /// The magic is there but the rest of the 24 bytes is not.
    CutOff,
    /// A GGUF version other than 2 or 3.
    UnsupportedVersion(u32),
}

/// Read and check the header from the start of `r` (at most 24 bytes are read). Shared by
/// this reader and the model loader's precheck, so both agree on what a GGUF is.
pub fn read_header(r: &mut impl Read) -> Result<Header, HeaderError> {
    let mut head = [0u8; 24];
    let mut got = 0;
    while got < head.len() {
        match r.read(&mut head[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    if got < 4 {
        return Err(HeaderError::TooShort(got));
    }
    let magic = [head[0], head[1], head[2], head[3]];
    if &magic != b"GGUF" {
        return Err(HeaderError::BadMagic(magic));
    }
    if got < head.len() {
        return Err(HeaderError::CutOff);
    }
    let version = u32::from_le_bytes(head[4..8].try_into().expect("4 bytes"));
    if !(2..=3).contains(&version) {
        return Err(HeaderError::UnsupportedVersion(version));
    }
    Ok(Header {
        version,
        n_tensors: u64::from_le_bytes(head[8..16].try_into().expect("8 bytes")),
        n_kv: u64::from_le_bytes(head[16..24].try_into().expect("8 bytes")),
    })
}
