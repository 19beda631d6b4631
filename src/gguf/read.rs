//! A small GGUF reader: metadata, tensor directory, and raw tensor bytes. Tandem reads
//! weights itself where its own Rust code computes with them (the output head, the
//! diffusion drafter), without going through llama.cpp. Every length read from the file is
//! checked against the file's size, so a corrupt file gives an error, never a panic or a
//! huge allocation.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::{GgmlType, HeaderError, read_header};

/// Errors from opening or reading a GGUF file.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// Opening or reading the file failed.
    #[error("{path}: {err}")]
    Io {
        /// The file's path.
        path: String,
        /// The cause, shown in the message (not chained as a `source`, so that
        /// `{:#}` printing does not repeat it).
        err: std::io::Error,
    },
    /// The file does not start with the GGUF magic.
    #[error("{path}: not a GGUF file")]
    NotGguf {
        /// The file's path.
        path: String,
    },
    /// The file is malformed or truncated.
    #[error("{path}: corrupt GGUF: {why}")]
    Corrupt {
        /// The file's path.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// The file has no tensor of the requested name.
    #[error("{path}: no tensor named {name}")]
    NoTensor {
        /// The file's path.
        path: String,
        /// The requested tensor name.
        name: String,
    },
    /// The tensor's ggml type is not one Tandem can read.
    #[error("{path}: tensor {name} has type {ty}, which Tandem cannot read")]
    UnsupportedType {
        /// The file's path.
        path: String,
        /// The tensor's name.
        name: String,
        /// The tensor's ggml type id.
        ty: u32,
    },
}

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Any GGUF integer type, widened to `i64`.
    Int(i64),
    /// An `f32` or `f64`, widened to `f64`.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A UTF-8 string.
    Str(String),
    /// An array of values.
    Array(Vec<Value>),
}

/// One entry of the tensor directory.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    /// Tensor name.
    pub name: String,
    /// ggml order: `dims[0]` is the contiguous (row) length.
    pub dims: Vec<u64>,
    /// ggml type id (see [`GgmlType::from_id`]).
    pub type_id: u32,
    /// Offset from the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// Total number of elements (the product of `dims`).
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// An opened GGUF file: metadata and tensor directory in memory, tensor data on disk.
#[derive(Debug)]
pub struct Gguf {
    path: PathBuf,
    /// GGUF format version.
    pub version: u32,
    /// All metadata key/value pairs.
    pub metadata: BTreeMap<String, Value>,
    /// The tensor directory, in file order.
    pub tensors: Vec<TensorInfo>,
    /// Byte range of each metadata value (type id included) in the file, so a writer can
    /// copy keys with their exact GGUF types (see [`Gguf::raw_value`]).
    spans: BTreeMap<String, (u64, u64)>,
    data_start: u64,
    file_len: u64,
}

struct Reader<'a> {
    r: BufReader<File>,
    path: &'a str,
    file_len: u64,
}

impl Reader<'_> {
    fn corrupt(&self, why: impl Into<String>) -> GgufError {
        GgufError::Corrupt {
            path: self.path.to_string(),
            why: why.into(),
        }
    }

    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], GgufError> {
        let mut b = [0u8; N];
        self.r
            .read_exact(&mut b)
            .map_err(|_| self.corrupt("unexpected end of file in the header"))?;
        Ok(b)
    }

    fn u32(&mut self) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }

    fn u64(&mut self) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }

    fn count(&mut self, what: &str) -> Result<usize, GgufError> {
        let n = self.u64()?;
        self.check_count(n, what)
    }

    /// A count that must fit in the file (each counted item takes at least one byte).
    fn check_count(&self, n: u64, what: &str) -> Result<usize, GgufError> {
        if n > self.file_len {
            return Err(self.corrupt(format!("{what} count {n} exceeds the file size")));
        }
        Ok(n as usize)
    }

    fn string(&mut self) -> Result<String, GgufError> {
        let n = self.count("string length")?;
        let mut b = vec![0u8; n];
        self.r
            .read_exact(&mut b)
            .map_err(|_| self.corrupt("unexpected end of file in a string"))?;
        String::from_utf8(b).map_err(|_| self.corrupt("a string is not UTF-8"))
    }

    fn value(&mut self, ty: u32, depth: usize) -> Result<Value, GgufError> {
        Ok(match ty {
            0 => Value::Int(self.bytes::<1>()?[0] as i64),
            1 => Value::Int(self.bytes::<1>()?[0] as i8 as i64),
            2 => Value::Int(u16::from_le_bytes(self.bytes()?) as i64),
            3 => Value::Int(i16::from_le_bytes(self.bytes()?) as i64),
            4 => Value::Int(self.u32()? as i64),
            5 => Value::Int(i32::from_le_bytes(self.bytes()?) as i64),
            6 => Value::Float(f32::from_le_bytes(self.bytes()?) as f64),
            7 => Value::Bool(self.bytes::<1>()?[0] != 0),
            8 => Value::Str(self.string()?),
            9 => {
                if depth > 2 {
                    return Err(self.corrupt("arrays nested too deeply"));
                }
                let ety = self.u32()?;
                let n = self.count("array")?;
                let mut v = Vec::with_capacity(n.min(1 << 20));
                for _ in 0..n {
                    v.push(self.value(ety, depth + 1)?);
                }
                Value::Array(v)
            }
            10 => Value::Int(self.u64()? as i64),
            11 => Value::Int(i64::from_le_bytes(self.bytes()?)),
            12 => Value::Float(f64::from_le_bytes(self.bytes()?)),
            t => return Err(self.corrupt(format!("unknown metadata type {t}"))),
        })
    }
}

