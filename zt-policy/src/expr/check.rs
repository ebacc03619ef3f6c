//! Type checking against the field scheme: syntax tree in, typed tree out.
//!
//! This pass is where a policy is refused rather than silently misread: unknown fields,
//! fields that cannot be known in the rule's phase, operators a type lacks, literals of the
//! wrong type, unknown lists, lists of the wrong type, and regular expressions too large to
//! bound. Its output has every field resolved, every list resolved to an index and every
//! regular expression compiled.

use std::collections::HashMap;
use std::net::IpAddr;
use std::ops::Range;

use ipnet::IpNet;
use regex::{Regex, RegexBuilder};

use super::error::{ExprError, ExprErrorKind};
use super::parser::{CmpOp, Expr, LitKind, Literal, LogicOp, Rhs, Value};
use super::scheme::{lookup, suggest, FieldId, FieldType, Stage};
use crate::list::ListType;
use crate::rule::ExprSlot;

/// A typed, resolved boolean expression.
#[derive(Debug, Clone)]
pub(crate) enum TExpr {
    And(Vec<TExpr>),
    Or(Vec<TExpr>),
    Xor(Vec<TExpr>),
    Not(Box<TExpr>),
    /// `any(...)`/`all(...)` over the elements of an array field.
    Quant {
        all: bool,
        pred: ElemPred,
    },
    Cmp(Cmp),
}

/// A comparison applied to each element of an array, possibly negated.
#[derive(Debug, Clone)]
pub(crate) struct ElemPred {
    pub(crate) negate: bool,
    pub(crate) cmp: Cmp,
}

/// One field tested against something.
#[derive(Debug, Clone)]
pub(crate) struct Cmp {
    pub(crate) field: FieldId,
    pub(crate) lower: bool,
    pub(crate) test: Test,
}

#[derive(Debug, Clone)]
pub(crate) enum Test {
    Ip(CmpOp, IpAddr),
    IpSet(Vec<IpNet>),
    Int(CmpOp, i64),
    /// Inclusive ranges; a single value is a range of one.
    IntSet(Vec<(i64, i64)>),
    Str(CmpOp, String),
    Contains(String),
    Matches(Regex),
    StrSet(Vec<String>),
    /// Membership in the list at this index of the policy's lists.
    InList(usize),
    Bool(bool),
}

/// Resolves `$name` references: a list id without dashes (any case) or a slug.
#[derive(Debug, Default, Clone)]
pub(crate) struct ListNames {
    map: HashMap<String, (usize, ListType)>,
}

impl ListNames {
    pub(crate) fn insert(&mut self, name: String, index: usize, ty: ListType) {
        self.map.insert(name, (index, ty));
    }

    pub(crate) fn get(&self, name: &str) -> Option<(usize, ListType)> {
        self.map
            .get(name)
            .or_else(|| self.map.get(&name.to_ascii_lowercase()))
            .copied()
    }
}

/// Compiled size bound of one `matches` pattern. The regex crate's default (10 MiB) is
/// far more than an access rule needs, and a policy holds up to thousands of rules; 256 KiB
/// admits any realistic host or e-mail pattern.
pub const MAX_REGEX_SIZE: usize = 256 * 1024;

/// Nesting bound inside one regular expression (the regex crate's default is 250).
const REGEX_NEST_LIMIT: u32 = 64;

enum Checked {
    Bool(TExpr),
    Arr(ElemPred, Range<usize>),
}

pub(crate) struct Checker<'a> {
    pub(crate) src: &'a str,
    pub(crate) stage: Stage,
    pub(crate) slot: ExprSlot,
    pub(crate) lists: &'a ListNames,
}

