// Sampler chains carry mutable state: they cannot be shared between threads.
fn assert_sync<T: Sync>() {}

fn main() {
    assert_sync::<llama::Sampler>();
}
