//! Tiny multimodal projector ("mmproj") GGUF files with random weights, which llama.cpp's `mtmd`
//! loads, encodes with and hands to the text model like real ones. The answers they lead to mean
//! nothing; the loading, preprocessing, encoding and decoding are the real code paths.
//!
//! - Vision: projector type `mlp` (the LLaVA-1.5 projector). A one-block ViT over a 32×32 image
//!   in 8×8 patches, then `mm.0` → GELU → `mm.2`: 16 embeddings per image.
//! - Audio: projector type `ultravox`. The Whisper encoder (two 1-D convolutions, one block),
//!   then stacking of 4 frames, RMS norm → `mm.a.mlp.1` → SwiGLU → RMS norm → `mm.a.mlp.2`: 375
//!   embeddings per clip of up to 30 s at 16 kHz.
//!
//! Why these two: with a plain llama text model (SmolLM2) they need nothing else. Neither puts
//! marker text around the media (`mtmd.cpp`, `mtmd_context::init_vision` and `init_audio`); other
//! types do, and some (idefics3, lfm2, minicpmv...) look the markers up as special tokens that
//! SmolLM2's vocabulary lacks. Neither asks for non-causal attention while decoding
//! (`mtmd_decode_use_non_causal`: gemma3 does) nor for M-RoPE positions (the qwen-vl family). The
//! image is resized to one fixed size (no tiling), and the mel filter bank is computed by llama.cpp
//! (`mtmd-audio.cpp`, `mtmd_audio_preprocessor_whisper::initialize`), so the file holds no filter
//! data. Of the Whisper-based audio types, ultravox needs no marker and gives as few embeddings
//! per clip as any (375, see [`AUDIO_STACK`]; qwen2a gives 750).
//!
//! Every tensor is F32. Weights are uniform in ±0.05, norm weights are 1.0. Every key has the
//! exact type llama.cpp reads it as (`gguf_get_val_u32` and the others assert it), hence U32 and
//! F32 throughout.

use super::gguf_file::{Gguf, Tensor, Value, Weights};

/// Side of the square image the vision encoder takes, a multiple of the patch side (the llava graph
/// asserts a square grid of patches). Any input is resized to it; a 32×32 input is taken as is.
pub const IMAGE_SIZE: u32 = 32;
/// Embeddings one image becomes: one per patch.
pub const IMAGE_TOKENS: usize = ((IMAGE_SIZE / PATCH) * (IMAGE_SIZE / PATCH)) as usize;
/// Embeddings one audio clip of up to 30 s becomes.
pub const AUDIO_TOKENS: usize = (AUDIO_POSITIONS / AUDIO_STACK) as usize;

/// Scale of [`Weights::random`]'s ±0.1 values.
const SCALE: f32 = 0.5;

const PATCH: u32 = 8;
const V_EMBD: u64 = 64;
const V_FF: u64 = 128;
const V_HEADS: u32 = 4;
/// Width between `mm.0` and `mm.2`.
const V_MM: u64 = 128;

const N_MEL: u64 = 128;
const A_EMBD: u64 = 64;
const A_FF: u64 = 128;
const A_HEADS: u32 = 4;
/// Positions after the stride-2 convolution: the Whisper preprocessor always cuts 3000-frame
/// windows (`mtmd-audio.cpp`, `mtmd_audio_preprocessor_whisper::preprocess`), and so does the
/// warmup (`clip.cpp`, `get_dummy_batch`); `clip_graph_whisper_enc::build` asserts the position
/// embeddings have at least as many rows.
const AUDIO_POSITIONS: u64 = 1500;
/// `clip_graph::build_stack` rounds up with `GGML_PAD`, a bit mask that is exact only for a power
/// of two: `A_EMBD * AUDIO_STACK` must be one, and 1500 must divide by the factor, or the graph's
/// token count differs from `clip_n_output_tokens`'s and `clip_encode` aborts. 4 is the largest
/// such factor.
const AUDIO_STACK: u64 = 4;
/// Width between the two projector norms, after the SwiGLU.
const A_MM: u64 = 64;