impl Gguf {
    /// Open `path`, reading its header, metadata and tensor directory (tensor data stays on disk).
    pub fn open(path: &Path) -> Result<Self, GgufError> {
        let p = path.display().to_string();
        let io = |err| GgufError::Io {
            path: p.clone(),
            err,
        };
        let f = File::open(path).map_err(io)?;
        let file_len = f.metadata().map_err(io)?.len();
        let mut rd = Reader {
            r: BufReader::new(f),
            path: &p,
            file_len,
        };
        let header = read_header(&mut rd.r);
        let header = header.map_err(|e| match e {
            HeaderError::TooShort(_) | HeaderError::BadMagic(_) => {
                GgufError::NotGguf { path: p.clone() }
            }
            HeaderError::CutOff => rd.corrupt("unexpected end of file in the header"),
            HeaderError::UnsupportedVersion(v) => {
                rd.corrupt(format!("unsupported GGUF version {v}"))
            }
        })?;
        let version = header.version;
        let n_tensors = rd.check_count(header.n_tensors, "tensor")?;
        let n_kv = rd.check_count(header.n_kv, "metadata")?;
        let mut metadata = BTreeMap::new();
        let mut spans = BTreeMap::new();
        for _ in 0..n_kv {
            let key = rd.string()?;
            let start = rd.r.stream_position().map_err(io)?;
            let ty = rd.u32()?;
            let v = rd.value(ty, 0)?;
            let end = rd.r.stream_position().map_err(io)?;
            spans.insert(key.clone(), (start, end));
            metadata.insert(key, v);
        }
        let mut tensors = Vec::with_capacity(n_tensors.min(1 << 16));
        for _ in 0..n_tensors {
            let name = rd.string()?;
            let n_dims = rd.u32()?;
            if n_dims == 0 || n_dims > 4 {
                return Err(rd.corrupt(format!("tensor {name} has {n_dims} dimensions")));
            }
            let dims = (0..n_dims)
                .map(|_| rd.u64())
                .collect::<Result<Vec<_>, _>>()?;
            let type_id = rd.u32()?;
            let offset = rd.u64()?;
            // Each tensor must fit in the file: its element count cannot overflow and is
            // bounded by the file's size (every type stores at least 1 byte per 256
            // values), so no later computation is sized by an unchecked length.
            let n = dims
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d))
                .filter(|&n| n / 256 <= file_len && offset <= file_len);
            if n.is_none() {
                return Err(rd.corrupt(format!(
                    "tensor {name}: dimensions {dims:?} at offset {offset} do not fit in the file"
                )));
            }
            tensors.push(TensorInfo {
                name,
                dims,
                type_id,
                offset,
            });
        }
        let header_end = rd.r.stream_position().map_err(io)?;
        let align = match metadata.get("general.alignment") {
            Some(Value::Int(a)) if *a > 0 && (*a as u64).is_power_of_two() => *a as u64,
            None => 32,
            Some(_) => return Err(rd.corrupt("general.alignment is not a power of two")),
        };
        let data_start = header_end.div_ceil(align).saturating_mul(align);
        Ok(Self {
            path: path.to_path_buf(),
            version,
            metadata,
            tensors,
            spans,
            data_start,
            file_len,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The metadata value stored under `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    /// The metadata value under `key` if it is an integer.
    pub fn get_int(&self, key: &str) -> Option<i64> {
        match self.get(key)? {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The metadata value under `key` as a float (integers are converted).
    pub fn get_float(&self, key: &str) -> Option<f64> {
        match self.get(key)? {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }

    /// The metadata value under `key` if it is a string.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        match self.get(key)? {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A metadata value exactly as stored: its GGUF type id followed by its encoding.
    pub fn raw_value(&self, key: &str) -> Result<Option<Vec<u8>>, GgufError> {
        let Some(&(start, end)) = self.spans.get(key) else {
            return Ok(None);
        };
        let io = |err| GgufError::Io {
            path: self.path.display().to_string(),
            err,
        };
        let mut f = File::open(&self.path).map_err(io)?;
        f.seek(SeekFrom::Start(start)).map_err(io)?;
        let mut buf = vec![0u8; (end - start) as usize];
        f.read_exact(&mut buf).map_err(io)?;
        Ok(Some(buf))
    }

    /// `general.architecture`, the prefix of the model's own metadata keys.
    pub fn arch(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }

    /// The directory entry for the tensor named `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Where the tensor data section begins (the metadata and directory end before it).
    pub fn data_start(&self) -> u64 {
        self.data_start
    }

    /// The tensor's bytes exactly as stored, with its type.
    pub fn read_tensor(&self, name: &str) -> Result<(GgmlType, Vec<u8>), GgufError> {
        let p = self.path.display().to_string();
        let t = self.tensor(name).ok_or_else(|| GgufError::NoTensor {
            path: p.clone(),
            name: name.into(),
        })?;
        let ty = GgmlType::from_id(t.type_id).ok_or_else(|| GgufError::UnsupportedType {
            path: p.clone(),
            name: name.into(),
            ty: t.type_id,
        })?;
        let (per_block, block_bytes) = ty.block();
        let n = t.n_elements();
        if t.dims[0] % per_block as u64 != 0 {
            return Err(GgufError::Corrupt {
                path: p,
                why: format!(
                    "tensor {name}: row length {} not a multiple of its block",
                    t.dims[0]
                ),
            });
        }
        let len = n / per_block as u64 * block_bytes as u64;
        let start = self.data_start.saturating_add(t.offset);
        if start.checked_add(len).is_none_or(|end| end > self.file_len) {
            return Err(GgufError::Corrupt {
                path: p,
                why: format!("tensor {name} runs past the end of the file"),
            });
        }
        let io = |err| GgufError::Io {
            path: p.clone(),
            err,
        };
        let mut f = File::open(&self.path).map_err(io)?;
        f.seek(SeekFrom::Start(start)).map_err(io)?;
        let mut buf = vec![0u8; len as usize];
        f.read_exact(&mut buf).map_err(io)?;
        Ok((ty, buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A tiny GGUF: two metadata keys and one 2x32 Q8_0 tensor.
    fn tiny() -> Vec<u8> {
        let mut b = Vec::new();
        let s = |b: &mut Vec<u8>, x: &str| {
            b.extend((x.len() as u64).to_le_bytes());
            b.extend(x.as_bytes());
        };
        b.extend(b"GGUF");
        b.extend(3u32.to_le_bytes());
        b.extend(1u64.to_le_bytes()); // tensors
        b.extend(2u64.to_le_bytes()); // kv
        s(&mut b, "general.architecture");
        b.extend(8u32.to_le_bytes());
        s(&mut b, "toy");
        s(&mut b, "toy.scale");
        b.extend(6u32.to_le_bytes());
        b.extend(0.5f32.to_le_bytes());
        s(&mut b, "w");
        b.extend(2u32.to_le_bytes());
        b.extend(32u64.to_le_bytes());
        b.extend(2u64.to_le_bytes());
        b.extend(8u32.to_le_bytes()); // Q8_0
        b.extend(0u64.to_le_bytes());
        while b.len() % 32 != 0 {
            b.push(0);
        }
        for i in 0..68u8 {
            b.push(i);
        }
        b
    }

    fn write(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    #[test]
    fn reads_metadata_and_tensor_bytes() {
        let f = write(&tiny());
        let g = Gguf::open(f.path()).unwrap();
        assert_eq!(g.arch(), Some("toy"));
        assert_eq!(g.get_float("toy.scale"), Some(0.5));
        let (ty, bytes) = g.read_tensor("w").unwrap();
        assert_eq!(ty, GgmlType::Q8_0);
        assert_eq!(bytes.len(), 68);
        assert_eq!(bytes[67], 67);
        assert!(matches!(
            g.read_tensor("nope"),
            Err(GgufError::NoTensor { .. })
        ));
    }

    #[test]
    fn header_errors_name_what_is_wrong() {
        let full = tiny();
        let h = read_header(&mut &full[..]).unwrap();
        assert_eq!((h.version, h.n_tensors, h.n_kv), (3, 1, 2));
        assert_eq!(read_header(&mut &full[..2]), Err(HeaderError::TooShort(2)));
        assert_eq!(
            read_header(&mut &b"NOPE and more bytes than 24....."[..]),
            Err(HeaderError::BadMagic(*b"NOPE"))
        );
        assert_eq!(read_header(&mut &full[..10]), Err(HeaderError::CutOff));
        let mut v9 = full.clone();
        v9[4..8].copy_from_slice(&9u32.to_le_bytes());
        assert_eq!(
            read_header(&mut &v9[..]),
            Err(HeaderError::UnsupportedVersion(9))
        );
    }

    #[test]
    fn truncated_or_foreign_files_are_errors() {
        let full = tiny();
        for cut in [0, 3, 10, 30, 60, full.len() - 1] {
            let f = write(&full[..cut]);
            if let Ok(g) = Gguf::open(f.path()) {
                assert!(g.read_tensor("w").is_err(), "cut {cut}");
            }
        }
        let f = write(b"NOPE and then some bytes");
        assert!(matches!(
            Gguf::open(f.path()),
            Err(GgufError::NotGguf { .. })
        ));
        // A string length far beyond the file.
        let mut bad = full.clone();
        bad[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
        let f = write(&bad);
        assert!(matches!(
            Gguf::open(f.path()),
            Err(GgufError::Corrupt { .. })
        ));
    }
}
