//! The service's settings from the driver's `Parameters` registry key (Windows, Wine, and the
//! host kernel, whose host program writes its command-line flags there).
//!
//! | value | type | default |
//! |---|---|---|
//! | `Port` | `REG_DWORD` 0 to 65535 (0: WSK picks one, logged at start) | 7007 |
//! | `BindAddress` | `REG_SZ` | `0.0.0.0` |
//! | `Runner` | `REG_SZ` `dpc` or `passive` | `dpc` |
//! | `MaxConnections` | `REG_DWORD` 1 to 1024 | 1024 |
//! | `IdleTimeoutMs` | `REG_DWORD` ms of silence before a connection is closed (0: never) | 0 |
//!
//! A missing value keeps its default; a value out of range or malformed fails the start
//! ([`SettingsError`]) rather than being replaced by a default the administrator did not ask
//! for.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use core::time::Duration;

use wsk_executor::RunnerKind;
use wsk_sys::{
    self as sys, HANDLE, KEY_READ, KEY_VALUE_PARTIAL_INFORMATION, KeyValuePartialInformation,
    OBJ_CASE_INSENSITIVE, OBJ_KERNEL_HANDLE, REG_DWORD, REG_SZ, UNICODE_STRING,
};

use crate::echo::{MAX_CONNECTIONS, Settings};

/// The default port.
pub const DEFAULT_PORT: u16 = 7007;

/// The defaults: port 7007 on all IPv4 addresses, DPC runner, 1024 connections, no idle
/// timeout.
#[must_use]
pub fn defaults() -> Settings {
    Settings {
        listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), DEFAULT_PORT),
        runner: RunnerKind::Dpc,
        max_connections: MAX_CONNECTIONS,
        idle_timeout: None,
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

/// A registry value that is present but unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettingsError {
    /// `Port` is above 65535.
    Port(u32),
    /// `MaxConnections` is 0 or above [`MAX_CONNECTIONS`] (the compiled task pool's size).
    MaxConnections(u32),
    /// `Runner` is neither `dpc` nor `passive`.
    Runner,
    /// `BindAddress` is not an IP address.
    BindAddress,
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Port(port) => write!(f, "Port {port} is not a port (0 to 65535)"),
            Self::MaxConnections(n) => write!(
                f,
                "MaxConnections {n} is outside 1 to {MAX_CONNECTIONS} (the task pool's size)"
            ),
            Self::Runner => f.write_str("Runner is neither dpc nor passive"),
            Self::BindAddress => f.write_str("BindAddress is not an IP address"),
        }
    }
}

/// Checks a `MaxConnections` value: 1 to [`MAX_CONNECTIONS`].
///
/// # Errors
/// [`SettingsError::MaxConnections`] outside that range.
pub fn parse_max_connections(value: u32) -> Result<usize, SettingsError> {
    usize::try_from(value)
        .ok()
        .filter(|n| (1..=MAX_CONNECTIONS).contains(n))
        .ok_or(SettingsError::MaxConnections(value))
}

/// Reads the settings under `<registry_path>\Parameters`: a missing value (or key) keeps its
/// default.
///
/// # Errors
/// The first value that is present but out of range or malformed.
///
/// # Safety
/// `registry_path` is a valid counted string (as `DriverEntry` receives it).
///
/// # IRQL
/// `PASSIVE_LEVEL`.
pub unsafe fn from_registry(
    registry_path: *const UNICODE_STRING,
) -> Result<Settings, SettingsError> {
    // SAFETY: forwarded contract.
    let Some(key) = (unsafe { open_parameters(registry_path) }) else {
        return Ok(defaults());
    };
    let settings = read_parameters(key);
    // SAFETY: a handle ZwOpenKey gave us, closed once.
    unsafe { sys::ZwClose(key) };
    settings
}

/// Reads each value of the open `Parameters` key over the defaults.
fn read_parameters(key: HANDLE) -> Result<Settings, SettingsError> {
    let mut settings = defaults();
    let mut buf = ValueBuf::new();
    if let Some(port) = buf.dword(key, "Port") {
        let port = u16::try_from(port).map_err(|_| SettingsError::Port(port))?;
        settings.listen.set_port(port);
    }
    if let Some(max) = buf.dword(key, "MaxConnections") {
        settings.max_connections = parse_max_connections(max)?;
    }
    if let Some(millis) = buf.dword(key, "IdleTimeoutMs") {
        settings.idle_timeout = parse_idle_timeout(millis);
    }
    let mut text = [0u8; 64];
    if let Some(name) = buf.string(key, "Runner", &mut text) {
        settings.runner = parse_runner(name).ok_or(SettingsError::Runner)?;
    }
    if let Some(addr) = buf.string(key, "BindAddress", &mut text) {
        let ip = addr
            .parse::<IpAddr>()
            .map_err(|_| SettingsError::BindAddress)?;
        settings.listen.set_ip(ip);
    }
    Ok(settings)
}