/// A projector for a text model of embedding width `n_embd_text` (576 for SmolLM2-135M): `mlp`.
pub fn tiny_vision_projector(n_embd_text: u32) -> Gguf {
    let n_text = u64::from(n_embd_text);
    let patch = u64::from(PATCH);
    let mut w = Weights::new(0x9e37_79b9_7f4a_7c15);
    let mut tensors = vec![
        // A convolution kernel: width, height, RGB in, channels out.
        w.random("v.patch_embd.weight", vec![patch, patch, 3, V_EMBD], SCALE),
        // One row per patch: the llava graph picks them by patch index (`clip_graph_llava::build`).
        w.random("v.position_embd.weight", vec![V_EMBD, IMAGE_TOKENS as u64], SCALE),
    ];
    tensors.extend(block(&mut w, "v", V_EMBD, V_FF));
    tensors.extend([
        w.random("mm.0.weight", vec![V_EMBD, V_MM], SCALE),
        w.random("mm.0.bias", vec![V_MM], SCALE),
        // `clip_n_mmproj_embd` takes the output width from mm.2, and `mtmd_context` refuses a
        // projector whose width is not the text model's. No mm.1 or mm.3: an mm.3 would make the
        // loader take the file for `mlp_norm` (`clip_model_loader::load_tensors`).
        w.random("mm.2.weight", vec![V_MM, n_text], SCALE),
        w.random("mm.2.bias", vec![n_text], SCALE),
    ]);
    let kv = vec![
        ("general.architecture", Value::Str("clip".into())),
        ("general.name", Value::Str("tiny test vision projector".into())),
        ("clip.has_vision_encoder", Value::Bool(true)),
        ("clip.projector_type", Value::Str("mlp".into())),
        ("clip.vision.image_size", Value::U32(IMAGE_SIZE)),
        ("clip.vision.patch_size", Value::U32(PATCH)),
        ("clip.vision.embedding_length", Value::U32(V_EMBD as u32)),
        ("clip.vision.feed_forward_length", Value::U32(V_FF as u32)),
        ("clip.vision.block_count", Value::U32(1)),
        ("clip.vision.attention.head_count", Value::U32(V_HEADS)),
        ("clip.vision.attention.layer_norm_epsilon", Value::F32(1e-5)),
        // Read but not used by `mlp`: required by `clip_model_loader::load_hparams`.
        ("clip.vision.projection_dim", Value::U32(n_embd_text)),
        ("clip.vision.image_mean", Value::f32s(&[0.5; 3])),
        ("clip.vision.image_std", Value::f32s(&[0.5; 3])),
        // LLaVA reads the second-to-last block's output (`clip_graph_llava::build`), so with one
        // block none would run; naming the last block's output as the feature layer runs it.
        ("clip.vision.feature_layer", Value::i32s(&[1])),
    ];
    Gguf::v3(kv, tensors)
}

/// A projector for a text model of embedding width `n_embd_text` (576 for SmolLM2-135M):
/// `ultravox`.
pub fn tiny_audio_projector(n_embd_text: u32) -> Gguf {
    let n_text = u64::from(n_embd_text);
    let mut w = Weights::new(0xd1b5_4a32_d192_ed03);
    let mut tensors = vec![
        // Convolution kernels: width 3, channels in, channels out. The biases are [1, channels],
        // added over every time step (`clip_graph_whisper_enc::build`).
        w.random("a.conv1d.1.weight", vec![3, N_MEL, A_EMBD], SCALE),
        w.random("a.conv1d.1.bias", vec![1, A_EMBD], SCALE),
        w.random("a.conv1d.2.weight", vec![3, A_EMBD, A_EMBD], SCALE),
        w.random("a.conv1d.2.bias", vec![1, A_EMBD], SCALE),
        w.random("a.position_embd.weight", vec![A_EMBD, AUDIO_POSITIONS], SCALE),
    ];
    tensors.extend(block(&mut w, "a", A_EMBD, A_FF));
    tensors.extend([
        w.ones("mm.a.norm_pre.weight", vec![A_EMBD * AUDIO_STACK]),
        // Twice the width wanted: the SwiGLU after it halves it.
        w.random("mm.a.mlp.1.weight", vec![A_EMBD * AUDIO_STACK, 2 * A_MM], SCALE),
        w.ones("mm.a.norm_mid.weight", vec![A_MM]),
        // The output width, as for mm.2 of the vision projector (`clip_n_mmproj_embd`).
        w.random("mm.a.mlp.2.weight", vec![A_MM, n_text], SCALE),
    ]);
    let kv = vec![
        ("general.architecture", Value::Str("clip".into())),
        ("general.name", Value::Str("tiny test audio projector".into())),
        ("clip.has_audio_encoder", Value::Bool(true)),
        ("clip.projector_type", Value::Str("ultravox".into())),
        // At most 256 (`clip_model_loader::load_hparams`); the filter bank is built for this count.
        ("clip.audio.num_mel_bins", Value::U32(N_MEL as u32)),
        ("clip.audio.embedding_length", Value::U32(A_EMBD as u32)),
        ("clip.audio.feed_forward_length", Value::U32(A_FF as u32)),
        ("clip.audio.block_count", Value::U32(1)),
        ("clip.audio.attention.head_count", Value::U32(A_HEADS)),
        ("clip.audio.attention.layer_norm_epsilon", Value::F32(1e-5)),
        // Read but not used by `ultravox`: required by `clip_model_loader::load_hparams`.
        ("clip.audio.projection_dim", Value::U32(n_embd_text)),
        // Required for `ultravox` (`clip_model_loader::load_hparams`).
        ("clip.audio.projector.stack_factor", Value::U32(AUDIO_STACK as u32)),
    ];
    Gguf::v3(kv, tensors)
}

