//! The one error type of the crate: a kind a driver can act on, the raw `NTSTATUS` it came
//! from (when the kernel produced it), and the operation that failed.

use core::fmt;

use wsk_sys::{self as sys, NTSTATUS};

/// What went wrong, in terms a driver can act on.
///
/// Match on it rather than on raw `NTSTATUS` values; the enum is `#[non_exhaustive]`, so keep
/// a catch-all arm.
///
/// ```no_run
/// # async fn demo(stream: &wsk_net::TcpStream, buf: wsk_net::IoBuf) {
/// use wsk_net::ErrorKind;
/// let (n, _buf) = stream.recv(buf).await;
/// match n {
///     Ok(0) => { /* the peer sent FIN */ }
///     Ok(_) => { /* data */ }
///     Err(e) if e.kind() == ErrorKind::ConnectionReset => { /* the peer reset */ }
///     Err(e) => { let _ = e.kind().describe(); }
/// }
/// # }
/// ```
///
/// # IRQL
/// Any: a plain value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The peer reset the connection.
    ConnectionReset,
    /// The peer refused the connection (nothing listening, or port unreachable).
    ConnectionRefused,
    /// The connection was aborted locally (abortive disconnect, or the transport gave up).
    ConnectionAborted,
    /// The connection is not (or no longer) there for this operation.
    NotConnected,
    /// A deadline passed.
    TimedOut,
    /// The operation was cancelled.
    Cancelled,
    /// The local address is in use.
    AddrInUse,
    /// The caller may not use this address or port (a privileged port, say).
    PermissionDenied,
    /// The address is not available or not valid here.
    AddrNotAvailable,
    /// The remote host is unreachable.
    HostUnreachable,
    /// The network is unreachable.
    NetworkUnreachable,
    /// The socket or client is in the wrong state for the call (after close, after
    /// disconnect, during deregistration, or a second concurrent send/receive).
    InvalidState,
    /// An argument is invalid (empty buffer, wrong address family, too large).
    InvalidInput,
    /// Out of memory, IRPs or MDLs.
    NoResources,
    /// The WSK provider does not implement this (e.g. `WskDisconnect` under Wine).
    Unsupported,
    /// A name did not resolve.
    NotFound,
    /// The call needs `PASSIVE_LEVEL` but was made, or its future polled, above it: typically
    /// [`resolve`](crate::resolve) or [`WskClient`](crate::WskClient) registration in a task
    /// of a DPC runner (polled at `DISPATCH_LEVEL`). Run it on a passive runner or in
    /// `block_on`, or use [`TcpStream::connect_host`](crate::TcpStream::connect_host), which
    /// hands its resolution to a `PASSIVE_LEVEL` thread itself. Nothing was done.
    WrongIrql,
    /// Any other kernel status.
    Other,
}

impl ErrorKind {
    /// What the kind means, in a few words (the text [`Error`]'s `Display` uses).
    ///
    /// ```no_run
    /// assert_eq!(wsk_net::ErrorKind::TimedOut.describe(), "timed out");
    /// ```
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub fn describe(self) -> &'static str {
        match self {
            Self::ConnectionReset => "connection reset by peer",
            Self::ConnectionRefused => "connection refused",
            Self::ConnectionAborted => "connection aborted",
            Self::NotConnected => "not connected",
            Self::TimedOut => "timed out",
            Self::Cancelled => "cancelled",
            Self::AddrInUse => "address in use",
            Self::PermissionDenied => "permission denied",
            Self::AddrNotAvailable => "address not available",
            Self::HostUnreachable => "host unreachable",
            Self::NetworkUnreachable => "network unreachable",
            Self::InvalidState => "invalid state for this operation",
            Self::InvalidInput => "invalid argument",
            Self::NoResources => "insufficient resources",
            Self::Unsupported => "not supported by the WSK provider",
            Self::NotFound => "name not found",
            Self::WrongIrql => "needs PASSIVE_LEVEL, called or polled above it",
            Self::Other => "kernel error",
        }
    }
}

