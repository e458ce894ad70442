//! Hyper-parameters that llama.cpp's loader accepts but that reach an assertion later: in the
//! graph built when a context is created, or in ggml's CPU kernels at the first decode. The
//! loader checks what it needs to read a file; the kernels assert on what they compute with,
//! and nothing stood between the two. A file that fails one of these checks would abort the
//! process (or, for a rope of zero dimensions, hang it), so it is refused as malformed.
//!
//! Each check names the assertion it prevents, as `file:line` in the pinned llama.cpp tree
//! (`ops.cpp` is `ggml/src/ggml-cpu/ops.cpp`). Architectures are checked where their graphs
//! were read: the rules for every architecture first, then those of `llama` and `gemma3` (the
//! test models' graphs), then a few others whose graphs divide by a metadata value. What no
//! rule foresees is contained by [`vet_model`](crate::vet_model), which decodes a token in a
//! child process.

use super::{bad, Fail, Gguf, Ty, Value};

/// Graphs that build every layer from layer 0's head counts and one head size for keys and
/// values (`LLAMA_LOAD_LOCALS` in `llama-model.h`), while the KV cache is sized per layer.
const UNIFORM_ATTENTION: &[&str] = &["llama", "gemma3"];

/// Graphs that assert one head size for keys and values (`GGML_ASSERT(n_embd_head ==
/// hparams.n_embd_head_k())` with `n_embd_head` the value head size, or the reverse; found by
/// reading every graph in `src/models/` of the pinned tree), besides `llama` and `gemma3`.
#[rustfmt::skip]
const ONE_HEAD_SIZE: &[&str] = &[
    "afmoe", "apertus", "arcee", "arctic", "baichuan", "bailingmoe2", "bert", "bitnet", "bloom", "chameleon",
    "chatglm", "clef", "codeshell", "cogvlm", "cohere2", "cohere2moe", "command-r", "dbrx", "deci", "deepseek",
    "dots1", "dream", "ernie4_5", "ernie4_5-moe", "eurobert", "exaone", "exaone-moe", "falcon", "glm4", "glm4moe",
    "gpt2", "gptneox", "granite", "granite_swa", "granitehybrid", "graniteswitch", "grok", "grovemoe", "hunyuan-moe",
    "hunyuan_vl", "hy_v3", "internlm2", "jais", "jais2", "laguna", "llada", "llada-moe", "maincoder", "maple",
    "minimax-01", "minimax-m2", "minimax-m3", "mistral3", "modern-bert", "mpt", "muse-glimmer", "nanbeige",
    "nemotron", "nemotron_h", "nemotron_h_moe", "neo-bert", "olmo", "olmoe", "openelm", "orion", "paddleocr",
    "pangu-embedded", "phi2", "plamo", "pockettts", "qwen", "qwen2", "qwen2moe", "qwen2vl", "qwen3", "qwen35",
    "qwen35moe", "qwen3moe", "qwen3next", "qwen3vl", "qwen3vlmoe", "refact", "rnd1", "seed_oss", "smollm3",
    "spark2_5", "stablelm", "starcoder", "starcoder2", "talkie", "xverse",
];

/// Graphs that assert they rotate the whole head (`GGML_ASSERT(n_embd_head == n_rot)`).
#[rustfmt::skip]
const ROTATE_WHOLE_HEAD: &[&str] = &[
    "apertus", "arcee", "arctic", "baichuan", "chameleon", "codeshell", "cogvlm", "cohere2moe", "dbrx", "deci",
    "deepseek", "dots1", "dream", "ernie4_5", "ernie4_5-moe", "exaone", "exaone-moe", "falcon", "granite",
    "granite_swa", "graniteswitch", "grok", "grovemoe", "hunyuan-moe", "hunyuan_vl", "hy_v3", "internlm2", "jais2",
    "llada", "llada-moe", "maincoder", "minimax-01", "minimax-m2", "mistral3", "nemotron", "olmo", "olmoe", "orion",
    "paddleocr", "pangu-embedded", "plamo", "pockettts", "qwen2", "qwen2moe", "qwen2vl", "qwen3", "qwen3moe",
    "qwen3vl", "qwen3vlmoe", "rnd1", "seed_oss", "smollm3", "starcoder2", "talkie", "xverse",
];

