//! A corpus of malformed GGUF files, each the tiny valid model of `gguf_file` with one thing
//! broken: truncations, bit flips, every header field, key/value and tensor-info fields, the
//! hyper-parameters llama.cpp asserts on, and every vocabulary array. Every one must come back
//! as an error; none may abort the process.

mod common;

use common::gguf_file::{
    flipped, patched, truncated, ty, Gguf, Value, GGML_Q4_0, N_KV_AT, N_TENSORS_AT, TOKEN_BYTE, VERSION_AT,
};
use llama::{AddSpecial, LoadError, Model};

/// What a kind must be refused as.
#[derive(Debug, Clone, Copy)]
enum Expect {
    NotGguf,
    /// `LoadError::Malformed` whose message contains this (the key or tensor at fault).
    Malformed(&'static str),
}

/// Which loads must refuse it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Part {
    /// The file as a whole: full and vocab-only loads alike.
    File,
    /// The layers: vocab-only loads do not read them and must succeed.
    Hparams,
}

struct Kind {
    name: String,
    bytes: Vec<u8>,
    expect: Expect,
    part: Part,
}

/// The six files that killed the process before validation existed (issue 12).
const KILLERS: [&str; 6] = [
    "bos-id-out-of-range",
    "eos-id-out-of-range",
    "token-type-99",
    "byte-token-unparsable",
    "block-count-2^31-1",
    "block-count-513",
];

struct Corpus(Vec<Kind>);

impl Corpus {
    fn add(&mut self, name: impl Into<String>, bytes: Vec<u8>, expect: Expect, part: Part) {
        self.0.push(Kind { name: name.into(), bytes, expect, part });
    }

    /// A kind made by editing the tiny model.
    fn edit(&mut self, name: &str, needle: &'static str, part: Part, f: impl FnOnce(&mut Gguf)) {
        let mut g = Gguf::tiny_llama();
        f(&mut g);
        self.add(name, g.bytes(), Expect::Malformed(needle), part);
    }

    fn file(&mut self, name: &str, needle: &'static str, f: impl FnOnce(&mut Gguf)) {
        self.edit(name, needle, Part::File, f);
    }

    fn hparam(&mut self, name: &str, needle: &'static str, f: impl FnOnce(&mut Gguf)) {
        self.edit(name, needle, Part::Hparams, f);
    }

    /// A kind made by changing the encoded bytes of the tiny model.
    fn raw(&mut self, name: &str, expect: Expect, bytes: Vec<u8>) {
        self.add(name, bytes, expect, Part::File);
    }
}

fn n_vocab() -> u32 {
    Gguf::tiny_llama().tokens().len() as u32
}

fn byte_token_id(b: u8) -> usize {
    3 + usize::from(b)
}

