//! `zt login` and `zt logout`: sign this device in through the edge's identity provider,
//! or end its sign-in.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use zt_client::login::{login, logout, LoginEvent, LoginFlow, LoginOptions, LOGIN_TIMEOUT};
use zt_creds::{CaFingerprint, DeviceCredentials, Enrollment, ExistingFile, PermissionMode};

/// `zt login`
#[derive(Debug, Args)]
pub(crate) struct LoginArgs {
    /// The enrollment string from the administrator (`zt idp enrollment`): edge addresses
    /// and the edges' CA fingerprint. Or give --edge and --ca-fingerprint.
    enrollment: Option<String>,
    /// Edge address (host:port); repeat for several. With --ca-fingerprint, instead of an
    /// enrollment string.
    #[arg(long = "edge", value_name = "ADDR")]
    edge: Vec<String>,
    /// SHA-256 fingerprint of the edges' CA certificate (`zt account` shows it).
    #[arg(long, value_name = "HEX")]
    ca_fingerprint: Option<String>,
    /// The identity provider, when the edge has several.
    #[arg(long, value_name = "NAME")]
    idp: Option<String>,
    /// Sign in on another device's browser with a code (for machines without a browser).
    #[arg(long)]
    device_code: bool,
    /// Do not start a browser; print the URL to open.
    #[arg(long)]
    no_browser: bool,
    /// Where to write the device credentials (default: $HOME/.zt/device.json).
    #[arg(long, value_name = "FILE")]
    credentials: Option<PathBuf>,
    /// Replace an existing credentials file.
    #[arg(long)]
    force: bool,
    /// A name for this device (default: the host name).
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Give up when the sign-in has not finished in this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = LOGIN_TIMEOUT.as_secs())]
    timeout: u64,
    #[command(flatten)]
    transport: crate::client::TransportArgs,
}

/// `zt logout`
#[derive(Debug, Args)]
pub(crate) struct LogoutArgs {
    /// The device credentials file (default: $HOME/.zt/device.json).
    #[arg(long, value_name = "FILE")]
    credentials: Option<PathBuf>,
    #[command(flatten)]
    transport: crate::client::TransportArgs,
}

fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "device".to_owned())
}

/// Starts the user's browser on `url`: `$BROWSER`, else `xdg-open` (Linux) or `open`
/// (macOS). False when none could be started.
fn open_browser(url: &str) -> bool {
    let mut candidates: Vec<String> = Vec::new();
    if let Ok(b) = std::env::var("BROWSER") {
        candidates.extend(b.split(':').filter(|s| !s.is_empty()).map(str::to_owned));
    }
    candidates.push(
        if cfg!(target_os = "macos") {
            "open"
        } else {
            "xdg-open"
        }
        .to_owned(),
    );
    candidates.into_iter().any(|cmd| {
        std::process::Command::new(&cmd)
            .arg(url)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .is_ok()
    })
}

pub(crate) fn run_login(args: LoginArgs) -> anyhow::Result<ExitCode> {
    let enrollment = match (&args.enrollment, &args.ca_fingerprint) {
        (Some(text), _) => {
            let mut e = Enrollment::parse(text).context("cannot read the enrollment string")?;
            if !args.edge.is_empty() {
                e.edge = args.edge.clone();
            }
            if let Some(fp) = &args.ca_fingerprint {
                let fp: CaFingerprint = fp.parse().context("--ca-fingerprint")?;
                anyhow::ensure!(
                    fp == e.ca_fingerprint,
                    "--ca-fingerprint does not match the enrollment string's; ask the administrator which is right"
                );
            }
            e
        }
        (None, Some(fp)) => {
            anyhow::ensure!(
                !args.edge.is_empty(),
                "--ca-fingerprint needs at least one --edge host:port"
            );
            Enrollment {
                edge: args.edge.clone(),
                ca_fingerprint: fp.parse().context("--ca-fingerprint")?,
                idp: None,
            }
        }
        (None, None) => anyhow::bail!(
            "zt login needs the enrollment string from your administrator (`zt idp enrollment NAME` prints it), or --edge and --ca-fingerprint; zt never trusts an edge on first use"
        ),
    };
    let path = crate::client::credentials_path(args.credentials.clone())?;
    if path.exists() && !args.force {
        anyhow::bail!(
            "{} already exists; run `zt logout` first, or pass --force to replace it",
            path.display()
        );
    }
    let options = LoginOptions {
        enrollment,
        idp: args.idp.clone(),
        flow: if args.device_code {
            LoginFlow::DeviceCode
        } else {
            LoginFlow::Browser
        },
        device_name: args.name.clone().unwrap_or_else(host_name),
        timeout: Duration::from_secs(args.timeout.max(1)),
        protocol: args.transport.protocol,
        proxy: args.transport.proxy()?,
    };
    let no_browser = args.no_browser;
    let started = Instant::now();
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let result = rt.block_on(login(&options, |event| {
        let mut err = std::io::stderr().lock();
        match event {
            LoginEvent::OpenBrowser { url } => {
                if no_browser || !open_browser(&url) {
                    let _ = writeln!(err, "Open this URL in a browser to sign in:\n{url}");
                } else {
                    let _ = writeln!(
                        err,
                        "Opened a browser to sign in. If it did not appear, open this URL:\n{url}"
                    );
                }
            }
            LoginEvent::DeviceCode {
                user_code,
                verification_uri,
                verification_uri_complete,
                expires_in,
            } => {
                let _ = writeln!(
                    err,
                    "To sign in, visit {verification_uri} and enter the code: {user_code}"
                );
                if let Some(complete) = verification_uri_complete {
                    let _ = writeln!(err, "(or open {complete})");
                }
                let _ = writeln!(
                    err,
                    "Waiting for approval (the code is valid for {} min)…",
                    expires_in.as_secs().div_ceil(60)
                );
            }
        }
    }));
    let creds = match result {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let existing = if args.force {
        ExistingFile::Replace
    } else {
        ExistingFile::Refuse
    };
    creds
        .write(&path, existing)
        .with_context(|| format!("cannot write the device credentials {}", path.display()))?;
    eprintln!(
        "Signed in as {} through {} in {:.1} s; device {} (key kept in {}, mode 0600).",
        creds.user_email,
        creds
            .identity_provider
            .as_deref()
            .unwrap_or("the identity provider"),
        started.elapsed().as_secs_f64(),
        creds.device_id,
        path.display()
    );
    eprintln!("Next: `zt client socks` or `zt client tun` use it.");
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn run_logout(args: LogoutArgs) -> anyhow::Result<ExitCode> {
    let path = crate::client::credentials_path(args.credentials)?;
    let creds = DeviceCredentials::load(&path, PermissionMode::Default)
        .with_context(|| format!("cannot read the device credentials {}", path.display()))?;
    let proxy = args.transport.proxy()?;
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    match rt.block_on(logout(&creds, args.transport.protocol, proxy.as_ref())) {
        Ok(device) => {
            std::fs::remove_file(&path).with_context(|| {
                format!(
                    "signed out at the edge, but cannot delete {}",
                    path.display()
                )
            })?;
            eprintln!(
                "Signed out: device {device} is revoked at the edge and {} is deleted.",
                path.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!("The credentials file {} is kept.", path.display());
            Ok(ExitCode::from(1))
        }
    }
}
