//! The embeddings helper on the real models.

mod common;

use llama::{cosine_similarity, EmbedError, Embedder, Normalize};

#[test]
fn similar_texts_are_closer_and_batching_does_not_change_vectors() {
    for model in common::both() {
        let mut e = Embedder::new(model, 512).unwrap();
        let texts = ["The cat sits on the mat.", "A kitten is resting on a rug.", "Stock markets fell sharply today."];
        let v = e.embed(&texts, Normalize::Unit).unwrap();
        assert_eq!(v.len(), 3);
        for x in &v {
            assert_eq!(x.len(), model.n_embd());
            assert!((x.iter().map(|a| a * a).sum::<f32>().sqrt() - 1.0).abs() < 1e-4);
        }
        assert!(cosine_similarity(&v[0], &v[1]) > cosine_similarity(&v[0], &v[2]), "{}", model.architecture());
        let alone = e.embed(&texts[2..], Normalize::Unit).unwrap();
        assert!(cosine_similarity(&alone[0], &v[2]) > 0.999, "{}", model.architecture());
    }
}

#[test]
fn more_texts_than_one_batch_holds() {
    let mut e = Embedder::new(common::smollm2(), 64).unwrap();
    let texts: Vec<String> = (0..40).map(|i| format!("sentence number {i} about topic {}", i % 3)).collect();
    let v = e.embed(&texts, Normalize::Off).unwrap();
    assert_eq!(v.len(), 40);
    assert!(matches!(e.embed(&["word ".repeat(200)], Normalize::Unit), Err(EmbedError::TooLong { index: 0, .. })));
    assert!(Embedder::with_pooling(common::smollm2(), 64, llama::PoolingType::None).is_err());
}
