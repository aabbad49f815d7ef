//! A configuration as it was written, kept to point errors at its keys: a
//! flux.toml file (with lines), or JSON from a program (Python's
//! `FluxConfig`), which has no lines to give.

use std::ops::Range;

use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue};

use super::words::{dotted, expected, line_at, redact_url, unknown_key};
use super::ConfigError;

/// What a configuration's text says about a key.
pub(super) trait Written {
    /// Whether the text writes `path` (a value the defaults did not fill in).
    fn contains(&self, path: &[&str]) -> bool;
    /// The line of `path`, or of its closest ancestor the text writes.
    fn line_of(&self, path: &[&str]) -> Option<usize>;
    /// The value at `path` as written, if the text writes it.
    fn value_text(&self, path: &[&str]) -> Option<String>;

    /// `message` about the key at `path`.
    fn error(&self, path: &[&str], message: String) -> ConfigError {
        ConfigError {
            line: self.line_of(path),
            ..ConfigError::new(message).with_key(dotted(path))
        }
    }

    /// A value that has the right type but is out of range.
    fn invalid(&self, path: &[&str], got: &dyn std::fmt::Display) -> ConfigError {
        // As written, so `1.50` is not echoed back as `1.5`.
        let got = match self.value_text(path) {
            Some(text) => shown(path, &text),
            None => shown(path, &got.to_string()),
        };
        let expected = expected(path).unwrap_or_default();
        self.error(path, format!("must be {expected}, got {got}"))
    }

    /// A deserialization error (`raw`) at `path`, in the terms of the schema.
    fn explain(&self, path: &[&str], raw: &str, line: Option<usize>) -> ConfigError {
        let message = if raw.starts_with("unknown field") {
            unknown_key(path, raw)
        } else if raw.starts_with("invalid rate") {
            // The rate parser's own message names the part at fault.
            raw.to_owned()
        } else if let Some(expected) = expected(path) {
            let got = self
                .value_text(path)
                .map_or_else(|| "a value of another type".to_owned(), |t| shown(path, &t));
            format!("must be {expected}, got {got}")
        } else {
            raw.to_owned()
        };
        ConfigError {
            line: line.or_else(|| self.line_of(path)),
            ..ConfigError::new(message).with_key(dotted(path))
        }
    }
}

/// A value as written, shortened to fit in a one-line message. A Redis URL
/// is shown with its passwords hidden (before it is shortened, so a cut
/// cannot keep half a password), a password not at all.
fn shown(path: &[&str], written: &str) -> String {
    let written = written.trim();
    let redacted;
    let written = match path {
        ["redis", "password"] => return "a value of another type (not shown)".to_owned(),
        ["redis", "url"] => {
            redacted = redact_url(written);
            redacted.as_str()
        }
        _ => written,
    };
    let first_line = written.lines().next().unwrap_or("");
    match first_line.char_indices().nth(40) {
        Some((cut, _)) => format!("{}...", &first_line[..cut]),
        None if first_line.len() < written.len() => format!("{first_line}..."),
        None if first_line.is_empty() => "nothing".to_owned(),
        None => first_line.to_owned(),
    }
}

/// A flux.toml file, parsed into spans.
pub(super) struct TomlDoc<'a> {
    text: &'a str,
    root: DeTable<'a>,
}

impl<'a> TomlDoc<'a> {
    pub(super) fn parse(text: &'a str) -> Result<Self, ConfigError> {
        match DeTable::parse(text) {
            Ok(root) => Ok(Self {
                text,
                root: root.into_inner(),
            }),
            Err(e) => Err(ConfigError {
                line: e.span().map(|span| line_at(text, span.start)),
                ..ConfigError::new(e.message())
            }),
        }
    }

