//! Semantic mutations of a real model for the `metadata` fuzz target: the fuzzer's bytes are
//! read as a list of edits (a value of the type llama.cpp reads for a key it knows, a
//! per-layer array, a retyped or removed key, a tokenizer entry, a chat template, a tensor's
//! shape, type or name), applied to the parsed model, and the file is written again with the
//! same tensor data. Byte-level fuzzing of the same file almost never gets past the structural
//! checks; these edits always produce a well-formed GGUF, so what is tested is whether a value
//! that the loader accepts can still abort the first decode.

use std::sync::Arc;

use super::gguf_file::{ty, Gguf, Value};

/// Bytes per edit: what, three small arguments, and a 64-bit payload.
pub const EDIT: usize = 12;

/// What llama.cpp reads a key as (the type a well-formed file gives it).
#[derive(Clone, Copy)]
enum Kind {
    U32,
    /// A `u32`, or an array with one entry per layer.
    PerLayer,
    F32,
    Bool,
    Str,
    /// Four `i32` (the M-RoPE sections).
    Sections,
}

/// Hyper-parameter keys of the pinned llama.cpp (`llama-arch.cpp`), after `{arch}.`, with the
/// type its loader reads: the ones the llama and gemma3 graphs use first, then those shared by
/// many architectures.
const ARCH_KEYS: &[(&str, Kind)] = &[
    ("attention.layer_norm_rms_epsilon", Kind::F32),
    ("attention.layer_norm_epsilon", Kind::F32),
    ("rope.freq_base", Kind::F32),
    ("rope.freq_base_swa", Kind::F32),
    ("rope.dimension_count", Kind::U32),
    ("rope.dimension_count_swa", Kind::U32),
    ("rope.scaling.type", Kind::Str),
    ("rope.scaling.factor", Kind::F32),
    ("rope.scale_linear", Kind::F32),
    ("rope.scaling.attn_factor", Kind::F32),
    ("rope.scaling.original_context_length", Kind::U32),
    ("rope.scaling.finetuned", Kind::Bool),
    ("rope.scaling.yarn_ext_factor", Kind::F32),
    ("rope.scaling.yarn_attn_factor", Kind::F32),
    ("rope.scaling.yarn_beta_fast", Kind::F32),
    ("rope.scaling.yarn_beta_slow", Kind::F32),
    ("rope.scaling.yarn_log_multiplier", Kind::F32),
    ("rope.dimension_sections", Kind::Sections),
    ("attention.head_count", Kind::PerLayer),
    ("attention.head_count_kv", Kind::PerLayer),
    ("attention.key_length", Kind::U32),
    ("attention.value_length", Kind::U32),
    ("attention.key_length_swa", Kind::U32),
    ("attention.value_length_swa", Kind::U32),
    ("attention.sliding_window", Kind::U32),
    ("attention.sliding_window_pattern", Kind::PerLayer),
    ("attention.scale", Kind::F32),
    ("attention.causal", Kind::Bool),
    ("attention.clamp_kqv", Kind::F32),
    ("attention.max_alibi_bias", Kind::F32),
    ("attn_logit_softcapping", Kind::F32),
    ("final_logit_softcapping", Kind::F32),
    ("embedding_length", Kind::U32),
    ("feed_forward_length", Kind::PerLayer),
    ("context_length", Kind::U32),
    ("block_count", Kind::U32),
    ("vocab_size", Kind::U32),
    ("pooling_type", Kind::U32),
    ("embedding_scale", Kind::F32),
    ("residual_scale", Kind::F32),
    ("logit_scale", Kind::F32),
    ("attention.temperature_scale", Kind::F32),
    ("attention.temperature_length", Kind::U32),
    ("attention.shared_kv_layers", Kind::U32),
    ("embedding_length_per_layer_input", Kind::U32),
    ("expert_count", Kind::U32),
    ("expert_used_count", Kind::PerLayer),
    ("expert_shared_count", Kind::U32),
    ("expert_weights_scale", Kind::F32),
    ("expert_weights_norm", Kind::Bool),
    ("expert_gating_func", Kind::U32),
    ("leading_dense_block_count", Kind::U32),
    ("use_parallel_residual", Kind::Bool),
    ("swiglu_clamp_exp", Kind::F32),
    ("full_attention_interval", Kind::U32),
    ("nextn_predict_layers", Kind::U32),
    ("attention.group_norm_epsilon", Kind::F32),
    ("attention.group_norm_groups", Kind::U32),
];

