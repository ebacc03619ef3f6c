//! Expression errors with byte spans, rendered like a compiler's diagnostics.
//!
//! Every error carries the byte range of the offending text in the expression it came
//! from, so an operator who mistyped one character of a long rule sees exactly which one.

use std::fmt;
use std::ops::Range;

use crate::list::ListType;

use super::scheme::FieldType;

/// What went wrong in an expression. The [`ExprError`] around it says where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExprErrorKind {
    /// The expression is longer than [`MAX_EXPR_LEN`](crate::MAX_EXPR_LEN) bytes.
    #[error("expression is {len} bytes long; the limit is {max}")]
    TooLong {
        /// Length of the expression in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The expression is empty where one is required.
    #[error("empty expression")]
    Empty,
    /// A character that starts no token.
    #[error("unexpected character `{0}`")]
    UnexpectedChar(char),
    /// A string literal without its closing quote.
    #[error("unterminated string literal")]
    UnterminatedString,
    /// An escape sequence the string syntax does not know.
    #[error(
        "unknown escape `\\{0}` in string; regular expressions are easier as raw strings: r\"...\""
    )]
    UnknownEscape(char),
    /// A token in a place where the grammar wants something else.
    #[error("expected {expected}, found {found}")]
    Unexpected {
        /// What the grammar accepts here.
        expected: &'static str,
        /// The text found instead (quoted), or "end of expression".
        found: String,
    },
    /// Parentheses, `not`, `any`, `all` or `lower` nested deeper than
    /// [`MAX_NESTING`](crate::MAX_NESTING).
    #[error("nesting deeper than {max} levels")]
    TooDeep {
        /// The limit.
        max: usize,
    },
    /// A word in value position that is neither a number, an IP address nor a CIDR.
    #[error("invalid value `{0}`: expected a number, an IP address, a CIDR, true/false or a quoted string")]
    InvalidLiteral(String),
    /// An integer literal that does not fit.
    #[error("integer `{0}` is out of range")]
    IntOutOfRange(String),
    /// A range `a..b` whose start is above its end.
    #[error("range {lo}..{hi} is empty: its start is above its end")]
    EmptyRange {
        /// Start of the range.
        lo: i64,
        /// End of the range.
        hi: i64,
    },
    /// A CIDR with bits set after its prefix length, most likely a typo.
    #[error("CIDR `{cidr}` has host bits set; did you mean `{network}`?")]
    HostBitsSet {
        /// The CIDR as written.
        cidr: String,
        /// The network it truncates to.
        network: String,
    },
    /// A set literal `{}` with no elements.
    #[error("empty set `{{}}`")]
    EmptySet,
    /// A field the scheme does not have.
    #[error("unknown field `{name}`{}", suggestion_suffix(.suggestion))]
    UnknownField {
        /// The name as written.
        name: String,
        /// A known field with a similar name.
        suggestion: Option<String>,
    },
    /// A field that cannot be known in the phase the rule runs in.
    #[error("field `{field}` is not available {phase}")]
    FieldNotAvailable {
        /// The field.
        field: String,
        /// The phase, phrased for the message ("in the l4 filter", ...).
        phase: &'static str,
    },
    /// A field used in an expression slot that does not take it.
    #[error("field `{field}` cannot be used in the {slot} expression; {hint}")]
    WrongSlot {
        /// The field.
        field: String,
        /// The slot: `identity` or `device_posture`.
        slot: &'static str,
        /// Where it belongs.
        hint: &'static str,
    },
    /// An operator the field's type does not support.
    #[error("operator `{op}` is not defined for {ty} field `{field}`{}", hint_suffix(.hint))]
    BadOperator {
        /// The operator as written.
        op: String,
        /// The field.
        field: String,
        /// The field's type.
        ty: FieldType,
        /// How to say it instead, when there is a way.
        hint: Option<&'static str>,
    },
    /// A literal of the wrong type for the field it is compared with.
    #[error("expected {expected} to compare with `{field}`, found {found}")]
    LiteralType {
        /// The field.
        field: String,
        /// The literal type the field needs.
        expected: &'static str,
        /// What the literal is.
        found: &'static str,
    },
    /// A list reference that names no list.
    #[error("unknown list `${0}`: refer to a list by its id without dashes or by its slug")]
    UnknownList(String),
    /// A list whose type does not fit the field.
    #[error("list `${list}` has type {list_type}; `{field}` needs {expected}")]
    ListType {
        /// The list reference as written (without `$`).
        list: String,
        /// The list's type.
        list_type: ListType,
        /// The field.
        field: String,
        /// What the field accepts ("an IP list", "no list", ...).
        expected: &'static str,
    },
    /// `lower(field) in $list`: list lookups ignore ASCII case already.
    #[error("lower() is not allowed before `in ${0}`: list lookups already ignore ASCII case")]
    LowerWithList(String),
    /// A `matches` pattern that does not compile.
    #[error("invalid regular expression: {0}")]
    BadRegex(String),
    /// A `matches` pattern whose compiled form exceeds the size bound.
    #[error("regular expression is too large (compiled size limit {limit} bytes)")]
    RegexTooLarge {
        /// The limit.
        limit: usize,
    },
    /// `field[*]` on a field that is not an array.
    #[error("`{0}` is not an array; remove `[*]`")]
    NotAnArray(String),
    /// An array field used without `[*]`.
    #[error("`{0}` is an array; write `any({0}[*] ...)` or `all({0}[*] ...)`")]
    ArrayWithoutExpand(String),
    /// A `field[*]` comparison outside `any(...)`/`all(...)`.
    #[error("a `[*]` comparison yields one result per element; wrap it in any(...) or all(...)")]
    ArrayNotReduced,
    /// `any(...)`/`all(...)` around something that is not a `[*]` comparison.
    #[error("{0}(...) needs a `field[*]` comparison inside")]
    QuantifierNeedsArray(&'static str),
    /// A field used alone as a condition that is not boolean.
    #[error("`{field}` has type {ty}, not boolean: compare it with something to make a condition")]
    NotACondition {
        /// The field.
        field: String,
        /// Its type.
        ty: FieldType,
    },
    /// `lower()` on a field that is not a string.
    #[error("lower() takes a string, but `{field}` has type {ty}")]
    LowerNeedsString {
        /// The field.
        field: String,
        /// Its type.
        ty: FieldType,
    },
}

