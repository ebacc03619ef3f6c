//! Device credentials: what a client needs to reach and authenticate to an edge.
//!
//! zt's own format, in the style of cloudflared's credentials file (PascalCase keys, the
//! secret in standard base64) and read by the same rules: keys also match ignoring ASCII
//! case, unknown keys are ignored with a warning, a leading UTF-8 BOM is skipped.

use std::fmt;
use std::path::Path;

use uuid::Uuid;
use zeroize::Zeroizing;

use crate::device_key::DeviceKey;
use crate::file::{
    read_private_file, write_private_file, ExistingFile, LoadError, PermissionMode, WriteError,
};
use crate::fingerprint::CaFingerprint;
use crate::json::{capacity_for_len, Fields, ObjectWriter, Origin, ParseError};
use crate::secret::TunnelSecret;

const DEVICE_ID: &str = "DeviceID";
const USER_EMAIL: &str = "UserEmail";
const DEVICE_SECRET: &str = "DeviceSecret";
const DEVICE_PRIVATE_KEY: &str = "DevicePrivateKey";
const EDGE: &str = "Edge";
const CA_FINGERPRINT: &str = "EdgeCAFingerprint";
const VIRTUAL_NETWORK: &str = "DefaultVirtualNetwork";
const IDENTITY_PROVIDER: &str = "IdentityProvider";
const SERVICE_TOKEN: &str = "ServiceToken";
const KEYS: &[&str] = &[
    DEVICE_ID,
    USER_EMAIL,
    DEVICE_SECRET,
    DEVICE_PRIVATE_KEY,
    EDGE,
    CA_FINGERPRINT,
    VIRTUAL_NETWORK,
    IDENTITY_PROVIDER,
    SERVICE_TOKEN,
];

/// How a device proves who it is.
#[derive(Clone, PartialEq, Eq)]
pub enum DeviceAuth {
    /// A secret shared with the edge, which stores a key derived from it (`DeviceSecret`;
    /// devices made by `zt user add`).
    Secret(TunnelSecret),
    /// An Ed25519 key made on the device; the edge stores only its public half
    /// (`DevicePrivateKey`; devices enrolled through an identity provider).
    Key(DeviceKey),
}

impl DeviceAuth {
    fn secret_len(&self) -> usize {
        match self {
            Self::Secret(s) => s.len(),
            Self::Key(k) => k.expose_pkcs8().len(),
        }
    }
}

/// A client device's credentials.
///
/// JSON form, keys in this order:
/// `{"DeviceID":uuid,"UserEmail":…,"DeviceSecret":base64 | "DevicePrivateKey":base64,
/// "Edge":["host:port",…],"EdgeCAFingerprint":hex,"DefaultVirtualNetwork":uuid,
/// "IdentityProvider":name,"ServiceToken":name}`, the last three only when set; exactly one
/// of `DeviceSecret` and `DevicePrivateKey`. A service token's credentials (`zt token
/// create`) carry `ServiceToken` and a `DeviceSecret`, and no `UserEmail`: a token belongs
/// to no user. `Debug` never shows the secret or the private key.
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceCredentials {
    /// The device's id (`DeviceID`).
    pub device_id: Uuid,
    /// The email of the user the device is enrolled for (`UserEmail`); empty for a service
    /// token.
    pub user_email: String,
    /// What the device proves possession of: the device secret (`DeviceSecret`, same
    /// length rules and protections as a tunnel secret) or its private key
    /// (`DevicePrivateKey`, base64 of an Ed25519 PKCS#8 document).
    pub auth: DeviceAuth,
    /// Edge addresses, each `host:port` (`Edge`); at least one.
    pub edge: Vec<String>,
    /// SHA-256 fingerprint of the edge's CA certificate (`EdgeCAFingerprint`, hex).
    pub ca_fingerprint: CaFingerprint,
    /// The virtual network the device uses unless told otherwise (`DefaultVirtualNetwork`).
    pub default_vnet: Option<Uuid>,
    /// The identity provider the device was enrolled through (`IdentityProvider`), if any.
    pub identity_provider: Option<String>,
    /// For a service token's credentials, the token's name (`ServiceToken`).
    pub service_token: Option<String>,
}

impl DeviceCredentials {
    /// Parses a device credentials document.
    pub fn from_json(input: &[u8]) -> Result<Self, ParseError> {
        Self::parse(input, None)
    }

