//! Safe, idiomatic Rust bindings to [llama.cpp](https://github.com/ggml-org/llama.cpp).
//!
//! ```no_run
//! use llama::{Model, Sampler};
//! let model = Model::load("model.gguf")?;
//! let mut ctx = model.context(Default::default())?;
//! let mut sampler = Sampler::chain().top_k(40).top_p(0.95).temp(0.8).dist(42);
//! for piece in ctx.generate("The capital of France is", &mut sampler, &Default::default())? {
//!     print!("{}", piece?);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The same generation by hand: the prompt in one decode, then one token per decode, each
//! sampled from the last output.
//!
//! ```no_run
//! use llama::{AddSpecial, Batch, ControlText, Logits, Model, Output, Sampler, Utf8Decoder};
//! let model = Model::load("model.gguf")?;
//! let mut ctx = model.context(Default::default())?;
//! let vocab = model.vocab();
//! let prompt = vocab.tokenize("The capital of France is", AddSpecial::Yes)?;
//! ctx.decode_tokens(&prompt, 0, 0)?;
//! let (mut sampler, mut text, mut batch) = (Sampler::greedy(), Utf8Decoder::default(), Batch::new(1, 1));
//! for pos in prompt.len()..prompt.len() + 32 {
//!     let token = sampler.sample(&ctx, Output::Last)?;
//!     if vocab.is_eog(token) {
//!         break;
//!     }
//!     print!("{}", text.push(&vocab.token_to_bytes(token, ControlText::Hide)?));
//!     batch.clear();
//!     batch.add(token, pos, &[0], Logits::Want)?;
//!     ctx.decode(&batch)?;
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Where things are
//! | to | use |
//! |---|---|
//! | load a model, read its metadata, save it | [`Model`], [`ModelBuilder`] |
//! | tokenize and detokenize, stream text | [`Vocab`], [`Utf8Decoder`] |
//! | run the model | [`Context`], [`ContextParams`], [`Batch`], [`Output`] |
//! | edit the KV cache, save state | [`Context::kv_seq_rm`] and the other `kv_seq_*`, [`Context::save_state`] |
//! | choose tokens | [`Sampler`] (every built-in sampler, grammars, [`CustomSampler`]) |
//! | generate text | [`Context::generate`], [`GenerateParams`], [`StopStrings`] in a loop by hand |
//! | chat | [`ChatMessage`], [`Model::apply_chat_template`], `ChatTemplate` (feature `jinja`), `tools` (feature `tools`) |
//! | structured output | `json_schema_to_grammar`, `Sampler::json_schema` (feature `json-schema`) |
//! | embeddings | [`Embedder`] |
//! | serve many requests | [`engine`] |
//! | speculative decoding | [`speculative`] |
//! | devices, backends, RPC | [`devices`], [`backends`], [`rpc`] |
//! | adapters, quantization | [`LoraAdapter`], [`ControlVector`], [`quantize()`] |
//! | load files you do not trust | [`vet_model`] |
//!
//! # Ownership and threads
//! A [`Model`] is a cheap, clonable handle to read-only weights: share it across threads. Each
//! thread creates its own [`Context`], which keeps the model alive by holding a handle to it, so
//! a context can be stored next to its model or moved to another thread (`Send`), but not used
//! from two threads at once (not `Sync`).
//!
//! # Untrusted models
//! llama.cpp parses GGUF files in C++. Before it does, this crate checks the file's structure,
//! the hyper-parameters and the vocabulary the C++ loader asserts on
//! ([`ModelBuilder::validate`]), and it catches every C++ exception at the boundary. A loader
//! that large may still hold a crash no check foresaw, so vet files you do not trust in a child
//! process first: [`vet_model`] loads the file there (and decodes a token), and a crash, abort
//! or hang costs the child, not your process. Call [`vet::child_main_if_requested`] first thing
//! in `main`; the child is your own executable started again (see [`vet`] for why).
//!
//! ```no_run
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     llama::vet::child_main_if_requested();
//!     llama::vet_model("untrusted.gguf")?;
//!     let model = llama::Model::load("untrusted.gguf")?;
//!     # drop(model);
//!     Ok(())
//! }
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod adapter;
mod backend;
mod barrier;
mod batch;
mod chat;
mod context;
mod driver;
mod embed;
pub mod engine;
mod error;
mod generate;
#[cfg(feature = "json-schema")]
mod json_schema;
#[cfg(feature = "mtmd")]
pub mod media;
mod model;
mod quantize;
pub mod rpc;
mod sampling;
#[cfg(feature = "server")]
pub mod server;
pub mod speculative;
mod stop;
#[cfg(feature = "async")]
mod stream;
mod token;
#[cfg(feature = "tools")]
pub mod tools;
pub mod vet;
mod vocab;

pub use adapter::{AdapterError, ControlVector, LoraAdapter};
pub use backend::{
    backends, devices, numa_init, supports_gpu_offload, system_info, version, Backend, BufferType, Device, DeviceCaps,
    DeviceKind, NumaStrategy, BACKEND_DIR_ENV,
};
pub use batch::{Batch, Logits, MAX_BATCH};
#[cfg(feature = "jinja")]
pub use chat::ChatTemplate;
pub use chat::{apply_builtin_template, builtin_templates, ChatMessage, ToolCall};
pub use context::{
    AttentionType, Context, ContextParams, ContextPerf, FlashAttention, KvCacheType, Output, PoolingType, RopeScaling,
    UnknownName,
};
pub use embed::{cosine_similarity, EmbedError, Embedder, Normalize};
pub use error::{
    BatchError, ChatError, ContextError, DecodeError, LoadError, MemoryError, SampleError, SaveError, StateError,
    TokenizeError,
};
pub use generate::{ContextFull, FinishReason, GenerateError, GenerateParams, Generation, Piece, Timings};
#[cfg(feature = "json-schema")]
pub use json_schema::{json_grammar, json_schema_to_grammar, SchemaError};
pub use model::{LazyMode, MetaOverride, Model, ModelBuilder, Placement, RopeType, SplitMode};
pub use quantize::{quantize, Ftype, QuantizeError, QuantizeParams, TensorType};
pub use sampling::{
    AdaptiveP, Candidates, CustomSampler, Dry, Mirostat, MirostatV2, Penalties, Sampler, SamplerBuildError,
    SamplerPerf, TempExt, TokenData, TokenDataArray, Xtc, MAX_PENALTY_WINDOW,
};
pub use stop::StopStrings;
#[cfg(feature = "async")]
pub use stream::{GenerationStream, StreamOutcome};
pub use token::{Token, Utf8Decoder};
pub use vet::{vet_model, vet_model_with, VetDepth, VetError, VetOptions};
pub use vocab::{AddSpecial, ControlText, SpecialSyntax, TokenAttrs, Vocab, VocabType};

/// Compile-time promises of the thread model described in the crate docs.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    const fn send<T: Send>() {}
    send_sync::<Model>();
    send::<Context>();
    send::<Sampler>();
    send::<Batch>();
    send_sync::<LoraAdapter>();
    send_sync::<Device>();
    send_sync::<Backend>();
    send_sync::<BufferType>();
    send_sync::<rpc::RemoteServer>();
    #[cfg(feature = "tools")]
    send_sync::<tools::ChatTemplates>();
    #[cfg(feature = "tools")]
    send::<tools::ChatParser>();
};
