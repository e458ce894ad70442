//! A small GGUF reader of our own that vets a file before llama.cpp's C++ loader sees it.
//!
//! The C++ loader trusts much of what a file says: a layer count beyond its fixed-size arrays,
//! an unknown rope scaling type or inconsistent expert counts trip a `GGML_ASSERT` (the process
//! aborts), duplicate token texts fail an assertion in the vocabulary, and malformed byte tokens
//! throw from code that does not expect it. This reader walks the header, every key/value and
//! every tensor info through a buffered reader (never the tensor data, so it costs a fraction
//! of a load) and refuses what the loader would die on, naming the key or tensor at fault.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek};
use std::num::NonZeroU64;
use std::path::Path;

use super::MetaOverride;
use crate::error::LoadError;

mod graph;

const MAGIC: &[u8; 4] = b"GGUF";
/// ggml's limits: strings and arrays above these are refused by its reader.
const MAX_STRING: u64 = 1 << 30;
const MAX_ARRAY: u64 = 1 << 30;
/// Tensor names live in a 64-byte C buffer with its NUL.
const MAX_TENSOR_NAME: u64 = 63;
/// No real key comes close; the cap bounds what a hostile file can make us hold per key.
const MAX_KEY: u64 = 1 << 16;
/// String values we keep (architecture, tokenizer names...) are short in every real model.
const MAX_KEPT_STRING: u64 = 1 << 16;
/// A single token longer than this is not text any tokenizer produces.
const MAX_TOKEN: u64 = 1 << 20;
const MAX_DIMS: u32 = 4;
const DEFAULT_ALIGNMENT: u64 = 32;
/// `LLAMA_MAX_LAYERS` and `LLAMA_MAX_EXPERTS` in the pinned llama.cpp: the per-layer arrays are
/// this long and the loader asserts the counts fit.
const MAX_LAYERS: u32 = 512;
const MAX_EXPERTS: u32 = 1024;
/// The most placeholder tokens a vocabulary-free model may ask for (llama.cpp allocates them
/// all up front).
const MAX_PLACEHOLDER_TOKENS: u32 = 1 << 24;
/// `LLAMA_TOKEN_TYPE_BYTE`; valid token types are `0..=6` (`UNDEFINED..=BYTE`).
const TOKEN_TYPE_BYTE: i32 = 6;
/// Smallest encodings, used to refuse counts the rest of the file cannot hold.
const MIN_KV_BYTES: u64 = 8 + 1 + 4 + 1;
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 1 + 4 + 8 + 4 + 8;

const KEY_ARCH: &str = "general.architecture";
const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
const KEY_TOKEN_TYPE: &str = "tokenizer.ggml.token_type";

/// How much of a file the caller is about to hand to llama.cpp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Any GGUF (adapters, quantizer input): header, key/values and tensor infos.
    Structure,
    /// A model for `llama_model_load_from_file`: also the hyper-parameters and vocabulary.
    Model {
        /// Only the vocabulary will be loaded: hyper-parameters and layers are not read.
        vocab_only: bool,
    },
}

/// Checks `path` as llama.cpp would need it for `scope`.
pub(crate) fn validate(path: &Path, scope: Scope) -> Result<(), LoadError> {
    validate_with(path, scope, &[])
}

/// [`validate`] with the metadata overrides the loader will apply, so an override cannot
/// bring in a value the file itself would be refused for (e.g. a block count of 513).
pub(crate) fn validate_with(path: &Path, scope: Scope, overrides: &[(String, MetaOverride)]) -> Result<(), LoadError> {
    let file = File::open(path).map_err(|source| LoadError::Io { path: path.to_path_buf(), source })?;
    let len = file.metadata().map_err(|source| LoadError::Io { path: path.to_path_buf(), source })?.len();
    check(BufReader::with_capacity(1 << 16, file), len, scope, overrides).map_err(|f| f.into_load_error(path))
}

/// A multimodal projector's structure checked, and which media it takes: (vision, audio), from
/// `clip.has_vision_encoder` and `clip.has_audio_encoder`. A file with neither is no projector.
#[cfg(feature = "mtmd")]
pub(crate) fn projector_kinds(path: &Path) -> Result<(bool, bool), LoadError> {
    let file = File::open(path).map_err(|source| LoadError::Io { path: path.to_path_buf(), source })?;
    let len = file.metadata().map_err(|source| LoadError::Io { path: path.to_path_buf(), source })?.len();
    let mut reader = Reader { inner: BufReader::with_capacity(1 << 16, file), pos: 0, len };
    let gguf = Gguf::read(&mut reader).map_err(|f| f.into_load_error(path))?;
    let flag = |key: &str| matches!(gguf.kv.get(key), Some(Value::Scalar { int: Some(v), .. }) if *v != 0);
    let kinds = (flag("clip.has_vision_encoder"), flag("clip.has_audio_encoder"));
    if kinds == (false, false) {
        return Err(LoadError::Malformed {
            path: path.to_path_buf(),
            what: "not a multimodal projector: it has neither clip.has_vision_encoder nor clip.has_audio_encoder"
                .into(),
        });
    }
    Ok(kinds)
}