/// Keys outside the architecture's namespace that the loader reads.
const GLOBAL_KEYS: &[(&str, Kind)] = &[
    ("tokenizer.ggml.bos_token_id", Kind::U32),
    ("tokenizer.ggml.eos_token_id", Kind::U32),
    ("tokenizer.ggml.eot_token_id", Kind::U32),
    ("tokenizer.ggml.padding_token_id", Kind::U32),
    ("tokenizer.ggml.unknown_token_id", Kind::U32),
    ("tokenizer.ggml.seperator_token_id", Kind::U32),
    ("tokenizer.ggml.add_bos_token", Kind::Bool),
    ("tokenizer.ggml.add_eos_token", Kind::Bool),
    ("tokenizer.ggml.add_space_prefix", Kind::Bool),
    ("tokenizer.ggml.model", Kind::Str),
    ("tokenizer.ggml.pre", Kind::Str),
    ("tokenizer.chat_template", Kind::Str),
    ("general.architecture", Kind::Str),
    ("general.alignment", Kind::U32),
];

/// Strings worth trying where a key takes one: names llama.cpp switches on, and templates.
const STRINGS: &[&str] = &[
    "",
    "none",
    "linear",
    "yarn",
    "longrope",
    "llama",
    "gemma3",
    "gemma2",
    "gemma",
    "qwen2",
    "phi3",
    "gpt2",
    "bert",
    "t5",
    "rwkv",
    "mamba",
    "no_vocab",
    "smollm",
    "llama-bpe",
    "default",
    "\u{0}",
    "{{ raise_exception('no') }}",
    "{% for m in messages %}{{ m.content }}{% endfor %}",
    "{{ messages[0]['content'] * 100000 }}",
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}",
    "{{",
    "<start_of_turn>",
];

/// Tensor types the two test models hold or a converter writes: `(id, block, bytes)`.
const TENSOR_TYPES: &[(u32, u64, u64)] = &[
    (0, 1, 4),      // F32
    (1, 1, 2),      // F16
    (2, 32, 18),    // Q4_0
    (3, 32, 20),    // Q4_1
    (6, 32, 22),    // Q5_0
    (8, 32, 34),    // Q8_0
    (12, 256, 144), // Q4_K
    (14, 256, 210), // Q6_K
    (30, 1, 2),     // BF16
];

/// Tensor data a mutation may allocate; beyond it the edit is skipped.
const MAX_TENSOR_BYTES: u64 = 64 << 20;

/// One edit's bytes.
struct Edit {
    what: u8,
    a: u8,
    b: u8,
    c: u8,
    payload: u64,
}

impl Edit {
    fn read(bytes: &[u8]) -> Edit {
        let mut raw = [0u8; EDIT];
        raw.iter_mut().zip(bytes).for_each(|(d, s)| *d = *s);
        let [what, a, b, c, p @ ..] = raw;
        Edit { what, a, b, c, payload: u64::from_le_bytes(p) }
    }

    /// A 16-bit index from `a` and `c`, for lists longer than 256 (tensors, tokens).
    fn wide(&self) -> usize {
        usize::from(self.a) | usize::from(self.c) << 8
    }
}

/// Applies every edit in `bytes` to `g`.
pub fn apply(g: &mut Gguf, bytes: &[u8]) {
    for edit in bytes.chunks(EDIT).map(Edit::read) {
        apply_one(g, &edit);
    }
}

