//! GGUF files for tests: a tiny llama model that llama.cpp really loads, a reader that takes a
//! real model apart, and the handles to break one thing at a time (keys, values, tensor infos,
//! raw bytes) for the malformed-model corpus and the metadata fuzzer.

use std::io::{self, Read, Write};
use std::sync::Arc;

/// GGUF value type ids.
pub mod ty {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STR: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

/// ggml tensor type ids used here.
pub const GGML_F32: u32 = 0;
pub const GGML_Q4_0: u32 = 2;

/// Token types of llama.h.
pub const TOKEN_NORMAL: i32 = 1;
pub const TOKEN_UNKNOWN: i32 = 2;
pub const TOKEN_CONTROL: i32 = 3;
pub const TOKEN_BYTE: i32 = 6;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    U64(u64),
    I64(i64),
    F64(f64),
    /// Elements of the given type id, each written without its own tag.
    Array(u32, Vec<Value>),
    /// A type id and a body written as given: values no correct writer produces.
    Raw(u32, Vec<u8>),
}

impl Value {
    pub fn strs<S: Into<String>>(items: impl IntoIterator<Item = S>) -> Value {
        Value::Array(ty::STR, items.into_iter().map(|s| Value::Str(s.into())).collect())
    }

    pub fn i32s(items: &[i32]) -> Value {
        Value::Array(ty::I32, items.iter().map(|&v| Value::I32(v)).collect())
    }

    pub fn f32s(items: &[f32]) -> Value {
        Value::Array(ty::F32, items.iter().map(|&v| Value::F32(v)).collect())
    }

    pub fn type_id(&self) -> u32 {
        match self {
            Value::U8(_) => ty::U8,
            Value::I8(_) => ty::I8,
            Value::U16(_) => ty::U16,
            Value::I16(_) => ty::I16,
            Value::U32(_) => ty::U32,
            Value::I32(_) => ty::I32,
            Value::F32(_) => ty::F32,
            Value::Bool(_) => ty::BOOL,
            Value::Str(_) => ty::STR,
            Value::U64(_) => ty::U64,
            Value::I64(_) => ty::I64,
            Value::F64(_) => ty::F64,
            Value::Array(..) => ty::ARRAY,
            Value::Raw(id, _) => *id,
        }
    }

    /// The value without its type tag.
    fn write_body(&self, out: &mut Vec<u8>) {
        match self {
            Value::U8(v) => out.push(*v),
            Value::I8(v) => out.extend(v.to_le_bytes()),
            Value::U16(v) => out.extend(v.to_le_bytes()),
            Value::I16(v) => out.extend(v.to_le_bytes()),
            Value::U32(v) => out.extend(v.to_le_bytes()),
            Value::I32(v) => out.extend(v.to_le_bytes()),
            Value::F32(v) => out.extend(v.to_le_bytes()),
            Value::Bool(v) => out.push(u8::from(*v)),
            Value::Str(s) => string(out, s.as_bytes()),
            Value::U64(v) => out.extend(v.to_le_bytes()),
            Value::I64(v) => out.extend(v.to_le_bytes()),
            Value::F64(v) => out.extend(v.to_le_bytes()),
            Value::Array(elem, items) => {
                out.extend(elem.to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                items.iter().for_each(|v| v.write_body(out));
            }
            Value::Raw(_, body) => out.extend(body),
        }
    }
}

/// Reads what [`Value::write_body`] writes.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let out = self.at.checked_add(n).and_then(|end| self.bytes.get(self.at..end));
        let out = out.ok_or_else(|| format!("{n} bytes needed at {}", self.at))?;
        self.at += n;
        Ok(out)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        Ok(self.take(N)?.try_into().unwrap_or([0; N]))
    }
    fn u32(&mut self) -> Result<u32, String> {
        self.array().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Result<u64, String> {
        self.array().map(u64::from_le_bytes)
    }
    fn string(&mut self) -> Result<&'a [u8], String> {
        let n = self.u64()?;
        self.take(usize::try_from(n).map_err(|_| format!("string of {n} bytes"))?)
    }
    fn value(&mut self, id: u32) -> Result<Value, String> {
        Ok(match id {
            ty::U8 => Value::U8(self.array::<1>()?[0]),
            ty::I8 => Value::I8(i8::from_le_bytes(self.array()?)),
            ty::U16 => Value::U16(u16::from_le_bytes(self.array()?)),
            ty::I16 => Value::I16(i16::from_le_bytes(self.array()?)),
            ty::U32 => Value::U32(self.u32()?),
            ty::I32 => Value::I32(i32::from_le_bytes(self.array()?)),
            ty::F32 => Value::F32(f32::from_le_bytes(self.array()?)),
            ty::BOOL => Value::Bool(self.array::<1>()?[0] != 0),
            ty::STR => Value::Str(String::from_utf8(self.string()?.to_vec()).map_err(|e| e.to_string())?),
            ty::U64 => Value::U64(self.u64()?),
            ty::I64 => Value::I64(i64::from_le_bytes(self.array()?)),
            ty::F64 => Value::F64(f64::from_le_bytes(self.array()?)),
            ty::ARRAY => {
                let elem = self.u32()?;
                let n = self.u64()?;
                let items = (0..n).map(|_| self.value(elem)).collect::<Result<_, _>>()?;
                Value::Array(elem, items)
            }
            other => return Err(format!("value type {other}")),
        })
    }
}

