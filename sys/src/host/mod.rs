//! The host kernel: a user-mode NT + WSK with Windows semantics and a verifier, so that
//! driver code runs and is tested on Linux unchanged.

// The interrupt-time clock (KeQueryInterruptTime) lives apart from ntos: it needs no kernel.
mod clock;
pub mod exports;
pub mod faults;
mod ntos;
mod wsk;
