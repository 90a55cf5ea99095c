//! Benchmarks and load generation for the WSK library.
//!
//! - [`load`]: RFC 862 echo scenarios and load over plain `std::net`, shared by the Wine test,
//!   the host-mode driver tests and the `loadgen` tool for Windows test VMs.

pub mod load;