fn corpus() -> Vec<Kind> {
    use Expect::{Malformed as M, NotGguf};
    let (base, at) = Gguf::tiny_llama().encode();
    let key_at = |key: &str| at.keys.iter().find(|k| k.key == key).unwrap_or_else(|| panic!("{key}"));
    let mut c = Corpus(Vec::new());

    // Truncations at every part of the file.
    c.raw("cut-inside-magic", NotGguf, truncated(&base, 2));
    c.raw("cut-empty-file", NotGguf, truncated(&base, 0));
    c.raw("cut-inside-version", M("version"), truncated(&base, 6));
    c.raw("cut-inside-counts", M("key/value count"), truncated(&base, N_KV_AT + 3));
    c.raw("cut-after-header", M("cannot fit"), truncated(&base, N_KV_AT + 8));
    // Too short for the key/values the header announces: refused before the first key.
    c.raw("cut-inside-first-key", M("cannot fit"), truncated(&base, key_at("general.architecture").len + 12));
    let tokens = key_at("tokenizer.ggml.tokens").value_type;
    c.raw("cut-inside-token-list", M("tokenizer.ggml.tokens"), truncated(&base, tokens + 2000));
    let scores = key_at("tokenizer.ggml.scores").value_type;
    c.raw("cut-inside-scores", M("tokenizer.ggml.scores"), truncated(&base, scores + 40));
    c.raw("cut-inside-tensor-infos", M("tensor"), truncated(&base, at.tensors[4].dims + 4));
    c.raw("cut-at-data-start", M("past the end"), truncated(&base, at.data));
    c.raw("cut-inside-data", M("past the end"), truncated(&base, at.data + 100));
    c.raw("cut-last-byte", M("past the end"), truncated(&base, base.len() - 1));

    // Every header field.
    c.raw("magic-flipped", NotGguf, flipped(&base, 0, 0x20));
    for (name, version) in [("version-0", 0u32), ("version-1", 1), ("version-4", 4), ("version-huge", 0x0300_0000)] {
        c.raw(name, M("version"), patched(&base, VERSION_AT, &version.to_le_bytes()));
    }
    c.raw("version-high-bit-flipped", M("version"), flipped(&base, VERSION_AT + 3, 0x80));
    c.raw("tensor-count-huge", M("cannot fit"), patched(&base, N_TENSORS_AT, &u64::MAX.to_le_bytes()));
    c.raw("tensor-count-bit-flipped", M("cannot fit"), flipped(&base, N_TENSORS_AT + 6, 0x10));
    c.raw("kv-count-huge", M("cannot fit"), patched(&base, N_KV_AT, &u64::MAX.to_le_bytes()));
    c.raw("kv-count-bit-flipped", M("cannot fit"), flipped(&base, N_KV_AT + 5, 0x01));
    c.file("tensor-count-one-more", "tensor #", |g| g.n_tensors = Some(g.tensors.len() as u64 + 1));
    // The first key is then read as a tensor info, its value type as a dimension count.
    c.file("kv-count-zero", "dimensions", |g| g.n_kv = Some(0));

    // Keys.
    let first_key = key_at("general.architecture").len;
    c.raw("key-length-huge", M("key #0"), patched(&base, first_key, &(1u64 << 40).to_le_bytes()));
    c.raw("key-length-bit-flipped", M("key #0"), flipped(&base, first_key + 3, 0x04));
    c.file("key-empty", "is empty", |g| {
        g.push_raw_key(b"", Value::U32(1));
    });
    c.file("key-not-utf8", "UTF-8", |g| {
        g.push_raw_key(b"general.\xff\xfe", Value::U32(1));
    });
    c.file("key-duplicate", "'llama.block_count' appears twice", |g| {
        g.push_raw_key(b"llama.block_count", Value::U32(2));
    });

    // Values.
    c.file("value-type-invalid", "invalid value type 13", |g| {
        g.set("general.bogus", Value::Raw(13, vec![0; 4]));
    });
    c.raw("value-type-bit-flipped", M("invalid value type"), flipped(&base, first_key + 8 + 20 + 1, 0x01));
    c.file("string-length-huge", "general.description", |g| {
        g.set("general.description", Value::Raw(ty::STR, (1u64 << 40).to_le_bytes().to_vec()));
    });
    c.file("string-length-past-end", "general.description", |g| {
        g.set("general.description", Value::Raw(ty::STR, 100_000u64.to_le_bytes().to_vec()));
    });
    c.file("array-of-arrays", "array of arrays", |g| {
        g.set("general.tags", Value::Raw(ty::ARRAY, [&9u32.to_le_bytes()[..], &1u64.to_le_bytes()].concat()));
    });
    c.file("array-count-huge", "claims", |g| {
        g.set("general.tags", Value::Raw(ty::ARRAY, [&4u32.to_le_bytes()[..], &(1u64 << 62).to_le_bytes()].concat()));
    });
    c.file("array-element-type-invalid", "invalid type 99", |g| {
        g.set("general.tags", Value::Raw(ty::ARRAY, [&99u32.to_le_bytes()[..], &1u64.to_le_bytes()].concat()));
    });
    c.file("string-array-element-huge", "general.tags", |g| {
        let body = [&8u32.to_le_bytes()[..], &1u64.to_le_bytes(), &(1u64 << 40).to_le_bytes()].concat();
        g.set("general.tags", Value::Raw(ty::ARRAY, body));
    });

    // Tensor infos.
    c.raw(
        "tensor-name-length-huge",
        M("tensor #0"),
        patched(&base, at.tensors[0].name_len, &(1u64 << 40).to_le_bytes()),
    );
    c.file("tensor-name-too-long", "64 bytes", |g| g.tensors[0].name = vec![b'x'; 64]);
    c.file("tensor-name-not-utf8", "UTF-8", |g| g.tensors[0].name = b"token_embd.\xff".to_vec());
    c.file("tensor-name-duplicate", "'blk.0.attn_q.weight' appears twice", |g| {
        g.tensor_mut("blk.1.attn_q.weight").name = b"blk.0.attn_q.weight".to_vec();
    });
    c.file("tensor-dims-0", "0 dimensions", |g| g.tensor_mut("output_norm.weight").dims = vec![]);
    c.file("tensor-dims-5", "5 dimensions", |g| g.tensor_mut("output_norm.weight").dims = vec![8, 1, 1, 1, 1]);
    c.file("tensor-dim-zero", "dimension 1 is 0", |g| g.tensor_mut("blk.0.attn_q.weight").dims = vec![8, 0]);
    c.file("tensor-size-overflow", "too large", |g| g.tensor_mut("blk.0.attn_q.weight").dims = vec![1 << 62, 1 << 62]);
    c.file("tensor-dim-huge", "past the end", |g| g.tensor_mut("blk.0.attn_q.weight").dims = vec![8, 1 << 40]);
    c.raw("tensor-dim-sign-bit", M("dimension 0"), flipped(&base, at.tensors[1].dims + 7, 0x80));
    c.file("tensor-type-invalid", "invalid ggml type 99", |g| g.tensors[1].ggml_type = 99);
    c.file("tensor-type-removed", "invalid ggml type 4", |g| g.tensors[1].ggml_type = 4);
    c.file("tensor-row-not-whole-blocks", "block of 32", |g| g.tensor_mut("blk.0.attn_q.weight").ggml_type = GGML_Q4_0);
    c.raw("tensor-type-bit-flipped", M("invalid ggml type"), flipped(&base, at.tensors[1].ggml_type, 0x40));
    c.file("tensor-offset-misaligned", "alignment", |g| {
        let natural = g.natural_offsets()[1];
        g.tensors[1].offset = Some(natural + 4);
    });
    c.file("tensor-offset-gap", "must be at", |g| {
        let natural = g.natural_offsets()[1];
        g.tensors[1].offset = Some(natural + 32);
    });
    c.file("tensor-offset-beyond-file", "past the end", |g| g.tensors[2].offset = Some(1 << 40));
    c.raw("tensor-offset-bit-flipped", M("alignment"), flipped(&base, at.tensors[1].offset, 0x01));
    c.file("alignment-0", "general.alignment is 0", |g| {
        g.set("general.alignment", Value::U32(0));
    });
    c.file("alignment-not-power-of-two", "general.alignment is 48", |g| {
        g.set("general.alignment", Value::U32(48));
    });
    c.file("alignment-wrong-type", "general.alignment must be a u32", |g| {
        g.set("general.alignment", Value::U64(32));
    });

    // Hyper-parameters llama.cpp asserts on (or throws on).
    c.file("architecture-missing", "general.architecture is missing", |g| {
        g.remove("general.architecture");
    });
    c.file("architecture-not-string", "general.architecture must be a string", |g| {
        g.set("general.architecture", Value::U32(1));
    });
    c.hparam("block-count-missing", "llama.block_count is missing", |g| {
        g.remove("llama.block_count");
    });
    for (name, n) in [
        ("block-count-0", 0),
        ("block-count-513", 513),
        ("block-count-2^31-1", i32::MAX as u32),
        ("block-count-u32-max", u32::MAX),
        ("block-count-beyond-tensors", 3),
        ("block-count-below-tensors", 1),
    ] {
        c.hparam(name, "llama.block_count", |g| {
            g.set("llama.block_count", Value::U32(n));
        });
    }
    c.hparam("block-count-wrong-type", "llama.block_count must be a u32", |g| {
        g.set("llama.block_count", Value::I32(2));
    });
    c.hparam("last-layer-missing", "llama.block_count", |g| {
        g.tensors.retain(|t| !t.name.starts_with(b"blk.1."));
    });
    c.hparam("head-count-0", "llama.attention.head_count is 0", |g| {
        g.set("llama.attention.head_count", Value::U32(0));
    });
    c.hparam("head-count-over-embedding", "llama.attention.head_count exceeds", |g| {
        g.set("llama.attention.head_count", Value::U32(16));
    });
    c.hparam("head-count-array-too-long", "llama.attention.head_count has 3 entries", |g| {
        g.set("llama.attention.head_count", Value::i32s(&[2, 2, 2]));
    });
    c.hparam("head-count-kv-negative", "llama.attention.head_count_kv has a negative", |g| {
        g.set("llama.attention.head_count_kv", Value::i32s(&[2, -2]));
    });
    c.hparam("embedding-length-0", "llama.embedding_length is 0", |g| {
        g.set("llama.embedding_length", Value::U32(0));
    });
    c.hparam("embedding-length-missing", "llama.embedding_length is missing", |g| {
        g.remove("llama.embedding_length");
    });
    c.hparam("context-length-0", "llama.context_length is 0", |g| {
        g.set("llama.context_length", Value::U32(0));
    });
    c.hparam("experts-used-without-experts", "llama.expert_", |g| {
        g.set("llama.expert_used_count", Value::U32(2));
    });
    c.hparam("expert-count-huge", "llama.expert_", |g| {
        g.set("llama.expert_count", Value::U32(4096)).set("llama.expert_used_count", Value::U32(2));
    });
    c.hparam("expert-groups-as-many-as-experts", "llama.expert_", |g| {
        g.set("llama.expert_count", Value::U32(4))
            .set("llama.expert_used_count", Value::U32(2))
            .set("llama.expert_group_count", Value::U32(4));
    });
    c.hparam("rope-scaling-type-unknown", "llama.rope.scaling.type", |g| {
        g.set("llama.rope.scaling.type", Value::Str("bogus".into()));
    });
    c.hparam("nextn-layers-over-block-count", "llama.nextn_predict_layers", |g| {
        g.set("llama.nextn_predict_layers", Value::U32(3));
    });

    // Values the loader accepts but the graph or ggml's CPU kernels assert on (the process
    // would abort at context creation or at the first decode); each needle is the assert's
    // place in the pinned llama.cpp tree, which the error names.
    for (name, key, v, assert) in [
        ("rms-eps-nan", "llama.attention.layer_norm_rms_epsilon", f32::NAN, "finite"),
        ("rms-eps-infinite", "llama.attention.layer_norm_rms_epsilon", f32::INFINITY, "finite"),
        ("rms-eps-negative", "llama.attention.layer_norm_rms_epsilon", -1e-5, "ops.cpp:4132"),
        ("norm-eps-negative", "llama.attention.layer_norm_epsilon", -1.0, "ops.cpp:4026"),
        ("rope-base-zero", "llama.rope.freq_base", 0.0, "RoPE base must be positive"),
        ("rope-scale-nan", "llama.rope.scaling.factor", f32::NAN, "finite"),
        ("final-softcap-infinite", "llama.final_logit_softcapping", f32::INFINITY, "finite"),
    ] {
        c.hparam(name, assert, |g| {
            g.set(key, Value::F32(v));
        });
    }
    for (name, key, v, assert) in [
        ("heads-not-a-multiple-of-kv-heads", "llama.attention.head_count_kv", Value::U32(3), "ggml.c:3346"),
        ("kv-heads-differ-by-layer", "llama.attention.head_count_kv", Value::i32s(&[2, 1]), "ggml.c:4014"),
        ("kv-heads-zero-in-a-layer", "llama.attention.head_count_kv", Value::i32s(&[2, 0]), "ggml.c:4014"),
        ("key-and-value-heads-differ", "llama.attention.value_length", Value::U32(2), "models/llama.cpp:102"),
        ("rope-dims-0", "llama.rope.dimension_count", Value::U32(0), "ops.cpp:6451"),
        ("rope-dims-odd", "llama.rope.dimension_count", Value::U32(3), "ops.cpp:6355"),
        ("rope-dims-over-head", "llama.rope.dimension_count", Value::U32(8), "ops.cpp:6354"),
        ("rope-sections-negative", "llama.rope.dimension_sections", Value::i32s(&[-1, 2, 0, 0]), "ops.cpp:6231"),
        ("rope-sections-over-head", "llama.rope.dimension_sections", Value::i32s(&[2, 2, 2, 0]), "ops.cpp:6231"),
        ("rope-sections-only-fourth", "llama.rope.dimension_sections", Value::i32s(&[0, 0, 0, 2]), "ops.cpp:6381"),
        ("pooling-type-unknown", "llama.pooling_type", Value::U32(9), "pooling type"),
    ] {
        c.hparam(name, assert, |g| {
            g.set(key, v);
        });
    }
    c.hparam("head-size-odd", "ops.cpp:6355", |g| {
        g.remove("llama.rope.dimension_count")
            .set("llama.attention.key_length", Value::U32(5))
            .set("llama.attention.value_length", Value::U32(5));
    });
    for (name, used) in [("experts-used-0-in-a-layer", [2, 0]), ("experts-used-above-layer-0", [1, 2])] {
        c.hparam(name, "ggml.c:1797", |g| {
            g.set("llama.expert_count", Value::U32(4)).set("llama.expert_used_count", Value::i32s(&used));
        });
    }
    // Other architectures' graphs: the tiny model's keys renamed, and one value that they
    // divide by or assert on.
    for (name, arch, key, v, assert) in [
        ("gemma3-swa-heads-differ", "gemma3", "attention.key_length_swa", Value::U32(2), "ggml.c:3758"),
        ("qwen2-rope-not-whole-head", "qwen2", "rope.dimension_count", Value::U32(2), "n_embd_head == n_rot"),
        ("qwen3-value-heads-differ", "qwen3", "attention.value_length", Value::U32(2), "one head size"),
        ("rwkv-head-size-0", "rwkv6", "wkv.head_size", Value::U32(0), "rwkv6.wkv.head_size is 0"),
        ("rwkv-head-size-not-a-divisor", "rwkv7", "wkv.head_size", Value::U32(3), "rwkv7.wkv.head_size is 3"),
        ("mamba2-groups-0", "mamba2", "ssm.group_count", Value::U32(0), "mamba-base.cpp:178"),
        ("ernie-moe-step-0", "ernie4_5-moe", "interleave_moe_layer_step", Value::U32(0), "ernie4-5-moe.cpp:26"),
        ("wavtokenizer-groups-0", "wavtokenizer-dec", "attention.group_norm_groups", Value::U32(0), "ops.cpp:4413"),
        (
            "deepseek2-temperature-length-0",
            "deepseek2",
            "attention.temperature_scale",
            Value::F32(0.1),
            "llama-graph.cpp:195",
        ),
        ("qwen2vl-rope-sections-0", "qwen2vl", "rope.dimension_sections", Value::i32s(&[0, 0, 0, 0]), "ops.cpp:6381"),
    ] {
        c.hparam(name, assert, |g| {
            g.rename_architecture(arch).set(&format!("{arch}.{key}"), v);
        });
    }
    c.file("tensor-name-with-nul", "NUL", |g| g.tensors[0].name = b"token_embd\0.weight".to_vec());

    // The vocabulary: every array, the special ids, the byte tokens.
    let n = n_vocab();
    c.file("tokenizer-model-missing", "tokenizer.ggml.model is missing", |g| {
        g.remove("tokenizer.ggml.model");
    });
    c.file("tokenizer-model-not-string", "tokenizer.ggml.model must be a string", |g| {
        g.set("tokenizer.ggml.model", Value::I32(1));
    });
    c.file("tokens-missing", "tokenizer.ggml.tokens is missing", |g| {
        g.remove("tokenizer.ggml.tokens");
    });
    c.file("tokens-not-strings", "tokenizer.ggml.tokens must be an array of strings", |g| {
        g.set("tokenizer.ggml.tokens", Value::i32s(&vec![1; n as usize]));
    });
    c.file("tokens-not-an-array", "tokenizer.ggml.tokens must be an array of strings", |g| {
        g.set("tokenizer.ggml.tokens", Value::Str("<unk>".into()));
    });
    c.file("tokens-empty", "tokenizer.ggml.tokens has 0 tokens", |g| {
        g.set("tokenizer.ggml.tokens", Value::strs(Vec::<String>::new()));
    });
    c.file("scores-shorter", "tokenizer.ggml.scores has", |g| {
        g.set("tokenizer.ggml.scores", Value::f32s(&vec![0.0; n as usize - 1]));
    });
    c.file("scores-wrong-type", "tokenizer.ggml.scores must be", |g| {
        g.set("tokenizer.ggml.scores", Value::Array(ty::U8, vec![Value::U8(0); n as usize]));
    });
    c.file("token-type-shorter", "tokenizer.ggml.token_type has", |g| {
        let mut types = g.token_types();
        types.pop();
        g.set("tokenizer.ggml.token_type", Value::i32s(&types));
    });
    c.file("token-type-wrong-type", "tokenizer.ggml.token_type must be", |g| {
        g.set("tokenizer.ggml.token_type", Value::f32s(&vec![1.0; n as usize]));
    });
    for (name, bad) in [("token-type-99", 99), ("token-type-minus-1", -1)] {
        c.file(name, "invalid type", |g| {
            let mut types = g.token_types();
            types[n as usize - 1] = bad;
            g.set("tokenizer.ggml.token_type", Value::i32s(&types));
        });
    }
    for (name, key, id) in [
        ("bos-id-out-of-range", "tokenizer.ggml.bos_token_id", n),
        ("eos-id-out-of-range", "tokenizer.ggml.eos_token_id", u32::MAX),
        ("unknown-id-out-of-range", "tokenizer.ggml.unknown_token_id", n + 7),
        ("padding-id-out-of-range", "tokenizer.ggml.padding_token_id", n),
        ("eot-id-out-of-range", "tokenizer.ggml.eot_token_id", 1 << 20),
        ("fim-pre-id-out-of-range", "tokenizer.ggml.fim_pre_token_id", n),
    ] {
        c.file(name, key, |g| {
            g.set(key, Value::U32(id));
        });
    }
    c.file("bos-id-wrong-type", "tokenizer.ggml.bos_token_id must be a u32", |g| {
        g.set("tokenizer.ggml.bos_token_id", Value::I32(1));
    });
    c.file("byte-token-unparsable", "<0xNN>", |g| {
        let mut tokens = g.tokens();
        tokens[byte_token_id(b'A')] = "<0xZZ>".into();
        g.set("tokenizer.ggml.tokens", Value::strs(tokens));
    });
    c.file("byte-token-too-short", "<0xNN>", |g| {
        let mut tokens = g.tokens();
        tokens[byte_token_id(b'A')] = "A".into();
        g.set("tokenizer.ggml.tokens", Value::strs(tokens));
    });
    c.file("normal-token-typed-byte", "<0xNN>", |g| {
        let mut types = g.token_types();
        types[n as usize - 1] = TOKEN_BYTE;
        g.set("tokenizer.ggml.token_type", Value::i32s(&types));
    });
    c.file("token-duplicate", "have the same text", |g| {
        let mut tokens = g.tokens();
        tokens[n as usize - 1] = "hello".into();
        g.set("tokenizer.ggml.tokens", Value::strs(tokens));
    });
    c.file("empty-token-collides", "have the same text", |g| {
        let mut tokens = g.tokens();
        let last = n as usize - 1;
        tokens[last - 1] = String::new();
        tokens[last] = format!("[EMPTY_{}]", last - 1);
        g.set("tokenizer.ggml.tokens", Value::strs(tokens));
    });
    c.file("spm-without-newline-token", "newline", |g| {
        let mut tokens = g.tokens();
        tokens[byte_token_id(b'\n')] = "<0x0a>".into();
        g.set("tokenizer.ggml.tokens", Value::strs(tokens));
    });
    c.file("bpe-without-merges", "tokenizer.ggml.merges", |g| {
        g.set("tokenizer.ggml.model", Value::Str("gpt2".into()));
    });
    c.file("wpm-with-byte-tokens", "WPM", |g| {
        g.set("tokenizer.ggml.model", Value::Str("bert".into()));
    });
    c.file("phi3-without-its-tokens", "Phi-3", |g| {
        g.set("general.name", Value::Str("Phi-3 mini".into()));
    });
    c.file("placeholder-vocab-huge", "llama.vocab_size", |g| {
        g.set("tokenizer.ggml.model", Value::Str("none".into())).set("llama.vocab_size", Value::U32(u32::MAX));
    });
    c.0
}