fn string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s);
}

#[derive(Debug, Clone)]
pub struct Tensor {
    pub name: Vec<u8>,
    /// `ne[0]` first, as GGUF stores them.
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    /// The data offset written; `None` = where a correct writer puts it.
    pub offset: Option<u64>,
    /// Shared, so that copies of a real model for mutation do not copy its weights.
    pub data: Arc<[u8]>,
}

/// Where the fields of an encoded file are, for byte-level mutations.
#[derive(Debug, Default)]
pub struct Layout {
    pub keys: Vec<KeyAt>,
    pub tensors: Vec<TensorAt>,
    /// Start of the tensor data section.
    pub data: usize,
}

#[derive(Debug)]
pub struct KeyAt {
    pub key: String,
    /// The key's length prefix.
    pub len: usize,
    /// The value's type tag.
    pub value_type: usize,
}

#[derive(Debug)]
pub struct TensorAt {
    pub name_len: usize,
    pub n_dims: usize,
    pub dims: usize,
    pub ggml_type: usize,
    pub offset: usize,
}

/// Deterministic pseudo-random F32 tensors for the synthetic test files: one xorshift64 stream,
/// so the same calls in the same order always give the same bytes.
pub struct Weights(u64);

impl Weights {
    pub fn new(seed: u64) -> Weights {
        Weights(seed)
    }

    /// The next value of the stream, uniform over -0.1..=0.1 in steps of 1e-4.
    pub fn next_value(&mut self) -> f32 {
        let s = &mut self.0;
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        (*s % 2001) as f32 / 10_000.0 - 0.1
    }

    /// An F32 tensor of `dims` (`ne[0]` first): the next values, times `scale`.
    pub fn random(&mut self, name: impl Into<String>, dims: Vec<u64>, scale: f32) -> Tensor {
        self.tensor(name.into(), dims, |v| v * scale)
    }

    /// An F32 tensor of ones, for a norm's weight. It still draws its values from the stream, so
    /// that the tensors after it keep theirs (the bytes of [`Gguf::tiny_llama`] depend on it).
    pub fn ones(&mut self, name: impl Into<String>, dims: Vec<u64>) -> Tensor {
        self.tensor(name.into(), dims, |_| 1.0)
    }

    fn tensor(&mut self, name: String, dims: Vec<u64>, value: impl Fn(f32) -> f32) -> Tensor {
        let n: u64 = dims.iter().product();
        let data: Vec<u8> = (0..n).flat_map(|_| value(self.next_value()).to_le_bytes()).collect();
        Tensor { name: name.into_bytes(), dims, ggml_type: GGML_F32, offset: None, data: data.into() }
    }
}

/// Header offsets: version, tensor count, key/value count.
pub const VERSION_AT: usize = 4;
pub const N_TENSORS_AT: usize = 8;
pub const N_KV_AT: usize = 16;

#[derive(Debug, Clone)]
pub struct Gguf {
    pub magic: [u8; 4],
    pub version: u32,
    /// Counts written instead of the real ones.
    pub n_tensors: Option<u64>,
    pub n_kv: Option<u64>,
    pub kv: Vec<(Vec<u8>, Value)>,
    pub tensors: Vec<Tensor>,
}

