//! Recursive-descent parser: tokens to a syntax tree with byte spans.
//!
//! Precedence, loosest first, as in wirefilter: `or`/`||`, `xor`/`^^`, `and`/`&&`,
//! `not`/`!`. Chains of one operator become one n-ary node, so a long `a and b and c ...`
//! adds no depth; everything that does nest (parentheses, `not`, `any`, `all`, `lower`)
//! counts against [`MAX_NESTING`](crate::MAX_NESTING), which bounds the recursion of every
//! later pass.

use std::net::IpAddr;
use std::ops::Range;

use ipnet::IpNet;

use super::error::{ExprError, ExprErrorKind};
use super::lexer::{tokenize, Tok, Token};

/// Logical connectives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogicOp {
    And,
    Or,
    Xor,
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Contains,
    Matches,
    In,
}

impl CmpOp {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::Contains => "contains",
            CmpOp::Matches => "matches",
            CmpOp::In => "in",
        }
    }

    /// Applies an ordering operator to the result of `Ord::cmp(value, literal)`.
    pub(crate) fn holds(self, ord: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::{Equal, Greater, Less};
        match self {
            CmpOp::Eq => ord == Equal,
            CmpOp::Ne => ord != Equal,
            CmpOp::Lt => ord == Less,
            CmpOp::Le => ord != Greater,
            CmpOp::Gt => ord == Greater,
            CmpOp::Ge => ord != Less,
            CmpOp::Contains | CmpOp::Matches | CmpOp::In => false,
        }
    }
}

/// A boolean expression.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    /// Two or more terms joined by one connective.
    Logic { op: LogicOp, terms: Vec<Expr> },
    Not {
        inner: Box<Expr>,
        span: Range<usize>,
    },
    /// `any(...)` (`all == false`) or `all(...)`.
    Quant {
        all: bool,
        inner: Box<Expr>,
        span: Range<usize>,
    },
    /// A field compared with something, or a bare field used as a condition (`rhs: None`).
    Compare {
        lhs: Value,
        rhs: Option<(CmpOp, Range<usize>, Rhs)>,
    },
}

/// The left side of a comparison: a field, possibly expanded with `[*]`, possibly lowered.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Value {
    pub(crate) field: String,
    pub(crate) field_span: Range<usize>,
    pub(crate) expand: bool,
    pub(crate) lower: bool,
    pub(crate) span: Range<usize>,
}

/// The right side of a comparison.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Rhs {
    Lit(Literal),
    Set(Vec<Literal>, Range<usize>),
    List(String, Range<usize>),
}

/// A literal value and its span.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Literal {
    pub(crate) kind: LitKind,
    pub(crate) span: Range<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum LitKind {
    Int(i64),
    IntRange(i64, i64),
    Ip(IpAddr),
    Cidr(IpNet),
    Str(String),
    Bool(bool),
}

impl LitKind {
    pub(crate) fn describe(&self) -> &'static str {
        match self {
            LitKind::Int(_) => "an integer",
            LitKind::IntRange(..) => "an integer range",
            LitKind::Ip(_) => "an IP address",
            LitKind::Cidr(_) => "a CIDR",
            LitKind::Str(_) => "a string",
            LitKind::Bool(_) => "a boolean",
        }
    }
}

impl Expr {
    /// Byte span of the whole expression.
    pub(crate) fn span(&self) -> Range<usize> {
        match self {
            Expr::Logic { terms, .. } => {
                let start = terms.first().map_or(0, |t| t.span().start);
                let end = terms.last().map_or(0, |t| t.span().end);
                start..end
            }
            Expr::Not { span, .. } | Expr::Quant { span, .. } => span.clone(),
            Expr::Compare { lhs, rhs } => match rhs {
                None => lhs.span.clone(),
                Some((_, _, rhs)) => lhs.span.start..rhs.span().end,
            },
        }
    }
}

impl Rhs {
    pub(crate) fn span(&self) -> Range<usize> {
        match self {
            Rhs::Lit(l) => l.span.clone(),
            Rhs::Set(_, s) | Rhs::List(_, s) => s.clone(),
        }
    }
}

/// Parses a whole expression.
pub(crate) fn parse(src: &str) -> Result<Expr, ExprError> {
    if src.len() > crate::MAX_EXPR_LEN {
        return Err(ExprError::new(
            ExprErrorKind::TooLong {
                len: src.len(),
                max: crate::MAX_EXPR_LEN,
            },
            crate::MAX_EXPR_LEN..src.len(),
            src,
        ));
    }
    let toks = tokenize(src)?;
    let mut p = Parser {
        src,
        toks,
        pos: 0,
        depth: 0,
    };
    if p.peek() == &Tok::Eof {
        return Err(p.err(ExprErrorKind::Empty, 0..src.len()));
    }
    let e = p.parse_or()?;
    if p.peek() != &Tok::Eof {
        return Err(p.unexpected("`and`, `or`, `xor` or the end of the expression"));
    }
    Ok(e)
}

struct Parser<'s> {
    src: &'s str,
    toks: Vec<Token>,
    pos: usize,
    depth: usize,
}

