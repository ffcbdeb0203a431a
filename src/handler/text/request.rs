//! The texts of one request item: a raw UTF-8 body, or JSON — a string, a list of strings, or
//! `{"data": ...}` / `{"text": ...}` holding either (TorchServe's text handlers read the `data` or
//! `body` field; a JSON body arrives as an object). Every text is checked for UTF-8, emptiness and
//! its length in bytes before anything is tokenized.

use crate::error::ServeError;

/// What one request item asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Texts {
    pub texts: Vec<String>,
    /// The request sent a JSON list: the answer is a list too, in the same order.
    pub listed: bool,
}

/// Limits on one request item, from the handler config.
#[derive(Debug, Clone, Copy)]
pub struct TextLimits {
    pub max_bytes: usize,
    pub max_texts: usize,
}

/// Reads the texts of a request body. Errors are the client's (400) and name the problem.
pub fn parse(
    bytes: &[u8],
    content_type: Option<&str>,
    limits: TextLimits,
) -> Result<Texts, ServeError> {
    let declared_json = content_type.is_some_and(|mime| mime.to_ascii_lowercase().contains("json"));
    let looks_like_object = bytes
        .iter()
        .find(|byte| !byte.is_ascii_whitespace())
        .is_some_and(|&byte| byte == b'{');
    if declared_json || looks_like_object {
        match serde_json::from_slice::<serde_json::Value>(bytes) {
            Ok(value) => return from_json(value, limits),
            Err(error) if declared_json => {
                return Err(ServeError::BadRequest(format!(
                    "the request body is not valid JSON: {error}"
                )))
            }
            // A raw text that merely starts with a brace.
            Err(_) => {}
        }
    }
    let text = std::str::from_utf8(bytes).map_err(|error| {
        ServeError::BadRequest(format!(
            "the text is not valid UTF-8 (invalid byte at offset {})",
            error.valid_up_to()
        ))
    })?;
    let text = checked(text.to_string(), limits)?;
    Ok(Texts {
        texts: vec![text],
        listed: false,
    })
}

fn from_json(value: serde_json::Value, limits: TextLimits) -> Result<Texts, ServeError> {
    let value = match value {
        serde_json::Value::Object(mut object) => ["data", "text", "body"]
            .iter()
            .find_map(|key| object.remove(*key))
            .ok_or_else(|| {
                ServeError::BadRequest(
                    "the JSON object has no \"data\" or \"text\" field holding the text".into(),
                )
            })?,
        other => other,
    };
    match value {
        serde_json::Value::String(text) => Ok(Texts {
            texts: vec![checked(text, limits)?],
            listed: false,
        }),
        serde_json::Value::Array(items) => {
            if items.is_empty() {
                return Err(ServeError::BadRequest("the list of texts is empty".into()));
            }
            if items.len() > limits.max_texts {
                return Err(ServeError::BadRequest(format!(
                    "the request has {} texts, more than the limit of {} (text.max_texts)",
                    items.len(),
                    limits.max_texts
                )));
            }
            let texts = items
                .into_iter()
                .enumerate()
                .map(|(index, item)| match item {
                    serde_json::Value::String(text) => checked(text, limits),
                    _ => Err(ServeError::BadRequest(format!(
                        "text {index} of the list is not a string"
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Texts {
                texts,
                listed: true,
            })
        }
        _ => Err(ServeError::BadRequest(
            "the text must be a JSON string or a list of strings".into(),
        )),
    }
}

fn checked(text: String, limits: TextLimits) -> Result<String, ServeError> {
    if text.trim().is_empty() {
        return Err(ServeError::BadRequest("the text is empty".into()));
    }
    if text.len() > limits.max_bytes {
        return Err(ServeError::BadRequest(format!(
            "the text is {} bytes long, more than the limit of {} (text.max_bytes)",
            text.len(),
            limits.max_bytes
        )));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: TextLimits = TextLimits {
        max_bytes: 16,
        max_texts: 2,
    };

    fn message(result: Result<Texts, ServeError>) -> String {
        match result {
            Err(ServeError::BadRequest(message)) => message,
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn raw_json_and_lists() {
        let raw = parse(b"hello", None, LIMITS).expect("raw");
        assert_eq!(raw.texts, ["hello"]);
        assert!(!raw.listed);
        let data = parse(br#"{"data": "hi"}"#, None, LIMITS).expect("data");
        assert_eq!(data.texts, ["hi"]);
        let list =
            parse(br#"{"text": ["a", "b"]}"#, Some("application/json"), LIMITS).expect("list");
        assert_eq!(list.texts, ["a", "b"]);
        assert!(list.listed);
        let bare = parse(br#"["x"]"#, Some("application/json"), LIMITS).expect("list");
        assert!(bare.listed);
        // Without a JSON content type, a brace that does not open JSON is just text.
        assert_eq!(
            parse(b"{ not json", None, LIMITS).expect("raw").texts,
            ["{ not json"]
        );
    }

    #[test]
    fn bad_input_names_the_problem() {
        assert!(message(parse(&[0xff, 0xfe], None, LIMITS)).contains("UTF-8"));
        assert!(message(parse(b"  ", None, LIMITS)).contains("empty"));
        assert!(message(parse(b"01234567890123456", None, LIMITS)).contains("17 bytes"));
        assert!(
            message(parse(br#"["a","b","c"]"#, Some("application/json"), LIMITS))
                .contains("3 texts")
        );
        assert!(message(parse(b"[]", Some("application/json"), LIMITS)).contains("empty"));
        assert!(message(parse(b"[1]", Some("application/json"), LIMITS)).contains("not a string"));
        assert!(message(parse(b"{", Some("application/json"), LIMITS)).contains("JSON"));
        assert!(message(parse(br#"{"x": 1}"#, None, LIMITS)).contains("\"data\""));
    }
}
