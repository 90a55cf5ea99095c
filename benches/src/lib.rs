//! Benchmarks and load generation for the WSK library.
//! How the crates fit together: `docs/ARCHITECTURE.md` in the repository; figures and
//! methods: `benches/README.md`.
//!
//! - [`load`]: RFC 862 echo scenarios and load over plain `std::net`, shared by the Wine test,
//!   the host-mode driver tests and the `loadgen` tool for Windows test VMs.
//! - [`closed_loop`]: the closed-loop echo client `cargo xtask bench-echo` runs (through
//!   `loadgen --bench`): round trips per second and HDR-histogram percentiles.
//! - [`idle`]: idle connections and resident-set readings for `cargo xtask bench-idle`
//!   (memory per idle connection).

pub mod closed_loop;
pub mod idle;
pub mod load;
