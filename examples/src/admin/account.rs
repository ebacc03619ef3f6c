//! `zt account`: the edge's account tag, CA fingerprint and certificate, default virtual
//! network and advertised addresses.

use std::process::ExitCode;

use super::args::AccountArgs;
use super::finish;
use super::http::AdminClient;
use super::output::{arr, print_json, s};

pub(crate) fn run(args: AccountArgs) -> anyhow::Result<ExitCode> {
    finish((|| {
        let c = AdminClient::new(&args.admin)?;
        let v = c.get("/v1/account")?;
        if c.json() {
            print_json(&v);
        } else {
            println!("Account tag:          {}", s(&v["account_tag"]));
            println!("CA fingerprint:       {}", s(&v["ca_fingerprint"]));
            println!("CA certificate:       {}", s(&v["ca_pem_path"]));
            println!("Default vnet:         {}", s(&v["default_vnet"]["name"]));
            let edges: Vec<String> = arr(&v["edge"]).iter().map(s).collect();
            if !edges.is_empty() {
                println!("Edge addresses:       {}", edges.join(", "));
            }
        }
        Ok(())
    })())
}
