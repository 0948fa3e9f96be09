//! How NATS and JetStream errors become [`BackendError`]s: storage exhaustion keeps its own
//! variant, an unreachable server is `Unavailable`, and everything else is an engine error
//! that says what was being done and on which stream or bucket.

use std::error::Error as StdError;
use std::fmt::Display;

use async_nats::jetstream::ErrorCode;
use runnel_backend::BackendError;

/// JetStream's error codes for "no room left" (account or server storage limits).
const STORAGE_FULL: [ErrorCode; 3] = [
    ErrorCode::INSUFFICIENT_RESOURCES,
    ErrorCode::STORAGE_RESOURCES_EXCEEDED,
    ErrorCode::TEMP_STORAGE_FAILED,
];

/// The JetStream error code somewhere in `error`'s chain of sources, if any.
pub(crate) fn jetstream_code(error: &(dyn StdError + 'static)) -> Option<ErrorCode> {
    let mut next: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(error) = next {
        if let Some(js) = error.downcast_ref::<async_nats::jetstream::Error>() {
            return Some(js.error_code());
        }
        next = error.source();
    }
    None
}

/// An error of the engine met while doing `what`.
pub(crate) fn engine<E>(what: impl Display, error: E) -> BackendError
where
    E: StdError + 'static,
{
    let code = jetstream_code(&error).or_else(|| code_in_text(&error.to_string()));
    let text = describe(&error);
    let message = format!("{what}: {text}");
    match code {
        Some(code) if STORAGE_FULL.contains(&code) => BackendError::StorageFull(message),
        _ if is_unreachable(&text) => BackendError::Unavailable(message),
        _ => BackendError::Engine(message),
    }
}

/// Whether an error's text says the server did not answer (no responders while a stream or
/// meta leader is elected, a timeout, a lost connection): the failure may pass by itself.
fn is_unreachable(text: &str) -> bool {
    let text = text.to_ascii_lowercase();
    [
        "timed out",
        "no responders",
        "broken pipe",
        "disconnected",
        "connection closed",
    ]
    .iter()
    .any(|sign| text.contains(sign))
}

/// The error and its sources, `: `-separated, without repeating a source that the error's
/// own message already includes.
pub(crate) fn describe(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(source) = next {
        let more = source.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        next = source.source();
    }
    text
}

/// Some error kinds carry the JetStream error in the kind rather than as a source; their
/// message ends with `(code N, error code M)`.
fn code_in_text(text: &str) -> Option<ErrorCode> {
    let at = text.rfind("error code ")?;
    let digits: String = text[at + "error code ".len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok().map(ErrorCode)
}

/// Whether `error` says the named stream (or consumer) does not exist.
pub(crate) fn is_not_found<E: StdError + 'static>(error: &E) -> bool {
    let code = jetstream_code(error).or_else(|| code_in_text(&error.to_string()));
    matches!(
        code,
        Some(ErrorCode::STREAM_NOT_FOUND) | Some(ErrorCode::CONSUMER_NOT_FOUND)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_found_in_messages_of_kinds_that_carry_them() {
        assert_eq!(
            code_in_text("jetstream error: stream not found (code 404, error code 10059)"),
            Some(ErrorCode::STREAM_NOT_FOUND)
        );
        assert_eq!(code_in_text("timed out"), None);
    }

    #[test]
    fn unanswered_requests_are_unavailable_not_engine_errors() {
        assert!(is_unreachable("consumer error: timed out"));
        assert!(is_unreachable("request error: No Responders"));
        assert!(!is_unreachable(
            "stream not found (code 404, error code 10059)"
        ));
    }
}
