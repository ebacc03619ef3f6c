//! Rules as the edge stores them, and their validation.

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Let the flow through.
    Allow,
    /// Refuse the flow.
    Block,
    /// Do not inspect: pass the bytes through untouched (http filter only).
    Off,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Allow => "allow",
            Action::Block => "block",
            Action::Off => "off",
        })
    }
}

/// The phase a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Filter {
    /// Every flow, at open.
    L4,
    /// Flows l4 allowed: `off` rules before reading, then allow/block on the first bytes.
    Http,
    /// DNS queries carried as UDP flows.
    Dns,
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Filter::L4 => "l4",
            Filter::Http => "http",
            Filter::Dns => "dns",
        })
    }
}

/// Which of a rule's three expressions something is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ExprSlot {
    /// The `traffic` expression: any field.
    Traffic,
    /// The `identity` expression: `identity.*` fields only.
    Identity,
    /// The `device_posture` expression: `device.*` fields only.
    DevicePosture,
}

impl ExprSlot {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ExprSlot::Traffic => "traffic",
            ExprSlot::Identity => "identity",
            ExprSlot::DevicePosture => "device_posture",
        }
    }
}

impl fmt::Display for ExprSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A gateway rule as the edge stores it.
///
/// The three expressions are ANDed; an absent (or blank) one is true. Within each filter,
/// rules are evaluated by ascending precedence and the first match decides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// Unique id.
    pub id: Uuid,
    /// Name, shown in decisions and the audit log.
    pub name: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Evaluation order within a filter, lowest first; unique within a filter.
    pub precedence: u32,
    /// What a match does.
    pub action: Action,
    /// Disabled rules are skipped.
    #[serde(default = "enabled_default")]
    pub enabled: bool,
    /// The phases the rule applies to.
    pub filters: Vec<Filter>,
    /// The traffic expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<String>,
    /// The identity expression (`identity.*` fields).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// The device posture expression (`device.*` fields).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_posture: Option<String>,
}

fn enabled_default() -> bool {
    true
}

impl Rule {
    /// The rule's non-blank expressions with their slots.
    pub(crate) fn expressions(&self) -> impl Iterator<Item = (ExprSlot, &str)> {
        [
            (ExprSlot::Traffic, self.traffic.as_deref()),
            (ExprSlot::Identity, self.identity.as_deref()),
            (ExprSlot::DevicePosture, self.device_posture.as_deref()),
        ]
        .into_iter()
        .filter_map(|(slot, e)| e.filter(|e| !e.trim().is_empty()).map(|e| (slot, e)))
    }
}

/// A rule, or a set of rules, that fails validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RuleError {
    /// The name is empty.
    #[error("rule {id} has an empty name")]
    EmptyName {
        /// The rule's id.
        id: Uuid,
    },
    /// The rule names no filter.
    #[error("rule \"{rule}\" has no filters; give it one of l4, http, dns")]
    NoFilters {
        /// The rule's name.
        rule: String,
    },
    /// A filter named twice.
    #[error("rule \"{rule}\" names the {filter} filter twice")]
    DuplicateFilter {
        /// The rule's name.
        rule: String,
        /// The filter.
        filter: Filter,
    },
    /// `off` on a rule with a filter other than http.
    #[error("rule \"{rule}\": action `off` (do not inspect) is only valid with the http filter, not {filter}")]
    OffOutsideHttp {
        /// The rule's name.
        rule: String,
        /// The offending filter.
        filter: Filter,
    },
    /// Two enabled rules with the same precedence in one filter.
    #[error("rules \"{first}\" and \"{second}\" both have precedence {precedence} in the {filter} filter")]
    DuplicatePrecedence {
        /// The filter.
        filter: Filter,
        /// The precedence.
        precedence: u32,
        /// Name of the first rule.
        first: String,
        /// Name of the second rule.
        second: String,
    },
    /// Two rules share an id.
    #[error("rules \"{first}\" and \"{second}\" share the id {id}")]
    DuplicateId {
        /// The id.
        id: Uuid,
        /// Name of the first rule.
        first: String,
        /// Name of the second rule.
        second: String,
    },
}

impl Rule {
    /// Checks this rule alone: name, filters, action against filters.
    pub fn validate(&self) -> Result<(), RuleError> {
        if self.name.trim().is_empty() {
            return Err(RuleError::EmptyName { id: self.id });
        }
        if self.filters.is_empty() {
            return Err(RuleError::NoFilters {
                rule: self.name.clone(),
            });
        }
        for (i, f) in self.filters.iter().enumerate() {
            if self.filters[..i].contains(f) {
                return Err(RuleError::DuplicateFilter {
                    rule: self.name.clone(),
                    filter: *f,
                });
            }
            if self.action == Action::Off && *f != Filter::Http {
                return Err(RuleError::OffOutsideHttp {
                    rule: self.name.clone(),
                    filter: *f,
                });
            }
        }
        Ok(())
    }
}

/// Validates rules together: each one, then unique ids and unique precedence within each
/// filter. Precedence is checked across disabled rules too, so enabling one later cannot
/// create an ambiguity.
pub fn validate_rules(rules: &[Rule]) -> Result<(), RuleError> {
    let mut ids: HashMap<Uuid, &str> = HashMap::new();
    let mut prec: HashMap<(Filter, u32), &str> = HashMap::new();
    for r in rules {
        r.validate()?;
        if let Some(first) = ids.insert(r.id, &r.name) {
            return Err(RuleError::DuplicateId {
                id: r.id,
                first: first.to_owned(),
                second: r.name.clone(),
            });
        }
        for f in &r.filters {
            if let Some(first) = prec.insert((*f, r.precedence), &r.name) {
                return Err(RuleError::DuplicatePrecedence {
                    filter: *f,
                    precedence: r.precedence,
                    first: first.to_owned(),
                    second: r.name.clone(),
                });
            }
        }
    }
    Ok(())
}
