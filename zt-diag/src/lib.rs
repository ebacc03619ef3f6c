//! Diagnostics for zt's YAML files: errors that name the key path, the line and the column
//! of what is wrong, an underlined excerpt of that line, and did-you-mean suggestions for
//! misspelt keys.
//!
//! The connector's `config.yaml` (zt-connector) uses these, and so does any other YAML
//! file zt reads (the configuration-as-code file), so that every file refuses bad input in
//! the same words: `config.yaml:4:19: `warp-routing.connectTimeout`: unknown unit `x``.
//!
//! This is a crate of its own, at the bottom of the dependency graph, because its users
//! sit in different places of it: the connector runtime must not be a dependency of the
//! edge's tooling just to format an error, and the credentials crate (the only other
//! crate with no zt dependency) has a job of its own. It depends on the YAML reader and a
//! string-distance function and nothing else, and it knows nothing of what any key means:
//! callers bring their own schema, key tables and error enums.
//!
//! What it is not: a YAML parser (that is `serde_norway`) or a reporting framework. It
//! never prints; callers put its pieces into their own `thiserror` messages.
//!
//! # Example
//!
//! ```
//! use serde::Deserialize;
//!
//! #[derive(Debug, Deserialize)]
//! struct Settings {
//!     #[allow(dead_code)]
//!     port: u16,
//! }
//!
//! let text = "# the listener\nport: eighty\n";
//! let err = zt_diag::from_yaml_str::<Settings>(text).unwrap_err();
//! assert_eq!(err.key, "port");
//! assert_eq!((err.line, err.column), (Some(2), Some(7)));
//! assert_eq!(
//!     format!("settings.yaml{}: {err}", err.location()),
//!     "settings.yaml:2:7: `port`: invalid type: string \"eighty\", expected u16"
//! );
//! assert_eq!(
//!     zt_diag::underline(text, err.location()).as_deref(),
//!     Some("  |\n2 | port: eighty\n  |       ^^^^^^")
//! );
//! assert_eq!(zt_diag::suggest("listne", &["listen", "hosts"]), Some("listen"));
//! ```

mod location;
mod suggest;
mod yaml;

pub use location::{locate_key, locate_key_nth, underline, KeyPrefix, Location};
pub use suggest::suggest;
pub use yaml::{from_yaml_seed, from_yaml_str, is_blank, parse_scalar, YamlError};
