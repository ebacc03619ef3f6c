//! The tunnel credentials file, in cloudflared's format.
//!
//! cloudflared has written `{"AccountTag","TunnelSecret","TunnelID"}`, with `TunnelName`
//! in older releases and `Endpoint` (omitted when empty) in newer ones; the seed builds the
//! four-key form with jq. We read all of them and write the four-key compact form, byte for
//! byte what cloudflared 2023.7.3 was seen to accept.

use std::fmt;
use std::path::Path;

use uuid::Uuid;
use zeroize::Zeroizing;

use crate::file::{
    read_private_file, write_private_file, ExistingFile, LoadError, PermissionMode, WriteError,
};
use crate::json::{capacity_for, Fields, ObjectWriter, Origin, ParseError};
use crate::secret::TunnelSecret;

const ACCOUNT_TAG: &str = "AccountTag";
const TUNNEL_SECRET: &str = "TunnelSecret";
const TUNNEL_ID: &str = "TunnelID";
const TUNNEL_NAME: &str = "TunnelName";
const ENDPOINT: &str = "Endpoint";
const KEYS: &[&str] = &[ACCOUNT_TAG, TUNNEL_SECRET, TUNNEL_ID, TUNNEL_NAME, ENDPOINT];

/// What a connector needs to prove it owns a tunnel: cloudflared's credentials file.
///
/// `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct TunnelCredentials {
    /// The account the tunnel belongs to (`AccountTag`); never empty.
    pub account_tag: String,
    /// The tunnel's id (`TunnelID`).
    pub tunnel_id: Uuid,
    /// The tunnel's name (`TunnelName`), which only older cloudflared releases wrote.
    pub tunnel_name: Option<String>,
    /// The tunnel secret (`TunnelSecret`, standard base64 in the file).
    pub secret: TunnelSecret,
    /// cloudflared's `Endpoint` (a region such as `fed`); an empty string reads as `None`,
    /// as cloudflared omits it when empty.
    pub endpoint: Option<String>,
}

impl TunnelCredentials {
    /// Parses a credentials document.
    ///
    /// Accepts every shape cloudflared has written. Unknown keys are ignored and named in a
    /// `tracing` warning; keys also match ignoring ASCII case, as cloudflared's do. A
    /// leading UTF-8 byte-order mark is skipped with a warning.
    pub fn from_json(input: &[u8]) -> Result<Self, ParseError> {
        Self::parse(input, None)
    }

    pub(crate) fn parse(input: &[u8], path: Option<&Path>) -> Result<Self, ParseError> {
        let origin = Origin {
            kind: "tunnel credentials",
            path,
        };
        let mut f = Fields::parse(input, KEYS, origin)?;
        Ok(Self {
            account_tag: f.required_nonempty_str(ACCOUNT_TAG)?,
            secret: f.required_secret(TUNNEL_SECRET)?,
            tunnel_id: f.required_uuid(TUNNEL_ID)?,
            tunnel_name: f.optional_str(TUNNEL_NAME)?,
            endpoint: f.optional_str(ENDPOINT)?.filter(|e| !e.is_empty()),
        })
    }

    /// The compact JSON form:
    /// `{"AccountTag":…,"TunnelSecret":…,"TunnelID":…,"TunnelName":…}` in that order,
    /// `TunnelName` only when set, then `Endpoint` when set. No trailing newline, as
    /// cloudflared writes it.
    ///
    /// The result holds the secret; it is zeroized when dropped.
    pub fn to_json(&self) -> Zeroizing<String> {
        let text = self.account_tag.len()
            + self.tunnel_name.as_ref().map_or(0, String::len)
            + self.endpoint.as_ref().map_or(0, String::len);
        let mut w = ObjectWriter::with_capacity(capacity_for(&self.secret, text));
        w.str(ACCOUNT_TAG, &self.account_tag);
        w.secret(TUNNEL_SECRET, &self.secret);
        w.str(TUNNEL_ID, &self.tunnel_id.hyphenated().to_string());
        if let Some(name) = &self.tunnel_name {
            w.str(TUNNEL_NAME, name);
        }
        if let Some(endpoint) = self.endpoint.as_ref().filter(|e| !e.is_empty()) {
            w.str(ENDPOINT, endpoint);
        }
        w.finish()
    }

    /// Loads a credentials file, checking its type, size and permissions first (see
    /// [`read_private_file`]).
    pub fn load(path: impl AsRef<Path>, permissions: PermissionMode) -> Result<Self, LoadError> {
        let path = path.as_ref();
        let bytes = read_private_file(path, permissions)?;
        Self::parse(&bytes, Some(path)).map_err(|source| LoadError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// Writes the compact JSON form to `path` atomically with mode 0600 (see
    /// [`write_private_file`]).
    pub fn write(&self, path: impl AsRef<Path>, existing: ExistingFile) -> Result<(), WriteError> {
        write_private_file(path.as_ref(), self.to_json().as_bytes(), existing)
    }
}

impl fmt::Debug for TunnelCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Written out rather than derived so that the secret field's redaction does not
        // depend on its type's own `Debug`.
        f.debug_struct("TunnelCredentials")
            .field("account_tag", &self.account_tag)
            .field("tunnel_id", &self.tunnel_id)
            .field("tunnel_name", &self.tunnel_name)
            .field("secret", &format_args!("[redacted]"))
            .field("endpoint", &self.endpoint)
            .finish()
    }
}
