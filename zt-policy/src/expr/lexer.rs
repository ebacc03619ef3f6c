//! Tokens of the filter language.
//!
//! Words (field names, keywords, numbers, IP addresses, CIDRs, ranges) share one lexical
//! class — runs of `[A-Za-z0-9_.:/@-]` — and the parser interprets them by position, as
//! wirefilter does: `2001:db8::1` and `net.dst.ip` are both words, and which one is meant is
//! clear from where it stands.

use std::ops::Range;

use super::error::{ExprError, ExprErrorKind};

/// One token and its byte span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token {
    pub(crate) tok: Tok,
    pub(crate) span: Range<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tok {
    LParen,
    RParen,
    LBrace,
    RBrace,
    LBracket,
    RBracket,
    Star,
    Comma,
    EqEq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Bang,
    AndAnd,
    OrOr,
    XorXor,
    Tilde,
    Str(String),
    Word(String),
    /// `$name`: a list reference (name without the `$`).
    List(String),
    Eof,
}

impl Tok {
    /// How the token is shown in "found ..." messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            Tok::Str(s) => format!("string \"{s}\""),
            Tok::Word(w) => format!("`{w}`"),
            Tok::List(l) => format!("`${l}`"),
            Tok::Eof => "end of expression".to_owned(),
            other => format!("`{}`", other.punct()),
        }
    }

    fn punct(&self) -> &'static str {
        match self {
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::LBrace => "{",
            Tok::RBrace => "}",
            Tok::LBracket => "[",
            Tok::RBracket => "]",
            Tok::Star => "*",
            Tok::Comma => ",",
            Tok::EqEq => "==",
            Tok::Ne => "!=",
            Tok::Lt => "<",
            Tok::Le => "<=",
            Tok::Gt => ">",
            Tok::Ge => ">=",
            Tok::Bang => "!",
            Tok::AndAnd => "&&",
            Tok::OrOr => "||",
            Tok::XorXor => "^^",
            Tok::Tilde => "~",
            Tok::Str(_) | Tok::Word(_) | Tok::List(_) | Tok::Eof => "",
        }
    }
}

fn is_word_start(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '/' | '-' | '@')
}

/// Splits `src` into tokens, ending with [`Tok::Eof`].
pub(crate) fn tokenize(src: &str) -> Result<Vec<Token>, ExprError> {
    let err = |kind, span: Range<usize>| ExprError::new(kind, span, src);
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < src.len() {
        let c = src[i..].chars().next().unwrap_or(' ');
        let start = i;
        if c.is_whitespace() {
            i += c.len_utf8();
            continue;
        }
        let two = bytes.get(i + 1).copied();
        let (tok, len) = match (c, two) {
            ('(', _) => (Tok::LParen, 1),
            (')', _) => (Tok::RParen, 1),
            ('{', _) => (Tok::LBrace, 1),
            ('}', _) => (Tok::RBrace, 1),
            ('[', _) => (Tok::LBracket, 1),
            (']', _) => (Tok::RBracket, 1),
            ('*', _) => (Tok::Star, 1),
            (',', _) => (Tok::Comma, 1),
            ('~', _) => (Tok::Tilde, 1),
            ('=', Some(b'=')) => (Tok::EqEq, 2),
            ('!', Some(b'=')) => (Tok::Ne, 2),
            ('!', _) => (Tok::Bang, 1),
            ('<', Some(b'=')) => (Tok::Le, 2),
            ('<', _) => (Tok::Lt, 1),
            ('>', Some(b'=')) => (Tok::Ge, 2),
            ('>', _) => (Tok::Gt, 1),
            ('&', Some(b'&')) => (Tok::AndAnd, 2),
            ('|', Some(b'|')) => (Tok::OrOr, 2),
            ('^', Some(b'^')) => (Tok::XorXor, 2),
            ('"', _) => {
                let (s, end) = lex_string(src, i)?;
                out.push(Token {
                    tok: Tok::Str(s),
                    span: start..end,
                });
                i = end;
                continue;
            }
            ('r', Some(b'"' | b'#')) => {
                let (s, end) = lex_raw_string(src, i)?;
                out.push(Token {
                    tok: Tok::Str(s),
                    span: start..end,
                });
                i = end;
                continue;
            }
            ('$', _) => {
                let end = word_end(src, i + 1);
                if end == i + 1 {
                    return Err(err(
                        ExprErrorKind::Unexpected {
                            expected: "a list id or slug after `$`",
                            found: next_char_description(src, i + 1),
                        },
                        start..(i + 1),
                    ));
                }
                out.push(Token {
                    tok: Tok::List(src[i + 1..end].to_owned()),
                    span: start..end,
                });
                i = end;
                continue;
            }
            (c, _) if is_word_start(c) => {
                let end = word_end(src, i);
                out.push(Token {
                    tok: Tok::Word(src[i..end].to_owned()),
                    span: start..end,
                });
                i = end;
                continue;
            }
            (c, _) => {
                return Err(err(
                    ExprErrorKind::UnexpectedChar(c),
                    start..start + c.len_utf8(),
                ))
            }
        };
        out.push(Token {
            tok,
            span: start..start + len,
        });
        i += len;
    }
    out.push(Token {
        tok: Tok::Eof,
        span: src.len()..src.len(),
    });
    Ok(out)
}