/// Sizes of [`Gguf::tiny_llama`].
pub const N_EMBD: u64 = 8;
pub const N_FF: u64 = 16;
pub const N_LAYER: u32 = 2;
/// Normal (non-byte, non-control) tokens of the tiny vocabulary.
const PIECES: &[(&str, f32)] = &[
    ("▁", -1.0),
    ("▁hello", -2.0),
    ("▁world", -2.0),
    ("▁h", -3.0),
    ("▁w", -3.0),
    ("hello", -4.0),
    ("world", -4.0),
    ("he", -5.0),
    ("ll", -5.0),
    ("llo", -5.5),
    ("wor", -5.5),
    ("or", -6.0),
    ("ld", -6.0),
    ("a", -7.0),
    ("d", -7.0),
    ("e", -7.0),
    ("h", -7.0),
    ("l", -7.0),
    ("o", -7.0),
    ("r", -7.0),
    ("w", -7.0),
];

impl Gguf {
    /// A 2-layer llama with an 8-wide embedding, F32 weights and an SPM vocabulary: `<unk>`,
    /// `<s>`, `</s>`, the 256 byte tokens `<0x00>`..`<0xFF>`, then a few word pieces.
    pub fn tiny_llama() -> Gguf {
        let mut tokens = vec!["<unk>".to_string(), "<s>".into(), "</s>".into()];
        let mut types = vec![TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_CONTROL];
        tokens.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
        types.extend([TOKEN_BYTE; 256]);
        tokens.extend(PIECES.iter().map(|(p, _)| p.to_string()));
        types.extend(PIECES.iter().map(|_| TOKEN_NORMAL));
        let mut scores = vec![0.0f32; 3 + 256];
        scores.extend(PIECES.iter().map(|(_, s)| s));
        let n_vocab = tokens.len() as u64;

        let kv: Vec<(&str, Value)> = vec![
            ("general.architecture", Value::Str("llama".into())),
            ("general.name", Value::Str("tiny test llama".into())),
            ("general.alignment", Value::U32(32)),
            ("general.file_type", Value::U32(0)),
            ("llama.block_count", Value::U32(N_LAYER)),
            ("llama.context_length", Value::U32(64)),
            ("llama.embedding_length", Value::U32(N_EMBD as u32)),
            ("llama.feed_forward_length", Value::U32(N_FF as u32)),
            ("llama.attention.head_count", Value::U32(2)),
            ("llama.attention.head_count_kv", Value::U32(2)),
            ("llama.rope.dimension_count", Value::U32(4)),
            ("llama.rope.freq_base", Value::F32(10000.0)),
            ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
            ("tokenizer.ggml.model", Value::Str("llama".into())),
            ("tokenizer.ggml.tokens", Value::strs(tokens)),
            ("tokenizer.ggml.scores", Value::f32s(&scores)),
            ("tokenizer.ggml.token_type", Value::i32s(&types)),
            ("tokenizer.ggml.bos_token_id", Value::U32(1)),
            ("tokenizer.ggml.eos_token_id", Value::U32(2)),
            ("tokenizer.ggml.unknown_token_id", Value::U32(0)),
            ("tokenizer.ggml.add_bos_token", Value::Bool(true)),
            ("tokenizer.ggml.add_eos_token", Value::Bool(false)),
        ];

        let mut w = Weights::new(0x2545_f491_4f6c_dd1d);
        let mut tensor = |name: String, dims: Vec<u64>, norm: bool| {
            if norm {
                w.ones(name, dims)
            } else {
                w.random(name, dims, 1.0)
            }
        };
        let mut tensors = vec![
            tensor("token_embd.weight".into(), vec![N_EMBD, n_vocab], false),
            tensor("output_norm.weight".into(), vec![N_EMBD], true),
            tensor("output.weight".into(), vec![N_EMBD, n_vocab], false),
        ];
        for l in 0..N_LAYER {
            let blk = |part: &str| format!("blk.{l}.{part}.weight");
            tensors.push(tensor(blk("attn_norm"), vec![N_EMBD], true));
            for part in ["attn_q", "attn_k", "attn_v", "attn_output"] {
                tensors.push(tensor(blk(part), vec![N_EMBD, N_EMBD], false));
            }
            tensors.push(tensor(blk("ffn_norm"), vec![N_EMBD], true));
            tensors.push(tensor(blk("ffn_gate"), vec![N_EMBD, N_FF], false));
            tensors.push(tensor(blk("ffn_up"), vec![N_EMBD, N_FF], false));
            tensors.push(tensor(blk("ffn_down"), vec![N_FF, N_EMBD], false));
        }
        Gguf::v3(kv, tensors)
    }