/// Graphs that always rotate with multi-section RoPE (`llama_model_rope_type` returns an
/// M-RoPE type for them whatever the sections are).
const ALWAYS_MROPE: &[&str] =
    &["qwen2vl", "paddleocr", "qwen3vl", "qwen3vlmoe", "qwen35", "qwen35moe", "clef", "qwen4exp", "qwen3tts"];

/// Float keys whose default in llama.cpp is an infinity, meaning "no bound" (`llama-hparams.h`:
/// `kda_gate_lower_bound = -INFINITY`, written by `llama_model_save_to_file` for every model).
const MAY_BE_INFINITE: [&str; 1] = ["kda.gate_lower_bound"];

/// Norm epsilons: ggml's norm kernels assert `eps >= 0.0f` (a NaN fails it too).
const EPSILONS: &[&str] = &["attention.layer_norm_epsilon", "attention.layer_norm_rms_epsilon"];

/// Where a norm epsilon is asserted on, for the message.
const EPS_ASSERT: &str = "ops.cpp:4132 (rms_norm), ops.cpp:4026 (norm) and ops.cpp:4502 (l2_norm) assert eps >= 0";

/// Head counts and sizes as the loader derives them for layer 0.
struct Heads {
    /// Key head size: `attention.key_length`, else `n_embd / n_head`.
    k: u32,
    /// The same for sliding-window layers.
    k_swa: u32,
}

impl Gguf {
    /// Everything this module checks, for a model of `arch` with `n_layer` layers and
    /// `n_embd`-wide embeddings (both already checked non-zero).
    pub(super) fn check_graph_values(&self, arch: &str, n_layer: u32, n_embd: u32) -> Result<(), Fail> {
        self.check_floats(arch)?;
        if let Some(heads) = self.check_heads(arch, n_layer, n_embd)? {
            self.check_rope(arch, &heads)?;
        }
        self.check_expert_use(arch, n_layer)?;
        self.check_divisors(arch, n_embd)
    }

    /// A float the loader reads (it reads floats only as `f32`; any other type makes it throw).
    fn f32_value(&self, key: &str) -> Option<f64> {
        match self.kv.get(key) {
            Some(Value::Scalar { ty: Ty::F32, float, .. }) => *float,
            _ => None,
        }
    }

    /// Float hyper-parameters are finite (a NaN or an infinity fails the epsilon asserts, and
    /// elsewhere turns every logit into NaN), but for the few whose default is an infinity
    /// (llama.cpp's own model saver writes them); epsilons are non-negative and RoPE bases
    /// positive.
    fn check_floats(&self, arch: &str) -> Result<(), Fail> {
        let prefix = format!("{arch}.");
        for (key, value) in &self.kv {
            if let (true, Value::Scalar { float: Some(v), .. }) = (key.starts_with(&prefix), value) {
                let unbounded =
                    v.is_infinite() && key.strip_prefix(prefix.as_str()).is_some_and(|k| MAY_BE_INFINITE.contains(&k));
                if !v.is_finite() && !unbounded {
                    return bad(format!("{key} is {v}; a hyper-parameter must be a finite number"));
                }
            }
        }
        for eps in EPSILONS {
            let key = format!("{prefix}{eps}");
            if let Some(v) = self.f32_value(&key).filter(|v| *v < 0.0) {
                return bad(format!("{key} is {v}; a norm epsilon must be >= 0 ({EPS_ASSERT})"));
            }
        }
        for base in ["rope.freq_base", "rope.freq_base_swa"] {
            let key = format!("{prefix}{base}");
            if let Some(v) = self.f32_value(&key).filter(|v| *v <= 0.0) {
                return bad(format!("{key} is {v}; a RoPE base must be positive (powf of it gives NaN angles)"));
            }
        }
        Ok(())
    }

