//! A small GGUF (v3) writer: metadata and tensors, as llama.cpp's loader expects them.
//! Used to make drafter files (the random-weight test fixture, exported drafters).

use std::io::Write;
use std::path::Path;

use crate::gguf::{GgmlType, Gguf, GgufError};
use crate::kernels::q8;

const ALIGN: usize = 32;

/// A GGUF file being assembled in memory.
#[derive(Default)]
pub struct GgufWriter {
    /// Encoded metadata entries (key, then type id + value).
    kv: Vec<(String, Vec<u8>)>,
    tensors: Vec<(String, Vec<u64>, GgmlType, Vec<u8>)>,
}

fn enc_str(b: &mut Vec<u8>, s: &str) {
    b.extend((s.len() as u64).to_le_bytes());
    b.extend(s.as_bytes());
}

impl GgufWriter {
    fn put(&mut self, key: &str, value: Vec<u8>) {
        self.kv.retain(|(k, _)| k != key);
        self.kv.push((key.to_string(), value));
    }

    /// Set `key` to a `u32` value (replacing any earlier value).
    pub fn u32(&mut self, key: &str, v: u32) {
        let mut b = 4u32.to_le_bytes().to_vec();
        b.extend(v.to_le_bytes());
        self.put(key, b);
    }

    /// Set `key` to an `f32` value (replacing any earlier value).
    pub fn f32(&mut self, key: &str, v: f32) {
        let mut b = 6u32.to_le_bytes().to_vec();
        b.extend(v.to_le_bytes());
        self.put(key, b);
    }

    /// Set `key` to a boolean value (replacing any earlier value).
    pub fn bool(&mut self, key: &str, v: bool) {
        let mut b = 7u32.to_le_bytes().to_vec();
        b.push(v as u8);
        self.put(key, b);
    }

    /// Set `key` to a string value (replacing any earlier value).
    pub fn str(&mut self, key: &str, v: &str) {
        let mut b = 8u32.to_le_bytes().to_vec();
        enc_str(&mut b, v);
        self.put(key, b);
    }

    /// Set `key` to an array of `i32` (replacing any earlier value).
    pub fn i32_array(&mut self, key: &str, v: &[i32]) {
        let mut b = 9u32.to_le_bytes().to_vec();
        b.extend(5u32.to_le_bytes());
        b.extend((v.len() as u64).to_le_bytes());
        for x in v {
            b.extend(x.to_le_bytes());
        }
        self.put(key, b);
    }

    /// Copy a key from another GGUF with its exact type (e.g. the target's tokenizer).
    pub fn copy_from(&mut self, src: &Gguf, key: &str) -> Result<bool, GgufError> {
        Ok(match src.raw_value(key)? {
            Some(raw) => {
                self.put(key, raw);
                true
            }
            None => false,
        })
    }

    /// Copy every `tokenizer.*` key of another GGUF (its vocabulary, merges, special
    /// tokens and chat template), exact types kept.
    pub fn copy_tokenizer(&mut self, src: &Gguf) -> Result<(), GgufError> {
        let keys: Vec<String> = src
            .metadata
            .keys()
            .filter(|k| k.starts_with("tokenizer."))
            .cloned()
            .collect();
        for k in &keys {
            self.copy_from(src, k)?;
        }
        Ok(())
    }

    /// Add a tensor from f32 values (ggml order: `dims[0]` is the row length), stored as
    /// `ty` (any type ggml quantizes; K-quants need rows of whole 256-value blocks).
    pub fn tensor_f32(&mut self, name: &str, dims: &[u64], ty: GgmlType, data: &[f32]) {
        assert_eq!(dims.iter().product::<u64>() as usize, data.len(), "{name}");
        let bytes = match ty {
            GgmlType::F32 => data.iter().flat_map(|x| x.to_le_bytes()).collect(),
            GgmlType::F16 => data
                .iter()
                .flat_map(|&x| q8::f32_to_f16(x).to_le_bytes())
                .collect(),
            GgmlType::Bf16 => data
                .iter()
                .flat_map(|&x| f32_to_bf16(x).to_le_bytes())
                .collect(),
            GgmlType::Q8_0 => {
                let mut q = q8::Q8Rows::default();
                q8::quantize_row(data, &mut q);
                let mut b = Vec::with_capacity(q.d.len() * 34);
                for (d, qs) in q.d.iter().zip(q.qs.chunks_exact(q8::QK)) {
                    b.extend(q8::f32_to_f16(*d).to_le_bytes());
                    b.extend(qs.iter().map(|&x| x as u8));
                }
                b
            }
            other => crate::kernels::ggml::quantize(other, data, dims[0] as usize)
                .unwrap_or_else(|| panic!("{name}: cannot store {dims:?} as {other:?}")),
        };
        self.tensor_raw(name, dims, ty, bytes);
    }

