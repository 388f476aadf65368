//! Request body reading: the size limit is enforced while streaming (docs/DECISIONS.md #8), so an
//! oversized body is refused after at most `limit + one frame` bytes, never buffered whole.

use bytes::{Buf, Bytes};
use http::header::CONTENT_LENGTH;
use http::HeaderMap;
use http_body::Body;
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;

use crate::envelope::ApiError;

/// Reads the whole body, refusing with 413 as soon as more than `limit` bytes arrive.
/// A body of exactly `limit` bytes is accepted. Transport errors map to 400.
pub async fn read_limited<B>(headers: &HeaderMap, body: B, limit: usize) -> Result<Bytes, ApiError>
where
    B: Body,
    B::Data: Buf,
{
    // A declared length above the limit is refused without touching the socket.
    if let Some(declared) = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        if declared > limit as u64 {
            return Err(ApiError::payload_too_large(limit));
        }
    }
    let mut body = std::pin::pin!(body);
    let mut collected: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| ApiError::bad_request("Invalid request body"))?;
        if let Ok(mut data) = frame.into_data() {
            let len = data.remaining();
            if collected.len().saturating_add(len) > limit {
                return Err(ApiError::payload_too_large(limit));
            }
            while data.has_remaining() {
                let chunk = data.chunk();
                collected.extend_from_slice(chunk);
                let n = chunk.len();
                data.advance(n);
            }
        }
    }
    Ok(Bytes::from(collected))
}

/// Decodes a required JSON body (any failure, including an empty body, is 400).
pub fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|_| ApiError::bad_request("Invalid JSON body"))
}

/// Decodes a required JSON object. serde's derive would also accept a JSON array for a struct
/// (fields by position); request bodies are objects only.
pub fn decode_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => decode_json(bytes),
        _ => Err(ApiError::bad_request("Invalid JSON body")),
    }
}

/// Decodes an optional JSON body: an empty (or whitespace-only) body means `None`.
pub fn decode_optional_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<Option<T>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    decode_object(bytes).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;
    use http_body_util::Full;

    #[tokio::test]
    async fn exact_limit_accepted_one_more_refused() {
        let h = HeaderMap::new();
        let ok = read_limited(&h, Full::new(Bytes::from(vec![b'a'; 10])), 10).await;
        assert_eq!(ok.expect("accepted").len(), 10);
        let err = read_limited(&h, Full::new(Bytes::from(vec![b'a'; 11])), 10).await;
        assert_eq!(
            err.expect_err("refused").status,
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }

    /// A body yielding frames from an iterator (endless or failing), without extra crates.
    struct IterBody<I>(I);

    impl<I> Body for IterBody<I>
    where
        I: Iterator<Item = Result<Bytes, std::io::Error>> + Unpin,
    {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
            std::task::Poll::Ready(self.0.next().map(|r| r.map(http_body::Frame::data)))
        }
    }

    #[tokio::test]
    async fn streaming_stops_early_and_transport_error_is_400() {
        let h = HeaderMap::new();
        // An endless stream: the reader must stop once the limit is crossed.
        let endless = IterBody(std::iter::repeat_with(|| {
            Ok(Bytes::from_static(b"0123456789"))
        }));
        let err = read_limited(&h, endless, 95).await;
        assert_eq!(
            err.expect_err("refused").status,
            StatusCode::PAYLOAD_TOO_LARGE
        );

        let broken = IterBody(
            vec![
                Ok(Bytes::from_static(b"{")),
                Err(std::io::Error::other("reset")),
            ]
            .into_iter(),
        );
        let err = read_limited(&h, broken, 95)
            .await
            .expect_err("transport error");
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert_eq!(err.message, "Invalid request body");
    }

    #[tokio::test]
    async fn declared_length_over_limit_refused_without_reading() {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_LENGTH, http::HeaderValue::from_static("1000000"));
        let err = read_limited(&h, Full::new(Bytes::new()), 10).await;
        assert_eq!(
            err.expect_err("refused").status,
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }

    #[test]
    fn optional_json() {
        assert_eq!(
            decode_optional_json::<serde_json::Value>(b"").expect("empty"),
            None
        );
        assert_eq!(
            decode_optional_json::<serde_json::Value>(b" \n").expect("ws"),
            None
        );
        assert!(decode_optional_json::<serde_json::Value>(b"{").is_err());
        assert!(decode_json::<serde_json::Value>(b"").is_err());
        assert!(decode_object::<serde_json::Value>(b" []").is_err());
        assert!(decode_object::<serde_json::Value>(b"\n{}").is_ok());
    }
}
