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

pub mod driver;
pub mod settings;
mod slot;

pub use wsk_executor as executor;
pub use wsk_net as net;
pub use wsk_sys as sys;

pub use driver::{Entry, Failure, FailureStatus, Service};
pub use settings::Parameters;
pub use wsk_executor::{Budget, Runner, RunnerKind, TaskPool, sleep};
pub use wsk_net::{
    Driver, Error, ErrorKind, IoBuf, Result, TcpListener, TcpStream, UdpSocket, WskClient,
};
pub use wsk_sys::kprint;
