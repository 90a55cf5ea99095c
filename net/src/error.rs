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
            Self::AddrNotAvailable => "address not available",
            Self::HostUnreachable => "host unreachable",
            Self::NetworkUnreachable => "network unreachable",
            Self::InvalidState => "invalid state for this operation",
            Self::InvalidInput => "invalid argument",
            Self::NoResources => "insufficient resources",
            Self::Unsupported => "not supported by the WSK provider",
            Self::NotFound => "name not found",
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

/// Maps a failure status to the kind a driver acts on.
#[must_use]
pub fn kind_of(status: NTSTATUS) -> ErrorKind {
    match status {
        sys::STATUS_CONNECTION_RESET | sys::STATUS_REMOTE_DISCONNECT => ErrorKind::ConnectionReset,
        sys::STATUS_CONNECTION_REFUSED
        | sys::STATUS_PORT_UNREACHABLE
        | sys::STATUS_PROTOCOL_UNREACHABLE => ErrorKind::ConnectionRefused,
        sys::STATUS_CONNECTION_ABORTED
        | sys::STATUS_LOCAL_DISCONNECT
        | sys::STATUS_REQUEST_ABORTED => ErrorKind::ConnectionAborted,
        sys::STATUS_CONNECTION_DISCONNECTED | sys::STATUS_GRACEFUL_DISCONNECT => {
            ErrorKind::NotConnected
        }
        sys::STATUS_IO_TIMEOUT | sys::STATUS_TIMEOUT => ErrorKind::TimedOut,
        sys::STATUS_CANCELLED => ErrorKind::Cancelled,
        sys::STATUS_ADDRESS_ALREADY_EXISTS
        | sys::STATUS_ADDRESS_ALREADY_ASSOCIATED
        | sys::STATUS_SHARING_VIOLATION => ErrorKind::AddrInUse,
        sys::STATUS_INVALID_ADDRESS
        | sys::STATUS_INVALID_ADDRESS_COMPONENT
        | sys::STATUS_INVALID_ADDRESS_WILDCARD => ErrorKind::AddrNotAvailable,
        sys::STATUS_HOST_UNREACHABLE => ErrorKind::HostUnreachable,
        sys::STATUS_NETWORK_UNREACHABLE => ErrorKind::NetworkUnreachable,
        sys::STATUS_INVALID_DEVICE_STATE => ErrorKind::InvalidState,
        sys::STATUS_INVALID_PARAMETER | sys::STATUS_BUFFER_TOO_SMALL => ErrorKind::InvalidInput,
        sys::STATUS_INSUFFICIENT_RESOURCES | sys::STATUS_NO_MEMORY => ErrorKind::NoResources,
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
        assert_eq!(
            kind_of(sys::STATUS_CONNECTION_RESET),
            ErrorKind::ConnectionReset
        );
        assert_eq!(
            kind_of(sys::STATUS_CONNECTION_REFUSED),
            ErrorKind::ConnectionRefused
        );
        assert_eq!(kind_of(sys::STATUS_CANCELLED), ErrorKind::Cancelled);
        assert_eq!(
            kind_of(sys::STATUS_ADDRESS_ALREADY_EXISTS),
            ErrorKind::AddrInUse
        );
        assert_eq!(kind_of(sys::STATUS_NOT_IMPLEMENTED), ErrorKind::Unsupported);
        assert_eq!(
            kind_of(sys::STATUS_INSUFFICIENT_RESOURCES),
            ErrorKind::NoResources
        );
        assert_eq!(
            kind_of(sys::STATUS_INVALID_DEVICE_STATE),
            ErrorKind::InvalidState
        );
        assert_eq!(kind_of(sys::STATUS_UNSUCCESSFUL), ErrorKind::Other);
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
    }
}
