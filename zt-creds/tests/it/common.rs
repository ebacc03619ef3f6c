//! Helpers shared by the integration tests: a tracing subscriber that records events, so
//! tests can assert what was logged (and what was not).
#![allow(dead_code, clippy::unwrap_used)]

use std::fmt::{self, Write as _};
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// Records every event as one line: `LEVEL field=value ...`.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<String>>);

struct Line<'a>(&'a mut String);

impl Visit for Line<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        write!(self.0, " {}={:?}", field.name(), value).unwrap();
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut line = event.metadata().level().to_string();
        event.record(&mut Line(&mut line));
        let mut log = self.0.lock().unwrap();
        log.push_str(&line);
        log.push('\n');
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// Runs `f` with a recording subscriber on this thread; returns its result and the log.
pub(crate) fn capture_logs<R>(f: impl FnOnce() -> R) -> (R, String) {
    let recorder = Recorder::default();
    let log = recorder.0.clone();
    let out = tracing::subscriber::with_default(recorder, f);
    let text = log.lock().unwrap().clone();
    (out, text)
}

/// Display of an error followed by the Display of every source, as `{:#}` in anyhow.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// The credentials file cloudflared 2023.7.3 accepted (see shared/interop/README.md), in
/// the compact form that jq and zt write.
pub(crate) const CLOUDFLARED_JSON: &str = r#"{"AccountTag":"0123456789abcdef0123456789abcdef","TunnelSecret":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","TunnelID":"8e343b13-a087-48ea-825f-9783931ff2a5","TunnelName":"k8s_zero_trust_tunnel"}"#;

/// Sets a file's permission bits.
#[cfg(unix)]
pub(crate) fn chmod(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A file's permission bits.
#[cfg(unix)]
pub(crate) fn mode_of(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Names in a directory, sorted.
pub(crate) fn list_dir(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