    fn parse(input: &[u8], path: Option<&Path>) -> Result<Self, ParseError> {
        let origin = Origin {
            kind: "device credentials",
            path,
        };
        let mut f = Fields::parse(input, KEYS, origin)?;
        let device_id = f.required_uuid(DEVICE_ID)?;
        let service_token = f.optional_str(SERVICE_TOKEN)?;
        if service_token.as_deref() == Some("") {
            return Err(ParseError::EmptyField {
                field: SERVICE_TOKEN,
            });
        }
        let user_email = match (&service_token, f.has(USER_EMAIL)) {
            (Some(_), false) => String::new(),
            _ => {
                let user_email = f.required_nonempty_str(USER_EMAIL)?;
                // Only a sanity check: a real address check belongs to the identity provider.
                match user_email.rsplit_once('@') {
                    Some((local, domain)) if !local.is_empty() && !domain.is_empty() => {}
                    _ => return Err(ParseError::NotEmail { field: USER_EMAIL }),
                }
                user_email
            }
        };
        let auth = match (f.has(DEVICE_SECRET), f.has(DEVICE_PRIVATE_KEY)) {
            (true, false) => DeviceAuth::Secret(f.required_secret(DEVICE_SECRET)?),
            (false, true) => {
                let bytes = f.required_secret_bytes(DEVICE_PRIVATE_KEY)?;
                DeviceAuth::Key(DeviceKey::from_pkcs8(&bytes).map_err(|source| {
                    ParseError::DeviceKey {
                        field: DEVICE_PRIVATE_KEY,
                        source,
                    }
                })?)
            }
            (both, _) => {
                return Err(ParseError::OneOf {
                    first: DEVICE_SECRET,
                    second: DEVICE_PRIVATE_KEY,
                    found: if both { "both are" } else { "neither is" },
                })
            }
        };
        let edge = f.edge_list(EDGE, true)?;
        let Some(ca_fingerprint) = f.fingerprint(CA_FINGERPRINT, true)? else {
            return Err(ParseError::MissingField {
                field: CA_FINGERPRINT,
            });
        };
        Ok(Self {
            device_id,
            user_email,
            auth,
            edge,
            ca_fingerprint,
            default_vnet: f.optional_uuid(VIRTUAL_NETWORK)?,
            identity_provider: f.optional_str(IDENTITY_PROVIDER)?,
            service_token,
        })
    }

    /// The device secret, for devices that prove with one (`DeviceSecret`).
    pub fn secret(&self) -> Option<&TunnelSecret> {
        match &self.auth {
            DeviceAuth::Secret(s) => Some(s),
            DeviceAuth::Key(_) => None,
        }
    }

    /// The compact JSON form (see the type's docs for the key order). It holds the secret
    /// and is zeroized when dropped.
    pub fn to_json(&self) -> Zeroizing<String> {
        let text = self.user_email.len()
            + self.edge.iter().map(|e| e.len() + 3).sum::<usize>()
            + self.identity_provider.as_ref().map_or(0, |p| p.len() + 24)
            + self.service_token.as_ref().map_or(0, |t| t.len() + 20);
        let mut w = ObjectWriter::with_capacity(capacity_for_len(self.auth.secret_len(), text));
        w.str(DEVICE_ID, &self.device_id.hyphenated().to_string());
        if self.service_token.is_none() || !self.user_email.is_empty() {
            w.str(USER_EMAIL, &self.user_email);
        }
        match &self.auth {
            DeviceAuth::Secret(secret) => w.secret(DEVICE_SECRET, secret),
            DeviceAuth::Key(key) => w.secret_bytes(DEVICE_PRIVATE_KEY, key.expose_pkcs8()),
        }
        w.str_list(EDGE, &self.edge);
        w.str(CA_FINGERPRINT, &self.ca_fingerprint.to_string());
        if let Some(vnet) = &self.default_vnet {
            w.str(VIRTUAL_NETWORK, &vnet.hyphenated().to_string());
        }
        if let Some(idp) = &self.identity_provider {
            w.str(IDENTITY_PROVIDER, idp);
        }
        if let Some(token) = &self.service_token {
            w.str(SERVICE_TOKEN, token);
        }
        w.finish()
    }

    /// Loads a device credentials file, checking its type, size and permissions first (see
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

impl fmt::Debug for DeviceCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceCredentials")
            .field("device_id", &self.device_id)
            .field("user_email", &self.user_email)
            .field(
                "auth",
                &match &self.auth {
                    DeviceAuth::Secret(_) => format_args!("secret [redacted]"),
                    DeviceAuth::Key(_) => format_args!("device key [redacted]"),
                },
            )
            .field("edge", &self.edge)
            .field("ca_fingerprint", &self.ca_fingerprint)
            .field("default_vnet", &self.default_vnet)
            .field("identity_provider", &self.identity_provider)
            .field("service_token", &self.service_token)
            .finish()
    }
}
