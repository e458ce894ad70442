//! Misuse that must not compile. A context used after its model's last handle is gone needs no
//! test here: it is impossible by construction, since every `Context` holds a `Model` handle
//! (an `Arc`), so the weights live until the last context is dropped
//! (see `context_outlives_the_last_model_handle` in tests/context.rs).

#[test]
fn misuse_does_not_compile() {
    trybuild::TestCases::new().compile_fail("tests/ui/*.rs");
}
