//! Per-token cost of sampler chains on real logits from SmolLM2 (49,152-entry vocabulary).
//!
//! ```text
//! cargo bench --bench sampling
//! ```

use criterion::{criterion_group, criterion_main, Criterion};
use llama::{AddSpecial, Batch, ContextParams, Logits, Model, Output, Penalties, Sampler};

fn chains(c: &mut Criterion) {
    let path = llama_examples::models::default_model().expect("default model");
    let model = Model::load(path).expect("load");
    let mut ctx = model.context(ContextParams::default().n_ctx(512)).expect("context");
    let prompt = model.vocab().tokenize("The quick brown fox jumps over the lazy", AddSpecial::Yes).expect("tokenize");
    let mut batch = Batch::new(prompt.len(), 1);
    batch.add_sequence(&prompt, 0, 0, Logits::Want).expect("batch");
    ctx.decode(&batch).expect("decode");

    let mut group = c.benchmark_group("sample one token (49k vocab)");
    let mut typical = Sampler::chain()
        .penalties(Penalties::default().repeat(1.1))
        .top_k(40)
        .top_p(0.95)
        .min_p(0.05)
        .temp(0.8)
        .dist(1);
    group.bench_function("penalties+top-k 40+top-p 0.95+min-p 0.05+temp 0.8+dist", |b| {
        b.iter(|| typical.sample(&ctx, Output::Last).expect("sample"))
    });
    let mut greedy = Sampler::greedy();
    group.bench_function("greedy", |b| b.iter(|| greedy.sample(&ctx, Output::Last).expect("sample")));
    let mut full = Sampler::chain().temp(0.8).dist(1);
    group.bench_function("temp 0.8+dist (full softmax)", |b| {
        b.iter(|| full.sample(&ctx, Output::Last).expect("sample"))
    });
    group.finish();
}

criterion_group!(benches, chains);
criterion_main!(benches);