fn next_char_description(src: &str, at: usize) -> String {
    match src[at..].chars().next() {
        Some(c) => format!("`{c}`"),
        None => "end of expression".to_owned(),
    }
}

fn word_end(src: &str, from: usize) -> usize {
    src[from..]
        .char_indices()
        .find(|&(_, c)| !is_word_char(c))
        .map_or(src.len(), |(j, _)| from + j)
}

/// A `"..."` string starting at `start` (the quote). Returns the value and the end offset.
fn lex_string(src: &str, start: usize) -> Result<(String, usize), ExprError> {
    let mut out = String::new();
    let mut chars = src[start + 1..].char_indices();
    while let Some((j, c)) = chars.next() {
        let at = start + 1 + j;
        match c {
            '"' => return Ok((out, at + 1)),
            '\\' => {
                let Some((_, e)) = chars.next() else {
                    break;
                };
                match e {
                    '"' => out.push('"'),
                    '\\' => out.push('\\'),
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    other => {
                        return Err(ExprError::new(
                            ExprErrorKind::UnknownEscape(other),
                            at..at + 1 + other.len_utf8(),
                            src,
                        ))
                    }
                }
            }
            c => out.push(c),
        }
    }
    Err(ExprError::new(
        ExprErrorKind::UnterminatedString,
        start..src.len(),
        src,
    ))
}

/// A raw string `r"..."` or `r#"..."#` (any number of `#`), no escapes.
fn lex_raw_string(src: &str, start: usize) -> Result<(String, usize), ExprError> {
    let rest = &src[start + 1..];
    let hashes = rest.bytes().take_while(|&b| b == b'#').count();
    if rest.as_bytes().get(hashes) != Some(&b'"') {
        return Err(ExprError::new(
            ExprErrorKind::Unexpected {
                expected: "`\"` to open a raw string",
                found: next_char_description(src, start + 1 + hashes),
            },
            start..start + 1 + hashes,
            src,
        ));
    }
    let body_start = start + 1 + hashes + 1;
    let closing: String = std::iter::once('"')
        .chain(std::iter::repeat_n('#', hashes))
        .collect();
    match src[body_start..].find(&closing) {
        Some(j) => Ok((
            src[body_start..body_start + j].to_owned(),
            body_start + j + closing.len(),
        )),
        None => Err(ExprError::new(
            ExprErrorKind::UnterminatedString,
            start..src.len(),
            src,
        )),
    }
}