fn apply_one(g: &mut Gguf, e: &Edit) {
    let arch = match g.get("general.architecture") {
        Some(Value::Str(s)) => s.clone(),
        _ => "llama".into(),
    };
    let n_layer = match g.get(&format!("{arch}.block_count")) {
        Some(Value::U32(n)) => (*n).min(1024) as usize,
        _ => 1,
    };
    match e.what % 10 {
        // A known hyper-parameter, with a value of the type the loader reads.
        0 | 1 => {
            let (suffix, kind) = ARCH_KEYS[usize::from(e.a) % ARCH_KEYS.len()];
            let key = format!("{arch}.{suffix}");
            let old = g.get(&key).cloned();
            g.set(&key, value_of(kind, e, old.as_ref(), n_layer));
        }
        // A tokenizer or general key.
        2 => {
            let (key, kind) = GLOBAL_KEYS[usize::from(e.a) % GLOBAL_KEYS.len()];
            let old = g.get(key).cloned();
            g.set(key, value_of(kind, e, old.as_ref(), n_layer));
        }
        // An existing key: a new number of its own type (or of one array entry).
        3 => {
            if let Some((_, v)) = nth_kv(g, e.a) {
                *v = renumbered(v, e);
            }
        }
        // An existing key, retyped: the same number as another type.
        4 => {
            if let Some((_, v)) = nth_kv(g, e.a) {
                let n = number_in(v).unwrap_or(Num::Int(1));
                *v = typed(u32::from(e.b) % 13, n);
            }
        }
        5 => {
            if !g.kv.is_empty() {
                let i = usize::from(e.a) % g.kv.len();
                g.kv.remove(i);
            }
        }
        // An array made shorter, longer, or of another element type.
        6 => {
            if let Some((_, Value::Array(elem, items))) = nth_kv(g, e.a) {
                match e.b % 3 {
                    0 => items.truncate(items.len().min((e.payload % 64) as usize)),
                    1 => {
                        if let Some(last) = items.last().cloned() {
                            items.extend(std::iter::repeat_n(last, 1 + (e.payload % 4) as usize));
                        }
                    }
                    _ => {
                        let to = u32::from(e.c) % 13;
                        if to != ty::STR && to != ty::ARRAY && *elem != ty::STR {
                            *elem = to;
                            for item in items.iter_mut() {
                                *item = typed(to, number_in(item).unwrap_or(Num::Int(0)));
                            }
                        }
                    }
                }
            }
        }
        7 => edit_vocab(g, e),
        _ => edit_tensor(g, e),
    }
}

fn nth_kv(g: &mut Gguf, i: u8) -> Option<&mut (Vec<u8>, Value)> {
    let n = g.kv.len();
    (n > 0).then(|| &mut g.kv[usize::from(i) % n])
}

/// Tokens, their types and scores, and BPE merges.
fn edit_vocab(g: &mut Gguf, e: &Edit) {
    let key = match e.b % 4 {
        0 => "tokenizer.ggml.tokens",
        1 => "tokenizer.ggml.token_type",
        2 => "tokenizer.ggml.scores",
        _ => "tokenizer.ggml.merges",
    };
    let Some(Value::Array(_, items)) = g.kv.iter_mut().find(|(k, _)| k == key.as_bytes()).map(|(_, v)| v) else {
        return;
    };
    if items.is_empty() {
        return;
    }
    let i = (e.payload >> 16) as usize % items.len();
    let other = e.wide() % items.len();
    let replacement = match &items[i] {
        Value::Str(_) => match e.payload % 4 {
            0 => items[other].clone(),
            1 => Value::Str(STRINGS[usize::from(e.a) % STRINGS.len()].into()),
            2 => Value::Str("a b c".into()),
            _ => Value::Str(format!("<0x{:02X}>", e.a)),
        },
        item => renumbered(item, e),
    };
    items[i] = replacement;
}

