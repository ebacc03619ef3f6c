//! Device posture: named local checks the client evaluates and reports to the edge, where
//! policy reads them as `device.posture.<name>`.
//!
//! A check is written `KIND:NAME=ARG`:
//! - `file:disk_encrypted=/etc/zt/disk-encrypted` passes when the path exists;
//! - `command:firewall=ufw status` passes when `sh -c 'ufw status'` exits 0 within the
//!   time bound (its output is discarded);
//! - `env:managed=ZT_MANAGED` passes when the variable is set and not empty, and
//!   `env:stage=STAGE=prod` when it equals the value after the second `=`.
//!
//! Every check has a time bound, so a hung command cannot hold a report back; a check that
//! runs out of time fails.

use std::fmt;
use std::path::PathBuf;

/// Longest check name: the wire format's short-name bound.
const MAX_NAME_LEN: usize = 255;

/// A posture check specification could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PostureSpecError {
    /// No `KIND:` prefix, or a kind other than file, command and env.
    #[error(
        "posture check {spec:?}: expected file:NAME=PATH, command:NAME=CMD or env:NAME=VAR[=VALUE]"
    )]
    Kind {
        /// The specification as given.
        spec: String,
    },
    /// No `NAME=` part.
    #[error("posture check {spec:?}: expected NAME=… after the kind")]
    MissingName {
        /// The specification as given.
        spec: String,
    },
    /// The name is empty, too long, or has characters other than letters, digits, `_`,
    /// `-` and `.`.
    #[error("posture check name {name:?} must be 1 to 255 letters, digits, '_', '-' or '.'")]
    BadName {
        /// The name as given.
        name: String,
    },
    /// Nothing after `NAME=`.
    #[error("posture check {name:?} has nothing to check after '='")]
    Empty {
        /// The check's name.
        name: String,
    },
}

/// What a check looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PostureProbe {
    /// Passes when the path exists.
    File(PathBuf),
    /// Passes when the shell command exits 0.
    Command(String),
    /// Passes when the variable is set and non-empty, or equals the value if one is given.
    Env {
        /// The variable.
        var: String,
        /// The value it must have, if any.
        value: Option<String>,
    },
}

/// One configured check: a name (as policy refers to it) and a probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostureSpec {
    /// The check's name.
    pub name: String,
    /// What it checks.
    pub probe: PostureProbe,
}

impl PostureSpec {
    /// Parses `KIND:NAME=ARG` (see the module docs).
    pub fn parse(spec: &str) -> Result<Self, PostureSpecError> {
        let (kind, rest) = spec.split_once(':').ok_or_else(|| PostureSpecError::Kind {
            spec: spec.to_owned(),
        })?;
        let (name, arg) = rest
            .split_once('=')
            .ok_or_else(|| PostureSpecError::MissingName {
                spec: spec.to_owned(),
            })?;
        let valid_name = !name.is_empty()
            && name.len() <= MAX_NAME_LEN
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !valid_name {
            return Err(PostureSpecError::BadName {
                name: name.to_owned(),
            });
        }
        if arg.is_empty() {
            return Err(PostureSpecError::Empty {
                name: name.to_owned(),
            });
        }
        let probe = match kind {
            "file" => PostureProbe::File(PathBuf::from(arg)),
            "command" => PostureProbe::Command(arg.to_owned()),
            "env" => match arg.split_once('=') {
                Some((var, value)) => PostureProbe::Env {
                    var: var.to_owned(),
                    value: Some(value.to_owned()),
                },
                None => PostureProbe::Env {
                    var: arg.to_owned(),
                    value: None,
                },
            },
            _ => {
                return Err(PostureSpecError::Kind {
                    spec: spec.to_owned(),
                })
            }
        };
        Ok(Self {
            name: name.to_owned(),
            probe,
        })
    }
}

impl std::str::FromStr for PostureSpec {
    type Err = PostureSpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for PostureSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.probe {
            PostureProbe::File(p) => write!(f, "file:{}={}", self.name, p.display()),
            PostureProbe::Command(c) => write!(f, "command:{}={c}", self.name),
            PostureProbe::Env { var, value: None } => write!(f, "env:{}={var}", self.name),
            PostureProbe::Env {
                var,
                value: Some(v),
            } => write!(f, "env:{}={var}={v}", self.name),
        }
    }
}