/// Only the magic: what is checked when the caller turned validation off.
pub(crate) fn check_magic(path: &Path) -> Result<(), LoadError> {
    let io = |source| LoadError::Io { path: path.to_path_buf(), source };
    let mut magic = [0u8; 4];
    match File::open(path).map_err(io)?.read_exact(&mut magic) {
        Ok(()) if &magic == MAGIC => Ok(()),
        Ok(()) => Err(LoadError::NotGguf(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(LoadError::NotGguf(path.to_path_buf())),
        Err(e) => Err(io(e)),
    }
}

fn check<R: BufRead + Seek>(
    source: R,
    len: u64,
    scope: Scope,
    overrides: &[(String, MetaOverride)],
) -> Result<(), Fail> {
    let mut gguf = Gguf::read(&mut Reader { inner: source, pos: 0, len })?;
    for (key, value) in overrides {
        gguf.apply_override(key, value);
    }
    match scope {
        Scope::Structure => Ok(()),
        Scope::Model { vocab_only } => gguf.check_model(vocab_only),
    }
}

enum Fail {
    NotGguf,
    Io(io::Error),
    /// A read needs more bytes than the file has left; `at` adds where.
    Short {
        need: u64,
        left: u64,
    },
    /// A string claims more bytes than accepted where it is; `at` adds where.
    Long {
        len: u64,
        max: u64,
    },
    Bad(String),
}

impl From<io::Error> for Fail {
    fn from(e: io::Error) -> Fail {
        // The length was checked up front, so only a file shrinking under us lands here.
        if e.kind() == io::ErrorKind::UnexpectedEof {
            Fail::Bad("the file got shorter while it was being read".into())
        } else {
            Fail::Io(e)
        }
    }
}

impl Fail {
    fn into_load_error(self, path: &Path) -> LoadError {
        match self {
            Fail::NotGguf => LoadError::NotGguf(path.to_path_buf()),
            Fail::Io(source) => LoadError::Io { path: path.to_path_buf(), source },
            Fail::Short { need, left } => LoadError::Malformed {
                path: path.to_path_buf(),
                what: format!("the file ends early ({need} bytes needed, {left} left)"),
            },
            Fail::Long { len, max } => LoadError::Malformed {
                path: path.to_path_buf(),
                what: format!("a string of {len} bytes is longer than the {max} accepted"),
            },
            Fail::Bad(what) => LoadError::Malformed { path: path.to_path_buf(), what },
        }
    }
}

fn bad<T>(what: impl Into<String>) -> Result<T, Fail> {
    Err(Fail::Bad(what.into()))
}

trait At<T> {
    /// Says which part of the file a short read was in.
    fn at(self, what: impl FnOnce() -> String) -> Result<T, Fail>;
}

impl<T> At<T> for Result<T, Fail> {
    fn at(self, what: impl FnOnce() -> String) -> Result<T, Fail> {
        self.map_err(|f| match f {
            Fail::Short { need, left } => {
                Fail::Bad(format!("{} needs {need} bytes but only {left} are left in the file", what()))
            }
            Fail::Long { len, max } => {
                Fail::Bad(format!("{} is a string of {len} bytes, over the {max} accepted", what()))
            }
            other => other,
        })
    }
}

struct Reader<R> {
    inner: R,
    pos: u64,
    len: u64,
}

impl<R: BufRead + Seek> Reader<R> {
    fn left(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    fn need(&self, n: u64) -> Result<(), Fail> {
        if n > self.left() {
            return Err(Fail::Short { need: n, left: self.left() });
        }
        Ok(())
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Fail> {
        let mut buf = [0u8; N];
        self.need(buf.len() as u64)?;
        self.inner.read_exact(&mut buf)?;
        self.pos = self.pos.saturating_add(buf.len() as u64);
        Ok(buf)
    }

    fn u32(&mut self) -> Result<u32, Fail> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, Fail> {
        self.array().map(u64::from_le_bytes)
    }

    fn skip(&mut self, n: u64) -> Result<(), Fail> {
        self.need(n)?;
        let step = i64::try_from(n).map_err(|_| Fail::Short { need: n, left: self.left() })?;
        self.inner.seek_relative(step)?;
        self.pos = self.pos.saturating_add(n);
        Ok(())
    }

    /// Appends `n` bytes to `out`, growing it by at most 1 MiB per read rather than by the
    /// claimed size at once.
    fn append(&mut self, n: u64, out: &mut Vec<u8>) -> Result<(), Fail> {
        self.need(n)?;
        let mut left = n;
        while left > 0 {
            let chunk = left.min(1 << 20);
            let start = out.len();
            out.resize(start.saturating_add(usize::try_from(chunk).unwrap_or(0)), 0);
            if let Some(dst) = out.get_mut(start..) {
                self.inner.read_exact(dst)?;
            }
            left = left.saturating_sub(chunk);
        }
        self.pos = self.pos.saturating_add(n);
        Ok(())
    }

    /// A string's length prefix, checked against ggml's limit and the bytes left.
    fn string_len(&mut self) -> Result<u64, Fail> {
        let n = self.u64()?;
        if n > MAX_STRING {
            return Err(Fail::Long { len: n, max: MAX_STRING });
        }
        self.need(n)?;
        Ok(n)
    }

    /// Reads `count` length-prefixed strings of at most `max` bytes, handing each to `each`
    /// (empty unless `keep`). Strings wholly inside the read buffer are taken from it in place,
    /// so a 262k-token vocabulary costs a few calls per buffer rather than several per token.
    fn strings(
        &mut self,
        count: u64,
        max: u64,
        keep: bool,
        mut each: impl FnMut(&[u8]) -> Result<(), Fail>,
    ) -> Result<(), Fail> {
        let mut done = 0;
        let mut slow = Vec::new();
        while done < count {
            let buf = self.inner.fill_buf()?;
            let mut used = 0usize;
            while done < count {
                let Some((len, rest)) = buf.get(used..).and_then(|b| b.split_first_chunk::<8>()) else { break };
                let n = u64::from_le_bytes(*len);
                let Some(text) = usize::try_from(n).ok().filter(|_| n <= max).and_then(|n| rest.get(..n)) else {
                    break;
                };
                each(text)?;
                used = used.saturating_add(8).saturating_add(text.len());
                done += 1;
            }
            self.inner.consume(used);
            self.pos = self.pos.saturating_add(used as u64);
            if used == 0 {
                // The next string crosses the end of the buffer, or is longer than it.
                let n = self.string_len()?;
                if n > max {
                    return Err(Fail::Long { len: n, max });
                }
                slow.clear();
                if keep {
                    self.append(n, &mut slow)?;
                } else {
                    self.skip(n)?;
                }
                each(&slow)?;
                done += 1;
            }
        }
        Ok(())
    }

    fn string(&mut self, max: u64) -> Result<Vec<u8>, Fail> {
        let n = self.string_len()?;
        if n > max {
            return Err(Fail::Long { len: n, max });
        }
        let mut out = Vec::new();
        self.append(n, &mut out)?;
        Ok(out)
    }
}

/// GGUF value types, by their id in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    F32,
    Bool,
    Str,
    Array,
    U64,
    I64,
    F64,
}

impl Ty {
    fn from_id(id: u32) -> Option<Ty> {
        Some(match id {
            0 => Ty::U8,
            1 => Ty::I8,
            2 => Ty::U16,
            3 => Ty::I16,
            4 => Ty::U32,
            5 => Ty::I32,
            6 => Ty::F32,
            7 => Ty::Bool,
            8 => Ty::Str,
            9 => Ty::Array,
            10 => Ty::U64,
            11 => Ty::I64,
            12 => Ty::F64,
            _ => return None,
        })
    }

    /// Bytes per value; strings and arrays have none fixed.
    fn width(self) -> Option<u64> {
        match self {
            Ty::U8 | Ty::I8 | Ty::Bool => Some(1),
            Ty::U16 | Ty::I16 => Some(2),
            Ty::U32 | Ty::I32 | Ty::F32 => Some(4),
            Ty::U64 | Ty::I64 | Ty::F64 => Some(8),
            Ty::Str | Ty::Array => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Ty::U8 => "u8",
            Ty::I8 => "i8",
            Ty::U16 => "u16",
            Ty::I16 => "i16",
            Ty::U32 => "u32",
            Ty::I32 => "i32",
            Ty::F32 => "f32",
            Ty::Bool => "bool",
            Ty::Str => "string",
            Ty::Array => "array",
            Ty::U64 => "u64",
            Ty::I64 => "i64",
            Ty::F64 => "f64",
        }
    }

    /// Decodes an integer of this type from its little-endian bytes.
    fn int(self, b: [u8; 8]) -> Option<i128> {
        let [b0, b1, b2, b3, ..] = b;
        Some(match self {
            Ty::U8 | Ty::Bool => i128::from(b0),
            Ty::I8 => i128::from(b0 as i8),
            Ty::U16 => i128::from(u16::from_le_bytes([b0, b1])),
            Ty::I16 => i128::from(i16::from_le_bytes([b0, b1])),
            Ty::U32 => i128::from(u32::from_le_bytes([b0, b1, b2, b3])),
            Ty::I32 => i128::from(i32::from_le_bytes([b0, b1, b2, b3])),
            Ty::U64 => i128::from(u64::from_le_bytes(b)),
            Ty::I64 => i128::from(i64::from_le_bytes(b)),
            Ty::F32 | Ty::F64 | Ty::Str | Ty::Array => return None,
        })
    }

    /// Decodes a float of this type from its little-endian bytes.
    fn float(self, b: [u8; 8]) -> Option<f64> {
        let [b0, b1, b2, b3, ..] = b;
        match self {
            Ty::F32 => Some(f64::from(f32::from_le_bytes([b0, b1, b2, b3]))),
            Ty::F64 => Some(f64::from_le_bytes(b)),
            _ => None,
        }
    }
}

/// What we keep of a value: enough to check it, never bulk data we do not need.
enum Value {
    /// A scalar; `int` for integer and bool types, `float` for float types.
    Scalar { ty: Ty, int: Option<i128>, float: Option<f64> },
    /// A string value; `text` only for the few keys we read (see `keeps_string`).
    Str { text: Option<String> },
    /// An array; `ints` for integer arrays short enough to be per-layer values.
    Array { elem: Ty, len: u64, ints: Option<Vec<i128>> },
}

impl Value {
    fn type_name(&self) -> Cow<'static, str> {
        match self {
            Value::Scalar { ty, .. } => ty.name().into(),
            Value::Str { .. } => "string".into(),
            Value::Array { elem, .. } => format!("array of {}", elem.name()).into(),
        }
    }
}

/// String values we read: the ones the checks below look at.
fn keeps_string(key: &str) -> bool {
    key == KEY_ARCH
        || key == "general.name"
        || key == "tokenizer.ggml.model"
        || key == "tokenizer.ggml.pre"
        || key.ends_with(".rope.scaling.type")
}

/// Token texts in one buffer: a 262k-entry vocabulary costs one allocation, not 262k.
#[derive(Default)]
struct Tokens {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Tokens {
    fn len(&self) -> usize {
        self.ends.len()
    }

    fn get(&self, i: usize) -> &[u8] {
        let start = match i.checked_sub(1) {
            Some(prev) => self.ends.get(prev).copied().unwrap_or(0),
            None => 0,
        };
        let end = self.ends.get(i).copied().unwrap_or(start);
        self.bytes.get(start..end).unwrap_or_default()
    }

    fn iter(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.len()).map(|i| self.get(i))
    }
}

/// ggml's `(block size, bytes per block)` of every type a GGUF may hold, by id; `None` for ids
/// ggml removed or never had (see `type_traits` in ggml.c; checked against ggml in the tests).
fn ggml_type(id: u32) -> Option<(NonZeroU64, u64)> {
    let (block, bytes) = match id {
        0 => (1, 4),      // F32
        1 => (1, 2),      // F16
        2 => (32, 18),    // Q4_0
        3 => (32, 20),    // Q4_1
        6 => (32, 22),    // Q5_0
        7 => (32, 24),    // Q5_1
        8 => (32, 34),    // Q8_0
        9 => (32, 36),    // Q8_1
        10 => (256, 84),  // Q2_K
        11 => (256, 110), // Q3_K
        12 => (256, 144), // Q4_K
        13 => (256, 176), // Q5_K
        14 => (256, 210), // Q6_K
        15 => (256, 292), // Q8_K
        16 => (256, 66),  // IQ2_XXS
        17 => (256, 74),  // IQ2_XS
        18 => (256, 98),  // IQ3_XXS
        19 => (256, 50),  // IQ1_S
        20 => (32, 18),   // IQ4_NL
        21 => (256, 110), // IQ3_S
        22 => (256, 82),  // IQ2_S
        23 => (256, 136), // IQ4_XS
        24 => (1, 1),     // I8
        25 => (1, 2),     // I16
        26 => (1, 4),     // I32
        27 => (1, 8),     // I64
        28 => (1, 8),     // F64
        29 => (256, 56),  // IQ1_M
        30 => (1, 2),     // BF16
        34 => (256, 54),  // TQ1_0
        35 => (256, 66),  // TQ2_0
        39 => (32, 17),   // MXFP4
        40 => (64, 36),   // NVFP4
        41 => (128, 18),  // Q1_0
        42 => (64, 18),   // Q2_0
        _ => return None,
    };
    Some((NonZeroU64::new(block)?, bytes))
}

struct Tensor {
    name: String,
    offset: u64,
    size: u64,
}

struct Gguf {
    kv: HashMap<String, Value>,
    tokens: Tokens,
    token_types: Option<Vec<i32>>,
    tensors: Vec<Tensor>,
}

impl Gguf {
    fn read<R: BufRead + Seek>(r: &mut Reader<R>) -> Result<Gguf, Fail> {
        match r.array::<4>() {
            Ok(magic) if &magic == MAGIC => {}
            Ok(_) | Err(Fail::Short { .. }) => return Err(Fail::NotGguf),
            Err(e) => return Err(e),
        }
        let version = r.u32().at(|| "the version".into())?;
        if version != 2 && version != 3 {
            return bad(format!("GGUF version {version} is not supported (only 2 and 3)"));
        }
        let n_tensors = r.u64().at(|| "the tensor count".into())?;
        let n_kv = r.u64().at(|| "the key/value count".into())?;
        let least = n_kv
            .checked_mul(MIN_KV_BYTES)
            .and_then(|kv| n_tensors.checked_mul(MIN_TENSOR_INFO_BYTES).and_then(|t| t.checked_add(kv)));
        if least.is_none_or(|least| least > r.left()) {
            return bad(format!(
                "{n_kv} key/values and {n_tensors} tensors cannot fit in the {} bytes after the header",
                r.left()
            ));
        }

        let mut gguf = Gguf { kv: HashMap::new(), tokens: Tokens::default(), token_types: None, tensors: Vec::new() };
        for i in 0..n_kv {
            let key = r.string(MAX_KEY).at(|| format!("key #{i}"))?;
            let key = String::from_utf8(key).or_else(|_| bad(format!("key #{i} is not valid UTF-8")))?;
            if key.is_empty() {
                return bad(format!("key #{i} is empty"));
            }
            if gguf.kv.contains_key(&key) {
                return bad(format!("key '{key}' appears twice"));
            }
            let value = gguf.read_value(r, &key).at(|| format!("the value of key '{key}'"))?;
            gguf.kv.insert(key, value);
        }
        let alignment = gguf.alignment()?;

        let mut names = HashSet::new();
        // Capped: the count is only a claim until the infos are read.
        gguf.tensors.reserve(usize::try_from(n_tensors.min(4096)).unwrap_or(0));
        for i in 0..n_tensors {
            let tensor = read_tensor_info(r, i)?;
            if !names.insert(tensor.name.clone()) {
                return bad(format!("tensor '{}' appears twice", tensor.name));
            }
            gguf.tensors.push(tensor);
        }
        gguf.check_data(r.pos, r.len, alignment, n_tensors > 0)?;
        Ok(gguf)
    }

    fn read_value<R: BufRead + Seek>(&mut self, r: &mut Reader<R>, key: &str) -> Result<Value, Fail> {
        let id = r.u32()?;
        let ty = Ty::from_id(id).map_or_else(|| bad(format!("key '{key}' has invalid value type {id}")), Ok)?;
        match ty {
            Ty::Str if keeps_string(key) => {
                let text = r.string(MAX_KEPT_STRING)?;
                Ok(Value::Str { text: Some(String::from_utf8_lossy(&text).into_owned()) })
            }
            Ty::Str => {
                let n = r.string_len()?;
                r.skip(n)?;
                Ok(Value::Str { text: None })
            }
            Ty::Array => self.read_array(r, key),
            _ => {
                let mut raw = Vec::with_capacity(8);
                r.append(ty.width().unwrap_or(8), &mut raw)?;
                let raw = widened(&raw);
                Ok(Value::Scalar { ty, int: ty.int(raw), float: ty.float(raw) })
            }
        }
    }

    fn read_array<R: BufRead + Seek>(&mut self, r: &mut Reader<R>, key: &str) -> Result<Value, Fail> {
        let id = r.u32()?;
        let elem = Ty::from_id(id).map_or_else(|| bad(format!("key '{key}' is an array of invalid type {id}")), Ok)?;
        if elem == Ty::Array {
            return bad(format!("key '{key}' is an array of arrays, which GGUF readers refuse"));
        }
        let len = r.u64()?;
        // Strings take at least their 8-byte length each.
        let least = len.checked_mul(elem.width().unwrap_or(8));
        if len > MAX_ARRAY || least.is_none_or(|least| least > r.left()) {
            return bad(format!(
                "key '{key}' claims {len} elements of {}, more than the {} bytes left can hold",
                elem.name(),
                r.left()
            ));
        }
        let mut ints = None;
        match elem.width() {
            None if key == KEY_TOKENS => self.read_tokens(r, len)?,
            None => r.strings(len, MAX_STRING, false, |_| Ok(()))?,
            Some(width) => {
                let size = len.saturating_mul(width);
                if key == KEY_TOKEN_TYPE && elem == Ty::I32 {
                    let mut raw = Vec::new();
                    r.append(size, &mut raw)?;
                    let types = raw.chunks_exact(4).filter_map(|c| c.try_into().ok()).map(i32::from_le_bytes);
                    self.token_types = Some(types.collect());
                } else if elem.int([0; 8]).is_some() && len <= u64::from(MAX_LAYERS) {
                    // Short integer arrays may be per-layer hyper-parameters.
                    let mut raw = Vec::new();
                    r.append(size, &mut raw)?;
                    let step = usize::try_from(width).unwrap_or(1);
                    ints = Some(raw.chunks_exact(step).map(|c| elem.int(widened(c)).unwrap_or(0)).collect());
                } else {
                    r.skip(size)?;
                }
            }
        }
        Ok(Value::Array { elem, len, ints })
    }

    fn read_tokens<R: BufRead + Seek>(&mut self, r: &mut Reader<R>, len: u64) -> Result<(), Fail> {
        let mut tokens = Tokens::default();
        // Enough for real vocabularies; more grows as the data really arrives.
        tokens.ends.reserve(usize::try_from(len.min(1 << 18)).unwrap_or(0));
        r.strings(len, MAX_TOKEN, true, |text| {
            tokens.bytes.extend_from_slice(text);
            tokens.ends.push(tokens.bytes.len());
            Ok(())
        })?;
        self.tokens = tokens;
        Ok(())
    }

    fn alignment(&self) -> Result<u64, Fail> {
        let key = "general.alignment";
        let value = match self.kv.get(key) {
            None => return Ok(DEFAULT_ALIGNMENT),
            Some(Value::Scalar { ty: Ty::U32, int: Some(v), .. }) => *v,
            Some(other) => return bad(format!("{key} must be a u32, not {}", other.type_name())),
        };
        match u64::try_from(value) {
            Ok(a) if a.is_power_of_two() => Ok(a),
            _ => bad(format!("{key} is {value}, not a power of two")),
        }
    }

    /// Where the data section starts and that every tensor lies inside the file where ggml
    /// expects it: in order, each at the previous one's aligned end.
    fn check_data(&self, infos_end: u64, file_len: u64, alignment: u64, any: bool) -> Result<(), Fail> {
        let align_up = |n: u64| n.checked_next_multiple_of(alignment);
        let start = if any { align_up(infos_end) } else { Some(infos_end) };
        let start = match start {
            Some(s) if s <= file_len => s,
            _ => return bad(format!("the tensor data would start past the end of the file ({file_len} bytes)")),
        };
        let mut expected = 0u64;
        for t in &self.tensors {
            let end = start.checked_add(t.offset).and_then(|o| o.checked_add(t.size));
            if end.is_none_or(|end| end > file_len) {
                return bad(format!(
                    "tensor '{}' ({} bytes at data offset {}) extends past the end of the file ({file_len} bytes)",
                    t.name, t.size, t.offset
                ));
            }
            if t.offset.checked_rem(alignment) != Some(0) {
                return bad(format!(
                    "tensor '{}' offset {} is not a multiple of the alignment {alignment}",
                    t.name, t.offset
                ));
            }
            if t.offset != expected {
                return bad(format!(
                    "tensor '{}' is at data offset {}; tensors are stored in order, so it must be at {expected}",
                    t.name, t.offset
                ));
            }
            expected = match align_up(t.size).and_then(|s| expected.checked_add(s)) {
                Some(e) => e,
                None => return bad(format!("tensor '{}' overflows the data section size", t.name)),
            };
        }
        Ok(())
    }

    fn str_value(&self, key: &str) -> Result<Option<&str>, Fail> {
        match self.kv.get(key) {
            None => Ok(None),
            Some(Value::Str { text: Some(s) }) => Ok(Some(s)),
            Some(other) => bad(format!("{key} must be a string, not {}", other.type_name())),
        }
    }

    /// A key llama.cpp reads as a `u32` (any other type makes it throw).
    fn u32_value(&self, key: &str) -> Result<Option<u32>, Fail> {
        match self.kv.get(key) {
            None => Ok(None),
            Some(Value::Scalar { ty: Ty::U32, int: Some(v), .. }) => Ok(u32::try_from(*v).ok()),
            Some(other) => bad(format!("{key} must be a u32, not {}", other.type_name())),
        }
    }

    fn required_u32(&self, key: &str) -> Result<u32, Fail> {
        self.u32_value(key)?.map_or_else(|| bad(format!("{key} is missing")), Ok)
    }

    /// A value llama.cpp reads per layer: a `u32` for all layers, or an integer array with one
    /// entry per layer.
    fn per_layer(&self, key: &str, n_layer: u32) -> Result<Option<Vec<u32>>, Fail> {
        match self.kv.get(key) {
            None => Ok(None),
            Some(Value::Scalar { ty: Ty::U32, int: Some(v), .. }) => {
                Ok(Some(vec![u32::try_from(*v).unwrap_or(0); usize::try_from(n_layer).unwrap_or(0)]))
            }
            Some(Value::Array { elem: Ty::U32 | Ty::I32 | Ty::Bool, len, ints: Some(ints) })
                if *len == u64::from(n_layer) =>
            {
                let values: Option<Vec<u32>> = ints.iter().map(|&v| u32::try_from(v).ok()).collect();
                values.map_or_else(|| bad(format!("{key} has a negative entry")), |v| Ok(Some(v)))
            }
            Some(Value::Array { elem: Ty::U32 | Ty::I32 | Ty::Bool, len, .. }) => {
                bad(format!("{key} has {len} entries but the model has {n_layer} layers"))
            }
            Some(other) => bad(format!("{key} must be a u32 or an array of one per layer, not {}", other.type_name())),
        }
    }

    fn int_value(&self, key: &str) -> Option<i128> {
        match self.kv.get(key) {
            Some(Value::Scalar { int, .. }) => *int,
            _ => None,
        }
    }

    /// Replaces a value as llama.cpp's override would: an integer keeps the file's integer type
    /// (the loader converts it), so only the value is judged.
    fn apply_override(&mut self, key: &str, value: &MetaOverride) {
        let file_ty = match self.kv.get(key) {
            Some(Value::Scalar { ty, .. }) => Some(*ty),
            _ => None,
        };
        let value = match value {
            MetaOverride::Int(v) => {
                let ty = file_ty.filter(|t| !matches!(t, Ty::F32 | Ty::F64 | Ty::Bool)).unwrap_or(Ty::I64);
                Value::Scalar { ty, int: Some(i128::from(*v)), float: None }
            }
            // The loader reads a float override as the `f32` its keys hold.
            MetaOverride::Float(v) => Value::Scalar { ty: Ty::F32, int: None, float: Some(*v) },
            MetaOverride::Bool(b) => Value::Scalar { ty: Ty::Bool, int: Some(i128::from(*b)), float: None },
            MetaOverride::Str(s) => Value::Str { text: Some(s.clone()) },
        };
        self.kv.insert(key.to_string(), value);
    }

    fn check_model(&self, vocab_only: bool) -> Result<(), Fail> {
        let arch = self.str_value(KEY_ARCH)?.map_or_else(|| bad(format!("{KEY_ARCH} is missing")), Ok)?;
        // llama.cpp skips the hyper-parameters for vocab-only loads, and refuses CLIP itself.
        if !vocab_only && arch != "clip" {
            self.check_hparams(arch)?;
        }
        self.check_vocab()
    }

    fn check_hparams(&self, arch: &str) -> Result<(), Fail> {
        let key = |name: &str| format!("{arch}.{name}");
        let block_count = key("block_count");
        let n_layer = self.required_u32(&block_count)?;
        if n_layer == 0 || n_layer > MAX_LAYERS {
            return bad(format!("{block_count} is {n_layer}; llama.cpp supports 1..={MAX_LAYERS} layers"));
        }
        if self.u32_value(&key("nextn_predict_layers"))?.is_some_and(|n| n > n_layer) {
            return bad(format!("{} exceeds {block_count} ({n_layer})", key("nextn_predict_layers")));
        }
        self.check_layer_tensors(&block_count, n_layer)?;

        let n_embd = self.required_u32(&key("embedding_length"))?;
        if n_embd == 0 {
            return bad(format!("{} is 0", key("embedding_length")));
        }
        if self.required_u32(&key("context_length"))? == 0 {
            return bad(format!("{} is 0", key("context_length")));
        }
        self.per_layer(&key("feed_forward_length"), n_layer)?;
        self.per_layer(&key("attention.head_count_kv"), n_layer)?;
        let head_count = key("attention.head_count");
        if let Some(heads) = self.per_layer(&head_count, n_layer)? {
            // Recurrent models write 0 heads; with attention weights present, 0 is an error.
            let attention = self.tensors.iter().any(|t| t.name.contains(".attn_q.") || t.name.contains(".attn_qkv."));
            if attention && heads.iter().all(|&h| h == 0) {
                return bad(format!("{head_count} is 0 but the model has attention weights"));
            }
            // Without an explicit head size, llama.cpp derives it as n_embd / n_head.
            let explicit = self.kv.contains_key(&key("attention.key_length"));
            if !explicit && heads.iter().any(|&h| h > n_embd) {
                return bad(format!("{head_count} exceeds {} ({n_embd})", key("embedding_length")));
            }
        }
        self.check_experts(arch, n_layer)?;

        let scaling = key("rope.scaling.type");
        if let Some(kind) = self.str_value(&scaling)? {
            if !["none", "linear", "yarn", "longrope"].contains(&kind) {
                return bad(format!("{scaling} is '{kind}', not one of none, linear, yarn, longrope"));
            }
        }
        if arch == "wavtokenizer-dec" {
            for sub in ["posnet.block_count", "convnext.block_count"] {
                if self.u32_value(&key(sub))?.is_some_and(|n| n > n_layer) {
                    return bad(format!("{} exceeds {block_count} ({n_layer})", key(sub)));
                }
            }
        }
        self.check_graph_values(arch, n_layer, n_embd)
    }

    /// Every `blk.N.` tensor must be below the layer count, and the last layer must exist: a
    /// count far beyond the tensors present is how a small file claims 2^31 layers.
    fn check_layer_tensors(&self, block_count: &str, n_layer: u32) -> Result<(), Fail> {
        let mut last = None;
        for t in &self.tensors {
            let Some(layer) = layer_of(&t.name) else { continue };
            if layer >= u64::from(n_layer) {
                return bad(format!("tensor '{}' is for layer {layer} but {block_count} is {n_layer}", t.name));
            }
            last = last.max(Some(layer));
        }
        // Split models keep some layers in the other files.
        let split = self.int_value("split.count").is_some_and(|n| n > 1);
        if let Some(last) = last {
            if !split && last.saturating_add(1) < u64::from(n_layer) {
                return bad(format!(
                    "{block_count} is {n_layer} but the file has tensors for {} layers",
                    last.saturating_add(1)
                ));
            }
        }
        Ok(())
    }

    /// The expert counts `load_hparams` asserts on.
    fn check_experts(&self, arch: &str, n_layer: u32) -> Result<(), Fail> {
        let key = |name: &str| format!("{arch}.{name}");
        let mut n_expert = self.u32_value(&key("expert_count"))?.unwrap_or(0);
        let used = self.per_layer(&key("expert_used_count"), n_layer)?.unwrap_or_default();
        let mut used_max = used.iter().copied().max().unwrap_or(0);
        let groups = self.u32_value(&key("expert_group_count"))?.unwrap_or(0);
        let group_used = self.u32_value(&key("expert_group_used_count"))?.unwrap_or(0);
        // llama.cpp treats these dense variants' single "expert" as none.
        if (arch == "hunyuan-dense" || arch == "hunyuan_vl") && n_expert <= 1 {
            n_expert = 0;
            used_max = 0;
        }
        let fault = if n_expert > MAX_EXPERTS {
            Some(format!("{n_expert} experts, more than llama.cpp's {MAX_EXPERTS}"))
        } else if used_max > n_expert {
            Some(format!("{used_max} experts used per token out of {n_expert}"))
        } else if n_expert > 0 && used_max == 0 {
            Some(format!("{n_expert} experts but none used per token"))
        } else if n_expert > 0 && groups >= n_expert {
            Some(format!("{groups} expert groups for {n_expert} experts"))
        } else if n_expert == 0 && groups != 0 {
            Some(format!("{groups} expert groups without experts"))
        } else if groups > 1 && (n_expert % groups != 0 || group_used == 0 || group_used >= groups) {
            Some(format!("{n_expert} experts in {groups} groups with {group_used} groups used"))
        } else {
            None
        };
        fault.map_or(Ok(()), |f| bad(format!("{arch}.expert_*: {f}")))
    }

    fn check_vocab(&self) -> Result<(), Fail> {
        let model_key = "tokenizer.ggml.model";
        let model = self.str_value(model_key)?.map_or_else(|| bad(format!("{model_key} is missing")), Ok)?;
        if model == "no_vocab" || model == "none" {
            let arch = self.str_value(KEY_ARCH)?.unwrap_or_default();
            let size_key = format!("{arch}.vocab_size");
            if self.u32_value(&size_key)?.is_some_and(|n| n > MAX_PLACEHOLDER_TOKENS) {
                return bad(format!("{size_key} is larger than {MAX_PLACEHOLDER_TOKENS}"));
            }
            return Ok(());
        }
        let n_tokens = match self.kv.get(KEY_TOKENS) {
            Some(Value::Array { elem: Ty::Str, .. }) => self.tokens.len(),
            Some(other) => return bad(format!("{KEY_TOKENS} must be an array of strings, not {}", other.type_name())),
            None => return bad(format!("{KEY_TOKENS} is missing")),
        };
        if n_tokens == 0 || i32::try_from(n_tokens).is_err() {
            return bad(format!("{KEY_TOKENS} has {n_tokens} tokens"));
        }
        self.check_token_arrays(n_tokens)?;
        self.check_special_ids(n_tokens)?;
        self.check_unique_texts()?;
        self.check_byte_tokens(model)?;

        if model == "llama" && !self.has_token(b"<0x0A>") && !self.has_token(b"\n") {
            return bad("the SPM vocabulary has no newline token ('<0x0A>' or '\\n')");
        }
        let pre = self.str_value("tokenizer.ggml.pre")?.unwrap_or_default();
        let needs_merges =
            (matches!(model, "gpt2" | "hybriddna" | "whitespace") && pre != "kimi-k2") || model == "gemma4";
        match self.kv.get("tokenizer.ggml.merges") {
            Some(Value::Array { elem: Ty::Str, .. }) => {}
            None if !needs_merges => {}
            None => return bad(format!("the '{model}' tokenizer needs tokenizer.ggml.merges")),
            Some(other) => {
                return bad(format!("tokenizer.ggml.merges must be an array of strings, not {}", other.type_name()))
            }
        }
        match self.kv.get("tokenizer.ggml.suppress_tokens") {
            None | Some(Value::Array { elem: Ty::I32, .. }) => {}
            Some(other) => {
                return bad(format!(
                    "tokenizer.ggml.suppress_tokens must be an array of i32, not {}",
                    other.type_name()
                ))
            }
        }
        // Phi-3 models get attributes set on these tokens by text, with a lookup that throws.
        let name = self.str_value("general.name")?.unwrap_or_default().to_lowercase();
        if name.contains("phi-3") || name.contains("phi3") {
            for text in ["</s>", "<unk>", "<s>", "<|endoftext|>"] {
                if !self.has_token(text.as_bytes()) {
                    return bad(format!("a Phi-3 vocabulary must have the token '{text}'"));
                }
            }
        }
        Ok(())
    }

    fn check_token_arrays(&self, n_tokens: usize) -> Result<(), Fail> {
        let n = n_tokens as u64;
        let scores = "tokenizer.ggml.scores";
        match self.kv.get(scores) {
            None => {}
            Some(Value::Array { elem: Ty::F32 | Ty::I32, len, .. }) if *len == n => {}
            Some(Value::Array { elem: Ty::F32 | Ty::I32, len, .. }) => {
                return bad(format!("{scores} has {len} entries for {n_tokens} tokens"))
            }
            Some(other) => return bad(format!("{scores} must be an array of f32, not {}", other.type_name())),
        }
        match (self.kv.get(KEY_TOKEN_TYPE), &self.token_types) {
            (None, _) => Ok(()),
            (Some(Value::Array { elem: Ty::I32, .. }), Some(types)) => {
                if types.len() != n_tokens {
                    return bad(format!("{KEY_TOKEN_TYPE} has {} entries for {n_tokens} tokens", types.len()));
                }
                match types.iter().position(|t| !(0..=TOKEN_TYPE_BYTE).contains(t)) {
                    Some(i) => bad(format!(
                        "{KEY_TOKEN_TYPE}: token {i} ({}) has invalid type {}",
                        shown(self.tokens.get(i)),
                        types.get(i).copied().unwrap_or_default()
                    )),
                    None => Ok(()),
                }
            }
            (Some(other), _) => bad(format!("{KEY_TOKEN_TYPE} must be an array of i32, not {}", other.type_name())),
        }
    }

    /// Special-token ids: llama.cpp reads the ones it knows as `u32` (throwing on any other
    /// type); every `*_token_id` must name a token of the vocabulary.
    fn check_special_ids(&self, n_tokens: usize) -> Result<(), Fail> {
        for (key, value) in &self.kv {
            let Some(kind) = key.strip_prefix("tokenizer.ggml.").and_then(|k| k.strip_suffix("_token_id")) else {
                continue;
            };
            let id = match value {
                Value::Scalar { ty: Ty::U32, int: Some(id), .. } => *id,
                Value::Scalar { ty, int: Some(id), .. } if !KNOWN_SPECIAL_IDS.contains(&kind) && *ty != Ty::Bool => *id,
                other => return bad(format!("{key} must be a u32, not {}", other.type_name())),
            };
            if usize::try_from(id).map_or(true, |id| id >= n_tokens) {
                return bad(format!("{key} is {id}, outside the vocabulary of {n_tokens} tokens"));
            }
        }
        Ok(())
    }

    /// Refuses two tokens with the same text: the vocabulary asserts every text is unique
    /// (after naming empty tokens `[EMPTY_<id>]`, as it does). Sorting plain hashes costs a
    /// fraction of a set of 262k texts; only a repeated hash pays for the exact check, whose
    /// keyed set also keeps crafted collisions from costing more than that.
    fn check_unique_texts(&self) -> Result<(), Fail> {
        let mut hashes: Vec<u64> = self
            .tokens
            .iter()
            .enumerate()
            .map(|(i, text)| match text {
                [] => fnv1a(format!("[EMPTY_{i}]").as_bytes()),
                text => fnv1a(text),
            })
            .collect();
        hashes.sort_unstable();
        if !hashes.windows(2).any(|w| matches!(w, [a, b] if a == b)) {
            return Ok(());
        }
        let mut texts = HashSet::with_capacity(self.tokens.len());
        let mut empty = Vec::new();
        for (i, text) in self.tokens.iter().enumerate() {
            if text.is_empty() {
                empty.push(i);
            } else if !texts.insert(text) {
                return self.same_text(i, text);
            }
        }
        for i in empty {
            let name = format!("[EMPTY_{i}]");
            if texts.contains(name.as_bytes()) {
                return self.same_text(i, name.as_bytes());
            }
        }
        Ok(())
    }

    fn has_token(&self, text: &[u8]) -> bool {
        self.tokens.iter().any(|t| t == text)
    }

    /// The error for token `i` whose text another token has (found again only on this path).
    fn same_text<T>(&self, i: usize, text: &[u8]) -> Result<T, Fail> {
        let other = self.tokens.iter().position(|t| t == text).unwrap_or(i);
        let (a, b) = (other.min(i), other.max(i));
        bad(format!("tokens {a} and {b} of {KEY_TOKENS} have the same text {}", shown(text)))
    }

    /// Tokens typed BYTE are decoded from their `<0xNN>` text while the vocabulary loads;
    /// the WPM tokenizer has no byte tokens at all (it aborts on one).
    fn check_byte_tokens(&self, model: &str) -> Result<(), Fail> {
        let Some(types) = &self.token_types else { return Ok(()) };
        if matches!(model, "rwkv" | "test" | "plamo2") {
            return Ok(());
        }
        let bytes = types.iter().enumerate().filter(|(_, &t)| t == TOKEN_TYPE_BYTE).map(|(i, _)| i);
        for i in bytes {
            let text = self.tokens.get(i);
            if model == "bert" {
                return bad(format!(
                    "token {i} ({}) has type BYTE, which the WPM tokenizer cannot decode",
                    shown(text)
                ));
            }
            if !is_byte_token(text) {
                return bad(format!("token {i} ({}) has type BYTE but is not of the form <0xNN>", shown(text)));
            }
        }
        Ok(())
    }
}

/// Special-token keys llama.cpp reads (with a `u32` getter).
const KNOWN_SPECIAL_IDS: &[&str] = &[
    "bos",
    "eos",
    "eot",
    "eom",
    "unknown",
    "seperator",
    "padding",
    "mask",
    "fim_pre",
    "fim_suf",
    "fim_mid",
    "fim_pad",
    "fim_rep",
    "fim_sep",
    "prefix",
    "suffix",
    "middle",
];

fn read_tensor_info<R: BufRead + Seek>(r: &mut Reader<R>, i: u64) -> Result<Tensor, Fail> {
    let name = r.string_len().at(|| format!("the name of tensor #{i}"))?;
    if name == 0 || name > MAX_TENSOR_NAME {
        return bad(format!("tensor #{i} has a name of {name} bytes (1..={MAX_TENSOR_NAME} allowed)"));
    }
    let mut raw = Vec::new();
    r.append(name, &mut raw)?;
    let name = String::from_utf8(raw).or_else(|_| bad(format!("the name of tensor #{i} is not valid UTF-8")))?;
    // llama.cpp copies names as C strings: it would see only the part before the NUL.
    if name.contains('\0') {
        return bad(format!("the name of tensor #{i} ({}) contains a NUL byte", name.escape_debug()));
    }

    let info = |r: &mut Reader<R>| -> Result<([u64; 4], u32, u64), Fail> {
        let n_dims = r.u32()?;
        if !(1..=MAX_DIMS).contains(&n_dims) {
            return bad(format!("tensor '{name}' has {n_dims} dimensions (1..={MAX_DIMS} allowed)"));
        }
        let mut ne = [1u64; 4];
        for (d, slot) in ne.iter_mut().enumerate().take(n_dims as usize) {
            *slot = r.u64()?;
            if *slot == 0 || i64::try_from(*slot).is_err() {
                return bad(format!("tensor '{name}' dimension {d} is {slot}"));
            }
        }
        Ok((ne, r.u32()?, r.u64()?))
    };
    let (ne, ty, offset) = info(r).at(|| format!("the info of tensor '{name}'"))?;
    let Some((block, block_bytes)) = ggml_type(ty) else {
        return bad(format!("tensor '{name}' has invalid ggml type {ty}"));
    };
    // Vectors (norm weights, biases) enter element-wise ops whose CPU kernels take them only
    // as F32 (any other type aborts the first decode: "binary_op: unsupported types"); every
    // converter writes them as F32 (ggml type 0). Found by the gguf fuzzer (an F16
    // attn_norm.weight).
    if ne[1..].iter().all(|&d| d == 1) && ty != 0 {
        return bad(format!("tensor '{name}' is a vector of ggml type {ty}; vectors must be F32"));
    }
    let [ne0, ..] = ne;
    if ne0 % block != 0 {
        return bad(format!(
            "tensor '{name}' has rows of {ne0} elements, not a multiple of its type's block of {block}"
        ));
    }
    let elements = ne.iter().try_fold(1u64, |n, &d| n.checked_mul(d)).filter(|&n| i64::try_from(n).is_ok());
    let size = elements.and_then(|n| (n / block).checked_mul(block_bytes));
    let Some(size) = size else {
        return bad(format!("tensor '{name}' of shape {ne:?} is too large to address"));
    };
    Ok(Tensor { name, offset, size })
}

/// 64-bit FNV-1a: fast and unkeyed, which is enough for a first pass (see
/// `check_unique_texts`).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Little-endian bytes of a value up to 8 bytes wide, zero-padded to 8 for [`Ty::int`].
fn widened(bytes: &[u8]) -> [u8; 8] {
    let mut out = [0u8; 8];
    out.iter_mut().zip(bytes).for_each(|(d, s)| *d = *s);
    out
}

/// `blk.N.` tensors belong to layer N; a number too large to parse is beyond any layer.
fn layer_of(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("blk.")?.split('.').next()?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(digits.parse().unwrap_or(u64::MAX))
}

fn is_byte_token(text: &[u8]) -> bool {
    matches!(text, [b'<', b'0', b'x', hi, lo, b'>'] if hi.is_ascii_hexdigit() && lo.is_ascii_hexdigit())
}

/// A token's text for an error message: quoted, escaped, and short.
fn shown(text: &[u8]) -> String {
    let text = String::from_utf8_lossy(text);
    let short: String = text.chars().take(32).collect();
    if short.len() < text.len() {
        format!("{short:?}...")
    } else {
        format!("{short:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// Builds GGUF bytes by hand: just what these tests need.
    #[derive(Default)]
    struct Bytes(Vec<u8>);

    impl Bytes {
        fn header(n_tensors: u64, n_kv: u64) -> Bytes {
            let mut b = Bytes(b"GGUF".to_vec());
            b.u32(3).u64(n_tensors).u64(n_kv);
            b
        }
        fn u32(&mut self, v: u32) -> &mut Self {
            self.0.extend(v.to_le_bytes());
            self
        }
        fn u64(&mut self, v: u64) -> &mut Self {
            self.0.extend(v.to_le_bytes());
            self
        }
        fn i32(&mut self, v: i32) -> &mut Self {
            self.0.extend(v.to_le_bytes());
            self
        }
        fn str(&mut self, s: &str) -> &mut Self {
            self.u64(s.len() as u64);
            self.0.extend(s.as_bytes());
            self
        }
        fn kv_u32(&mut self, key: &str, v: u32) -> &mut Self {
            self.str(key).u32(4).u32(v)
        }
        fn kv_str(&mut self, key: &str, v: &str) -> &mut Self {
            self.str(key).u32(8).str(v)
        }
        fn kv_strs(&mut self, key: &str, items: &[&str]) -> &mut Self {
            self.str(key).u32(9).u32(8).u64(items.len() as u64);
            for s in items {
                self.str(s);
            }
            self
        }
        fn kv_i32s(&mut self, key: &str, items: &[i32]) -> &mut Self {
            self.str(key).u32(9).u32(5).u64(items.len() as u64);
            for &v in items {
                self.i32(v);
            }
            self
        }
        /// An F32 tensor info at `offset`.
        fn tensor(&mut self, name: &str, dims: &[u64], offset: u64) -> &mut Self {
            self.str(name).u32(dims.len() as u32);
            for &d in dims {
                self.u64(d);
            }
            self.u32(0).u64(offset)
        }
        /// Pads to the data section and appends `n` bytes of tensor data.
        fn data(&mut self, n: usize) -> &mut Self {
            let start = self.0.len().next_multiple_of(32);
            self.0.resize(start + n, 0);
            self
        }
    }

    fn run(b: &Bytes, scope: Scope) -> Result<(), String> {
        check(Cursor::new(&b.0), b.0.len() as u64, scope, &[]).map_err(|f| match f {
            Fail::NotGguf => "not gguf".into(),
            Fail::Io(e) => format!("io: {e}"),
            Fail::Short { need, left } => format!("short: {need} > {left}"),
            Fail::Long { len, max } => format!("long: {len} > {max}"),
            Fail::Bad(what) => what,
        })
    }

    fn structure(b: &Bytes) -> Result<(), String> {
        run(b, Scope::Structure)
    }

    const VOCAB: &[&str] = &["<unk>", "<s>", "</s>", "<0x0A>", "a", "b"];
    const TYPES: &[i32] = &[2, 3, 3, 6, 1, 1];

    /// A model header with one layer and `extra` key/values written by `more`.
    fn model(extra: u64, more: impl FnOnce(&mut Bytes)) -> Bytes {
        model_with_vocab(VOCAB, TYPES, extra, more)
    }

    fn model_with_vocab(tokens: &[&str], types: &[i32], extra: u64, more: impl FnOnce(&mut Bytes)) -> Bytes {
        let mut b = Bytes::header(2, 8 + extra);
        b.kv_str("general.architecture", "llama")
            .kv_u32("llama.block_count", 1)
            .kv_u32("llama.embedding_length", 4)
            .kv_u32("llama.context_length", 16)
            .kv_u32("llama.attention.head_count", 2)
            .kv_str("tokenizer.ggml.model", "llama")
            .kv_strs("tokenizer.ggml.tokens", tokens)
            .kv_i32s("tokenizer.ggml.token_type", types);
        more(&mut b);
        b.tensor("token_embd.weight", &[4, 6], 0).tensor("blk.0.attn_q.weight", &[4, 4], 96).data(96 + 64);
        b
    }

    fn model_ok() -> Scope {
        Scope::Model { vocab_only: false }
    }

    #[test]
    fn a_small_valid_model_passes() {
        assert_eq!(run(&model(0, |_| {}), model_ok()), Ok(()));
        assert_eq!(
            run(
                &model(1, |b| {
                    b.kv_u32("tokenizer.ggml.bos_token_id", 1);
                }),
                model_ok()
            ),
            Ok(())
        );
        assert_eq!(run(&model(0, |_| {}), Scope::Model { vocab_only: true }), Ok(()));
    }

    #[test]
    fn header_fields_are_checked() {
        assert_eq!(structure(&Bytes(b"GGU".to_vec())), Err("not gguf".into()));
        assert_eq!(structure(&Bytes(b"GGML\x03\0\0\0".to_vec())), Err("not gguf".into()));
        for version in [0, 1, 4, 0x0300_0000] {
            let mut b = Bytes(b"GGUF".to_vec());
            b.u32(version).u64(0).u64(0);
            assert!(structure(&b).unwrap_err().contains("version"), "{version}");
        }
        assert!(structure(&Bytes::header(u64::MAX, 0)).unwrap_err().contains("cannot fit"));
        assert!(structure(&Bytes::header(0, 1 << 40)).unwrap_err().contains("cannot fit"));
        assert_eq!(structure(&Bytes::header(0, 0)), Ok(()));
        let mut cut = Bytes::header(0, 0);
        cut.0.truncate(10);
        assert!(structure(&cut).unwrap_err().contains("the tensor count"));
    }

    #[test]
    fn keys_and_values_are_checked() {
        let one = |f: &dyn Fn(&mut Bytes)| {
            let mut b = Bytes::header(0, 1);
            f(&mut b);
            structure(&b)
        };
        assert_eq!(
            one(&|b| {
                b.kv_u32("a", 1);
            }),
            Ok(())
        );
        type Layout<'a> = &'a dyn Fn(&mut Bytes);
        let refused: [(Layout, &str); 9] = [
            (&|b| _ = b.u64(1 << 50).u64(0), "key #0"),
            (&|b| _ = b.u64(1000).u64(0), "key #0 needs 1000 bytes"),
            (&|b| _ = b.kv_u32("", 1), "empty"),
            (&|b| _ = b.u64(2).u32(0xffff).u32(4).u32(1), "UTF-8"),
            (&|b| _ = b.str("k").u32(13).u32(1), "invalid value type 13"),
            (&|b| _ = b.str("k").u32(8).u64(u64::MAX), "'k'"),
            (&|b| _ = b.str("k").u32(9).u32(9).u64(1), "array of arrays"),
            (&|b| _ = b.str("k").u32(9).u32(4).u64(1 << 40), "claims"),
            (&|b| _ = b.str("k").u32(9).u32(77).u64(1), "invalid type 77"),
        ];
        for (body, needle) in refused {
            let err = one(body).unwrap_err();
            assert!(err.contains(needle), "{needle:?} not in {err:?}");
        }
        let mut dup = Bytes::header(0, 2);
        dup.kv_u32("k", 1).kv_u32("k", 2);
        assert!(structure(&dup).unwrap_err().contains("appears twice"));
        let mut arrays = Bytes::header(0, 2);
        arrays.kv_strs("s", &["x", "yy"]).kv_i32s("n", &[1, -2, 3]);
        assert_eq!(structure(&arrays), Ok(()));
    }

    #[test]
    fn tensor_infos_are_checked() {
        let one = |name: &str, dims: &[u64], ty: u32, offset: u64, data: usize| {
            let mut b = Bytes::header(1, 0);
            b.str(name).u32(dims.len() as u32);
            for &d in dims {
                b.u64(d);
            }
            b.u32(ty).u64(offset).data(data);
            structure(&b)
        };
        assert_eq!(one("t", &[4, 2], 0, 0, 32), Ok(()));
        assert_eq!(one("t", &[64, 2], 2, 0, 72), Ok(()), "four Q4_0 blocks");
        assert!(one("t", &[8, 2], 2, 0, 64).unwrap_err().contains("block of 32"));
        assert!(one("t", &[64], 2, 0, 36).unwrap_err().contains("vectors must be F32"));
        assert!(one("t", &[], 0, 0, 32).unwrap_err().contains("0 dimensions"));
        assert!(one("t", &[1, 1, 1, 1, 1], 0, 0, 32).unwrap_err().contains("5 dimensions"));
        assert!(one("t", &[4, 0], 0, 0, 32).unwrap_err().contains("dimension 1 is 0"));
        assert!(one("t", &[1 << 62, 1 << 62], 0, 0, 32).unwrap_err().contains("too large"));
        assert!(one("t", &[1 << 40], 0, 0, 32).unwrap_err().contains("past the end"));
        assert!(one("t", &[4], 4, 0, 32).unwrap_err().contains("invalid ggml type 4"));
        assert!(one("t", &[4], 43, 0, 32).unwrap_err().contains("invalid ggml type 43"));
        assert!(one("t", &[4], 0, 8, 64).unwrap_err().contains("alignment"));
        assert!(one("t", &[4], 0, 32, 64).unwrap_err().contains("must be at 0"));
        assert!(one("t", &[4], 0, 1 << 40, 64).unwrap_err().contains("past the end"));
        assert!(one("", &[4], 0, 0, 32).unwrap_err().contains("0 bytes"));
        assert!(one(&"n".repeat(64), &[4], 0, 0, 32).unwrap_err().contains("64 bytes"));
        let mut dup = Bytes::header(2, 0);
        dup.tensor("t", &[8], 0).tensor("t", &[8], 32).data(64);
        assert!(structure(&dup).unwrap_err().contains("appears twice"));
    }

    #[test]
    fn alignment_must_be_a_power_of_two_u32() {
        for (value, ok) in [(64, true), (0, false), (48, false)] {
            let mut b = Bytes::header(1, 1);
            b.kv_u32("general.alignment", value).tensor("t", &[4], 0).data(64);
            assert_eq!(structure(&b).is_ok(), ok, "{value}");
        }
        let mut b = Bytes::header(0, 1);
        b.str("general.alignment").u32(10).u64(32);
        assert!(structure(&b).unwrap_err().contains("must be a u32"));
    }

    #[test]
    fn hyper_parameters_are_checked() {
        let with = |key: &str, v: u32| {
            run(
                &model(1, |b| {
                    b.kv_u32(key, v);
                }),
                model_ok(),
            )
        };
        for n in [0, 2, 513, i32::MAX as u32, u32::MAX] {
            let b = model(0, |_| {});
            let b = Bytes(replace_u32_after(&b.0, "llama.block_count", n));
            let err = run(&b, model_ok()).unwrap_err();
            assert!(err.contains("llama.block_count"), "{n}: {err}");
            assert_eq!(run(&b, Scope::Model { vocab_only: true }), Ok(()), "vocab-only ignores layers");
        }
        assert!(with("llama.expert_used_count", 2).unwrap_err().contains("expert"));
        assert!(with("llama.expert_count", 2000).unwrap_err().contains("expert"));
        assert!(with("llama.nextn_predict_layers", 2).unwrap_err().contains("nextn"));
        let zero_heads = Bytes(replace_u32_after(&model(0, |_| {}).0, "llama.attention.head_count", 0));
        assert!(run(&zero_heads, model_ok()).unwrap_err().contains("head_count is 0"));
        let rope = model(1, |b| {
            b.kv_str("llama.rope.scaling.type", "bogus");
        });
        assert!(run(&rope, model_ok()).unwrap_err().contains("rope.scaling.type"));
        let per_layer = model(1, |b| {
            b.kv_i32s("llama.feed_forward_length", &[8, 8]);
        });
        assert!(run(&per_layer, model_ok()).unwrap_err().contains("2 entries"));
    }

    #[test]
    fn vocabulary_is_checked() {
        let with = |n: u64, f: &dyn Fn(&mut Bytes)| run(&model(n, |b| f(b)), Scope::Model { vocab_only: true });
        assert!(with(1, &|b| {
            b.kv_u32("tokenizer.ggml.bos_token_id", 6);
        })
        .unwrap_err()
        .contains("bos_token_id"));
        assert!(with(1, &|b| {
            b.kv_u32("tokenizer.ggml.eot_token_id", 99);
        })
        .unwrap_err()
        .contains("eot_token_id"));
        let wrong_type = |b: &mut Bytes| {
            b.str("tokenizer.ggml.eos_token_id").u32(5).i32(1);
        };
        assert!(with(1, &wrong_type).unwrap_err().contains("must be a u32"));
        let scores = |b: &mut Bytes| {
            b.str("tokenizer.ggml.scores").u32(9).u32(6).u64(2).u32(0).u32(0);
        };
        assert!(with(1, &scores).unwrap_err().contains("2 entries for 6"));

        let replaced = |types: &[i32], tokens: &[&str]| {
            run(&model_with_vocab(tokens, types, 0, |_| {}), Scope::Model { vocab_only: true })
        };
        assert_eq!(replaced(TYPES, VOCAB), Ok(()));
        assert!(replaced(&[2, 3, 3, 6, 99, 1], VOCAB).unwrap_err().contains("invalid type 99"));
        assert!(replaced(&[2, 3, 3, 6, -1, 1], VOCAB).unwrap_err().contains("invalid type -1"));
        assert!(replaced(&[2, 3, 3, 6, 1], VOCAB).unwrap_err().contains("5 entries"));
        let zz = ["<unk>", "<s>", "</s>", "<0xZZ>", "a", "b"];
        assert!(replaced(TYPES, &zz).unwrap_err().contains("<0xNN>"));
        let dup = ["<unk>", "<s>", "</s>", "<0x0A>", "a", "a"];
        assert!(replaced(TYPES, &dup)
            .unwrap_err()
            .contains("tokens 4 and 5 of tokenizer.ggml.tokens have the same text"));
        let no_newline = ["<unk>", "<s>", "</s>", "<0x0B>", "a", "b"];
        assert!(replaced(TYPES, &no_newline).unwrap_err().contains("newline"));
    }

    #[test]
    fn strings_across_buffer_ends_are_read_whole() {
        let texts = ["a", "", "0123456789abcdef0123", "xyz", "0123456789"];
        let mut b = Bytes::default();
        texts.iter().for_each(|t| {
            b.str(t);
        });
        let len = b.0.len() as u64;
        for keep in [true, false] {
            let mut r = Reader { inner: BufReader::with_capacity(16, Cursor::new(&b.0)), pos: 0, len };
            let mut seen = Vec::new();
            let collect = |t: &[u8]| {
                seen.push(String::from_utf8(t.to_vec()).unwrap());
                Ok(())
            };
            r.strings(5, 64, keep, collect).map_err(|_| ()).unwrap();
            assert_eq!(r.pos, len);
            assert_eq!(seen.len(), texts.len());
            if keep {
                assert_eq!(seen, texts);
            }
        }
        let mut r = Reader { inner: BufReader::with_capacity(16, Cursor::new(&b.0)), pos: 0, len };
        assert!(matches!(r.strings(5, 8, true, |_| Ok(())), Err(Fail::Long { len: 20, max: 8 })));
        let mut r = Reader { inner: BufReader::with_capacity(16, Cursor::new(&b.0)), pos: 0, len };
        assert!(matches!(r.strings(6, 64, true, |_| Ok(())), Err(Fail::Short { .. })));
    }

    #[test]
    fn layer_numbers_are_parsed_strictly() {
        assert_eq!(layer_of("blk.12.attn_q.weight"), Some(12));
        assert_eq!(layer_of("blk.99999999999999999999999.x"), Some(u64::MAX));
        assert_eq!(layer_of("blk.x.attn"), None);
        assert_eq!(layer_of("enc.blk.1.x"), None);
        assert!(is_byte_token(b"<0x0a>") && is_byte_token(b"<0xFF>"));
        assert!(!is_byte_token(b"<0xZZ>") && !is_byte_token(b"<0x0A") && !is_byte_token(b"a"));
    }

    #[test]
    #[cfg_attr(miri, ignore = "calls llama.cpp, which Miri cannot run")]
    fn the_type_table_matches_ggml() {
        for id in 0..llama_sys::GGML_TYPE_COUNT + 3 {
            let ggml = if id < llama_sys::GGML_TYPE_COUNT {
                // SAFETY: pure lookups in ggml's static type table, for an id below its count.
                let (block, bytes) = unsafe { (llama_sys::ggml_blck_size(id), llama_sys::ggml_type_size(id)) };
                (block > 0).then_some((block, bytes))
            } else {
                None
            };
            let ours = ggml_type(id).map(|(block, bytes)| (block.get() as i64, bytes as usize));
            assert_eq!(ours, ggml, "ggml type {id}");
        }
    }

    /// `bytes` with the u32 value of `key` replaced.
    fn replace_u32_after(bytes: &[u8], key: &str, v: u32) -> Vec<u8> {
        let at = bytes.windows(key.len()).position(|w| w == key.as_bytes()).unwrap() + key.len() + 4;
        let mut out = bytes.to_vec();
        out[at..at + 4].copy_from_slice(&v.to_le_bytes());
        out
    }
}
