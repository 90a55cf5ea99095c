//! The requests an operation makes of WSK, each carrying its own parameters, and the one
//! place that turns a request into its WSK call ([`Request::issue`]). A request's name is the
//! operation name errors carry.

use wsk_sys::{self as sys, NTSTATUS};

use super::Kind;
use super::held::Call;

/// One WSK call, with its parameters. Buffers and addresses WSK reads or writes live beside it
/// in the [`Held`](super::Held) (`buf`/`wsk_buf`, `addr`, `value`; a rare operation's MDL
/// chain, batch, or name strings and result list in its out-of-line block).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Request {
    /// Nothing: a slot at rest, or resources taken back. Never issued.
    Empty,
    /// `WskSocket` for a socket of `kind` in address `family`.
    Socket {
        /// The provider socket type to create.
        kind: Kind,
        /// `AF_INET` or `AF_INET6`.
        family: u16,
    },
    /// `WskBind` to `addr[0]`, through the table of `kind`.
    Bind {
        /// Which dispatch table the socket has.
        kind: Kind,
    },
    /// `WskGetLocalAddress` into `addr[0]`, through the table of `kind`.
    LocalAddress {
        /// Which dispatch table the socket has.
        kind: Kind,
    },
    /// `WskGetRemoteAddress` of a connection socket into `addr[0]`.
    PeerAddress,
    /// `WskControlSocket(WskSetOption)` with the 32-bit `value`.
    SetOption {
        /// `SOL_SOCKET`, `IPPROTO_IPV6`, ...
        level: u32,
        /// `SO_REUSEADDR`, `IPV6_V6ONLY`, ...
        code: u32,
        /// The option's name, for errors.
        name: &'static str,
    },
    /// `WskAccept` into `addr` (local, remote); the new socket goes to `adopt`.
    Accept,
    /// `WskConnect` to `addr[1]`.
    Connect,
    /// `WskSocketConnect`: a TCP socket bound to `addr[0]` and connected to `addr[1]`; the new
    /// socket goes to `adopt`.
    SocketConnect,
    /// `WskSend` of `wsk_buf`.
    Send {
        /// `WSK_FLAG_NODELAY` or 0.
        flags: u32,
    },
    /// `WskReceive` into `wsk_buf`; `WSK_FLAG_WAITALL` makes it a `recv_exact`.
    Receive {
        /// `WSK_FLAG_WAITALL` or 0.
        flags: u32,
    },
    /// `WskDisconnect`.
    Disconnect {
        /// `WSK_FLAG_ABORTIVE` or 0.
        flags: u32,
        /// `disconnect_with`: `wsk_buf` is sent as final data unless it is empty.
        final_data: bool,
    },
    /// `WskSendTo` of `wsk_buf` to `addr[1]`.
    SendTo,
    /// `WskReceiveFrom` into `wsk_buf`, the sender into `addr[1]`.
    ReceiveFrom,
    /// `WskControlSocket` of any type, its input and output where `input` and `output` say
    /// (`crate::options`).
    Control {
        /// `WskSetOption`, `WskGetOption` or `WskIoctl`.
        request: sys::WSK_CONTROL_SOCKET_TYPE,
        /// The option level (ignored for `WskIoctl`).
        level: u32,
        /// The option or IOCTL code.
        code: u32,
        /// Where the input is.
        input: crate::options::ControlIn,
        /// Where the output goes.
        output: crate::options::ControlOut,
        /// The option's name, for errors.
        name: &'static str,
    },
    /// `WskSendMessages` of `batch`'s datagrams to `addr[1]`.
    SendMessages,
    /// `WskGetAddressInfo` for the node name `names[0]`, the list into `addrinfo`.
    Resolve,
    /// `WskGetNameInfo` for `addr[0]` into the strings `names[0]` (host) and `names[1]`
    /// (service), with the `NI_*` flags in `value`.
    NameInfo,
    /// `WskCloseSocket`.
    Close,
}

