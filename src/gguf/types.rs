//! The ggml tensor types Tandem reads and writes, with their block layouts.

/// ggml tensor types Tandem knows the layout of (ids as in ggml.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    /// 32-bit float.
    F32,
    /// IEEE 16-bit float.
    F16,
    /// 4-bit quantized, 32-element blocks with a scale.
    Q4_0,
    /// 4-bit quantized, 32-element blocks with a scale and a minimum.
    Q4_1,
    /// 5-bit quantized, 32-element blocks with a scale.
    Q5_0,
    /// 5-bit quantized, 32-element blocks with a scale and a minimum.
    Q5_1,
    /// 8-bit quantized, 32-element blocks with a scale.
    Q8_0,
    /// 2-bit k-quant, 256-element super-blocks.
    Q2K,
    /// 3-bit k-quant, 256-element super-blocks.
    Q3K,
    /// 4-bit k-quant, 256-element super-blocks.
    Q4K,
    /// 5-bit k-quant, 256-element super-blocks.
    Q5K,
    /// 6-bit k-quant, 256-element super-blocks.
    Q6K,
    /// 32-bit integer.
    I32,
    /// 64-bit integer.
    I64,
    /// bfloat16.
    Bf16,
}

impl GgmlType {
    /// The type with ggml id `id`, or `None` if Tandem does not know its layout.
    pub fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            6 => Self::Q5_0,
            7 => Self::Q5_1,
            8 => Self::Q8_0,
            10 => Self::Q2K,
            11 => Self::Q3K,
            12 => Self::Q4K,
            13 => Self::Q5K,
            14 => Self::Q6K,
            26 => Self::I32,
            27 => Self::I64,
            30 => Self::Bf16,
            _ => return None,
        })
    }

    /// The id ggml.h gives this type.
    pub fn id(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q4_0 => 2,
            Self::Q4_1 => 3,
            Self::Q5_0 => 6,
            Self::Q5_1 => 7,
            Self::Q8_0 => 8,
            Self::Q2K => 10,
            Self::Q3K => 11,
            Self::Q4K => 12,
            Self::Q5K => 13,
            Self::Q6K => 14,
            Self::I32 => 26,
            Self::I64 => 27,
            Self::Bf16 => 30,
        }
    }

    /// The name ggml gives this type (`ggml_type_name`).
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::Q4_0 => "Q4_0",
            Self::Q4_1 => "Q4_1",
            Self::Q5_0 => "Q5_0",
            Self::Q5_1 => "Q5_1",
            Self::Q8_0 => "Q8_0",
            Self::Q2K => "Q2_K",
            Self::Q3K => "Q3_K",
            Self::Q4K => "Q4_K",
            Self::Q5K => "Q5_K",
            Self::Q6K => "Q6_K",
            Self::I32 => "I32",
            Self::I64 => "I64",
            Self::Bf16 => "BF16",
        }
    }

    /// The type named `name` (as [`GgmlType::name`], any case).
    pub fn from_name(name: &str) -> Option<Self> {
        (0..=30)
            .filter_map(Self::from_id)
            .find(|t| t.name().eq_ignore_ascii_case(name))
    }

    /// The type llama.cpp's quantiser stores a matrix with rows of `cols` values in when
    /// `self` was asked for (`tensor_type_fallback` in `src/llama-quant.cpp`): a K-quant
    /// needs whole 256-value super-blocks and falls back to a 32-block type, and a row that
    /// is not whole 32-blocks either is stored as F16.
    pub fn fallback_for(self, cols: usize) -> Self {
        if cols.is_multiple_of(self.block().0) {
            return self;
        }
        let t = match self {
            Self::Q2K | Self::Q3K => Self::Q4_0,
            Self::Q4K => Self::Q5_0,
            Self::Q5K => Self::Q5_1,
            Self::Q6K => Self::Q8_0,
            other => other,
        };
        if cols.is_multiple_of(t.block().0) {
            t
        } else {
            Self::F16
        }
    }

    /// (elements per block, bytes per block).
    pub fn block(self) -> (usize, usize) {
        match self {
            Self::F32 | Self::I32 => (1, 4),
            Self::I64 => (1, 8),
            Self::F16 | Self::Bf16 => (1, 2),
            Self::Q4_0 => (32, 18),
            Self::Q4_1 => (32, 20),
            Self::Q5_0 => (32, 22),
            Self::Q5_1 => (32, 24),
            Self::Q8_0 => (32, 34),
            Self::Q2K => (256, 84),
            Self::Q3K => (256, 110),
            Self::Q4K => (256, 144),
            Self::Q5K => (256, 176),
            Self::Q6K => (256, 210),
        }
    }
}
