//! Criterion benchmarks of zt's hot paths.
//!
//! This package has no API of its own: each file in `benches/benches/` is one criterion
//! group, run with `cargo bench -p zt-benches --bench <name>`. `BENCHMARKS.md` at the
//! repository root records the figures and the commands that produced them.
//!
//! [`path`] holds the set-up shared by the full-path benchmarks (`benches/benches/path.rs`):
//! an edge, a connector, a client and origin servers on loopback in one process;
//! [`procs`] runs the edge and the connector in processes of their own, for memory figures
//! (`benches/benches/path_scale.rs`); [`hol`] measures small flows beside a bulk one the
//! same way on every path.

pub mod edges;
pub mod hol;
pub mod path;
pub mod procs;