#[test]
fn the_tiny_model_loads_and_tokenizes() {
    let dir = common::scratch("tiny-gguf");
    let path = dir.join("tiny.gguf");
    std::fs::write(&path, Gguf::tiny_llama().bytes()).unwrap();
    for validate in [true, false] {
        let model = Model::builder(&path).validate(validate).load().unwrap();
        let vocab = model.vocab();
        assert_eq!(vocab.n_tokens() as u32, n_vocab());
        let tokens = vocab.tokenize("hello world\n", AddSpecial::Yes).unwrap();
        assert_eq!(tokens.first().map(|t| t.0), Some(1), "starts with BOS: {tokens:?}");
        assert!(tokens.len() > 2, "{tokens:?}");
        assert_eq!(vocab.detokenize(&tokens[1..]).unwrap().trim_start(), "hello world\n");
    }
    let vocab_only = Model::builder(&path).vocab_only(true).load().unwrap();
    assert!(!vocab_only.vocab().tokenize("hello", AddSpecial::No).unwrap().is_empty());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn every_malformed_kind_is_refused() {
    let dir = common::scratch("malformed");
    let kinds = corpus();
    let mut names: Vec<&str> = kinds.iter().map(|k| k.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), kinds.len(), "kind names are distinct");
    for killer in KILLERS {
        assert!(names.contains(&killer), "the corpus has the known killer {killer}");
    }
    assert!(kinds.len() >= 45, "{} kinds", kinds.len());

    for kind in &kinds {
        let path = dir.join(format!("{}.gguf", kind.name.replace('^', "pow")));
        std::fs::write(&path, &kind.bytes).unwrap();
        let name = &kind.name;
        match (Model::load(&path), kind.expect) {
            (Err(LoadError::NotGguf(_)), Expect::NotGguf) => {}
            (Err(LoadError::Malformed { what, .. }), Expect::Malformed(needle)) => {
                assert!(what.contains(needle), "{name}: {what:?} should mention {needle:?}");
            }
            (other, expect) => panic!("{name}: expected {expect:?}, got {other:?}"),
        }
        let vocab_only = Model::builder(&path).vocab_only(true).load();
        match kind.part {
            Part::File => assert!(vocab_only.is_err(), "{name}: a vocab-only load must fail too"),
            Part::Hparams => assert!(vocab_only.is_ok(), "{name}: vocab-only loads skip the layers: {vocab_only:?}"),
        }
    }
    println!("malformed corpus: {} kinds, all Err, none aborted", kinds.len());
    let _ = std::fs::remove_dir_all(dir);
}

