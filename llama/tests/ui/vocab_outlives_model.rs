// A `Vocab` is a view into its model: it cannot outlive the `Model` handle it came from.
fn main() {
    let vocab = {
        let model = llama::Model::load("model.gguf").unwrap();
        model.vocab()
    };
    let _ = vocab.n_tokens();
}
