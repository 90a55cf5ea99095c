//! The service's settings from the driver's `Parameters` registry key (Windows, Wine, and the
//! host kernel, whose host program writes its command-line flags there).
//!
//! | value | type | default |
//! |---|---|---|
//! | `Port` | `REG_DWORD` 0 to 65535 (0: WSK picks one, logged at start) | 7007 |
//! | `BindAddress` | `REG_SZ` | `0.0.0.0` |
//! | `Runner` | `REG_SZ` `dpc` or `passive` | `dpc` |
//! | `MaxConnections` | `REG_DWORD` 1 to 1024 (12288 with the `scale` feature) | 1024 |
//! | `IdleTimeoutMs` | `REG_DWORD` ms of silence before a connection is closed (0: never) | 0 |
//! | `EventDriven` | `REG_DWORD` 0 (receive IRPs) or 1 (WSK receive event callbacks) | 0 |
//!
//! A missing value (or key) keeps its default; a value out of range or malformed fails the
//! start ([`wsk::settings::Error`], naming the value) rather than being replaced by a default
//! the administrator did not ask for. The registry reading itself is `wsk::settings`.
#![forbid(unsafe_code)]

use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use core::time::Duration;

use wsk::RunnerKind;
use wsk::settings::{Error, ErrorKind, Parameters};

use crate::echo::{DEFAULT_MAX_CONNECTIONS, MAX_CONNECTIONS, Settings};

/// The default port.
pub const DEFAULT_PORT: u16 = 7007;

/// The defaults: port 7007 on all IPv4 addresses, DPC runner, 1024 connections, no idle
/// timeout.
#[must_use]
pub fn defaults() -> Settings {
    Settings {
        listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), DEFAULT_PORT),
        runner: RunnerKind::Dpc,
        max_connections: DEFAULT_MAX_CONNECTIONS,
        idle_timeout: None,
        event_driven: false,
    }
}

/// An `IdleTimeoutMs` value: 0 turns the idle timeout off, anything else is milliseconds
/// (every `REG_DWORD` is a valid duration).
#[must_use]
pub fn parse_idle_timeout(millis: u32) -> Option<Duration> {
    (millis > 0).then(|| Duration::from_millis(millis.into()))
}

/// Parses a runner name (`dpc` or `passive`, any case).
#[must_use]
pub fn parse_runner(name: &str) -> Option<RunnerKind> {
    if name.eq_ignore_ascii_case("dpc") {
        Some(RunnerKind::Dpc)
    } else if name.eq_ignore_ascii_case("passive") {
        Some(RunnerKind::Passive)
    } else {
        None
    }
}

/// [`MAX_CONNECTIONS`] as a registry number (the two are checked equal at compile time).
#[cfg(not(feature = "scale"))]
const MAX_CONNECTIONS_DWORD: u32 = 1024;
/// See the definition without the `scale` feature.
#[cfg(feature = "scale")]
const MAX_CONNECTIONS_DWORD: u32 = 12 * 1024;
const _: () = assert!(MAX_CONNECTIONS_DWORD as usize == MAX_CONNECTIONS);

/// Checks a `MaxConnections` value: 1 to [`MAX_CONNECTIONS`] (the compiled task pool's size).
///
/// # Errors
/// [`ErrorKind::OutOfRange`] outside that range.
pub fn parse_max_connections(value: u32) -> Result<usize, Error> {
    if (1..=MAX_CONNECTIONS_DWORD).contains(&value) {
        Ok(usize::try_from(value).unwrap_or(MAX_CONNECTIONS))
    } else {
        Err(Error::new(
            "MaxConnections",
            ErrorKind::OutOfRange {
                value,
                min: 1,
                max: MAX_CONNECTIONS_DWORD,
            },
        ))
    }
}

/// Reads the settings from the service's `Parameters` key over the [`defaults`].
///
/// # Errors
/// The first value that is present but out of range or malformed, by name.
///
/// # IRQL
/// `PASSIVE_LEVEL`.
pub fn read(parameters: &Parameters) -> Result<Settings, Error> {
    let mut settings = defaults();
    if let Some(port) = parameters.dword_in("Port", 0..=u16::MAX.into())? {
        settings
            .listen
            .set_port(u16::try_from(port).unwrap_or(DEFAULT_PORT));
    }
    if let Some(max) = parameters.dword("MaxConnections")? {
        settings.max_connections = parse_max_connections(max)?;
    }
    if let Some(millis) = parameters.dword("IdleTimeoutMs")? {
        settings.idle_timeout = parse_idle_timeout(millis);
    }
    if let Some(on) = parameters.dword_in("EventDriven", 0..=1)? {
        settings.event_driven = on == 1;
    }
    let mut text = [0u8; 16];
    if let Some(name) = parameters.string("Runner", &mut text)? {
        settings.runner =
            parse_runner(name).ok_or(Error::new("Runner", ErrorKind::Invalid("dpc or passive")))?;
    }
    if let Some(ip) = parameters.parsed::<IpAddr>("BindAddress", "an IP address")? {
        settings.listen.set_ip(ip);
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use std::string::ToString;

    use super::*;

    #[test]
    fn runner_names_parse_in_any_case_and_reject_others() {
        assert_eq!(parse_runner("DPC"), Some(RunnerKind::Dpc));
        assert_eq!(parse_runner("passive"), Some(RunnerKind::Passive));
        assert_eq!(parse_runner("thread"), None);
    }

    #[test]
    fn defaults_are_port_7007_on_all_addresses() {
        let d = defaults();
        assert_eq!(d.listen.port(), 7007);
        assert!(d.listen.ip().is_unspecified());
        assert_eq!(d.runner, RunnerKind::Dpc);
        assert_eq!(d.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(d.idle_timeout, None);
        assert!(!d.event_driven);
    }

    #[test]
    fn an_idle_timeout_of_zero_is_off_and_others_are_milliseconds() {
        assert_eq!(parse_idle_timeout(0), None);
        assert_eq!(parse_idle_timeout(1500), Some(Duration::from_millis(1500)));
        assert_eq!(
            parse_idle_timeout(u32::MAX),
            Some(Duration::from_millis(u64::from(u32::MAX)))
        );
    }

    #[test]
    fn a_limit_above_the_pool_size_is_an_error_not_a_silent_cap() {
        assert_eq!(parse_max_connections(1), Ok(1));
        assert_eq!(
            parse_max_connections(MAX_CONNECTIONS_DWORD),
            Ok(MAX_CONNECTIONS)
        );
        let too_many = parse_max_connections(MAX_CONNECTIONS_DWORD + 1).unwrap_err();
        assert_eq!(
            too_many.to_string(),
            std::format!(
                "MaxConnections {} is outside 1 to {MAX_CONNECTIONS_DWORD}",
                MAX_CONNECTIONS_DWORD + 1
            )
        );
        assert!(parse_max_connections(0).is_err());
    }
}