    /// A GGUF v3 file of these keys and tensors, counts as written.
    pub fn v3(kv: Vec<(&str, Value)>, tensors: Vec<Tensor>) -> Gguf {
        Gguf {
            magic: *b"GGUF",
            version: 3,
            n_tensors: None,
            n_kv: None,
            kv: kv.into_iter().map(|(k, v)| (k.as_bytes().to_vec(), v)).collect(),
            tensors,
        }
    }

    /// Takes a well-formed file apart: every key/value as written, every tensor with its data
    /// (what lies between its offset and the next tensor's, alignment padding included).
    pub fn parse(bytes: &[u8]) -> Result<Gguf, String> {
        let mut r = Cursor { bytes, at: 0 };
        let magic: [u8; 4] = r.take(4)?.try_into().map_err(|_| "magic")?;
        let version = r.u32()?;
        let (n_tensors, n_kv) = (r.u64()?, r.u64()?);
        let mut kv = Vec::new();
        for _ in 0..n_kv {
            let key = r.string()?.to_vec();
            let id = r.u32()?;
            kv.push((key, r.value(id)?));
        }
        let mut infos = Vec::new();
        for _ in 0..n_tensors {
            let name = r.string()?.to_vec();
            let n_dims = r.u32()?;
            let dims = (0..n_dims).map(|_| r.u64()).collect::<Result<Vec<_>, _>>()?;
            infos.push((name, dims, r.u32()?, r.u64()?));
        }
        let mut g = Gguf { magic, version, n_tensors: None, n_kv: None, kv, tensors: Vec::new() };
        let start = r.at.next_multiple_of(g.alignment() as usize);
        let ends: Vec<u64> =
            infos.iter().skip(1).map(|i| i.3).chain([(bytes.len() - start.min(bytes.len())) as u64]).collect();
        for ((name, dims, ggml_type, offset), end) in infos.into_iter().zip(ends) {
            let (from, to) = (start + offset as usize, start + end as usize);
            let data = bytes.get(from..to).ok_or_else(|| format!("tensor data {from}..{to} outside the file"))?;
            g.tensors.push(Tensor { name, dims, ggml_type, offset: None, data: data.into() });
        }
        Ok(g)
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.kv.iter().find(|(k, _)| k == key.as_bytes()).map(|(_, v)| v)
    }

    /// Replaces the value of `key` in place, or appends it.
    pub fn set(&mut self, key: &str, value: Value) -> &mut Self {
        match self.kv.iter_mut().find(|(k, _)| k == key.as_bytes()) {
            Some((_, v)) => *v = value,
            None => self.kv.push((key.as_bytes().to_vec(), value)),
        }
        self
    }

    /// Appends a key/value even if the key is there already.
    pub fn push_raw_key(&mut self, key: &[u8], value: Value) -> &mut Self {
        self.kv.push((key.to_vec(), value));
        self
    }

    /// Moves every key of the current architecture's namespace to `arch`'s, and names it.
    pub fn rename_architecture(&mut self, arch: &str) -> &mut Self {
        let old = match self.get("general.architecture") {
            Some(Value::Str(s)) => format!("{s}."),
            _ => return self,
        };
        for (key, _) in &mut self.kv {
            if let Some(rest) = key.strip_prefix(old.as_bytes()) {
                *key = [format!("{arch}.").as_bytes(), rest].concat();
            }
        }
        self.set("general.architecture", Value::Str(arch.into()))
    }

    pub fn remove(&mut self, key: &str) -> &mut Self {
        self.kv.retain(|(k, _)| k != key.as_bytes());
        self
    }

    /// The token list, to edit and put back with [`set`](Self::set).
    pub fn tokens(&self) -> Vec<String> {
        match self.get("tokenizer.ggml.tokens") {
            Some(Value::Array(_, items)) => items
                .iter()
                .map(|v| match v {
                    Value::Str(s) => s.clone(),
                    other => panic!("token {other:?}"),
                })
                .collect(),
            other => panic!("tokens: {other:?}"),
        }
    }