/// Opens `<registry_path>\Parameters` for reading.
unsafe fn open_parameters(registry_path: *const UNICODE_STRING) -> Option<HANDLE> {
    const SUFFIX: &str = "\\Parameters";
    let mut path = [0u16; 512];
    // SAFETY: the caller guarantees a valid counted string, alive for this call.
    let registry_path = unsafe { &*registry_path };
    // SAFETY: the same guarantee: its buffer holds `Length` readable bytes for this call.
    let base = unsafe { registry_path.as_wide() };
    let total = base.len() + SUFFIX.len();
    if total > path.len() {
        return None;
    }
    path[..base.len()].copy_from_slice(base);
    for (dst, src) in path[base.len()..total]
        .iter_mut()
        .zip(SUFFIX.encode_utf16())
    {
        *dst = src;
    }
    let mut name = UNICODE_STRING::from_wide(&path[..total]);
    let mut attributes = sys::InitializeObjectAttributes(
        &raw mut name,
        OBJ_KERNEL_HANDLE | OBJ_CASE_INSENSITIVE,
        core::ptr::null_mut(),
        core::ptr::null_mut(),
    );
    let mut key: HANDLE = core::ptr::null_mut();
    // SAFETY: PASSIVE_LEVEL (DriverEntry); every pointer refers to a live local.
    let status = unsafe { sys::ZwOpenKey(&raw mut key, KEY_READ, &raw mut attributes) };
    sys::NT_SUCCESS(status).then_some(key)
}

/// A buffer for `ZwQueryValueKey(KeyValuePartialInformation)`, 8-aligned.
#[repr(C, align(8))]
struct ValueBuf([u8; 256]);

impl ValueBuf {
    fn new() -> Self {
        Self([0; 256])
    }

    /// Queries `name`; returns (type, data) on success.
    fn query(&mut self, key: HANDLE, name: &str) -> Option<(u32, &[u8])> {
        let mut wide = [0u16; 32];
        let len = name.encode_utf16().count().min(wide.len());
        for (dst, src) in wide.iter_mut().zip(name.encode_utf16()) {
            *dst = src;
        }
        let mut value_name = UNICODE_STRING::from_wide(&wide[..len]);
        let mut returned = 0u32;
        let size = u32::try_from(self.0.len()).unwrap_or(u32::MAX);
        // SAFETY: PASSIVE_LEVEL; the output buffer is ours, 8-aligned and `size` bytes long.
        let status = unsafe {
            sys::ZwQueryValueKey(
                key,
                &raw mut value_name,
                KeyValuePartialInformation,
                self.0.as_mut_ptr().cast(),
                size,
                &raw mut returned,
            )
        };
        if !sys::NT_SUCCESS(status) {
            return None;
        }
        let header = core::mem::offset_of!(KEY_VALUE_PARTIAL_INFORMATION, Data);
        // On success the buffer starts with a KEY_VALUE_PARTIAL_INFORMATION header; read its
        // fields as bytes so no reference to a possibly unaligned struct is made.
        let field = |offset: usize| {
            let b = &self.0[offset..offset + 4];
            u32::from_le_bytes([b[0], b[1], b[2], b[3]])
        };
        let kind = field(core::mem::offset_of!(KEY_VALUE_PARTIAL_INFORMATION, Type));
        let data_len = field(core::mem::offset_of!(
            KEY_VALUE_PARTIAL_INFORMATION,
            DataLength
        ));
        let len = usize::try_from(data_len).ok()?.min(self.0.len() - header);
        Some((kind, &self.0[header..header + len]))
    }

    fn dword(&mut self, key: HANDLE, name: &str) -> Option<u32> {
        match self.query(key, name)? {
            (REG_DWORD, data) if data.len() >= 4 => {
                Some(u32::from_le_bytes([data[0], data[1], data[2], data[3]]))
            }
            _ => None,
        }
    }

    /// A `REG_SZ` as ASCII text in `out` (non-ASCII values are rejected).
    fn string<'a>(&mut self, key: HANDLE, name: &str, out: &'a mut [u8]) -> Option<&'a str> {
        let (kind, data) = self.query(key, name)?;
        if kind != REG_SZ {
            return None;
        }
        let mut n = 0;
        for pair in data.chunks_exact(2) {
            let unit = u16::from_le_bytes([pair[0], pair[1]]);
            if unit == 0 {
                break;
            }
            let byte = u8::try_from(unit).ok().filter(u8::is_ascii)?;
            *out.get_mut(n)? = byte;
            n += 1;
        }
        core::str::from_utf8(&out[..n]).ok()
    }
}

#[cfg(test)]
mod tests {
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
        assert_eq!(d.max_connections, MAX_CONNECTIONS);
        assert_eq!(d.idle_timeout, None);
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
        assert_eq!(parse_max_connections(1024), Ok(MAX_CONNECTIONS));
        assert_eq!(
            parse_max_connections(5000),
            Err(SettingsError::MaxConnections(5000))
        );
        assert_eq!(
            parse_max_connections(0),
            Err(SettingsError::MaxConnections(0))
        );
    }
}