/// A tensor's shape, type or name; or the tensor removed.
fn edit_tensor(g: &mut Gguf, e: &Edit) {
    if g.tensors.is_empty() {
        return;
    }
    let i = e.wide() % g.tensors.len();
    let elements = |dims: &[u64]| dims.iter().try_fold(1u64, |n, &d| n.checked_mul(d));
    match e.b % 6 {
        0 => {
            let dims = &mut g.tensors[i].dims;
            let last = dims.len().saturating_sub(1);
            dims.swap(0, last.min(1));
        }
        1 => {
            let t = &g.tensors[i];
            let d = (e.payload % 4) as usize % t.dims.len();
            let old = t.dims[d];
            let mut dims = t.dims.clone();
            dims[d] = match int(e.payload >> 2, Some(i128::from(old))) {
                n if n > 0 => u64::try_from(n).unwrap_or(1),
                _ => 1,
            };
            let ty = t.ggml_type;
            resize(g, i, dims, ty);
        }
        2 => {
            let (to, ..) = TENSOR_TYPES[usize::from(e.c) % TENSOR_TYPES.len()];
            let dims = g.tensors[i].dims.clone();
            resize(g, i, dims, to);
        }
        3 => {
            let other = usize::from(e.c) % g.tensors.len();
            g.tensors[i].name = g.tensors[other].name.clone();
            // Another layer's tensor of the same kind, or the same one twice.
            if e.payload.is_multiple_of(2) {
                let name = String::from_utf8_lossy(&g.tensors[i].name).into_owned();
                if let Some(rest) = name.strip_prefix("blk.").and_then(|r| r.split_once('.')) {
                    g.tensors[i].name = format!("blk.{}.{}", e.a, rest.1).into_bytes();
                }
            }
        }
        4 => {
            g.tensors.remove(i);
        }
        _ => {
            // The same elements in another number of dimensions.
            let t = &mut g.tensors[i];
            match t.dims.as_slice() {
                [a, b] if b.is_multiple_of(2) => t.dims = vec![*a, b / 2, 2],
                [a, b, c, ..] => t.dims = vec![*a, b * c],
                [a] if a.is_multiple_of(2) && elements(&t.dims).is_some() => t.dims = vec![a / 2, 2],
                _ => {}
            }
        }
    }
}

/// Gives tensor `i` new dims and type with its data cut or zero-padded to the new size, so the
/// file stays well-formed; skipped when the size is unknown or too large to hold.
fn resize(g: &mut Gguf, i: usize, dims: Vec<u64>, to: u32) {
    let size = |ty: u32, dims: &[u64]| {
        let &(_, block, bytes) = TENSOR_TYPES.iter().find(|(id, ..)| *id == ty)?;
        let n = dims.iter().try_fold(1u64, |n, &d| n.checked_mul(d))?;
        (dims.first()? % block == 0).then(|| n / block * bytes)
    };
    let Some(new) = size(to, &dims).filter(|&n| n <= MAX_TENSOR_BYTES) else { return };
    let t = &mut g.tensors[i];
    let mut data = vec![0u8; new as usize];
    let keep = data.len().min(t.data.len());
    data[..keep].copy_from_slice(&t.data[..keep]);
    t.data = Arc::from(data);
    t.dims = dims;
    t.ggml_type = to;
}

/// A number as the fuzzer chose it: integers and floats are drawn from different tables.
#[derive(Clone, Copy)]
enum Num {
    Int(i128),
    Float(f64),
}

/// The number a value holds, if it is one.
fn number_in(v: &Value) -> Option<Num> {
    Some(match *v {
        Value::U8(n) => Num::Int(n.into()),
        Value::I8(n) => Num::Int(n.into()),
        Value::U16(n) => Num::Int(n.into()),
        Value::I16(n) => Num::Int(n.into()),
        Value::U32(n) => Num::Int(n.into()),
        Value::I32(n) => Num::Int(n.into()),
        Value::U64(n) => Num::Int(n.into()),
        Value::I64(n) => Num::Int(n.into()),
        Value::Bool(b) => Num::Int(b.into()),
        Value::F32(f) => Num::Float(f.into()),
        Value::F64(f) => Num::Float(f),
        _ => return None,
    })
}

/// `n` as a value of type `id`: integers wrap, as a careless converter's would.
fn typed(id: u32, n: Num) -> Value {
    let (i, f) = match n {
        Num::Int(i) => (i, i as f64),
        Num::Float(f) => (f as i128, f),
    };
    match id {
        ty::U8 => Value::U8(i as u8),
        ty::I8 => Value::I8(i as i8),
        ty::U16 => Value::U16(i as u16),
        ty::I16 => Value::I16(i as i16),
        ty::U32 => Value::U32(i as u32),
        ty::I32 => Value::I32(i as i32),
        ty::F32 => Value::F32(f as f32),
        ty::BOOL => Value::Bool(i != 0),
        ty::U64 => Value::U64(i as u64),
        ty::I64 => Value::I64(i as i64),
        ty::F64 => Value::F64(f),
        _ => Value::Str(format!("{f}")),
    }
}

