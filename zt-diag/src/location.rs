//! Where in a YAML text something is: a 1-based line and column, found by the YAML reader
//! or by looking for a key, printed after a file name or as an underlined excerpt.
//!
//! Lines and columns are 1-based, as editors and compilers count them; a column counts
//! characters, not bytes, as the YAML reader does. Either may be unknown: the reader does
//! not always know where it failed, and a key skipped without being read has no position
//! until [`locate_key`] finds one.

use std::fmt;

/// A 1-based line and column, each possibly unknown.
///
/// `Display` writes the suffix that goes after a file name, as compilers print
/// `file:line:column`: `:4:19`, `:4` when only the line is known, nothing when neither is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Location {
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column (in characters), when known.
    pub column: Option<usize>,
}

impl Location {
    /// A location from its parts.
    pub fn new(line: Option<usize>, column: Option<usize>) -> Self {
        Self { line, column }
    }

    /// Whether the line is known.
    pub fn is_known(&self) -> bool {
        self.line.is_some()
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, ":{l}:{c}"),
            (Some(l), None) => write!(f, ":{l}"),
            // A column without a line points nowhere a reader can find.
            _ => Ok(()),
        }
    }
}

/// A key path as the prefix of a message: `` `warp-routing.connectTimeout`: ``, or nothing
/// for an empty path (an error about the document itself).
#[derive(Debug, Clone, Copy)]
pub struct KeyPrefix<'a>(pub &'a str);

impl fmt::Display for KeyPrefix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            Ok(())
        } else {
            write!(f, "`{}`: ", self.0)
        }
    }
}

/// Where a key is written: the first line whose text starts with it (bare, or in double or
/// single quotes) followed by `:`. For keys the YAML reader skipped without a position
/// (unknown keys), so the error can still point at them.
///
/// The search is textual: it does not know which mapping a line belongs to, so a key
/// written in two sections is found at its first occurrence. Good enough to point a
/// person at a line; never use it to decide anything.
pub fn locate_key(text: &str, key: &str) -> Location {
    locate_key_nth(text, key, 0)
}

/// Like [`locate_key`], for the `nth` (0-based) line that starts with the key: `1` finds a
/// duplicate key's second occurrence.
pub fn locate_key_nth(text: &str, key: &str, mut nth: usize) -> Location {
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        for quoted in [key.to_owned(), format!("\"{key}\""), format!("'{key}'")] {
            if let Some(rest) = trimmed.strip_prefix(quoted.as_str()) {
                if rest.trim_start().starts_with(':') {
                    if nth == 0 {
                        return Location::new(Some(i + 1), Some(indent + 1));
                    }
                    nth -= 1;
                }
            }
        }
    }
    Location::default()
}

/// The line of `text` at `at`, with carets under the token that starts at its column (up
/// to the next white space; at least one caret), in the shape zt-policy gives expression
/// errors:
///
/// ```text
///   |
/// 4 |   connectTimeout: 30x
///   |                   ^^^
/// ```
///
/// `None` when the line is unknown or past the end of the text. Without a column the
/// whole line is underlined from its first non-blank character. Tabs before the column
/// are kept, so the carets line up in a terminal whatever its tab width.
pub fn underline(text: &str, at: Location) -> Option<String> {
    let line_no = at.line?;
    let line = text.lines().nth(line_no.checked_sub(1)?)?;
    let chars: Vec<char> = line.chars().collect();
    let (start, width) = match at.column {
        Some(column) => {
            // A column just past the end (a missing value) gets one caret there.
            let start = column.saturating_sub(1).min(chars.len());
            let width = chars[start..]
                .iter()
                .take_while(|c| !c.is_whitespace())
                .count();
            (start, width.max(1))
        }
        None => {
            let start = chars.iter().take_while(|c| c.is_whitespace()).count();
            (start, chars.len().saturating_sub(start).max(1))
        }
    };
    let pad: String = chars[..start]
        .iter()
        .map(|&c| if c == '\t' { '\t' } else { ' ' })
        .collect();
    let gutter = " ".repeat(line_no.to_string().len());
    Some(format!(
        "{gutter} |\n{line_no} | {line}\n{gutter} | {pad}{}",
        "^".repeat(width)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_print_as_a_file_name_suffix() {
        assert_eq!(Location::new(Some(4), Some(19)).to_string(), ":4:19");
        assert_eq!(Location::new(Some(4), None).to_string(), ":4");
        assert_eq!(Location::new(None, Some(3)).to_string(), "");
        assert_eq!(Location::default().to_string(), "");
        assert_eq!(KeyPrefix("a.b").to_string(), "`a.b`: ");
        assert_eq!(KeyPrefix("").to_string(), "");
    }

    #[test]
    fn keys_are_found_bare_or_quoted_and_by_occurrence() {
        let text = "tunnel: a\n  \"metrics\" : x\ntunnel: b\n'edge': c\n";
        assert_eq!(locate_key(text, "tunnel"), Location::new(Some(1), Some(1)));
        assert_eq!(locate_key(text, "metrics"), Location::new(Some(2), Some(3)));
        assert_eq!(locate_key(text, "edge"), Location::new(Some(4), Some(1)));
        assert_eq!(
            locate_key_nth(text, "tunnel", 1),
            Location::new(Some(3), Some(1))
        );
        assert_eq!(locate_key_nth(text, "tunnel", 2), Location::default());
        // A value that starts like the key is not the key.
        assert_eq!(locate_key("tunnels: x\n", "tunnel"), Location::default());
    }

    #[test]
    fn underlines_the_token_at_the_column() {
        let text = "tunnel: t\nwarp-routing:\n  connectTimeout: 30x  # too long\n";
        assert_eq!(
            underline(text, Location::new(Some(3), Some(19))).unwrap(),
            "  |\n3 |   connectTimeout: 30x  # too long\n  |                   ^^^"
        );
        // No column: the line's text.
        assert_eq!(
            underline(text, Location::new(Some(2), None)).unwrap(),
            "  |\n2 | warp-routing:\n  | ^^^^^^^^^^^^^"
        );
        // Past the end of the line: one caret after it.
        assert_eq!(
            underline("a:\n", Location::new(Some(1), Some(9))).unwrap(),
            "  |\n1 | a:\n  |   ^"
        );
        // Tabs before the column are kept; columns count characters, not bytes.
        assert_eq!(
            underline("\té: x\n", Location::new(Some(1), Some(5))).unwrap(),
            "  |\n1 | \té: x\n  | \t   ^"
        );
        // A wide line number widens the gutter.
        let long: String = "x\n".repeat(11);
        assert_eq!(
            underline(&long, Location::new(Some(10), Some(1))).unwrap(),
            "   |\n10 | x\n   | ^"
        );
    }

    #[test]
    fn nothing_to_underline_without_a_line_in_the_text() {
        assert_eq!(underline("a: b\n", Location::default()), None);
        assert_eq!(underline("a: b\n", Location::new(Some(0), Some(1))), None);
        assert_eq!(underline("a: b\n", Location::new(Some(2), Some(1))), None);
        assert_eq!(underline("", Location::new(Some(1), Some(1))), None);
    }
}