/// A failed operation: its [`ErrorKind`], the `NTSTATUS` behind it (0 when the library itself
/// refused the call), and which operation failed.
///
/// `Display` prints `operation: description (NTSTATUS 0x........)`, for example
/// `recv: connection reset by peer (NTSTATUS 0xC000020D)`; the status part is left out when
/// the library refused the call itself.
///
/// ```no_run
/// # async fn demo(stream: &wsk_net::TcpStream, buf: wsk_net::IoBuf) {
/// let (result, _buf) = stream.send(buf).await;
/// if let Err(e) = result {
///     let _kind = e.kind();          // what to do about it
///     let _status = e.status();      // Some(NTSTATUS) when the kernel reported it
///     let _op = e.operation();       // "send"
/// }
/// # }
/// ```
///
/// # IRQL
/// Any: a plain value; every method is a pure accessor or constructor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    status: NTSTATUS,
    operation: &'static str,
}

/// `Result` with this crate's [`Error`].
///
/// ```no_run
/// async fn local(listener: &wsk_net::TcpListener) -> wsk_net::Result<core::net::SocketAddr> {
///     listener.local_addr().await
/// }
/// ```
///
/// # IRQL
/// Any: a plain value.
pub type Result<T, E = Error> = core::result::Result<T, E>;

impl Error {
    /// An error the library raises itself (no kernel status): [`Error::status`] is `None`.
    ///
    /// ```no_run
    /// use wsk_net::{Error, ErrorKind};
    /// let e = Error::new(ErrorKind::InvalidInput, "parse_request");
    /// assert_eq!(e.status(), None);
    /// ```
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub const fn new(kind: ErrorKind, operation: &'static str) -> Self {
        Self {
            kind,
            status: 0,
            operation,
        }
    }

    /// An error from a kernel status; the kind is derived from it (unknown statuses are
    /// [`ErrorKind::Other`]). A status of 0 (`STATUS_SUCCESS`) is stored as "no status".
    ///
    /// ```no_run
    /// use wsk_net::{Error, ErrorKind};
    /// let e = Error::from_status(0xC000_0120_u32.cast_signed(), "recv"); // STATUS_CANCELLED
    /// assert_eq!(e.kind(), ErrorKind::Cancelled);
    /// ```
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub fn from_status(status: NTSTATUS, operation: &'static str) -> Self {
        Self {
            kind: kind_of(status),
            status,
            operation,
        }
    }

    /// The kind. See the example on [`Error`].
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub const fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The raw `NTSTATUS`, or `None` when the library refused the call itself. See the
    /// example on [`Error`].
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub const fn status(&self) -> Option<NTSTATUS> {
        if self.status == 0 {
            None
        } else {
            Some(self.status)
        }
    }

    /// The operation that failed (`"recv"`, `"connect"`, ...). See the example on [`Error`].
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub const fn operation(&self) -> &'static str {
        self.operation
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.operation, self.kind.describe())?;
        if self.status != 0 {
            write!(f, " (NTSTATUS {:#010X})", self.status.cast_unsigned())?;
        }
        Ok(())
    }
}

impl core::error::Error for Error {}

/// `STATUS_FILE_FORCED_CLOSED`: the socket no longer works and must be closed. The WSK pages of
/// `WskSend`, `WskReceive` and `WskDisconnect` list it among their completion statuses.
const STATUS_FILE_FORCED_CLOSED: NTSTATUS = 0xC000_00B6_u32.cast_signed();
/// `STATUS_INVALID_CONNECTION`: the operation needs a connection the socket no longer has.
const STATUS_INVALID_CONNECTION: NTSTATUS = 0xC000_0140_u32.cast_signed();
/// `STATUS_TOO_MANY_OPENED_FILES`: the system's handle or descriptor table is full.
const STATUS_TOO_MANY_OPENED_FILES: NTSTATUS = 0xC000_011F_u32.cast_signed();
/// `STATUS_TOO_MANY_ADDRESSES`: no local address (ephemeral port) is left to bind to.
const STATUS_TOO_MANY_ADDRESSES: NTSTATUS = 0xC000_0209_u32.cast_signed();
/// `STATUS_HOST_DOWN`: the remote host is down.
const STATUS_HOST_DOWN: NTSTATUS = 0xC000_0350_u32.cast_signed();

