//! Reading YAML so that a refusal says where: the key path (`edge[1]`,
//! `warp-routing.connectTimeout`), the line and column, and the reason alone.
//!
//! The reader is `serde_norway`, with `serde_path_to_error` tracking the key path. Its
//! message repeats the path and the position, which [`YamlError`] carries as fields, so
//! only the reason is kept: callers then write each part once, in their own order.
//!
//! A value is only refused at its own position when it is refused *inside* the reader's
//! visitor; [`parse_scalar`] does that for values parsed from text. A check made after the
//! reader returned only knows the enclosing mapping's position.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeOwned, DeserializeSeed, Deserializer, Visitor};

use crate::location::{locate_key_nth, KeyPrefix, Location};

/// A YAML text that could not be read into its schema: not YAML, or a value of the wrong
/// shape or content.
///
/// `Display` is the key path and the reason (`` `edge[1]`: invalid port ``); put the file
/// name and [`YamlError::location`] in front of it, as
/// `format!("{}{}: {err}", file.display(), err.location())`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{reason}", KeyPrefix(key))]
#[non_exhaustive]
pub struct YamlError {
    /// The key path, e.g. `warp-routing.connectTimeout` or `edge[1]`; empty for the
    /// document itself (or where the reader failed before reaching a key).
    pub key: String,
    /// 1-based line, when the reader knows it.
    pub line: Option<usize>,
    /// 1-based column, when the reader knows it.
    pub column: Option<usize>,
    /// What is wrong, without the key path or the position.
    pub reason: String,
}

impl YamlError {
    /// The line and column.
    pub fn location(&self) -> Location {
        Location::new(self.line, self.column)
    }

    /// Builds the error from the reader's, for the document `text` and the key path the
    /// reader had reached.
    fn from_reader(
        text: &str,
        path: &serde_path_to_error::Path,
        err: &serde_norway::Error,
    ) -> Self {
        let key = path.to_string();
        // "." is the document itself; "?" is where the reader failed before reaching a key.
        let key = if key == "." || key == "?" {
            String::new()
        } else {
            key
        };
        let (line, column) = match err.location() {
            Some(loc) => (Some(loc.line()), Some(loc.column())),
            None => (None, None),
        };
        // serde_norway's message repeats the key path and the position, which this error
        // carries as fields; keep only the reason.
        let mut reason = err.to_string();
        if let (Some(l), Some(c)) = (line, column) {
            if let Some(stripped) = reason.strip_suffix(&format!(" at line {l} column {c}")) {
                reason = stripped.to_owned();
            }
        }
        if !key.is_empty() {
            if let Some(stripped) = reason.strip_prefix(&format!("{key}: ")) {
                reason = stripped.to_owned();
            }
        }
        // A duplicate is found by the mapping's visitor, which only knows where the mapping
        // starts; point at the second occurrence instead.
        let (line, column) = match reason
            .strip_prefix("duplicate key `")
            .and_then(|r| r.strip_suffix('`'))
        {
            Some(dup) => match locate_key_nth(text, dup, 1) {
                Location {
                    line: Some(l),
                    column: Some(c),
                } => (Some(l), Some(c)),
                _ => (line, column),
            },
            None => (line, column),
        };
        Self {
            key,
            line,
            column,
            reason,
        }
    }
}

/// Reads `text` with `seed`, tracking the key path, so a refusal comes back as a
/// [`YamlError`] with the path, the position and the reason.
///
/// A visitor that refuses a repeated key with the message ``duplicate key `NAME` `` gets
/// the position of the second `NAME:` line rather than that of the enclosing mapping.
pub fn from_yaml_seed<'de, S>(text: &'de str, seed: S) -> Result<S::Value, YamlError>
where
    S: DeserializeSeed<'de>,
{
    let reader = serde_norway::Deserializer::from_str(text);
    let mut track = serde_path_to_error::Track::new();
    let tracked = serde_path_to_error::Deserializer::new(reader, &mut track);
    seed.deserialize(tracked)
        .map_err(|err| YamlError::from_reader(text, &track.path(), &err))
}

/// Reads `text` as a `T`; [`from_yaml_seed`] for types without a seed.
pub fn from_yaml_str<T: DeserializeOwned>(text: &str) -> Result<T, YamlError> {
    from_yaml_seed(text, PhantomData::<T>)
}