impl Request {
    /// The operation's name, as errors report it.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Self::Empty => "operation",
            Self::Socket { .. } => "WskSocket",
            Self::Bind { .. } => "bind",
            Self::LocalAddress { .. } => "local_addr",
            Self::PeerAddress => "peer_addr",
            Self::SetOption { name, .. } | Self::Control { name, .. } => name,
            Self::Accept => "accept",
            Self::Connect | Self::SocketConnect => "connect",
            Self::Send { .. } => "send",
            Self::Receive { flags } if flags & sys::WSK_FLAG_WAITALL != 0 => "recv_exact",
            Self::Receive { .. } => "recv",
            Self::Disconnect {
                final_data: true, ..
            } => "disconnect_with",
            Self::Disconnect { .. } => "disconnect",
            Self::SendTo => "send_to",
            Self::ReceiveFrom => "recv_from",
            Self::SendMessages => "send_batch",
            Self::Resolve => "resolve",
            Self::NameInfo => "lookup_addr",
            Self::Close => "close",
        }
    }

    /// True for the requests WSK answers by writing into the held buffer (through its MDL):
    /// their completion tells how far the buffer is now written ([`IoBuf`]'s initialised
    /// length).
    ///
    /// [`IoBuf`]: crate::IoBuf
    pub(crate) const fn receives_into_buf(self) -> bool {
        matches!(
            self,
            Self::Receive { .. }
                | Self::ReceiveFrom
                | Self::Control {
                    output: crate::options::ControlOut::Buf,
                    ..
                }
        )
    }

    /// Makes the WSK call.
    ///
    /// # Safety
    /// `call` comes from `slot::start`: a prepared IRP, the held resources at their in-slot
    /// address with what this request reads filled in, and an open provider socket of the kind
    /// the request needs (null only for `Socket`, `SocketConnect` and `Resolve`, which are
    /// client-level).
    #[expect(
        clippy::inline_always,
        reason = "one arm survives where the request is known (a send or a receive): a call \
                  and a jump table saved on every transfer"
    )]
    #[inline(always)]
    pub(super) unsafe fn issue(self, call: &mut Call) -> NTSTATUS {
        match self {
            Self::Empty => {
                debug_assert!(false, "an empty request was issued");
                sys::STATUS_INVALID_PARAMETER
            }
            // SAFETY: the caller's guarantees are what the issue function requires (so for
            // each arm below).
            Self::Socket { kind, family } => unsafe {
                crate::socket::issue_socket(call, kind, family)
            },
            // SAFETY: as above.
            Self::Bind { kind } => unsafe { crate::socket::issue_bind(call, kind) },
            // SAFETY: as above.
            Self::LocalAddress { kind } => unsafe {
                crate::socket::issue_local_address(call, kind)
            },
            // SAFETY: as above.
            Self::PeerAddress => unsafe { crate::socket::issue_peer_address(call) },
            // SAFETY: as above.
            Self::SetOption { level, code, .. } => unsafe {
                crate::socket::issue_set_option(call, level, code)
            },
            Self::Control {
                request,
                level,
                code,
                input,
                output,
                ..
            } => {
                // SAFETY: as above.
                unsafe { crate::options::issue_control(call, request, level, code, input, output) }
            }
            // SAFETY: as above.
            Self::Accept => unsafe { crate::tcp::issue_accept(call) },
            // SAFETY: as above.
            Self::Connect => unsafe { crate::tcp::issue_connect(call) },
            // SAFETY: as above.
            Self::SocketConnect => unsafe { crate::tcp::issue_socket_connect(call) },
            // SAFETY: as above.
            Self::Send { flags } => unsafe { crate::tcp::issue_send(call, flags) },
            // SAFETY: as above.
            Self::Receive { flags } => unsafe { crate::tcp::issue_receive(call, flags) },
            // SAFETY: as above.
            Self::Disconnect { flags, final_data } => unsafe {
                crate::tcp::issue_disconnect(call, flags, final_data)
            },
            // SAFETY: as above.
            Self::SendTo => unsafe { crate::udp::issue_send_to(call) },
            // SAFETY: as above.
            Self::ReceiveFrom => unsafe { crate::udp::issue_receive_from(call) },
            // SAFETY: as above.
            Self::SendMessages => unsafe { crate::udp_batch::issue_send_messages(call) },
            // SAFETY: as above.
            Self::Resolve => unsafe { crate::resolve::issue_resolve(call) },
            // SAFETY: as above.
            Self::NameInfo => unsafe { crate::lookup::issue_name_info(call) },
            // SAFETY: as above.
            Self::Close => unsafe { super::slot::issue_close(call) },
        }
    }
}