/// Encoder block 0 under `prefix` ("v" or "a"): layer norms, attention with separate Q/K/V and an
/// ungated feed-forward, laid out as Whisper's.
///
/// The feed-forward width must differ from the embedding width: `clip_model_loader::load_tensors`
/// swaps up and down for `mlp` files whose `ffn_down` is `n_embd` wide in `ne[0]` (an old layout).
fn block(w: &mut Weights, prefix: &str, n_embd: u64, n_ff: u64) -> Vec<Tensor> {
    let name = |part: &str| format!("{prefix}.blk.0.{part}");
    vec![
        // `clip_graph_whisper_enc::build` asserts both norms have biases, Q and V have biases, and
        // K has none (as in Whisper); the llava graph takes them all as optional.
        w.ones(name("ln1.weight"), vec![n_embd]),
        w.random(name("ln1.bias"), vec![n_embd], SCALE),
        w.random(name("attn_q.weight"), vec![n_embd, n_embd], SCALE),
        w.random(name("attn_q.bias"), vec![n_embd], SCALE),
        w.random(name("attn_k.weight"), vec![n_embd, n_embd], SCALE),
        w.random(name("attn_v.weight"), vec![n_embd, n_embd], SCALE),
        w.random(name("attn_v.bias"), vec![n_embd], SCALE),
        w.random(name("attn_out.weight"), vec![n_embd, n_embd], SCALE),
        w.random(name("attn_out.bias"), vec![n_embd], SCALE),
        w.ones(name("ln2.weight"), vec![n_embd]),
        w.random(name("ln2.bias"), vec![n_embd], SCALE),
        w.random(name("ffn_up.weight"), vec![n_embd, n_ff], SCALE),
        w.random(name("ffn_up.bias"), vec![n_ff], SCALE),
        w.random(name("ffn_down.weight"), vec![n_ff, n_embd], SCALE),
        w.random(name("ffn_down.bias"), vec![n_embd], SCALE),
    ]
}

/// A 24-bit BMP (stb_image reads it) of `width` × `height` with a pattern set by `seed`.
pub fn bmp(width: u32, height: u32, seed: u8) -> Vec<u8> {
    let row = (width * 3).div_ceil(4) * 4;
    let size = 54 + row * height;
    let mut b = Vec::with_capacity(size as usize);
    b.extend_from_slice(b"BM");
    for v in [size, 0, 54, 40] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&width.to_le_bytes());
    b.extend_from_slice(&height.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&24u16.to_le_bytes());
    for v in [0u32, row * height, 2835, 2835, 0, 0] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    for y in 0..height {
        for x in 0..row {
            b.push(if x < width * 3 { (x * 7 + y * 13) as u8 ^ seed } else { 0 });
        }
    }
    b
}

/// A mono 16-bit WAV of `seconds` of a tone at `rate` Hz.
pub fn wav(rate: u32, seconds: f32) -> Vec<u8> {
    let n = (rate as f32 * seconds) as u32;
    let mut b = Vec::new();
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + n * 2).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&rate.to_le_bytes());
    b.extend_from_slice(&(rate * 2).to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&(n * 2).to_le_bytes());
    for i in 0..n {
        let s = (f32::sin(i as f32 * 440.0 * std::f32::consts::TAU / rate as f32) * 8000.0) as i16;
        b.extend_from_slice(&s.to_le_bytes());
    }
    b
}
