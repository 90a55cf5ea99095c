//! `wsk`: the one crate a Windows kernel driver on Winsock Kernel depends on.
//!
//! - [`net`] (`wsk-net`): `TcpListener`, `TcpStream`, `UdpSocket`, name resolution;
//! - [`executor`] (`wsk-executor`): the no-alloc runners tasks run on;
//! - [`driver`]: the registered client in a `static` ([`Service`]) and the entry point
//!   ([`driver_entry!`]), which enforce the unload order;
//! - [`settings`]: typed values from the service's `Parameters` registry key;
//! - [`sys`] (`wsk-sys`): the raw NT and WSK definitions, for what the rest does not cover.
//!
//! The items nearly every driver uses are re-exported at the root. The build settings a
//! `.sys` needs are one call in the driver's `build.rs`: `wsk_build::driver()`.
//!
//! A whole driver, an echo service: `README.md` ("Writing a driver"), compiled as the
//! example `wsk/examples/echo_driver.rs`.
#![no_std]

// Under `--cfg loom` the executor exposes only its core: the crate is then the client slot's
// loom models and nothing else.
#[cfg(not(loom))]
pub mod driver;
#[cfg(not(loom))]
pub mod settings;
#[cfg_attr(
    loom,
    allow(dead_code, reason = "only the loom models use it under loom")
)]
mod slot;

pub use wsk_executor as executor;
pub use wsk_net as net;
pub use wsk_sys as sys;

#[cfg(not(loom))]
pub use driver::{Entry, Failure, FailureStatus, Service};
#[cfg(not(loom))]
pub use settings::Parameters;
#[cfg(not(loom))]
pub use wsk_executor::{Budget, Runner, RunnerKind, TaskPool, sleep};
#[cfg(not(loom))]
pub use wsk_net::{
    Driver, Error, ErrorKind, IoBuf, Result, TcpListener, TcpStream, UdpSocket, WskClient,
};
pub use wsk_sys::kprint;
