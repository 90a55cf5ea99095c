//! Every kernel function `sys` declares, as the host kernel implements it. `sys` re-exports
//! these at its root under the same names as the Windows imports, with signatures checked at
//! compile time against the one declaration list in `imports.rs`.

pub use super::clock::KeQueryInterruptTime;
pub use super::ntos::*;
pub use super::wsk::{WskCaptureProviderNPI, WskDeregister, WskRegister, WskReleaseProviderNPI};
