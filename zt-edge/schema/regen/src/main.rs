//! Regenerates the Rust code for zt-edge's Cap'n Proto schemas.

use std::path::Path;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let schema = root.join("schema");
    let out = root.join("src/cloudflared/generated");
    let mut cmd = capnpc::CompilerCommand::new();
    cmd.src_prefix(&schema)
        .file(schema.join("tunnelrpc.capnp"))
        .file(schema.join("quic_metadata.capnp"))
        .default_parent_module(vec!["cloudflared".into(), "generated".into()])
        .output_path(&out);
    if let Err(err) = cmd.run() {
        eprintln!("capnp compile failed: {err}");
        std::process::exit(1);
    }
    println!("wrote {}", out.display());
}