    /// Query heads a multiple of key/value heads; for the uniform graphs, the same counts and
    /// head sizes in every layer. Returns layer 0's head sizes when the model has attention.
    fn check_heads(&self, arch: &str, n_layer: u32, n_embd: u32) -> Result<Option<Heads>, Fail> {
        let key = |name: &str| format!("{arch}.{name}");
        let n_head = self.per_layer(&key("attention.head_count"), n_layer)?.unwrap_or_default();
        let n_head_kv = self.per_layer(&key("attention.head_count_kv"), n_layer)?.unwrap_or_else(|| n_head.clone());
        for (il, (&q, &kv)) in n_head.iter().zip(&n_head_kv).enumerate() {
            if q > 0 && kv > 0 && q % kv != 0 {
                return bad(format!(
                    "{} is {q} and {} is {kv} at layer {il}; ggml_mul_mat asserts the query heads are a multiple of \
                     the key/value heads (ggml.c:3346)",
                    key("attention.head_count"),
                    key("attention.head_count_kv")
                ));
            }
        }
        let uniform = UNIFORM_ATTENTION.contains(&arch);
        if uniform {
            for (name, counts) in [("attention.head_count", &n_head), ("attention.head_count_kv", &n_head_kv)] {
                if let Some(il) = counts.iter().position(|&n| n == 0 || Some(&n) != counts.first()) {
                    return bad(format!(
                        "{} is {} at layer {il} but {} at layer 0; the {arch} graph builds every layer with layer 0's \
                         head counts while the KV cache is sized per layer (ggml_set_rows asserts, ggml.c:4014)",
                        key(name),
                        counts.get(il).copied().unwrap_or_default(),
                        counts.first().copied().unwrap_or_default()
                    ));
                }
            }
        }
        let Some(&n_head0) = n_head.first().filter(|&&n| n > 0) else { return Ok(None) };
        let derived = n_embd / n_head0;
        let k = self.u32_value(&key("attention.key_length"))?.unwrap_or(derived);
        let v = self.u32_value(&key("attention.value_length"))?.unwrap_or(derived);
        let k_swa = self.u32_value(&key("attention.key_length_swa"))?.unwrap_or(k);
        let v_swa = self.u32_value(&key("attention.value_length_swa"))?.unwrap_or(v);
        if (uniform && (k_swa != k || v_swa != v)) || ((uniform || ONE_HEAD_SIZE.contains(&arch)) && k != v) {
            return bad(format!(
                "the key and value heads ({}, {}) are {k} and {v} wide ({k_swa} and {v_swa} in sliding-window \
                 layers); the {arch} graph takes one head size for both (models/llama.cpp:102 and the other graphs \
                 assert it, gemma3's reshape asserts at ggml.c:3758)",
                key("attention.key_length"),
                key("attention.value_length")
            ));
        }
        Ok(Some(Heads { k, k_swa }))
    }

    /// The rotated dimensions: present, even and within the head (`ops.cpp:6354-6355`; zero
    /// makes the rope kernel loop forever, ops.cpp:6451), and M-RoPE sections that fit.
    fn check_rope(&self, arch: &str, heads: &Heads) -> Result<(), Fail> {
        let key = |name: &str| format!("{arch}.{name}");
        let count = key("rope.dimension_count");
        let n_rot = self.u32_value(&count)?;
        let count_swa = key("rope.dimension_count_swa");
        let n_rot_swa = self.u32_value(&count_swa)?;
        let whole = ROTATE_WHOLE_HEAD.contains(&arch);
        if let Some(n) = n_rot.filter(|&n| whole && n != heads.k) {
            return bad(format!(
                "{count} is {n} but the heads are {} wide; the {arch} graph asserts it rotates the whole head \
                 (GGML_ASSERT(n_embd_head == n_rot) in its models/*.cpp)",
                heads.k
            ));
        }
        // Without the key the loader rotates the whole head; only graphs known to rotate are
        // held to that default (an odd head needs no rotation elsewhere).
        let default = (whole || UNIFORM_ATTENTION.contains(&arch)).then_some(heads.k);
        for (name, n, head) in
            [(&count, n_rot.or(default), heads.k), (&count_swa, n_rot_swa.or(n_rot).or(default), heads.k_swa)]
        {
            match n {
                Some(0) => {
                    return bad(format!("{name} is 0; the rope kernel never ends with no dimensions (ops.cpp:6451)"))
                }
                Some(n) if n % 2 != 0 => {
                    return bad(format!("{name} is {n}; ops.cpp:6355 asserts the rotated dimensions are even"))
                }
                Some(n) if n > head => {
                    return bad(format!(
                        "{name} is {n}, more than the {head}-wide head; ops.cpp:6354 asserts it fits the head"
                    ))
                }
                _ => {}
            }
        }

        let sections_key = key("rope.dimension_sections");
        let sections = match self.kv.get(&sections_key) {
            None => return Ok(()),
            Some(Value::Array { elem: Ty::I32 | Ty::U32, ints: Some(ints), .. }) => ints,
            Some(other) => return bad(format!("{sections_key} must be an array of i32, not {}", other.type_name())),
        };
        let sum: i128 = sections.iter().sum();
        if sections.iter().any(|&s| s < 0) || sum > i128::from(heads.k) {
            return bad(format!(
                "{sections_key} is {sections:?}; the sections must be non-negative and fit the {}-wide head \
                 (ops.cpp:6231 asserts their sum does)",
                heads.k
            ));
        }
        let used = ALWAYS_MROPE.contains(&arch) || sections.iter().any(|&s| s != 0);
        if used && sections.iter().take(3).all(|&s| s == 0) {
            return bad(format!(
                "{sections_key} is {sections:?}; multi-section RoPE asserts one of the first three is positive \
                 (ops.cpp:6381)"
            ));
        }
        Ok(())
    }