/// Real models pass validation: it must not refuse what llama.cpp loads.
#[test]
fn the_test_models_pass_validation() {
    for spec in [common::models::SMOLLM2, common::models::GEMMA3] {
        let path = common::models::ensure(&spec).unwrap();
        Model::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

#[test]
fn metadata_overrides_are_validated_too() {
    let path = common::models::default_model().expect("fetch the default model");
    for bad in [513, 0, i64::from(i32::MAX)] {
        let err = llama::Model::builder(&path)
            .override_meta("llama.block_count", llama::MetaOverride::Int(bad))
            .load()
            .expect_err("an override that llama.cpp asserts on is refused");
        assert!(matches!(err, llama::LoadError::Malformed { .. }), "block_count {bad}: {err}");
    }
    // A float override is judged by its value: a NaN epsilon would abort the first decode.
    let err = llama::Model::builder(&path)
        .override_meta("llama.attention.layer_norm_rms_epsilon", llama::MetaOverride::Float(f64::NAN))
        .load()
        .expect_err("a NaN epsilon is refused");
    assert!(err.to_string().contains("finite"), "{err}");
    // A harmless override still loads.
    let model = llama::Model::builder(&path)
        .override_meta("tokenizer.ggml.add_bos_token", llama::MetaOverride::Bool(false))
        .vocab_only(true)
        .load()
        .unwrap();
    assert!(model.vocab().n_tokens() > 0);
}
