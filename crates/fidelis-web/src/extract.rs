//! Extractors whose rejections are problem+json like every other error.

use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body. Malformed JSON and wrong types are 400, a wrong content type 415, a body
/// over the limit 413: all with the reason, as problem+json.
///
/// A number with a zero fraction (`5.0`) is accepted where an integer is expected: the
/// OpenAPI document's `integer` is JSON Schema's, which counts `5.0` as the integer 5.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !json_content_type(req.headers()) {
            return Err(unsupported_media_type());
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            let detail = rejection.body_text();
            match rejection.status() {
                StatusCode::PAYLOAD_TOO_LARGE => {
                    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", detail)
                }
                _ => ApiError::bad_request("invalid_body", detail),
            }
        })?;
        // Every body is a JSON object: serde would also read a struct from an array, by
        // position, which no client means.
        if !starts_an_object(&bytes) {
            return Err(ApiError::bad_request(
                "invalid_body",
                "the body is a JSON object ({…})",
            ));
        }
        match axum::Json::<T>::from_bytes(&bytes) {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => match with_whole_numbers(&bytes) {
                Some(Ok(value)) => Ok(Self(value)),
                _ => Err(rejected(rejection)),
            },
        }
    }
}

/// Whether `bytes`, past leading white space, open a JSON object (anything else is refused
/// before serde, which would read a struct from an array by position).
pub(crate) fn starts_an_object(bytes: &[u8]) -> bool {
    bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// `text` as a `T`, reading integral floats as integers (see [`ApiJson`]); the error is
/// the one for `text` as written. Only a JSON object is read.
pub fn from_json_text<T: DeserializeOwned>(text: &str) -> Result<T, serde_json::Error> {
    if !starts_an_object(text.as_bytes()) {
        return Err(serde::de::Error::custom("a line is a JSON object ({…})"));
    }
    match serde_json::from_str::<T>(text) {
        Ok(value) => Ok(value),
        Err(error) => match with_whole_numbers(text.as_bytes()) {
            Some(Ok(value)) => Ok(value),
            _ => Err(error),
        },
    }
}

/// When `bytes` is JSON holding a number such as `5.0`, the document read again with each
/// of those numbers as an integer; `None` when there is none (or it is not JSON). Only
/// taken after a first reading failed, so the common path parses once.
pub(crate) fn with_whole_numbers<T: DeserializeOwned>(
    bytes: &[u8],
) -> Option<Result<T, serde_json::Error>> {
    let mut value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    if !whole_numbers(&mut value) {
        return None;
    }
    Some(serde_json::from_value(value))
}

/// Turns every float with a zero fraction that fits an `i64` into an integer; true if any.
fn whole_numbers(value: &mut serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::Number(n) if !n.is_i64() && !n.is_u64() => match n.as_f64() {
            // 2^63 is exactly representable; anything below it with no fraction fits.
            Some(f) if f.fract() == 0.0 && f.abs() < 9_223_372_036_854_775_808.0 => {
                #[allow(clippy::cast_possible_truncation)]
                let whole = f as i64;
                *value = Value::from(whole);
                true
            }
            _ => false,
        },
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |any, v| whole_numbers(v) | any),
        Value::Object(fields) => fields
            .values_mut()
            .fold(false, |any, v| whole_numbers(v) | any),
        _ => false,
    }
}

/// `application/json` or any `application/*+json`, as axum's own `Json` decides.
fn json_content_type(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<mime::Mime>().ok())
        .is_some_and(|m| {
            m.type_() == "application"
                && (m.subtype() == "json" || m.suffix().is_some_and(|s| s == "json"))
        })
}

fn unsupported_media_type() -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "send a JSON body with `Content-Type: application/json`",
    )
}

fn rejected(rejection: JsonRejection) -> ApiError {
    let detail = rejection.body_text();
    match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", detail)
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => unsupported_media_type(),
        StatusCode::UNPROCESSABLE_ENTITY => ApiError::bad_request("invalid_body", detail),
        _ => ApiError::bad_request("invalid_json", detail),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    struct Points {
        points: i64,
        lines: Vec<u32>,
    }

    #[test]
    fn integral_floats_are_integers_and_fractions_are_not() {
        let read = from_json_text::<Points>(r#"{"points": 1354.0, "lines": [2.0, 3]}"#)
            .expect("integral floats read as integers");
        assert_eq!(
            read,
            Points {
                points: 1354,
                lines: vec![2, 3]
            }
        );
        let error = from_json_text::<Points>(r#"{"points": 1.5, "lines": []}"#)
            .expect_err("a fraction is not an integer");
        assert!(error.to_string().contains("1.5"), "{error}");
        assert!(from_json_text::<Points>(r#"{"points": 1e300, "lines": []}"#).is_err());
    }
}

/// Serde helpers that read a nested struct only from a JSON object.
pub use fidelis_core::objects as object;
