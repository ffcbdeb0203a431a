//! Java `.properties` text exactly as `java.util.Properties` reads (`load`) and writes (`store`)
//! it: `\`-continued lines, `#`/`!` comments, `=`/`:`/whitespace separators, and the escapes
//! `\t \n \r \f \uXXXX \= \: \# \! \\`. [`crate::snapshot`] uses it for TorchServe's snapshot files,
//! whose `model_snapshot` value is multi-line JSON escaped this way.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// A malformed `\uXXXX` escape (Java throws IllegalArgumentException for these).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed \\uXXXX encoding in properties text")]
pub struct MalformedEscape;

/// Parses properties text as `Properties.load(Reader)` does; later keys win.
pub fn load(text: &str) -> Result<BTreeMap<String, String>, MalformedEscape> {
    let mut properties = BTreeMap::new();
    for line in logical_lines(text) {
        let (key, value) = split_entry(&line);
        properties.insert(unescape(key)?, unescape(value)?);
    }
    Ok(properties)
}

/// Writes `entries` as `Properties.store` does: `#`-comment lines, then `key=value` lines. Every
/// character outside printable ASCII is written as `\uXXXX`, so the text is ASCII and reads back
/// the same with either of Java's `load` overloads.
pub fn store<'a>(
    comments: &[&str],
    entries: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> String {
    let mut out = String::new();
    for comment in comments {
        out.push('#');
        escape_into(&mut out, comment, false, false);
        out.push('\n');
    }
    for (key, value) in entries {
        escape_into(&mut out, key, true, true);
        out.push('=');
        escape_into(&mut out, value, false, true);
        out.push('\n');
    }
    out
}

/// Joins natural lines into logical lines: leading whitespace dropped, blank and comment lines
/// skipped, a line ending in an odd number of backslashes continued on the next.
fn logical_lines(text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut pending: Option<String> = None;
    for natural in text.replace("\r\n", "\n").split(['\n', '\r']) {
        let trimmed = natural.trim_start_matches([' ', '\t', '\u{c}']);
        let mut logical = match pending.take() {
            Some(start) => start,
            None => {
                if trimmed.is_empty() || trimmed.starts_with(['#', '!']) {
                    continue;
                }
                String::new()
            }
        };
        let trailing = trimmed.chars().rev().take_while(|&c| c == '\\').count();
        if trailing % 2 == 1 {
            logical.push_str(&trimmed[..trimmed.len() - 1]);
            pending = Some(logical);
        } else {
            logical.push_str(trimmed);
            lines.push(logical);
        }
    }
    // A continuation at the very end of the text ends the entry (Java does the same).
    if let Some(last) = pending.filter(|line| !line.is_empty()) {
        lines.push(last);
    }
    lines
}

/// Splits a logical line at the first unescaped `=`, `:` or whitespace, then skips whitespace
/// and at most one `=`/`:` before the value.
fn split_entry(line: &str) -> (&str, &str) {
    let is_space = |c: char| matches!(c, ' ' | '\t' | '\u{c}');
    let mut escaped = false;
    let mut key_end = line.len();
    let mut has_separator = false;
    for (index, c) in line.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '=' || c == ':' {
            key_end = index;
            has_separator = true;
            break;
        } else if is_space(c) {
            key_end = index;
            break;
        }
    }
    let mut rest = &line[key_end..];
    if has_separator {
        rest = &rest[1..];
    }
    rest = rest.trim_start_matches(is_space);
    if !has_separator {
        if let Some(after) = rest.strip_prefix(['=', ':']) {
            rest = after.trim_start_matches(is_space);
        }
    }
    (&line[..key_end], rest)
}

/// Resolves backslash escapes; `\uXXXX` pairs that form a UTF-16 surrogate pair are joined.
fn unescape(text: &str) -> Result<String, MalformedEscape> {
    let mut units: Vec<u16> = Vec::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        let decoded = if c == '\\' {
            match chars.next() {
                Some('u') => {
                    let hex: String = chars.by_ref().take(4).collect();
                    if hex.len() != 4 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                        return Err(MalformedEscape);
                    }
                    let unit = u16::from_str_radix(&hex, 16).map_err(|_| MalformedEscape)?;
                    units.push(unit);
                    continue;
                }
                Some('t') => '\t',
                Some('n') => '\n',
                Some('r') => '\r',
                Some('f') => '\u{c}',
                Some(other) => other,
                None => break,
            }
        } else {
            c
        };
        let mut buffer = [0u16; 2];
        units.extend_from_slice(decoded.encode_utf16(&mut buffer));
    }
    String::from_utf16(&units).map_err(|_| MalformedEscape)
}

/// `Properties.saveConvert`: `escape_space` escapes every space (keys) rather than only a
/// leading one (values); `escape_specials` escapes `= : # !` (not done in comments).
fn escape_into(out: &mut String, text: &str, escape_space: bool, escape_specials: bool) {
    for (index, c) in text.chars().enumerate() {
        match c {
            ' ' if index == 0 || escape_space => out.push_str("\\ "),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\u{c}' => out.push_str("\\f"),
            '\\' if escape_specials => out.push_str("\\\\"),
            '=' | ':' | '#' | '!' if escape_specials => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            other => {
                let mut buffer = [0u16; 2];
                for unit in other.encode_utf16(&mut buffer) {
                    let _ = write!(out, "\\u{unit:04X}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_reads_java_syntax() {
        let text = "# comment\n  ! also comment\n\na=1\nb : 2\nc 3\nd\\ e=f\\:g\\=h\nlong=one\\\r\n    two\\\\\nwin=x\r\ny=\\u00e9\\t\\n\nempty=\nbare\n";
        let properties = load(text).expect("parses");
        assert_eq!(properties["a"], "1");
        assert_eq!(properties["b"], "2");
        assert_eq!(properties["c"], "3");
        assert_eq!(properties["d e"], "f:g=h");
        assert_eq!(properties["long"], "onetwo\\");
        assert_eq!(properties["win"], "x");
        assert_eq!(properties["y"], "é\t\n");
        assert_eq!(properties["empty"], "");
        assert_eq!(properties["bare"], "");
        assert_eq!(properties.len(), 9);
    }

    #[test]
    fn store_escapes_like_java_and_round_trips() {
        let entries = [
            ("inference_address", "https://127.0.0.1:8443"),
            ("key with space", " leading space, trailing "),
            ("json", "{\n  \"a\": \"b=c#d!\\\\\"\n}"),
            ("unicode", "é 😀"),
        ];
        let text = store(&["Saving snapshot"], entries);
        assert!(text.starts_with("#Saving snapshot\n"));
        assert!(text.contains("inference_address=https\\://127.0.0.1\\:8443\n"));
        assert!(text.contains("key\\ with\\ space=\\ leading space, trailing \n"));
        assert!(text.contains("unicode=\\u00E9 \\uD83D\\uDE00\n"));
        assert!(text.is_ascii());
        let back = load(&text).expect("parses");
        for (key, value) in entries {
            assert_eq!(back[key], value, "{key}");
        }
    }

    #[test]
    fn malformed_unicode_escapes_are_errors() {
        assert_eq!(load("a=\\u12"), Err(MalformedEscape));
        assert_eq!(load("a=\\uzzzz"), Err(MalformedEscape));
        assert_eq!(load("a=\\u+123"), Err(MalformedEscape));
        assert_eq!(load("a=\\uD800"), Err(MalformedEscape));
    }
}
