//! Images and audio in request bodies: read without the model when a body is checked (`data:`
//! URLs and base64 audio; remote URLs refused), then, when the request is admitted, marked in
//! the conversation and decoded through the model's projector.

use crate::engine::{Prompt, Request};
use crate::server::error::ApiError;
use crate::server::registry::Lease;

/// A medium a request carries, not yet decoded: the bytes, where they were in the body, and
/// where they stand in the conversation (message `message`'s content, at byte `offset`).
#[derive(Debug)]
pub struct Attached {
    pub param: String,
    pub message: usize,
    pub offset: usize,
    pub bytes: Vec<u8>,
}

/// The bytes of an image URL. Only `data:` URLs with base64 data: a local server does not
/// fetch URLs for its callers (nor reach what they point it at).
pub fn data_url(param: &str, url: &str) -> Result<Vec<u8>, ApiError> {
    let Some(rest) = url.strip_prefix("data:") else {
        let remote = url.starts_with("http://") || url.starts_with("https://");
        let message = if remote {
            "remote image URLs are not fetched by this server: send the image inline as a data: URL \
             (data:image/png;base64,...)"
        } else {
            "expected a data: URL (data:image/png;base64,...)"
        };
        return Err(ApiError::invalid(param, message));
    };
    let (meta, data) =
        rest.split_once(',').ok_or_else(|| ApiError::invalid(param, "a data: URL needs a comma before its data"))?;
    if !meta.ends_with(";base64") {
        return Err(ApiError::invalid(param, "only base64 data: URLs are read (data:image/png;base64,...)"));
    }
    base64(param, data)
}

/// Standard base64, padded or not.
pub fn base64(param: &str, data: &str) -> Result<Vec<u8>, ApiError> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    use base64::Engine as _;
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let bytes = LENIENT.decode(data.trim()).map_err(|e| ApiError::invalid(param, format!("invalid base64: {e}")))?;
    if bytes.is_empty() {
        return Err(ApiError::invalid(param, "the media data is empty"));
    }
    Ok(bytes)
}

/// Which media a projector file takes, (images, audio); the reason when it cannot be used.
pub fn probe(path: &std::path::Path) -> Result<(bool, bool), String> {
    #[cfg(feature = "mtmd")]
    return crate::media::Projector::probe(path).map_err(|e| e.to_string());
    #[cfg(not(feature = "mtmd"))]
    {
        let _ = path;
        Err(WITHOUT_MTMD.into())
    }
}

#[cfg(not(feature = "mtmd"))]
const WITHOUT_MTMD: &str = "this server was built without image and audio support (feature `mtmd`)";

/// The most bytes of pixels and samples one request's media may decode to (a 32-megapixel image
/// is 96 MiB).
#[cfg(feature = "mtmd")]
const MAX_DECODED_BYTES: u64 = 256 << 20;

/// The engine request for `prompt` with its media: each medium's marker put where it stood
/// and its bytes decoded through the model's projector (off the async threads).
pub(crate) async fn request(lease: &Lease, prompt: Prompt, media: Vec<Attached>) -> Result<Request, ApiError> {
    if media.is_empty() {
        return Ok(Request::new(prompt));
    }
    #[cfg(not(feature = "mtmd"))]
    {
        let _ = (lease, prompt);
        Err(ApiError::invalid(&media[0].param, WITHOUT_MTMD))
    }
    #[cfg(feature = "mtmd")]
    {
        let engine = lease.engine();
        let Some(marker) = engine.media_marker().map(str::to_string) else {
            let message = format!("model {:?} takes no images or audio: it is served without a projector", lease.name);
            return Err(ApiError::invalid(&media[0].param, message));
        };
        let Prompt::Chat(mut messages) = prompt else {
            return Err(ApiError::invalid(&media[0].param, "images and audio are read in chat messages only"));
        };
        // Back to front, so that the offsets still to come stay where they were.
        for a in media.iter().rev() {
            let content = messages.get_mut(a.message).map(|m| &mut m.content);
            match content {
                Some(c) if c.is_char_boundary(a.offset) => c.insert_str(a.offset, &marker),
                _ => return Err(ApiError::internal("a medium's place in its message was lost")),
            }
        }
        // Decoding a large image takes milliseconds to seconds of CPU.
        let decoded = tokio::task::spawn_blocking(move || {
            let projector = engine.projector().ok_or_else(|| ApiError::internal("the projector went away"))?;
            // One request holds its decoded media at once: bound their sum, not only each.
            let mut held = 0u64;
            let mut decoded = Vec::with_capacity(media.len());
            for a in &media {
                let m = projector.media_from_bytes(&a.bytes).map_err(|e| ApiError::invalid(&a.param, e.to_string()))?;
                held += u64::from(m.width()) * u64::from(m.height()) * 3 + m.n_samples() as u64 * 4;
                if held > MAX_DECODED_BYTES {
                    let message = format!("the request's media decode to more than {} MiB", MAX_DECODED_BYTES >> 20);
                    return Err(ApiError::invalid(&a.param, message));
                }
                decoded.push(m);
            }
            Ok(decoded)
        })
        .await
        .map_err(|e| ApiError::internal(format!("the media could not be decoded: {e}")))??;
        Ok(Request::new(Prompt::Chat(messages)).media(decoded))
    }
}

#[cfg(test)]
mod tests {
    use super::{base64, data_url};

    #[test]
    fn data_urls_are_read_and_remote_ones_refused() {
        assert_eq!(data_url("p", "data:image/png;base64,aGVsbG8=").unwrap(), b"hello");
        assert_eq!(data_url("p", "data:image/png;base64,aGVsbG8").unwrap(), b"hello");
        for bad in ["https://example.com/cat.png", "http://10.0.0.1/x", "data:image/png,raw", "data:;base64", "cat.png"]
        {
            assert!(data_url("p", bad).is_err(), "{bad}");
        }
        let remote = data_url("p", "https://example.com/cat.png").unwrap_err();
        assert!(format!("{remote:?}").contains("not fetched"), "{remote:?}");
        assert!(base64("p", "!!!").is_err());
        assert!(base64("p", "").is_err());
    }
}