impl Checker<'_> {
    fn err(&self, kind: ExprErrorKind, span: Range<usize>) -> ExprError {
        ExprError::new(kind, span, self.src)
    }

    pub(crate) fn check(&self, e: &Expr) -> Result<TExpr, ExprError> {
        match self.expr(e)? {
            Checked::Bool(t) => Ok(t),
            Checked::Arr(_, span) => Err(self.err(ExprErrorKind::ArrayNotReduced, span)),
        }
    }

    fn expr(&self, e: &Expr) -> Result<Checked, ExprError> {
        match e {
            Expr::Logic { op, terms } => {
                let terms = terms
                    .iter()
                    .map(|t| self.check(t))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Checked::Bool(match op {
                    LogicOp::And => TExpr::And(terms),
                    LogicOp::Or => TExpr::Or(terms),
                    LogicOp::Xor => TExpr::Xor(terms),
                }))
            }
            Expr::Not { inner, .. } => Ok(match self.expr(inner)? {
                Checked::Bool(t) => Checked::Bool(TExpr::Not(Box::new(t))),
                Checked::Arr(p, span) => Checked::Arr(
                    ElemPred {
                        negate: !p.negate,
                        cmp: p.cmp,
                    },
                    span,
                ),
            }),
            Expr::Quant { all, inner, span } => match self.expr(inner)? {
                Checked::Arr(pred, _) => Ok(Checked::Bool(TExpr::Quant { all: *all, pred })),
                Checked::Bool(_) => Err(self.err(
                    ExprErrorKind::QuantifierNeedsArray(if *all { "all" } else { "any" }),
                    span.clone(),
                )),
            },
            Expr::Compare { lhs, rhs } => {
                let span = e.span();
                let (cmp, expanded) = self.compare(lhs, rhs.as_ref())?;
                Ok(if expanded {
                    Checked::Arr(ElemPred { negate: false, cmp }, span)
                } else {
                    Checked::Bool(TExpr::Cmp(cmp))
                })
            }
        }
    }

    fn field(&self, v: &Value) -> Result<(FieldId, FieldType), ExprError> {
        let Some((id, ty)) = lookup(&v.field) else {
            return Err(self.err(
                ExprErrorKind::UnknownField {
                    name: v.field.clone(),
                    suggestion: suggest(&v.field),
                },
                v.field_span.clone(),
            ));
        };
        let slot_ok = match self.slot {
            ExprSlot::Traffic => true,
            ExprSlot::Identity => id.is_identity(),
            ExprSlot::DevicePosture => id.is_device(),
        };
        if !slot_ok {
            let hint = if id.is_identity() {
                "identity fields belong in the identity expression"
            } else if id.is_device() {
                "device fields belong in the device_posture expression"
            } else {
                "put it in the traffic expression"
            };
            return Err(self.err(
                ExprErrorKind::WrongSlot {
                    field: v.field.clone(),
                    slot: self.slot.as_str(),
                    hint,
                },
                v.field_span.clone(),
            ));
        }
        if !id.available(self.stage) {
            return Err(self.err(
                ExprErrorKind::FieldNotAvailable {
                    field: v.field.clone(),
                    phase: self.stage.describe(),
                },
                v.field_span.clone(),
            ));
        }
        Ok((id, ty))
    }

    /// Checks one comparison; the flag says whether it is element-wise (`field[*]`).
    fn compare(
        &self,
        v: &Value,
        rhs: Option<&(CmpOp, Range<usize>, Rhs)>,
    ) -> Result<(Cmp, bool), ExprError> {
        let (field, ty) = self.field(v)?;
        if v.expand && !ty.is_array() {
            return Err(self.err(ExprErrorKind::NotAnArray(v.field.clone()), v.span.clone()));
        }
        if !v.expand && ty.is_array() {
            return Err(self.err(
                ExprErrorKind::ArrayWithoutExpand(v.field.clone()),
                v.span.clone(),
            ));
        }
        let elem = ty.element();
        if v.lower && elem != FieldType::String {
            return Err(self.err(
                ExprErrorKind::LowerNeedsString {
                    field: v.field.clone(),
                    ty,
                },
                v.span.clone(),
            ));
        }
        let test = match rhs {
            None if elem == FieldType::Bool => Test::Bool(true),
            None => {
                return Err(self.err(
                    ExprErrorKind::NotACondition {
                        field: v.field.clone(),
                        ty,
                    },
                    v.span.clone(),
                ))
            }
            Some((op, op_span, rhs)) => self.test(v, &field, elem, *op, op_span, rhs)?,
        };
        Ok((
            Cmp {
                field,
                lower: v.lower,
                test,
            },
            v.expand,
        ))
    }

    fn bad_op(
        &self,
        v: &Value,
        ty: FieldType,
        op: CmpOp,
        op_span: &Range<usize>,
        hint: Option<&'static str>,
    ) -> ExprError {
        self.err(
            ExprErrorKind::BadOperator {
                op: self
                    .src
                    .get(op_span.clone())
                    .unwrap_or(op.as_str())
                    .to_owned(),
                field: v.field.clone(),
                ty,
                hint,
            },
            op_span.clone(),
        )
    }

    fn lit_err(&self, v: &Value, expected: &'static str, lit: &Literal) -> ExprError {
        self.err(
            ExprErrorKind::LiteralType {
                field: v.field.clone(),
                expected,
                found: lit.kind.describe(),
            },
            lit.span.clone(),
        )
    }

    fn test(
        &self,
        v: &Value,
        field: &FieldId,
        ty: FieldType,
        op: CmpOp,
        op_span: &Range<usize>,
        rhs: &Rhs,
    ) -> Result<Test, ExprError> {
        if let Rhs::List(name, span) = rhs {
            return self.list(v, field, name, span);
        }
        match ty {
            FieldType::Ip => match (op, rhs) {
                (CmpOp::In, Rhs::Set(items, _)) => items
                    .iter()
                    .map(|l| match &l.kind {
                        LitKind::Ip(ip) => Ok(IpNet::from(*ip)),
                        LitKind::Cidr(net) => Ok(*net),
                        _ => Err(self.lit_err(v, "an IP address or CIDR", l)),
                    })
                    .collect::<Result<_, _>>()
                    .map(Test::IpSet),
                (CmpOp::Contains | CmpOp::Matches, _) => {
                    Err(self.bad_op(v, ty, op, op_span, Some("use `in {...}` for networks")))
                }
                (_, Rhs::Lit(l)) => match &l.kind {
                    LitKind::Ip(ip) => Ok(Test::Ip(op, *ip)),
                    LitKind::Cidr(_) => {
                        Err(self.lit_err(v, "an IP address (test a network with `in {...}`)", l))
                    }
                    _ => Err(self.lit_err(v, "an IP address", l)),
                },
                _ => Err(self.bad_op(v, ty, op, op_span, None)),
            },
            FieldType::Int => match (op, rhs) {
                (CmpOp::In, Rhs::Set(items, _)) => items
                    .iter()
                    .map(|l| match l.kind {
                        LitKind::Int(n) => self.int_in_range(field, n, l).map(|n| (n, n)),
                        LitKind::IntRange(a, b) => {
                            self.int_in_range(field, a, l)?;
                            self.int_in_range(field, b, l)?;
                            Ok((a, b))
                        }
                        _ => Err(self.lit_err(v, "an integer or a range `a..b`", l)),
                    })
                    .collect::<Result<_, _>>()
                    .map(Test::IntSet),
                (CmpOp::Contains | CmpOp::Matches, _) => Err(self.bad_op(v, ty, op, op_span, None)),
                (_, Rhs::Lit(l)) => match l.kind {
                    LitKind::Int(n) => Ok(Test::Int(op, self.int_in_range(field, n, l)?)),
                    _ => Err(self.lit_err(v, "an integer", l)),
                },
                _ => Err(self.bad_op(v, ty, op, op_span, None)),
            },
            FieldType::String => match (op, rhs) {
                (CmpOp::In, Rhs::Set(items, _)) => items
                    .iter()
                    .map(|l| match &l.kind {
                        LitKind::Str(s) => Ok(s.clone()),
                        _ => Err(self.lit_err(v, "a quoted string", l)),
                    })
                    .collect::<Result<_, _>>()
                    .map(Test::StrSet),
                (_, Rhs::Lit(l)) => {
                    let LitKind::Str(s) = &l.kind else {
                        return Err(self.lit_err(v, "a quoted string", l));
                    };
                    match op {
                        CmpOp::Contains => Ok(Test::Contains(s.clone())),
                        CmpOp::Matches => self.regex(s, l).map(Test::Matches),
                        _ => Ok(Test::Str(op, s.clone())),
                    }
                }
                _ => Err(self.bad_op(v, ty, op, op_span, None)),
            },
            FieldType::Bool => match (op, rhs) {
                (CmpOp::Eq | CmpOp::Ne, Rhs::Lit(l)) => match l.kind {
                    LitKind::Bool(b) => Ok(Test::Bool(b == (op == CmpOp::Eq))),
                    _ => Err(self.lit_err(v, "true or false", l)),
                },
                _ => Err(self.bad_op(
                    v,
                    ty,
                    op,
                    op_span,
                    Some("use the field alone as a condition, or `not field`"),
                )),
            },
            FieldType::IpArray | FieldType::StringArray => {
                Err(self.bad_op(v, ty, op, op_span, None))
            }
        }
    }

    fn int_in_range(&self, field: &FieldId, n: i64, l: &Literal) -> Result<i64, ExprError> {
        if *field == FieldId::DstPort && n > i64::from(u16::MAX) {
            let text = self.src.get(l.span.clone()).unwrap_or_default().to_owned();
            return Err(self.err(ExprErrorKind::IntOutOfRange(text), l.span.clone()));
        }
        Ok(n)
    }

    fn list(
        &self,
        v: &Value,
        field: &FieldId,
        name: &str,
        span: &Range<usize>,
    ) -> Result<Test, ExprError> {
        let Some((index, list_type)) = self.lists.get(name) else {
            return Err(self.err(ExprErrorKind::UnknownList(name.to_owned()), span.clone()));
        };
        if v.lower {
            return Err(self.err(
                ExprErrorKind::LowerWithList(name.to_owned()),
                v.span.clone(),
            ));
        }
        let want = field.list_type();
        if want != Some(list_type) {
            let expected = match want {
                Some(ListType::Ip) => "an IP list",
                Some(ListType::Domain) => "a DOMAIN list",
                Some(ListType::Email) => "an EMAIL list",
                Some(ListType::Device) => "a DEVICE list",
                None => "no list (only IP, e-mail, device id and host fields take lists)",
            };
            return Err(self.err(
                ExprErrorKind::ListType {
                    list: name.to_owned(),
                    list_type,
                    field: v.field.clone(),
                    expected,
                },
                span.clone(),
            ));
        }
        Ok(Test::InList(index))
    }

    fn regex(&self, pattern: &str, l: &Literal) -> Result<Regex, ExprError> {
        RegexBuilder::new(pattern)
            .size_limit(MAX_REGEX_SIZE)
            .dfa_size_limit(MAX_REGEX_SIZE)
            .nest_limit(REGEX_NEST_LIMIT)
            .build()
            .map_err(|e| {
                let kind = match e {
                    regex::Error::CompiledTooBig(limit) => ExprErrorKind::RegexTooLarge { limit },
                    other => {
                        let text = other.to_string();
                        // The regex crate's message repeats the pattern with its own caret;
                        // keep only the final explanation, the caret here is ours.
                        let msg = text
                            .rsplit_once("error: ")
                            .map_or(text.as_str(), |(_, m)| m)
                            .trim()
                            .to_owned();
                        ExprErrorKind::BadRegex(msg)
                    }
                };
                self.err(kind, l.span.clone())
            })
    }
}