fn suggestion_suffix(s: &Option<String>) -> String {
    s.as_ref()
        .map(|s| format!("; did you mean `{s}`?"))
        .unwrap_or_default()
}

fn hint_suffix(s: &Option<&'static str>) -> String {
    s.map(|s| format!("; {s}")).unwrap_or_default()
}

/// An error in a filter expression: what is wrong ([`kind`](Self::kind)), where
/// ([`span`](Self::span), a byte range), and the expression itself so that it renders with a
/// caret under the offending text:
///
/// ```text
/// unknown field `net.dst.prot`; did you mean `net.dst.port`?
///   |
/// 1 | net.dst.prot == 443
///   | ^^^^^^^^^^^^
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprError {
    kind: ExprErrorKind,
    span: Range<usize>,
    source: String,
}

impl ExprError {
    pub(crate) fn new(kind: ExprErrorKind, span: Range<usize>, source: &str) -> Self {
        // Keep the span inside the text and on character boundaries so rendering never
        // slices through a UTF-8 sequence.
        let mut start = span.start.min(source.len());
        while !source.is_char_boundary(start) {
            start -= 1;
        }
        let mut end = span.end.clamp(start, source.len());
        while !source.is_char_boundary(end) {
            end += 1;
        }
        // Very long inputs are refused before parsing; do not keep a copy of them.
        let source = if source.len() > crate::MAX_EXPR_LEN {
            String::new()
        } else {
            source.to_owned()
        };
        Self {
            kind,
            span: start..end,
            source,
        }
    }

    /// What is wrong.
    pub fn kind(&self) -> &ExprErrorKind {
        &self.kind
    }

    /// Byte range of the offending text in the expression. An error at the end of the
    /// input has an empty range at its length.
    pub fn span(&self) -> Range<usize> {
        self.span.clone()
    }

    /// The expression the error is about (empty if it was refused for its length).
    pub fn source_text(&self) -> &str {
        &self.source
    }

    /// The line of the expression holding the error, its 1-based number, and the caret line
    /// (spaces then `^` under the span; at least one caret).
    fn caret(&self) -> Option<(usize, &str, String)> {
        if self.source.is_empty() {
            return None;
        }
        let line_start = self.source[..self.span.start]
            .rfind('\n')
            .map_or(0, |i| i + 1);
        let line_end = self.source[self.span.start..]
            .find('\n')
            .map_or(self.source.len(), |i| self.span.start + i);
        let line = &self.source[line_start..line_end];
        let line_no = self.source[..line_start].matches('\n').count() + 1;
        let pad = self.source[line_start..self.span.start].chars().count();
        let width = self.source[self.span.start..self.span.end.min(line_end)]
            .chars()
            .count()
            .max(1);
        Some((
            line_no,
            line,
            format!("{}{}", " ".repeat(pad), "^".repeat(width)),
        ))
    }
}

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)?;
        if let Some((line_no, line, caret)) = self.caret() {
            let gutter = " ".repeat(line_no.to_string().len());
            write!(f, "\n{gutter} |\n{line_no} | {line}\n{gutter} | {caret}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ExprError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.kind)
    }
}
