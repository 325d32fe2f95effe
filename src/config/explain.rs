//! Deserialization errors said for an administrator: the full key
//! (`tls.cert`, `migration.users."carol@example.edu"`) and the expected type
//! in words, where serde says ``invalid type: integer `5`, expected path
//! string`` about whichever value it was reading.

use serde_path_to_error::{Path, Segment};

use super::ConfigError;

/// The error of deserializing `text` into a configuration.
pub(super) fn type_error(
    text: &str,
    e: serde_path_to_error::Error<toml::de::Error>,
) -> ConfigError {
    let path = key_of(e.path());
    let inner = e.into_inner();
    let (key, mut reason) = explain(path, inner.message());
    if let Some(span) = inner.span() {
        let (line, column) = line_column(text, span.start);
        reason.push_str(&format!(" (line {line}, column {column})"));
    }
    ConfigError::Invalid { key, reason }
}

/// The key as it is written in TOML: dotted, with quotes where a bare key
/// could not hold it.
fn key_of(path: &Path) -> String {
    let mut key = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => key.push_str(&format!("[{index}]")),
            Segment::Map { key: k } | Segment::Enum { variant: k } => {
                if !key.is_empty() {
                    key.push('.');
                }
                let bare = !k.is_empty()
                    && k.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if bare {
                    key.push_str(k);
                } else {
                    key.push_str(&toml::Value::String(k.clone()).to_string());
                }
            }
            Segment::Unknown => key.push('?'),
        }
    }
    key
}

fn child(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

/// The key an error is about and what is wrong with it, from serde's
/// message (the forms of `serde::de::Error`'s provided methods).
fn explain(path: String, message: &str) -> (String, String) {
    let message = message.trim_end();
    if let Some(rest) = message.strip_prefix("missing field `")
        && let Some(name) = rest.strip_suffix('`')
    {
        return (child(&path, name), "is required but missing".into());
    }
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some((_, expected)) = rest.split_once("`, ")
    {
        // The path ends with the unknown key already.
        let expected = expected.replace("there are no fields", "this table has no keys");
        return (path, format!("unknown key; {expected}"));
    }
    // toml's own words for an enum given neither a string nor a table.
    if message == "wanted string or table" {
        return (path, "expected a string".into());
    }
    if let Some(rest) = message.strip_prefix("unknown variant `")
        && let Some((found, expected)) = rest.split_once("`, ")
    {
        return (path, format!("{expected}, found `{found}`"));
    }
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix)
            && let Some((found, expected)) = rest.rsplit_once(", expected ")
        {
            return (
                path,
                format!(
                    "expected {}, found {}",
                    expected_words(expected),
                    found_words(found)
                ),
            );
        }
    }
    (path, message.to_string())
}

/// What serde's `expecting` texts (std's and serde's own types) mean.
fn expected_words(expected: &str) -> String {
    let words = match expected {
        "path string" => "a string (a file path)",
        "socket address" => "a string (an address and port, e.g. \"0.0.0.0:993\")",
        "a string" | "a borrowed string" | "string" => "a string",
        "u8" => "a whole number from 0 to 255",
        "u16" => "a whole number from 0 to 65535",
        "u32" | "u64" | "usize" => "a whole number (0 or more)",
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number",
        "f32" | "f64" => "a number",
        "a boolean" => "true or false",
        "a character" => "a string of one character",
        "a sequence" => "an array",
        "a map" => "a table",
        other if other.starts_with("struct ") => "a table",
        other => return other.to_string(),
    };
    words.to_string()
}

/// serde's `Unexpected` (``integer `5` ``, `string "x"`) as a noun, with the
/// value where it is short.
fn found_words(found: &str) -> String {
    let (kind, value) = match found.split_once(' ') {
        Some((kind, value)) => (kind, Some(value)),
        None => (found, None),
    };
    let noun = match kind {
        "integer" => "an integer",
        "boolean" => "a boolean",
        "floating" => "a decimal number",
        "string" => "a string",
        "char" => "a character",
        "sequence" => "an array",
        "map" => "a table",
        _ => return found.to_string(),
    };
    match value {
        Some(v) if kind != "floating" => format!("{noun} {v}"),
        Some(v) => format!("{noun} {}", v.trim_start_matches("point ")),
        None => noun.to_string(),
    }
}

/// 1-based line and column (in characters) of byte `at` in `text`.
fn line_column(text: &str, at: usize) -> (usize, usize) {
    let at = (0..=at.min(text.len()))
        .rev()
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(0);
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .unwrap_or_default()
        .chars()
        .count()
        + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use crate::config::tests::SAMPLE;

    #[test]
    fn type_errors_name_the_full_key_in_words() {
        for (from, to, said) in [
            (
                "cert = \"/etc/ferry/cert.pem\"",
                "cert = 5",
                "tls.cert: expected a string (a file path), found an integer `5` (line 6, column 8)",
            ),
            (
                "tls = \"implicit\"\nca",
                "tls = \"sometimes\"\nca",
                "backends.old.tls: expected one of `implicit`, `starttls`, `none`, found `sometimes`",
            ),
            (
                "allow_plaintext = false",
                "allow_plaintext = \"yes\"",
                "auth.allow_plaintext: expected true or false, found a string \"yes\"",
            ),
            (
                "imaps = \"0.0.0.0:993\"",
                "imaps = 993",
                "listen.imaps: expected a string (an address and port, e.g. \"0.0.0.0:993\"), found an integer `993`",
            ),
            (
                "allow_plaintext",
                "allow_plain",
                "auth.allow_plain: unknown key; expected one of `allow_plaintext`, ",
            ),
            (
                "address = \"old-mail.example.edu:993\"\n",
                "",
                "backends.old.address: is required but missing (line 10, column 1)",
            ),
            (
                "[migration]\n",
                "[limits]\nmax_line_bytes = -1\n[migration]\n",
                "limits.max_line_bytes: expected a whole number (0 or more), found an integer `-1`",
            ),
            (
                "\"carol\" = \"new\"",
                "\"carol@x.edu\" = \"bogus\"",
                "migration.users.\"carol@x.edu\": expected one of `old`, `merged`, `new`, found `bogus`",
            ),
            (
                "\"carol\" = \"new\"",
                "\"carol\" = 5",
                "migration.users.carol: expected a string (line 23, column 11)",
            ),
            (
                "imaps = \"0.0.0.0:993\"",
                "imaps = \"0.0.0.0:993\"\nproxy_protocol = true\ntrusted_proxies = [\"nonsense\"]",
                "listen.trusted_proxies[0]: invalid IP address syntax",
            ),
            (
                "delimiter  = \"/\"",
                "delimiter  = \"ab\"",
                "namespace.delimiter: expected a string of one character, found a string \"ab\"",
            ),
        ] {
            assert!(SAMPLE.contains(from), "{from}");
            let e = super::super::parse(&SAMPLE.replace(from, to))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(said), "{to:?}:\n  said {e}\n  want {said}");
        }
    }

    #[test]
    fn line_and_column_count_characters() {
        // `=` is byte 6: after `b`, the two bytes of `é` and a space.
        assert_eq!(super::line_column("a\nbé = x", 6), (2, 4));
        assert_eq!(super::line_column("abc", 99), (1, 4));
    }
}
