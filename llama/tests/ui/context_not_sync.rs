// A context may move to another thread (Send) but not be shared between threads (not Sync).
fn main() {
    let model = llama::Model::load("model.gguf").unwrap();
    let ctx = model.context(Default::default()).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| ctx.n_ctx());
        s.spawn(|| ctx.n_ctx());
    });
}