    /// Deserializes the file, or says what is wrong where.
    pub(super) fn read<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        toml::from_str(self.text).map_err(|e| {
            let raw = e.message();
            let Some(span) = e.span() else {
                return ConfigError::new(raw);
            };
            let line = Some(line_at(self.text, span.start));
            match self.path_at(span.start) {
                Some(path) => {
                    let path: Vec<&str> = path.iter().map(String::as_str).collect();
                    self.explain(&path, raw, line)
                }
                None => ConfigError {
                    line,
                    ..ConfigError::new(raw)
                },
            }
        })
    }

    /// The spans of the last key of `path` and of its value, if the file writes it.
    fn spans(&self, path: &[&str]) -> Option<(Range<usize>, Range<usize>)> {
        let (last, parents) = path.split_last()?;
        let mut table = &self.root;
        for name in parents {
            let (_, value) = table.iter().find(|(k, _)| k.get_ref() == name)?;
            match value.get_ref() {
                DeValue::Table(inner) => table = inner,
                _ => return None,
            }
        }
        let (key, value) = table.iter().find(|(k, _)| k.get_ref() == last)?;
        Some((key.span(), value.span()))
    }

    /// The path of the deepest key whose name or value covers `offset`.
    fn path_at(&self, offset: usize) -> Option<Vec<String>> {
        fn walk(table: &DeTable<'_>, offset: usize, path: &mut Vec<String>) -> bool {
            for (key, value) in table.iter() {
                path.push(key.get_ref().to_string());
                if let DeValue::Table(inner) = value.get_ref() {
                    if walk(inner, offset, path) {
                        return true;
                    }
                }
                if key.span().contains(&offset) || value.span().contains(&offset) {
                    return true;
                }
                path.pop();
            }
            false
        }
        let mut path = Vec::new();
        walk(&self.root, offset, &mut path).then_some(path)
    }
}

impl Written for TomlDoc<'_> {
    fn contains(&self, path: &[&str]) -> bool {
        self.spans(path).is_some()
    }

    fn line_of(&self, path: &[&str]) -> Option<usize> {
        (1..=path.len())
            .rev()
            .find_map(|len| self.spans(&path[..len]))
            .map(|(key, _)| line_at(self.text, key.start))
    }

    fn value_text(&self, path: &[&str]) -> Option<String> {
        let (_, value) = self.spans(path)?;
        self.text.get(value).map(str::to_owned)
    }
}

/// A configuration given as JSON: the sections and keys of flux.toml as
/// objects, a key left out (or `null`) for its default.
pub(super) struct JsonDoc {
    root: serde_json::Value,
}

impl JsonDoc {
    pub(super) fn parse(text: &str) -> Result<Self, ConfigError> {
        let root: serde_json::Value = serde_json::from_str(text).map_err(|e| ConfigError {
            line: Some(e.line()),
            ..ConfigError::new(format!("not valid JSON: {e}"))
        })?;
        if !root.is_object() {
            return Err(ConfigError::new(
                "must be an object of sections, as in {\"redis\": {...}, \"rate_limit\": {...}}",
            ));
        }
        Ok(JsonDoc {
            root: without_nulls(root),
        })
    }

    /// Deserializes the configuration, or says what is wrong where.
    pub(super) fn read<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        serde_path_to_error::deserialize(&self.root).map_err(|e| {
            let path: Vec<String> = e
                .path()
                .iter()
                .filter_map(|segment| match segment {
                    serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                    serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
                    _ => None,
                })
                .collect();
            let path: Vec<&str> = path.iter().map(String::as_str).collect();
            self.explain(&path, &e.inner().to_string(), None)
        })
    }

    fn value(&self, path: &[&str]) -> Option<&serde_json::Value> {
        path.iter()
            .try_fold(&self.root, |value, key| value.as_object()?.get(*key))
    }
}

/// `null` means "the default", as a key left out does.
fn without_nulls(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => serde_json::Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, without_nulls(v)))
                .collect(),
        ),
        other => other,
    }
}

impl Written for JsonDoc {
    fn contains(&self, path: &[&str]) -> bool {
        self.value(path).is_some()
    }

    fn line_of(&self, _: &[&str]) -> Option<usize> {
        None
    }

    fn value_text(&self, path: &[&str]) -> Option<String> {
        self.value(path).map(|v| v.to_string())
    }
}
