// Logits borrow the context: the next decode (which overwrites them) cannot run while they
// are still in use.
fn main() {
    let model = llama::Model::load("model.gguf").unwrap();
    let mut ctx = model.context(Default::default()).unwrap();
    let batch = llama::Batch::new(1, 1);
    let logits = ctx.logits(llama::Output::Last).unwrap();
    ctx.decode(&batch).unwrap();
    println!("{}", logits[0]);
}