/// Maps a failure status to the kind a driver acts on.
///
/// Every status the host kernel's WSK provider completes an operation with, and those the WSK
/// pages list for Windows, has a specific kind; only a status outside both (notably the
/// generic `STATUS_UNSUCCESSFUL`) is [`ErrorKind::Other`].
///
/// # IRQL
/// Any.
#[must_use]
pub fn kind_of(status: NTSTATUS) -> ErrorKind {
    match status {
        sys::STATUS_CONNECTION_RESET | sys::STATUS_REMOTE_DISCONNECT => ErrorKind::ConnectionReset,
        sys::STATUS_CONNECTION_REFUSED
        | sys::STATUS_PORT_UNREACHABLE
        | sys::STATUS_PROTOCOL_UNREACHABLE => ErrorKind::ConnectionRefused,
        sys::STATUS_CONNECTION_ABORTED
        | sys::STATUS_LOCAL_DISCONNECT
        | sys::STATUS_REQUEST_ABORTED
        | STATUS_FILE_FORCED_CLOSED => ErrorKind::ConnectionAborted,
        sys::STATUS_CONNECTION_DISCONNECTED
        | sys::STATUS_GRACEFUL_DISCONNECT
        | STATUS_INVALID_CONNECTION => ErrorKind::NotConnected,
        sys::STATUS_IO_TIMEOUT | sys::STATUS_TIMEOUT => ErrorKind::TimedOut,
        sys::STATUS_CANCELLED => ErrorKind::Cancelled,
        sys::STATUS_ADDRESS_ALREADY_EXISTS
        | sys::STATUS_ADDRESS_ALREADY_ASSOCIATED
        | sys::STATUS_SHARING_VIOLATION => ErrorKind::AddrInUse,
        sys::STATUS_ACCESS_DENIED => ErrorKind::PermissionDenied,
        sys::STATUS_INVALID_ADDRESS
        | sys::STATUS_INVALID_ADDRESS_COMPONENT
        | sys::STATUS_INVALID_ADDRESS_WILDCARD
        | STATUS_TOO_MANY_ADDRESSES => ErrorKind::AddrNotAvailable,
        sys::STATUS_HOST_UNREACHABLE | STATUS_HOST_DOWN => ErrorKind::HostUnreachable,
        sys::STATUS_NETWORK_UNREACHABLE => ErrorKind::NetworkUnreachable,
        // STATUS_DEVICE_NOT_READY: after WskDeregister; STATUS_INVALID_HANDLE: a client or
        // socket the provider no longer knows.
        sys::STATUS_INVALID_DEVICE_STATE
        | sys::STATUS_DEVICE_NOT_READY
        | sys::STATUS_INVALID_HANDLE => ErrorKind::InvalidState,
        sys::STATUS_INVALID_PARAMETER | sys::STATUS_BUFFER_TOO_SMALL => ErrorKind::InvalidInput,
        sys::STATUS_INSUFFICIENT_RESOURCES
        | sys::STATUS_NO_MEMORY
        | STATUS_TOO_MANY_OPENED_FILES => ErrorKind::NoResources,
        sys::STATUS_NOT_IMPLEMENTED | sys::STATUS_NOT_SUPPORTED => ErrorKind::Unsupported,
        sys::STATUS_NOT_FOUND => ErrorKind::NotFound,
        _ => ErrorKind::Other,
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::ToString;

    use super::*;

    #[test]
    fn statuses_map_to_the_kinds_a_driver_acts_on() {
        let cases = [
            (sys::STATUS_CONNECTION_RESET, ErrorKind::ConnectionReset),
            (sys::STATUS_REMOTE_DISCONNECT, ErrorKind::ConnectionReset),
            (sys::STATUS_CONNECTION_REFUSED, ErrorKind::ConnectionRefused),
            (sys::STATUS_PORT_UNREACHABLE, ErrorKind::ConnectionRefused),
            (sys::STATUS_CONNECTION_ABORTED, ErrorKind::ConnectionAborted),
            (STATUS_FILE_FORCED_CLOSED, ErrorKind::ConnectionAborted),
            (sys::STATUS_CONNECTION_DISCONNECTED, ErrorKind::NotConnected),
            (STATUS_INVALID_CONNECTION, ErrorKind::NotConnected),
            (sys::STATUS_IO_TIMEOUT, ErrorKind::TimedOut),
            (sys::STATUS_CANCELLED, ErrorKind::Cancelled),
            (sys::STATUS_ADDRESS_ALREADY_EXISTS, ErrorKind::AddrInUse),
            (sys::STATUS_ADDRESS_ALREADY_ASSOCIATED, ErrorKind::AddrInUse),
            (sys::STATUS_ACCESS_DENIED, ErrorKind::PermissionDenied),
            (
                sys::STATUS_INVALID_ADDRESS_COMPONENT,
                ErrorKind::AddrNotAvailable,
            ),
            (STATUS_TOO_MANY_ADDRESSES, ErrorKind::AddrNotAvailable),
            (sys::STATUS_HOST_UNREACHABLE, ErrorKind::HostUnreachable),
            (
                sys::STATUS_NETWORK_UNREACHABLE,
                ErrorKind::NetworkUnreachable,
            ),
            (sys::STATUS_INVALID_DEVICE_STATE, ErrorKind::InvalidState),
            (sys::STATUS_DEVICE_NOT_READY, ErrorKind::InvalidState),
            (sys::STATUS_INVALID_HANDLE, ErrorKind::InvalidState),
            (sys::STATUS_INVALID_PARAMETER, ErrorKind::InvalidInput),
            (sys::STATUS_BUFFER_TOO_SMALL, ErrorKind::InvalidInput),
            (sys::STATUS_INSUFFICIENT_RESOURCES, ErrorKind::NoResources),
            (sys::STATUS_NO_MEMORY, ErrorKind::NoResources),
            (STATUS_TOO_MANY_OPENED_FILES, ErrorKind::NoResources),
            (sys::STATUS_NOT_IMPLEMENTED, ErrorKind::Unsupported),
            (sys::STATUS_NOT_SUPPORTED, ErrorKind::Unsupported),
            (sys::STATUS_NOT_FOUND, ErrorKind::NotFound),
            (sys::STATUS_UNSUCCESSFUL, ErrorKind::Other),
        ];
        for (status, kind) in cases {
            assert_eq!(
                kind_of(status),
                kind,
                "NTSTATUS {:#010X}",
                status.cast_unsigned()
            );
        }
    }

    /// Every status the host kernel's WSK provider completes an operation with (its errno
    /// mapping's outputs and its own refusals) has a specific kind, so a driver never sees
    /// `Other` for something the provider knew.
    #[test]
    fn every_status_of_the_host_provider_has_a_specific_kind() {
        let provider_statuses = [
            sys::STATUS_ACCESS_DENIED,
            sys::STATUS_ADDRESS_ALREADY_ASSOCIATED,
            sys::STATUS_ADDRESS_ALREADY_EXISTS,
            sys::STATUS_BUFFER_TOO_SMALL,
            sys::STATUS_CANCELLED,
            sys::STATUS_CONNECTION_ABORTED,
            sys::STATUS_CONNECTION_REFUSED,
            sys::STATUS_CONNECTION_RESET,
            sys::STATUS_DEVICE_NOT_READY,
            sys::STATUS_HOST_UNREACHABLE,
            sys::STATUS_INSUFFICIENT_RESOURCES,
            sys::STATUS_INVALID_ADDRESS_COMPONENT,
            sys::STATUS_INVALID_DEVICE_STATE,
            sys::STATUS_INVALID_HANDLE,
            sys::STATUS_INVALID_PARAMETER,
            sys::STATUS_IO_TIMEOUT,
            sys::STATUS_NETWORK_UNREACHABLE,
            sys::STATUS_NOT_FOUND,
            sys::STATUS_NOT_IMPLEMENTED,
            sys::STATUS_NOT_SUPPORTED,
        ];
        for status in provider_statuses {
            assert_ne!(
                kind_of(status),
                ErrorKind::Other,
                "NTSTATUS {:#010X}",
                status.cast_unsigned()
            );
        }
    }

    #[test]
    fn display_names_operation_kind_and_status() {
        let e = Error::from_status(sys::STATUS_CONNECTION_RESET, "recv");
        assert_eq!(
            e.to_string(),
            "recv: connection reset by peer (NTSTATUS 0xC000020D)"
        );
        assert_eq!(e.status(), Some(sys::STATUS_CONNECTION_RESET));
        let e = Error::new(ErrorKind::InvalidState, "send");
        assert_eq!(e.to_string(), "send: invalid state for this operation");
        assert_eq!(e.status(), None);
        let e = Error::new(ErrorKind::WrongIrql, "resolve");
        assert_eq!(
            e.to_string(),
            "resolve: needs PASSIVE_LEVEL, called or polled above it"
        );
        let e = Error::from_status(sys::STATUS_CONNECTION_RESET, "disconnect");
        assert_eq!(
            e.to_string().matches("disconnect").count(),
            1,
            "the operation is named once: {e}"
        );
    }
}
