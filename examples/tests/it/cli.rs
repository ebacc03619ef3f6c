//! The `zt` binary answers `--version` and `--help`, and says plainly what it cannot do.

use std::process::Command;

fn zt(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_zt"))
        .args(args)
        .output()
        .expect("run zt")
}

#[test]
fn version_names_the_package_version() {
    let out = zt(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("zt {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn help_lists_every_role() {
    let out = zt(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in [
        "tunnel", "route", "vnet", "list", "rule", "user", "account", "edge", "client", "demo",
    ] {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(cmd)),
            "`zt --help` does not list `{cmd}`:\n{text}"
        );
    }
}

#[test]
fn unknown_subcommand_fails_with_usage() {
    let out = zt(&["frobnicate"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("frobnicate"));
}
