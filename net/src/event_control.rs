//! Static event callbacks: `WskControlClient(WSK_SET_STATIC_EVENT_CALLBACKS)`, which enables
//! event callbacks on every socket the client creates from then on
//! ("`WSK_SET_STATIC_EVENT_CALLBACKS`",
//! <https://learn.microsoft.com/en-us/windows-hardware/drivers/network/wsk-set-static-event-callbacks>):
//! the page recommends it to a client that enables the same callbacks on every socket,
//! "because it will yield much better performance" (no `SO_WSK_EVENT_CALLBACK` per socket).
//!
//! What it means for this crate's streams: [`TcpStream::enable_receive_events`] then makes no
//! WSK call for the statically enabled events, only sets up the stream's receive state. Until
//! that state exists the stream's receive callback refuses what it is indicated
//! (`STATUS_DATA_NOT_ACCEPTED`: WSK keeps the data for the next `WskReceive`), so a stream
//! that never enables receive events still receives everything with [`TcpStream::recv`], and
//! one that does starts with one `WskReceive`, which re-arms the indications. Static
//! callbacks cannot be disabled ([`TcpStream::disable_receive_events`] fails with
//! `InvalidInput` for them).
//!
//! [`TcpStream::enable_receive_events`]: crate::TcpStream::enable_receive_events
//! [`TcpStream::recv`]: crate::TcpStream::recv
//! [`TcpStream::disable_receive_events`]: crate::TcpStream::disable_receive_events

use core::ops::BitOr;

use wsk_sys::{
    self as sys, GUID, NTSTATUS, WSK_EVENT_CALLBACK_CONTROL, WSK_PROVIDER_BASIC_DISPATCH,
};

use crate::client::WskClient;
use crate::error::{Error, ErrorKind, Result};
use crate::raw::SocketInner;

/// The identifier `WSK_SET_STATIC_EVENT_CALLBACKS` names the standard WSK events with.
static NPI_WSK: GUID = sys::NPI_WSK_INTERFACE_ID;

/// `SO_WSK_EVENT_CALLBACK` enabling `events` on `inner`'s socket, without an IRP (as enabling
/// requires, so no output either): the provider's status, `STATUS_NOT_IMPLEMENTED` without
/// `WskControlSocket`. Called inside the socket's call gate (the socket is open). IRQL <=
/// `DISPATCH_LEVEL`.
pub(crate) fn enable_event_callbacks(inner: &SocketInner, events: u32) -> NTSTATUS {
    let socket = inner.wsk();
    let mut control = WSK_EVENT_CALLBACK_CONTROL {
        NpiId: &raw const NPI_WSK,
        EventMask: events,
    };
    // SAFETY: the socket is open while the caller is inside the call gate.
    let dispatch = unsafe { (*socket).Dispatch };
    // SAFETY: every table starts with the basic one; the provider's table outlives its
    // sockets.
    let basic = unsafe { &*dispatch.cast::<WSK_PROVIDER_BASIC_DISPATCH>() };
    match basic.WskControlSocket {
        // SAFETY: open socket; the input lives across the call; no IRP, no output.
        Some(control_socket) => unsafe {
            control_socket(
                socket,
                sys::WskSetOption,
                sys::SO_WSK_EVENT_CALLBACK,
                sys::SOL_SOCKET,
                size_of::<WSK_EVENT_CALLBACK_CONTROL>(),
                (&raw mut control).cast(),
                0,
                core::ptr::null_mut(),
                core::ptr::null_mut(),
                core::ptr::null_mut(),
            )
        },
        None => sys::STATUS_NOT_IMPLEMENTED,
    }
}

/// Connection-socket events [`WskClient::set_static_event_callbacks`] can enable on every
/// socket; combine them with `|`.
///
/// Only connection events: this crate's datagram sockets set up their receive state when
/// [`UdpSocket::enable_receive_events`](crate::UdpSocket::enable_receive_events) is called,
/// and a static `WskReceiveFromEvent` that found none would drop datagrams (a statically
/// enabled one is not disabled by `STATUS_DATA_NOT_ACCEPTED`).
///
/// # IRQL
/// Any: a plain value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StaticEvents(u32);