fn is_field_name(w: &str) -> bool {
    !w.is_empty()
        && w.split('.').all(|seg| {
            let mut cs = seg.chars();
            matches!(cs.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
                && cs.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
}

const KEYWORDS: &[&str] = &[
    "and", "or", "xor", "not", "in", "contains", "matches", "any", "all", "lower", "eq", "ne",
    "lt", "le", "gt", "ge",
];

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos.min(self.toks.len() - 1)].tok
    }

    fn peek_at(&self, n: usize) -> &Tok {
        &self.toks[(self.pos + n).min(self.toks.len() - 1)].tok
    }

    fn span(&self) -> Range<usize> {
        self.toks[self.pos.min(self.toks.len() - 1)].span.clone()
    }

    fn bump(&mut self) -> Token {
        let t = self.toks[self.pos.min(self.toks.len() - 1)].clone();
        if self.pos < self.toks.len() - 1 {
            self.pos += 1;
        }
        t
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Tok::Word(x) if x == w)
    }

    fn err(&self, kind: ExprErrorKind, span: Range<usize>) -> ExprError {
        ExprError::new(kind, span, self.src)
    }

    fn unexpected(&self, expected: &'static str) -> ExprError {
        self.err(
            ExprErrorKind::Unexpected {
                expected,
                found: self.peek().describe(),
            },
            self.span(),
        )
    }

    fn expect(&mut self, tok: Tok, expected: &'static str) -> Result<Token, ExprError> {
        if self.peek() == &tok {
            Ok(self.bump())
        } else {
            Err(self.unexpected(expected))
        }
    }

    fn enter(&mut self) -> Result<(), ExprError> {
        self.depth += 1;
        if self.depth > crate::MAX_NESTING {
            return Err(self.err(
                ExprErrorKind::TooDeep {
                    max: crate::MAX_NESTING,
                },
                self.span(),
            ));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    fn chain(
        &mut self,
        op: LogicOp,
        words: (&str, Tok),
        next: fn(&mut Self) -> Result<Expr, ExprError>,
    ) -> Result<Expr, ExprError> {
        let first = next(self)?;
        let mut rest = Vec::new();
        while self.is_word(words.0) || self.peek() == &words.1 {
            self.bump();
            rest.push(next(self)?);
        }
        if rest.is_empty() {
            return Ok(first);
        }
        let mut terms = Vec::with_capacity(rest.len() + 1);
        terms.push(first);
        terms.extend(rest);
        Ok(Expr::Logic { op, terms })
    }

    fn parse_or(&mut self) -> Result<Expr, ExprError> {
        self.chain(LogicOp::Or, ("or", Tok::OrOr), Self::parse_xor)
    }

    fn parse_xor(&mut self) -> Result<Expr, ExprError> {
        self.chain(LogicOp::Xor, ("xor", Tok::XorXor), Self::parse_and)
    }

    fn parse_and(&mut self) -> Result<Expr, ExprError> {
        self.chain(LogicOp::And, ("and", Tok::AndAnd), Self::parse_unary)
    }

    fn parse_unary(&mut self) -> Result<Expr, ExprError> {
        if self.is_word("not") || self.peek() == &Tok::Bang {
            let start = self.span().start;
            self.enter()?;
            self.bump();
            let inner = self.parse_unary()?;
            self.leave();
            let span = start..inner.span().end;
            return Ok(Expr::Not {
                inner: Box::new(inner),
                span,
            });
        }
        self.parse_primary()
    }

    fn parse_primary(&mut self) -> Result<Expr, ExprError> {
        match self.peek() {
            Tok::LParen => {
                self.enter()?;
                self.bump();
                let e = self.parse_or()?;
                self.expect(Tok::RParen, "`)`")?;
                self.leave();
                Ok(e)
            }
            Tok::Word(w) if (w == "any" || w == "all") && self.peek_at(1) == &Tok::LParen => {
                let all = w == "all";
                let start = self.span().start;
                self.enter()?;
                self.bump();
                self.bump();
                let inner = self.parse_or()?;
                let close = self.expect(Tok::RParen, "`)`")?;
                self.leave();
                Ok(Expr::Quant {
                    all,
                    inner: Box::new(inner),
                    span: start..close.span.end,
                })
            }
            _ => self.parse_comparison(),
        }
    }

    fn parse_value(&mut self) -> Result<Value, ExprError> {
        let start = self.span().start;
        let mut v = match self.peek().clone() {
            Tok::Word(w) if w == "lower" && self.peek_at(1) == &Tok::LParen => {
                self.enter()?;
                self.bump();
                self.bump();
                let mut inner = self.parse_value()?;
                let close = self.expect(Tok::RParen, "`)`")?;
                self.leave();
                inner.lower = true;
                inner.span = start..close.span.end;
                inner
            }
            Tok::Word(w) if is_field_name(&w) && !KEYWORDS.contains(&w.as_str()) => {
                let t = self.bump();
                Value {
                    field: w,
                    field_span: t.span.clone(),
                    expand: false,
                    lower: false,
                    span: t.span,
                }
            }
            _ => {
                return Err(self.unexpected("a field name, `not`, `(`, `any(`, `all(` or `lower(`"))
            }
        };
        if self.peek() == &Tok::LBracket {
            self.bump();
            self.expect(Tok::Star, "`*` (only `[*]` is supported)")?;
            let close = self.expect(Tok::RBracket, "`]`")?;
            v.expand = true;
            v.span = v.span.start..close.span.end;
        }
        Ok(v)
    }

    fn parse_comparison(&mut self) -> Result<Expr, ExprError> {
        let lhs = self.parse_value()?;
        let op_span = self.span();
        let op = match self.peek() {
            Tok::EqEq => Some(CmpOp::Eq),
            Tok::Ne => Some(CmpOp::Ne),
            Tok::Lt => Some(CmpOp::Lt),
            Tok::Le => Some(CmpOp::Le),
            Tok::Gt => Some(CmpOp::Gt),
            Tok::Ge => Some(CmpOp::Ge),
            Tok::Tilde => Some(CmpOp::Matches),
            Tok::Word(w) => match w.as_str() {
                "eq" => Some(CmpOp::Eq),
                "ne" => Some(CmpOp::Ne),
                "lt" => Some(CmpOp::Lt),
                "le" => Some(CmpOp::Le),
                "gt" => Some(CmpOp::Gt),
                "ge" => Some(CmpOp::Ge),
                "in" => Some(CmpOp::In),
                "contains" => Some(CmpOp::Contains),
                "matches" => Some(CmpOp::Matches),
                "and" | "or" | "xor" => None,
                _ => return Err(self.unexpected("a comparison operator (==, !=, <, <=, >, >=, in, contains, matches), `and`, `or` or `xor`")),
            },
            Tok::Str(_) | Tok::List(_) | Tok::LBrace => {
                return Err(self.unexpected("a comparison operator (==, !=, <, <=, >, >=, in, contains, matches), `and`, `or` or `xor`"))
            }
            _ => None,
        };
        let Some(op) = op else {
            return Ok(Expr::Compare { lhs, rhs: None });
        };
        self.bump();
        let rhs = match op {
            CmpOp::In => match self.peek().clone() {
                Tok::List(name) => {
                    let t = self.bump();
                    Rhs::List(name, t.span)
                }
                Tok::LBrace => self.parse_set()?,
                _ => return Err(self.unexpected("a set `{...}` or a list `$name` after `in`")),
            },
            _ => Rhs::Lit(self.parse_literal()?),
        };
        Ok(Expr::Compare {
            lhs,
            rhs: Some((op, op_span, rhs)),
        })
    }

    fn parse_set(&mut self) -> Result<Rhs, ExprError> {
        let open = self.bump();
        let mut items = Vec::new();
        loop {
            match self.peek() {
                Tok::RBrace => break,
                Tok::Comma if !items.is_empty() => {
                    self.bump();
                }
                _ => items.push(self.parse_literal()?),
            }
        }
        let close = self.bump();
        let span = open.span.start..close.span.end;
        if items.is_empty() {
            return Err(self.err(ExprErrorKind::EmptySet, span));
        }
        Ok(Rhs::Set(items, span))
    }

    fn parse_literal(&mut self) -> Result<Literal, ExprError> {
        let span = self.span();
        let kind = match self.peek().clone() {
            Tok::Str(s) => LitKind::Str(s),
            Tok::Word(w) => self.word_literal(&w, span.clone())?,
            _ => {
                return Err(self
                    .unexpected("a value (number, IP address, CIDR, true/false or quoted string)"))
            }
        };
        self.bump();
        Ok(Literal { kind, span })
    }

    fn word_literal(&self, w: &str, span: Range<usize>) -> Result<LitKind, ExprError> {
        match w {
            "true" => return Ok(LitKind::Bool(true)),
            "false" => return Ok(LitKind::Bool(false)),
            _ => {}
        }
        let int =
            |s: &str| -> Option<Result<i64, ExprError>> {
                if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                Some(s.parse::<i64>().map_err(|_| {
                    self.err(ExprErrorKind::IntOutOfRange(s.to_owned()), span.clone())
                }))
            };
        if let Some(n) = int(w) {
            return n.map(LitKind::Int);
        }
        if let Some((a, b)) = w.split_once("..") {
            if let (Some(lo), Some(hi)) = (int(a), int(b)) {
                let (lo, hi) = (lo?, hi?);
                if lo > hi {
                    return Err(self.err(ExprErrorKind::EmptyRange { lo, hi }, span));
                }
                return Ok(LitKind::IntRange(lo, hi));
            }
        }
        if let Ok(ip) = w.parse::<IpAddr>() {
            return Ok(LitKind::Ip(ip));
        }
        if let Ok(net) = w.parse::<IpNet>() {
            if net.trunc() != net {
                return Err(self.err(
                    ExprErrorKind::HostBitsSet {
                        cidr: w.to_owned(),
                        network: net.trunc().to_string(),
                    },
                    span,
                ));
            }
            return Ok(LitKind::Cidr(net));
        }
        Err(self.err(ExprErrorKind::InvalidLiteral(w.to_owned()), span))
    }
}