    /// Add a tensor from its encoded bytes.
    pub fn tensor_raw(&mut self, name: &str, dims: &[u64], ty: GgmlType, bytes: Vec<u8>) {
        self.tensors
            .push((name.to_string(), dims.to_vec(), ty, bytes));
    }

    /// Write the file to `path` (via a `.gguf.part` file renamed into place).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let mut b: Vec<u8> = Vec::new();
        b.extend(b"GGUF");
        b.extend(3u32.to_le_bytes());
        b.extend((self.tensors.len() as u64).to_le_bytes());
        b.extend((self.kv.len() as u64).to_le_bytes());
        for (k, v) in &self.kv {
            enc_str(&mut b, k);
            b.extend(v);
        }
        let mut offset = 0usize;
        for (name, dims, ty, bytes) in &self.tensors {
            enc_str(&mut b, name);
            b.extend((dims.len() as u32).to_le_bytes());
            for d in dims {
                b.extend(d.to_le_bytes());
            }
            b.extend(ty.id().to_le_bytes());
            b.extend((offset as u64).to_le_bytes());
            offset = (offset + bytes.len()).div_ceil(ALIGN) * ALIGN;
        }
        b.resize(b.len().div_ceil(ALIGN) * ALIGN, 0);
        for (_, _, _, bytes) in &self.tensors {
            b.extend(bytes);
            b.resize(b.len().div_ceil(ALIGN) * ALIGN, 0);
        }
        let tmp = path.with_extension("gguf.part");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&b)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    }
}

/// Round to nearest even, as ggml's `GGML_FP32_TO_BF16`.
pub fn f32_to_bf16(x: f32) -> u16 {
    let u = x.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16; // quiet NaN
    }
    ((u + (0x7fff + ((u >> 16) & 1))) >> 16) as u16
}

/// Widen a bfloat16 bit pattern to `f32`.
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::Value;

    #[test]
    fn written_file_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.gguf");
        let mut w = GgufWriter::default();
        w.str("general.architecture", "toy");
        w.u32("toy.n", 7);
        w.f32("toy.eps", 0.5);
        w.bool("toy.flag", true);
        w.i32_array("toy.layers", &[1, 5]);
        let vals: Vec<f32> = (0..64).map(|i| i as f32 / 8.0 - 4.0).collect();
        w.tensor_f32("a", &[32, 2], GgmlType::F32, &vals);
        w.tensor_f32("b", &[32, 2], GgmlType::Q8_0, &vals);
        w.tensor_f32("c", &[64], GgmlType::F16, &vals);
        w.write(&p).unwrap();
        let g = Gguf::open(&p).unwrap();
        assert_eq!(g.get_int("toy.n"), Some(7));
        assert_eq!(g.get("toy.flag"), Some(&Value::Bool(true)));
        assert_eq!(
            g.get("toy.layers"),
            Some(&Value::Array(vec![Value::Int(1), Value::Int(5)]))
        );
        let (ty, a) = g.read_tensor("a").unwrap();
        assert_eq!(ty, GgmlType::F32);
        assert_eq!(&a[4..8], &(-3.875f32).to_le_bytes());
        assert_eq!(g.read_tensor("b").unwrap().1.len(), 2 * 34);
        assert_eq!(g.read_tensor("c").unwrap().1.len(), 128);
        // Raw copy keeps the exact type.
        let mut w2 = GgufWriter::default();
        assert!(w2.copy_from(&g, "toy.n").unwrap());
        assert!(!w2.copy_from(&g, "missing").unwrap());
        let p2 = dir.path().join("t2.gguf");
        w2.write(&p2).unwrap();
        assert_eq!(Gguf::open(&p2).unwrap().get_int("toy.n"), Some(7));
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(bf16_to_f32(f32_to_bf16(1.0)), 1.0);
        assert_eq!(f32_to_bf16(1.0 + 1.0 / 256.0), f32_to_bf16(1.0)); // tie -> even
        assert!((bf16_to_f32(f32_to_bf16(1.23456)) - 1.23456).abs() < 0.02);
    }
}