#[cfg(feature = "runtime")]
pub(crate) use eval::evaluate;

#[cfg(feature = "runtime")]
mod eval {
    use std::process::Stdio;
    use std::time::Duration;

    use tracing::debug;
    use zt_proto::{PostureCheck, PostureReport};

    use super::{PostureProbe, PostureSpec};

    /// Runs every check, one after another, each bounded by `limit`.
    pub(crate) async fn evaluate(specs: &[PostureSpec], limit: Duration) -> PostureReport {
        let checks = specs.iter().map(|spec| async move {
            let passed = tokio::time::timeout(limit, probe(&spec.probe))
                .await
                .unwrap_or_else(|_| {
                    debug!(check = %spec.name, ?limit, "posture check ran out of time");
                    false
                });
            PostureCheck {
                name: spec.name.clone(),
                passed,
            }
        });
        let mut out = Vec::with_capacity(specs.len());
        // Checks are few and quick; each has its own bound, so a hung one delays the
        // report by at most `limit`.
        for c in checks {
            out.push(c.await);
        }
        PostureReport { checks: out }
    }

    async fn probe(probe: &PostureProbe) -> bool {
        match probe {
            PostureProbe::File(path) => tokio::fs::try_exists(path).await.unwrap_or(false),
            PostureProbe::Env { var, value } => match (std::env::var(var), value) {
                (Ok(v), None) => !v.is_empty(),
                (Ok(v), Some(want)) => &v == want,
                (Err(_), _) => false,
            },
            PostureProbe::Command(cmd) => {
                let child = tokio::process::Command::new("sh")
                    .arg("-c")
                    .arg(cmd)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    // A check that outlives its bound is killed, not left running.
                    .kill_on_drop(true)
                    .spawn();
                match child {
                    Ok(mut child) => child.wait().await.map(|s| s.success()).unwrap_or(false),
                    Err(e) => {
                        debug!(error = %e, "posture command could not start");
                        false
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_print_back() {
        for s in [
            "file:disk=/etc/zt/disk",
            "command:fw=ufw status | grep -q active",
            "env:managed=ZT_MANAGED",
            "env:stage=STAGE=prod",
        ] {
            assert_eq!(PostureSpec::parse(s).unwrap().to_string(), s);
        }
        let c = PostureSpec::parse("command:x=a=b").unwrap();
        assert_eq!(c.probe, PostureProbe::Command("a=b".into()));
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        assert!(matches!(
            PostureSpec::parse("disk=/x"),
            Err(PostureSpecError::Kind { .. })
        ));
        assert!(matches!(
            PostureSpec::parse("registry:x=y"),
            Err(PostureSpecError::Kind { .. })
        ));
        assert!(matches!(
            PostureSpec::parse("file:/x"),
            Err(PostureSpecError::MissingName { .. })
        ));
        assert!(matches!(
            PostureSpec::parse("file:a b=/x"),
            Err(PostureSpecError::BadName { .. })
        ));
        assert!(matches!(
            PostureSpec::parse("file:x="),
            Err(PostureSpecError::Empty { .. })
        ));
    }

    #[cfg(feature = "runtime")]
    #[tokio::test]
    async fn checks_pass_and_fail_for_real() {
        let dir = std::env::temp_dir();
        let specs: Vec<PostureSpec> = [
            format!("file:exists={}", dir.display()),
            "file:missing=/nonexistent/zt/posture".to_owned(),
            "command:true=exit 0".to_owned(),
            "command:false=exit 3".to_owned(),
            "command:slow=sleep 30".to_owned(),
            "env:path=PATH".to_owned(),
            "env:unset=ZT_POSTURE_TEST_SURELY_UNSET".to_owned(),
        ]
        .iter()
        .map(|s| PostureSpec::parse(s).unwrap())
        .collect();
        let report = eval::evaluate(&specs, std::time::Duration::from_millis(500)).await;
        let got: Vec<(&str, bool)> = report
            .checks
            .iter()
            .map(|c| (c.name.as_str(), c.passed))
            .collect();
        assert_eq!(
            got,
            vec![
                ("exists", true),
                ("missing", false),
                ("true", true),
                ("false", false),
                ("slow", false),
                ("path", true),
                ("unset", false),
            ]
        );
    }
}
