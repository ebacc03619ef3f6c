//! The filter expression language: lexer, parser, field scheme, checker, diagnostics.

mod check;
mod error;
mod lexer;
mod parser;
mod scheme;

pub use check::MAX_REGEX_SIZE;
pub(crate) use check::{Checker, Cmp, ElemPred, ListNames, TExpr, Test};
pub use error::{ExprError, ExprErrorKind};
pub(crate) use parser::{parse, CmpOp, Expr, LitKind, LogicOp, Rhs};
pub use scheme::{field_names, field_type, FieldType};
pub(crate) use scheme::{FieldId, Stage};
