//! What the server examples share: loading `ours` (the echo driver) or the `floor` into a host
//! kernel on a loopback port.

use wsk_host::{Driver, Kernel, RegValue, Registry};

/// Loads `which` (`"ours"`: `wskecho` on the DPC runner; `"ours-events"`: the same with
/// `EventDriven` 1; `"ours-passive"`: `wskecho` on the passive runner; anything else:
/// `wskfloor`) into
/// `kernel`, listening on 127.0.0.1:`port`; returns the driver and the log line that says it
/// listens.
pub fn load_server(
    kernel: &Kernel,
    which: &str,
    port: u16,
) -> Result<(Driver, &'static str), String> {
    if matches!(which, "ours" | "ours-events" | "ours-passive") {
        let runner = if which == "ours-passive" {
            "passive"
        } else {
            "dpc"
        };
        let registry = Registry::new()
            .with("Parameters", "Port", RegValue::Dword(port.into()))
            .with(
                "Parameters",
                "BindAddress",
                RegValue::Sz("127.0.0.1".into()),
            )
            .with("Parameters", "Runner", RegValue::Sz(runner.into()))
            .with(
                "Parameters",
                "EventDriven",
                RegValue::Dword((which == "ours-events").into()),
            );
        let driver = kernel
            .load_driver(wskecho::DriverEntry, "WskEcho", registry)
            .map_err(|s| format!("wskecho DriverEntry failed: {s:#x}"))?;
        Ok((driver, "wskecho: listening on"))
    } else {
        let registry = Registry::new()
            .with("Parameters", "Port", RegValue::Dword(port.into()))
            .with("Parameters", "LoopbackOnly", RegValue::Dword(1));
        let driver = kernel
            .load_driver(wskfloor::DriverEntry, "WskFloor", registry)
            .map_err(|s| format!("wskfloor DriverEntry failed: {s:#x}"))?;
        Ok((driver, "wskfloor: listening on"))
    }
}