impl StaticEvents {
    /// No event.
    pub const NONE: Self = Self(0);
    /// `WskReceiveEvent` (`WSK_EVENT_RECEIVE`).
    pub const RECEIVE: Self = Self(sys::WSK_EVENT_RECEIVE);
    /// `WskDisconnectEvent` (`WSK_EVENT_DISCONNECT`).
    pub const DISCONNECT: Self = Self(sys::WSK_EVENT_DISCONNECT);
    /// `WskSendBacklogEvent` (`WSK_EVENT_SEND_BACKLOG`).
    pub const SEND_BACKLOG: Self = Self(sys::WSK_EVENT_SEND_BACKLOG);

    /// The `WSK_EVENT_*` bits.
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Whether every event of `other` is in `self`.
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// No event.
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl BitOr for StaticEvents {
    type Output = Self;

    fn bitor(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

impl WskClient {
    /// Enables `events` on every connection socket this client creates or accepts from now on
    /// (`WskControlClient(WSK_SET_STATIC_EVENT_CALLBACKS)`, see the crate docs'
    /// [event callbacks](crate#event-callbacks)); they stay enabled for the socket's life.
    /// Until a stream calls [`TcpStream::enable_receive_events`](crate::TcpStream::enable_receive_events)
    /// its receive callback refuses what it is indicated (`STATUS_DATA_NOT_ACCEPTED`: WSK keeps
    /// the data for the next `WskReceive`), so [`TcpStream::recv`](crate::TcpStream::recv) still
    /// gets everything. Call it before the first socket: right
    /// after [`WskClient::register`].
    ///
    /// `Ok(true)`: enabled; `Ok(false)`: the provider lacks the operation (Wine), and each
    /// stream enables its events itself as without it.
    ///
    /// ```no_run
    /// # fn driver_entry(driver: wsk_net::Driver) -> wsk_net::Result<()> {
    /// use wsk_net::StaticEvents;
    /// let client = wsk_net::WskClient::register(driver)?;
    /// let _static = client
    ///     .set_static_event_callbacks(StaticEvents::RECEIVE | StaticEvents::DISCONNECT)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `InvalidState` once a socket was created (WSK's rule: "it must do so before it creates
    /// any sockets"); `InvalidInput` for no event; a provider refusal other than "not
    /// supported".
    ///
    /// # IRQL
    /// <= `DISPATCH_LEVEL` ("`PFN_WSK_CONTROL_CLIENT` callback function (wsk.h)"; no IRP, as
    /// the operation requires).
    pub fn set_static_event_callbacks(&self, events: StaticEvents) -> Result<bool> {
        const NAME: &str = "set_static_event_callbacks";
        if events.is_empty() {
            return Err(Error::new(ErrorKind::InvalidInput, NAME));
        }
        // SAFETY: the client object lives as long as the handle.
        let client = unsafe { self.inner().as_ref() };
        let (dispatch, handle) = client.provider();
        let Some(control_client) = dispatch.WskControlClient else {
            return Ok(false);
        };
        let mut status = sys::STATUS_SUCCESS;
        let issued = client.set_static_events(events.bits(), || {
            let mut control = WSK_EVENT_CALLBACK_CONTROL {
                NpiId: &raw const NPI_WSK,
                EventMask: events.bits(),
            };
            // SAFETY: the captured provider binding; the input lives across the call; no
            // output and no IRP (the operation's parameters).
            status = unsafe {
                control_client(
                    handle,
                    sys::WSK_SET_STATIC_EVENT_CALLBACKS,
                    size_of::<WSK_EVENT_CALLBACK_CONTROL>(),
                    (&raw mut control).cast(),
                    0,
                    core::ptr::null_mut(),
                    core::ptr::null_mut(),
                    core::ptr::null_mut(),
                )
            };
            status == sys::STATUS_SUCCESS
        });
        match (issued, status) {
            (None, _) => Err(Error::new(ErrorKind::InvalidState, NAME)),
            (Some(true), _) => Ok(true),
            (Some(false), sys::STATUS_NOT_SUPPORTED | sys::STATUS_NOT_IMPLEMENTED) => Ok(false),
            (Some(false), other) => Err(Error::from_status(other, NAME)),
        }
    }
}