    /// Every layer routes to at least one expert and, except where the graph reads the count
    /// per layer, to no more than layer 0 (the graph picks layer 0's count of experts and then
    /// views each layer's: past them `ggml_view_2d` asserts, ggml.c:1797; zero of them leaves a
    /// null tensor in the sum).
    fn check_expert_use(&self, arch: &str, n_layer: u32) -> Result<(), Fail> {
        let used_key = format!("{arch}.expert_used_count");
        let n_expert = self.u32_value(&format!("{arch}.expert_count"))?.unwrap_or(0);
        let used = self.per_layer(&used_key, n_layer)?.unwrap_or_default();
        if n_expert <= 1 || arch == "nemotron_h" {
            return Ok(());
        }
        let first = used.first().copied().unwrap_or(0);
        match used.iter().position(|&n| n == 0 || n > first) {
            Some(il) => bad(format!(
                "{used_key} is {} at layer {il} and {first} at layer 0; each layer must use between 1 and layer 0's \
                 count of experts (ggml.c:1797)",
                used.get(il).copied().unwrap_or_default()
            )),
            None => Ok(()),
        }
    }

    /// Architectures whose graphs divide by a metadata value or assert it divides another.
    fn check_divisors(&self, arch: &str, n_embd: u32) -> Result<(), Fail> {
        let key = |name: &str| format!("{arch}.{name}");
        let value = |name: &str| self.u32_value(&key(name));
        let inner = value("ssm.inner_size")?.unwrap_or(0);
        // (key, what it must divide: `None` when it only must not be 0, where it is used)
        let rules: Vec<(&str, Option<u32>, &str)> = match arch {
            "wavtokenizer-dec" => {
                vec![("attention.group_norm_groups", None, "ggml's group norm divides by it, ops.cpp:4413")]
            }
            "rwkv6" | "rwkv6qwen2" | "rwkv7" | "arwkv7" => {
                vec![("wkv.head_size", Some(n_embd), "the embedding is cut into heads of it, rwkv6-base.cpp:43")]
            }
            "mamba2" => vec![
                ("ssm.group_count", Some(inner), "mamba2.cpp:78 divides by it, mamba-base.cpp:178 asserts it divides"),
                ("ssm.time_step_rank", Some(inner), "mamba-base.cpp:177 asserts it divides ssm.inner_size"),
            ],
            "ernie4_5-moe" => vec![("interleave_moe_layer_step", None, "ernie4-5-moe.cpp:26 asserts it is positive")],
            _ => Vec::new(),
        };
        for (name, of, why) in rules {
            let Some(d) = value(name)? else { continue };
            if d == 0 || of.is_some_and(|of| !of.is_multiple_of(d)) {
                let rule = of.map_or_else(|| "positive".to_string(), |of| format!("a non-zero divisor of {of}"));
                return bad(format!("{} is {d}; it must be {rule} ({why})", key(name)));
            }
        }
        let scale = self.f32_value(&key("attention.temperature_scale")).unwrap_or(0.0);
        if arch == "deepseek2" && scale != 0.0 && value("attention.temperature_length")?.unwrap_or(0) == 0 {
            return bad(format!(
                "{} is set but {} is 0; llama-graph.cpp:195 asserts the length is not 0",
                key("attention.temperature_scale"),
                key("attention.temperature_length")
            ));
        }
        // Embedding pooling: llama-graph.cpp:3887 aborts on a type it does not know.
        match value("pooling_type")? {
            Some(p) if p > 4 && p != u32::MAX => {
                bad(format!("{} is {p}, not a pooling type (0..=4)", key("pooling_type")))
            }
            _ => Ok(()),
        }
    }
}