    pub fn token_types(&self) -> Vec<i32> {
        match self.get("tokenizer.ggml.token_type") {
            Some(Value::Array(_, items)) => items
                .iter()
                .map(|v| match v {
                    Value::I32(t) => *t,
                    other => panic!("token type {other:?}"),
                })
                .collect(),
            other => panic!("token types: {other:?}"),
        }
    }

    pub fn tensor_mut(&mut self, name: &str) -> &mut Tensor {
        self.tensors.iter_mut().find(|t| t.name == name.as_bytes()).unwrap_or_else(|| panic!("no tensor {name}"))
    }

    /// The alignment a correct writer uses: `general.alignment` when it is a usable u32.
    pub fn alignment(&self) -> u64 {
        match self.get("general.alignment") {
            Some(Value::U32(a)) if a.is_power_of_two() => u64::from(*a),
            _ => 32,
        }
    }

    /// Where a correct writer puts each tensor's data, relative to the data section.
    pub fn natural_offsets(&self) -> Vec<u64> {
        let align = self.alignment();
        let mut next = 0;
        self.tensors
            .iter()
            .map(|t| {
                let at = next;
                next += (t.data.len() as u64).next_multiple_of(align);
                at
            })
            .collect()
    }

    /// The whole file and where its fields are.
    pub fn encode(&self) -> (Vec<u8>, Layout) {
        let (mut out, layout) = self.encode_header();
        for (t, natural) in self.tensors.iter().zip(self.natural_offsets()) {
            out.resize(layout.data + natural as usize, 0);
            out.extend(&t.data[..]);
        }
        (out, layout)
    }

    /// Writes the file to `w` without building it in memory (real models are large).
    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        let (header, layout) = self.encode_header();
        w.write_all(&header)?;
        let mut at = layout.data as u64;
        for (t, natural) in self.tensors.iter().zip(self.natural_offsets()) {
            let gap = (layout.data as u64 + natural).saturating_sub(at);
            io::copy(&mut io::repeat(0).take(gap), w)?;
            w.write_all(&t.data)?;
            at += gap + t.data.len() as u64;
        }
        Ok(())
    }

    /// Everything before the tensor data, padded to where the data starts.
    fn encode_header(&self) -> (Vec<u8>, Layout) {
        let mut out = self.magic.to_vec();
        let mut layout = Layout::default();
        out.extend(self.version.to_le_bytes());
        out.extend(self.n_tensors.unwrap_or(self.tensors.len() as u64).to_le_bytes());
        out.extend(self.n_kv.unwrap_or(self.kv.len() as u64).to_le_bytes());
        for (key, value) in &self.kv {
            let len = out.len();
            string(&mut out, key);
            let value_type = out.len();
            out.extend(value.type_id().to_le_bytes());
            value.write_body(&mut out);
            layout.keys.push(KeyAt { key: String::from_utf8_lossy(key).into_owned(), len, value_type });
        }
        for (t, natural) in self.tensors.iter().zip(self.natural_offsets()) {
            let name_len = out.len();
            string(&mut out, &t.name);
            let n_dims = out.len();
            out.extend((t.dims.len() as u32).to_le_bytes());
            let dims = out.len();
            t.dims.iter().for_each(|d| out.extend(d.to_le_bytes()));
            let ggml_type = out.len();
            out.extend(t.ggml_type.to_le_bytes());
            let offset = out.len();
            out.extend(t.offset.unwrap_or(natural).to_le_bytes());
            layout.tensors.push(TensorAt { name_len, n_dims, dims, ggml_type, offset });
        }
        let align = self.alignment() as usize;
        out.resize(out.len().next_multiple_of(align), 0);
        layout.data = out.len();
        (out, layout)
    }

    pub fn bytes(&self) -> Vec<u8> {
        self.encode().0
    }
}

/// `bytes` cut to `len`.
pub fn truncated(bytes: &[u8], len: usize) -> Vec<u8> {
    bytes[..len].to_vec()
}

/// `bytes` with `mask` xored into the byte at `at`.
pub fn flipped(bytes: &[u8], at: usize, mask: u8) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out[at] ^= mask;
    out
}

/// `bytes` with `patch` written over them at `at`.
pub fn patched(bytes: &[u8], at: usize, patch: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out[at..at + patch.len()].copy_from_slice(patch);
    out
}