/// A new number of the same type as `v` (one entry of it, for an array).
fn renumbered(v: &Value, e: &Edit) -> Value {
    match v {
        Value::Array(elem, items) if !items.is_empty() => {
            let mut items = items.clone();
            let i = (e.payload >> 40) as usize % items.len();
            items[i] = renumbered(&items[i], e);
            Value::Array(*elem, items)
        }
        Value::Str(_) => Value::Str(STRINGS[usize::from(e.b) % STRINGS.len()].into()),
        Value::F32(_) | Value::F64(_) => typed(v.type_id(), Num::Float(float(e.payload, number_in(v)))),
        other => {
            let old = match number_in(other) {
                Some(Num::Int(i)) => Some(i),
                _ => None,
            };
            typed(other.type_id(), Num::Int(int(e.payload, old)))
        }
    }
}

/// A value for a key llama.cpp reads as `kind`.
fn value_of(kind: Kind, e: &Edit, old: Option<&Value>, n_layer: usize) -> Value {
    let old_int = match old.and_then(number_in) {
        Some(Num::Int(i)) => Some(i),
        _ => None,
    };
    match kind {
        Kind::U32 => Value::U32(int(e.payload, old_int) as u32),
        Kind::F32 => Value::F32(float(e.payload, old.and_then(number_in)) as f32),
        Kind::Bool => Value::Bool(e.payload % 2 == 1),
        Kind::Str => Value::Str(STRINGS[usize::from(e.b) % STRINGS.len()].into()),
        Kind::Sections => Value::i32s(&[0, 1, 2, 3].map(|k| int(e.payload >> (k * 16), None) as i32)),
        Kind::PerLayer if e.c.is_multiple_of(2) => Value::U32(int(e.payload, old_int) as u32),
        Kind::PerLayer => {
            // One entry per layer (or one too many or few), alternating two drawn values.
            let len = match e.c % 8 {
                1 => n_layer.saturating_sub(1),
                3 => n_layer + 1,
                _ => n_layer,
            };
            let (x, y) = (int(e.payload, old_int), int(e.payload >> 32, old_int));
            let items = (0..len).map(|l| Value::U32(if l % 2 == 0 { x } else { y } as u32)).collect();
            Value::Array(ty::U32, items)
        }
    }
}

/// An integer: small and boundary values, the old value nudged, or raw bits.
fn int(p: u64, old: Option<i128>) -> i128 {
    let o = old.unwrap_or(1);
    match p % 32 {
        0 => 0,
        1 => 1,
        2 => -1,
        3 => 2,
        4 => 3,
        5 => 7,
        6 => 8,
        7 => 63,
        8 => 64,
        9 => 512,
        10 => 513,
        11 => 1 << 16,
        12 => i128::from(i32::MAX),
        13 => i128::from(u32::MAX),
        14 => i128::from(i32::MIN),
        15 => i128::from(i64::MAX),
        16 => o + 1,
        17 => o - 1,
        18 => o * 2,
        19 => o / 2,
        20 => o * 3,
        21 => -o,
        22 => o + 64,
        23 => o / 3,
        _ => i128::from((p >> 5) % 4096),
    }
}

/// A float: the values that break kernels (NaN, infinities, negatives, zero, extremes), the old
/// value scaled, or raw bits.
fn float(p: u64, old: Option<Num>) -> f64 {
    let o = match old {
        Some(Num::Float(f)) => f,
        Some(Num::Int(i)) => i as f64,
        None => 1.0,
    };
    match p % 24 {
        0 => f64::NAN,
        1 => f64::INFINITY,
        2 => f64::NEG_INFINITY,
        3 => 0.0,
        4 => -0.0,
        5 => -1.0,
        6 => 1.0,
        7 => 1e-30,
        8 => 1e30,
        9 => f64::from(f32::MAX),
        10 => f64::from(f32::MIN_POSITIVE),
        11 => 1e-45,
        12 => -1e-5,
        13 => -o,
        14 => o * 2.0,
        15 => o * 1e6,
        16 => o / 1e6,
        17 => o - 1.0,
        18 => 0.5,
        19 => 1e10,
        _ => f64::from(f32::from_bits((p >> 5) as u32)),
    }
}