/// Whether `text` holds no YAML value: only blank lines, comments and document markers.
/// The reader refuses an empty document, which a configuration file may well be.
pub fn is_blank(text: &str) -> bool {
    text.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#') || t == "---" || t == "..."
    })
}

/// Reads a scalar as text and parses it *inside* the YAML reader's visitor, so that a
/// refusal carries the scalar's own line and column (an error raised after the reader
/// returned would only get the enclosing mapping's position). The parser's error becomes
/// the reason, so it must not quote a secret.
pub fn parse_scalar<'de, D, T, E>(
    d: D,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    E: fmt::Display,
{
    struct V<F>(F);
    impl<T, E, F> Visitor<'_> for V<F>
    where
        E: fmt::Display,
        F: FnOnce(&str) -> Result<T, E>,
    {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<Er: de::Error>(self, v: &str) -> Result<T, Er> {
            (self.0)(v).map_err(Er::custom)
        }
    }
    d.deserialize_str(V(parse))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::de::MapAccess;
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Listener {
        port: u16,
        #[serde(default)]
        hosts: Vec<String>,
    }

    #[test]
    fn a_wrong_value_is_named_by_path_line_and_column() {
        let err = from_yaml_str::<Listener>("port: 1\nhosts:\n  - a\n  - [b]\n").unwrap_err();
        assert_eq!(err.key, "hosts[1]");
        assert_eq!((err.line, err.column), (Some(4), Some(5)));
        assert!(err.reason.starts_with("invalid type: sequence"), "{err:?}");
        assert!(!err.reason.contains("line"), "{err:?}");
        assert!(
            err.to_string().starts_with("`hosts[1]`: invalid type"),
            "{err}"
        );
        assert_eq!(err.location().to_string(), ":4:5");
    }

    #[test]
    fn errors_about_the_document_have_no_key() {
        let err = from_yaml_str::<Listener>("- a\n").unwrap_err();
        assert_eq!(err.key, "");
        assert!(err.to_string().starts_with("invalid type"), "{err}");
        // Not YAML: the reader fails before it reaches a key.
        let err = from_yaml_str::<BTreeMap<String, String>>("a: b\n  c: d\n").unwrap_err();
        assert_eq!((err.key.as_str(), err.line), ("", Some(2)));
    }

    #[test]
    fn values_parsed_in_the_visitor_are_refused_where_they_stand() {
        #[derive(Debug)]
        struct Even(#[allow(dead_code)] u32);
        impl<'de> Deserialize<'de> for Even {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                parse_scalar(d, |s| match s.parse::<u32>() {
                    Ok(n) if n % 2 == 0 => Ok(Even(n)),
                    _ => Err(format!("`{s}` is not an even number")),
                })
            }
        }
        let err = from_yaml_str::<BTreeMap<String, Even>>("a: 2\nb:   3\n").unwrap_err();
        assert_eq!(err.key, "b");
        assert_eq!((err.line, err.column), (Some(2), Some(6)));
        assert_eq!(err.reason, "`3` is not an even number");
    }

    #[test]
    fn a_duplicate_key_points_at_its_second_occurrence() {
        struct Strict;
        impl<'de> DeserializeSeed<'de> for Strict {
            type Value = Vec<String>;
            fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<String>, D::Error> {
                d.deserialize_map(self)
            }
        }
        impl<'de> Visitor<'de> for Strict {
            type Value = Vec<String>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<String>, A::Error> {
                let mut seen = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    map.next_value::<de::IgnoredAny>()?;
                    if seen.contains(&key) {
                        return Err(de::Error::custom(format!("duplicate key `{key}`")));
                    }
                    seen.push(key);
                }
                Ok(seen)
            }
        }
        let err = from_yaml_seed("a: 1\nb: 2\n'a': 3\n", Strict).unwrap_err();
        assert_eq!(err.reason, "duplicate key `a`");
        assert_eq!((err.line, err.column), (Some(3), Some(1)));
        assert_eq!(from_yaml_seed("a: 1\nb: 2\n", Strict).unwrap(), ["a", "b"]);
    }

    #[test]
    fn blank_documents() {
        assert!(is_blank(""));
        assert!(is_blank("# nothing\n---\n  \n...\n"));
        assert!(!is_blank("a: b\n"));
    }
}
