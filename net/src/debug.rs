//! `Debug` for the socket types and the client: what a driver author can see without awaiting
//! anything (addresses need a WSK call, so they are not shown): the WSK socket pointer (null
//! before creation and after close) and whether the close has started or finished.
//!
//! Formatting reads atomics only: allowed at any IRQL.

use core::fmt;

use crate::client::WskClient;
use crate::socket::Handle;
use crate::tcp::{TcpListener, TcpStream};
use crate::udp::UdpSocket;

impl Handle {
    /// Writes `name { wsk_socket, closing, closed }` for the socket this handle owns.
    fn debug_as(&self, name: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.inner();
        f.debug_struct(name)
            .field("wsk_socket", &inner.wsk())
            .field("closing", &inner.is_closing())
            .field("closed", &inner.is_closed())
            .finish()
    }
}

/// `TcpStream { wsk_socket: 0x…, closing: false, closed: false }`.
impl fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.handle.debug_as("TcpStream", f)
    }
}

/// `TcpListener { wsk_socket: 0x…, closing: false, closed: false }`.
impl fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.handle.debug_as("TcpListener", f)
    }
}

/// `UdpSocket { wsk_socket: 0x…, closing: false, closed: false }`.
impl fmt::Debug for UdpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.handle.debug_as("UdpSocket", f)
    }
}

/// `WskClient { client: 0x…, deregistering: false }`.
impl fmt::Debug for WskClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.inner();
        // SAFETY: the handle keeps the client object alive while `self` is borrowed.
        let deregistering = !unsafe { inner.as_ref() }.accepting();
        f.debug_struct("WskClient")
            .field("client", &inner.as_ptr())
            .field("deregistering", &deregistering)
            .finish()
    }
}
