//! Winsock Kernel: registration, the client and provider NPIs, the provider dispatch tables in
//! their exact member order, `WSK_BUF`, flags, and the socket address types (`ws2def.h`,
//! `ws2ipdef.h`) WSK calls take.
//!
//! A dispatch table in the wrong order calls the wrong function with the wrong arguments: the
//! layout probe checks every member's offset against two independent header sets.
//!
//! The provider function types are `extern "system-unwind"`: the same calling convention as
//! `"system"` (nothing changes for a real netio.sys), but the host kernel's verifier reports a
//! bugcheck as a panic that must unwind out of the provider into the test that provoked it.

use core::ffi::c_void;

use crate::nt::{IRP, MDL, PEPROCESS, PETHREAD};
use crate::ntdef::{GUID, KSPIN_LOCK, NTSTATUS, PVOID, SIZE_T, UNICODE_STRING};

/// `WSK_CLIENT`: opaque handle for the provider's view of a client.
pub type WSK_CLIENT = c_void;

/// `MAKE_WSK_VERSION(major, minor)`.
#[must_use]
pub const fn MAKE_WSK_VERSION(major: u16, minor: u16) -> u16 {
    (major << 8) | (minor & 0xff)
}
/// `WSK_MAJOR_VERSION(version)`.
#[must_use]
pub const fn WSK_MAJOR_VERSION(version: u16) -> u16 {
    version >> 8
}
/// `WSK_MINOR_VERSION(version)`.
#[must_use]
pub const fn WSK_MINOR_VERSION(version: u16) -> u16 {
    version & 0xff
}

/// `WSK_NO_WAIT` for `WskCaptureProviderNPI`.
pub const WSK_NO_WAIT: u32 = 0;
/// `WSK_INFINITE_WAIT`: never from `DriverEntry`.
pub const WSK_INFINITE_WAIT: u32 = 0xFFFF_FFFF;

/// Socket kinds for `WskSocket`'s `Flags`: a basic socket.
pub const WSK_FLAG_BASIC_SOCKET: u32 = 0x0000_0000;
/// A listening socket.
pub const WSK_FLAG_LISTEN_SOCKET: u32 = 0x0000_0001;
/// A connection-oriented socket.
pub const WSK_FLAG_CONNECTION_SOCKET: u32 = 0x0000_0002;
/// A datagram socket.
pub const WSK_FLAG_DATAGRAM_SOCKET: u32 = 0x0000_0004;
/// A stream socket (Windows 10+).
pub const WSK_FLAG_STREAM_SOCKET: u32 = 0x0000_0008;

/// `WskDisconnect`: reset instead of FIN.
pub const WSK_FLAG_ABORTIVE: u32 = 0x0000_0001;
/// `WskSend`: do not delay for coalescing (Nagle).
pub const WSK_FLAG_NODELAY: u32 = 0x0000_0002;
/// `WskReceive`: complete only when the buffer is full, on disconnect or on cancel.
pub const WSK_FLAG_WAITALL: u32 = 0x0000_0002;
/// `WskReceive`: discard data (zero-length buffer).
pub const WSK_FLAG_DRAIN: u32 = 0x0000_0004;
/// Event callback: the provider may hold the data.
pub const WSK_FLAG_RELEASE_ASAP: u32 = 0x0000_0002;
/// Event callback: the whole message is indicated.
pub const WSK_FLAG_ENTIRE_MESSAGE: u32 = 0x0000_0004;
/// Event callback: called at `DISPATCH_LEVEL`.
pub const WSK_FLAG_AT_DISPATCH_LEVEL: u32 = 0x0000_0008;

/// `WSK_CONTROL_SOCKET_TYPE`.
pub type WSK_CONTROL_SOCKET_TYPE = i32;
/// Set a socket option.
pub const WskSetOption: WSK_CONTROL_SOCKET_TYPE = 0;
/// Get a socket option.
pub const WskGetOption: WSK_CONTROL_SOCKET_TYPE = 1;
/// Issue an I/O control.
pub const WskIoctl: WSK_CONTROL_SOCKET_TYPE = 2;

/// `WSK_REGISTRATION`: opaque state the client keeps in nonpaged memory while registered.
#[repr(C)]
pub struct WSK_REGISTRATION {
    /// Reserved.
    pub ReservedRegistrationState: u64,
    /// Reserved.
    pub ReservedRegistrationContext: PVOID,
    /// Reserved.
    pub ReservedRegistrationLock: KSPIN_LOCK,
}

/// `PFN_WSK_CLIENT_EVENT`.
pub type PFN_WSK_CLIENT_EVENT = unsafe extern "system-unwind" fn(
    ClientContext: PVOID,
    EventType: u32,
    Information: PVOID,
    InformationLength: SIZE_T,
) -> NTSTATUS;

/// `WSK_CLIENT_DISPATCH`.
#[repr(C)]
pub struct WSK_CLIENT_DISPATCH {
    /// `MAKE_WSK_VERSION(1, 0)`.
    pub Version: u16,
    /// Reserved, zero.
    pub Reserved: u16,
    /// Client-level event callback, or none.
    pub WskClientEvent: Option<PFN_WSK_CLIENT_EVENT>,
}

/// `WSK_CLIENT_NPI`.
#[repr(C)]
pub struct WSK_CLIENT_NPI {
    /// Passed back to client callbacks.
    pub ClientContext: PVOID,
    /// The client's dispatch table (must outlive the registration).
    pub Dispatch: *const WSK_CLIENT_DISPATCH,
}

/// `WSK_PROVIDER_NPI`, filled by `WskCaptureProviderNPI`.
#[repr(C)]
pub struct WSK_PROVIDER_NPI {
    /// The client handle to pass to provider calls.
    pub Client: *mut WSK_CLIENT,
    /// The provider's dispatch table.
    pub Dispatch: *const WSK_PROVIDER_DISPATCH,
}

/// `WSK_SOCKET`: the provider's socket object; its `Dispatch` is one of the provider tables.
#[repr(C)]
pub struct WSK_SOCKET {
    /// A `WSK_PROVIDER_{BASIC,LISTEN,CONNECTION,DATAGRAM,STREAM}_DISPATCH`.
    pub Dispatch: *const c_void,
}

/// `WSK_BUF`: a byte range of an MDL chain. `Offset + Length` must not exceed the chain.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct WSK_BUF {
    /// First MDL.
    pub Mdl: *mut MDL,
    /// Offset into the first MDL.
    pub Offset: u32,
    /// Bytes.
    pub Length: SIZE_T,
}

/// `WSK_BUF_LIST`: one datagram of a `WskSendMessages` batch, linked through `Next`
/// (Windows 8+).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct WSK_BUF_LIST {
    /// The next datagram, or null.
    pub Next: *mut WSK_BUF_LIST,
    /// This datagram's bytes.
    pub Buffer: WSK_BUF,
}

/// `PFN_WSK_SOCKET`.
pub type PFN_WSK_SOCKET = unsafe extern "system-unwind" fn(
    Client: *mut WSK_CLIENT,
    AddressFamily: u16,
    SocketType: u16,
    Protocol: u32,
    Flags: u32,
    SocketContext: PVOID,
    Dispatch: *const c_void,
    OwningProcess: PEPROCESS,
    OwningThread: PETHREAD,
    SecurityDescriptor: PVOID,
    Irp: *mut IRP,
) -> NTSTATUS;

/// `PFN_WSK_SOCKET_CONNECT`.
pub type PFN_WSK_SOCKET_CONNECT = unsafe extern "system-unwind" fn(
    Client: *mut WSK_CLIENT,
    SocketType: u16,
    Protocol: u32,
    LocalAddress: *mut SOCKADDR,
    RemoteAddress: *mut SOCKADDR,
    Flags: u32,
    SocketContext: PVOID,
    Dispatch: *const c_void,
    OwningProcess: PEPROCESS,
    OwningThread: PETHREAD,
    SecurityDescriptor: PVOID,
    Irp: *mut IRP,
) -> NTSTATUS;

/// `PFN_WSK_CONTROL_CLIENT`.
pub type PFN_WSK_CONTROL_CLIENT = unsafe extern "system-unwind" fn(
    Client: *mut WSK_CLIENT,
    ControlCode: u32,
    InputSize: SIZE_T,
    InputBuffer: PVOID,
    OutputSize: SIZE_T,
    OutputBuffer: PVOID,
    OutputSizeReturned: *mut SIZE_T,
    Irp: *mut IRP,
) -> NTSTATUS;

/// `PFN_WSK_GET_ADDRESS_INFO` (`PASSIVE_LEVEL` only).
pub type PFN_WSK_GET_ADDRESS_INFO = unsafe extern "system-unwind" fn(
    Client: *mut WSK_CLIENT,
    NodeName: *mut UNICODE_STRING,
    ServiceName: *mut UNICODE_STRING,
    NameSpace: u32,
    Provider: *mut GUID,
    Hints: *mut ADDRINFOEXW,
    Result: *mut *mut ADDRINFOEXW,
    OwningProcess: PEPROCESS,
    OwningThread: PETHREAD,
    Irp: *mut IRP,
) -> NTSTATUS;

/// `PFN_WSK_FREE_ADDRESS_INFO`.
pub type PFN_WSK_FREE_ADDRESS_INFO =
    unsafe extern "system-unwind" fn(Client: *mut WSK_CLIENT, AddrInfo: *mut ADDRINFOEXW);

/// `PFN_WSK_GET_NAME_INFO`.
pub type PFN_WSK_GET_NAME_INFO = unsafe extern "system-unwind" fn(
    Client: *mut WSK_CLIENT,
    SockAddr: *mut SOCKADDR,
    SockAddrLength: u32,
    NodeName: *mut UNICODE_STRING,
    ServiceName: *mut UNICODE_STRING,
    Flags: u32,
    OwningProcess: PEPROCESS,
    OwningThread: PETHREAD,
    Irp: *mut IRP,
) -> NTSTATUS;

/// `PFN_WSK_CONTROL_SOCKET`.
pub type PFN_WSK_CONTROL_SOCKET = unsafe extern "system-unwind" fn(
    Socket: *mut WSK_SOCKET,
    RequestType: WSK_CONTROL_SOCKET_TYPE,
    ControlCode: u32,
    Level: u32,
    InputSize: SIZE_T,
    InputBuffer: PVOID,
    OutputSize: SIZE_T,
    OutputBuffer: PVOID,
    OutputSizeReturned: *mut SIZE_T,
    Irp: *mut IRP,
) -> NTSTATUS;

/// `PFN_WSK_CLOSE_SOCKET`.
pub type PFN_WSK_CLOSE_SOCKET =
    unsafe extern "system-unwind" fn(Socket: *mut WSK_SOCKET, Irp: *mut IRP) -> NTSTATUS;

/// `PFN_WSK_BIND`.
pub type PFN_WSK_BIND = unsafe extern "system-unwind" fn(
    Socket: *mut WSK_SOCKET,
    LocalAddress: *mut SOCKADDR,
    Flags: u32,
    Irp: *mut IRP,
) -> NTSTATUS;

/// `PFN_WSK_ACCEPT`.
pub type PFN_WSK_ACCEPT = unsafe extern "system-unwind" fn(
    ListenSocket: *mut WSK_SOCKET,
    Flags: u32,
    AcceptSocketContext: PVOID,
    AcceptSocketDispatch: *const c_void,
    LocalAddress: *mut SOCKADDR,
    RemoteAddress: *mut SOCKADDR,
    Irp: *mut IRP,
) -> NTSTATUS;

/// `PFN_WSK_INSPECT_COMPLETE`.
pub type PFN_WSK_INSPECT_COMPLETE = unsafe extern "system-unwind" fn(
    ListenSocket: *mut WSK_SOCKET,
    InspectID: PVOID,
    Action: i32,
    Irp: *mut IRP,
) -> NTSTATUS;

/// `PFN_WSK_GET_LOCAL_ADDRESS`.
pub type PFN_WSK_GET_LOCAL_ADDRESS = unsafe extern "system-unwind" fn(
    Socket: *mut WSK_SOCKET,
    LocalAddress: *mut SOCKADDR,
    Irp: *mut IRP,
) -> NTSTATUS;

/// `PFN_WSK_GET_REMOTE_ADDRESS`.
pub type PFN_WSK_GET_REMOTE_ADDRESS = unsafe extern "system-unwind" fn(
    Socket: *mut WSK_SOCKET,
    RemoteAddress: *mut SOCKADDR,
    Irp: *mut IRP,
) -> NTSTATUS;

/// `PFN_WSK_CONNECT`.
pub type PFN_WSK_CONNECT = unsafe extern "system-unwind" fn(
    Socket: *mut WSK_SOCKET,
    RemoteAddress: *mut SOCKADDR,
    Flags: u32,
    Irp: *mut IRP,
) -> NTSTATUS;

/// `PFN_WSK_SEND`, `PFN_WSK_RECEIVE` and `PFN_WSK_DISCONNECT` share this shape.
pub type PFN_WSK_SEND = unsafe extern "system-unwind" fn(
    Socket: *mut WSK_SOCKET,
    Buffer: *mut WSK_BUF,
    Flags: u32,
    Irp: *mut IRP,
) -> NTSTATUS;
/// `PFN_WSK_RECEIVE`.
pub type PFN_WSK_RECEIVE = PFN_WSK_SEND;
/// `PFN_WSK_DISCONNECT` (`Buffer` may be null; must be null with `WSK_FLAG_ABORTIVE`).
pub type PFN_WSK_DISCONNECT = PFN_WSK_SEND;

/// `PFN_WSK_RELEASE_DATA_INDICATION_LIST` / `..._DATAGRAM_INDICATION_LIST`.
pub type PFN_WSK_RELEASE =
    unsafe extern "system-unwind" fn(Socket: *mut WSK_SOCKET, Indication: PVOID) -> NTSTATUS;

/// `PFN_WSK_CONNECT_EX`.
pub type PFN_WSK_CONNECT_EX = unsafe extern "system-unwind" fn(
    Socket: *mut WSK_SOCKET,
    RemoteAddress: *mut SOCKADDR,
    Buffer: *mut WSK_BUF,
    Flags: u32,
    Irp: *mut IRP,
) -> NTSTATUS;

/// `PFN_WSK_SEND_EX`.
pub type PFN_WSK_SEND_EX = unsafe extern "system-unwind" fn(
    Socket: *mut WSK_SOCKET,
    Buffer: *mut WSK_BUF,
    Flags: u32,
    ControlInfoLength: u32,
    ControlInfo: PVOID,
    Irp: *mut IRP,
) -> NTSTATUS;

/// `PFN_WSK_RECEIVE_EX`.
pub type PFN_WSK_RECEIVE_EX = unsafe extern "system-unwind" fn(
    Socket: *mut WSK_SOCKET,
    Buffer: *mut WSK_BUF,
    Flags: u32,
    ControlInfoLength: *mut u32,
    ControlInfo: PVOID,
    ControlFlags: *mut u32,
    Irp: *mut IRP,
) -> NTSTATUS;

/// `PFN_WSK_SEND_TO`.
pub type PFN_WSK_SEND_TO = unsafe extern "system-unwind" fn(
    Socket: *mut WSK_SOCKET,
    Buffer: *mut WSK_BUF,
    Flags: u32,
    RemoteAddress: *mut SOCKADDR,
    ControlInfoLength: u32,
    ControlInfo: PVOID,
    Irp: *mut IRP,
) -> NTSTATUS;

/// `PFN_WSK_RECEIVE_FROM`.
pub type PFN_WSK_RECEIVE_FROM = unsafe extern "system-unwind" fn(
    Socket: *mut WSK_SOCKET,
    Buffer: *mut WSK_BUF,
    Flags: u32,
    RemoteAddress: *mut SOCKADDR,
    ControlLength: *mut u32,
    ControlInfo: PVOID,
    ControlFlags: *mut u32,
    Irp: *mut IRP,
) -> NTSTATUS;

/// `PFN_WSK_SEND_MESSAGES` (Windows 8+).
pub type PFN_WSK_SEND_MESSAGES = unsafe extern "system-unwind" fn(
    Socket: *mut WSK_SOCKET,
    BufferList: PVOID,
    Flags: u32,
    RemoteAddress: *mut SOCKADDR,
    ControlInfoLength: u32,
    ControlInfo: PVOID,
    Irp: *mut IRP,
) -> NTSTATUS;

/// `WSK_PROVIDER_DISPATCH`: client-level provider calls.
#[repr(C)]
pub struct WSK_PROVIDER_DISPATCH {
    /// Provider's WSK version.
    pub Version: u16,
    /// Reserved.
    pub Reserved: u16,
    /// `WskSocket` (<= `DISPATCH_LEVEL`).
    pub WskSocket: Option<PFN_WSK_SOCKET>,
    /// `WskSocketConnect` (<= `DISPATCH_LEVEL`).
    pub WskSocketConnect: Option<PFN_WSK_SOCKET_CONNECT>,
    /// `WskControlClient`.
    pub WskControlClient: Option<PFN_WSK_CONTROL_CLIENT>,
    /// `WskGetAddressInfo` (`PASSIVE_LEVEL`).
    pub WskGetAddressInfo: Option<PFN_WSK_GET_ADDRESS_INFO>,
    /// `WskFreeAddressInfo`.
    pub WskFreeAddressInfo: Option<PFN_WSK_FREE_ADDRESS_INFO>,
    /// `WskGetNameInfo` (`PASSIVE_LEVEL`).
    pub WskGetNameInfo: Option<PFN_WSK_GET_NAME_INFO>,
}

/// `WSK_PROVIDER_BASIC_DISPATCH`: the calls every socket has.
#[repr(C)]
pub struct WSK_PROVIDER_BASIC_DISPATCH {
    /// `WskControlSocket`.
    pub WskControlSocket: Option<PFN_WSK_CONTROL_SOCKET>,
    /// `WskCloseSocket`.
    pub WskCloseSocket: Option<PFN_WSK_CLOSE_SOCKET>,
}

/// `WSK_PROVIDER_LISTEN_DISPATCH`.
#[repr(C)]
pub struct WSK_PROVIDER_LISTEN_DISPATCH {
    /// The basic calls.
    pub Basic: WSK_PROVIDER_BASIC_DISPATCH,
    /// `WskBind`.
    pub WskBind: Option<PFN_WSK_BIND>,
    /// `WskAccept`: several may be outstanding per listener, served in order.
    pub WskAccept: Option<PFN_WSK_ACCEPT>,
    /// `WskInspectComplete`.
    pub WskInspectComplete: Option<PFN_WSK_INSPECT_COMPLETE>,
    /// `WskGetLocalAddress`.
    pub WskGetLocalAddress: Option<PFN_WSK_GET_LOCAL_ADDRESS>,
}

/// `WSK_PROVIDER_DATAGRAM_DISPATCH`.
#[repr(C)]
pub struct WSK_PROVIDER_DATAGRAM_DISPATCH {
    /// The basic calls.
    pub Basic: WSK_PROVIDER_BASIC_DISPATCH,
    /// `WskBind`.
    pub WskBind: Option<PFN_WSK_BIND>,
    /// `WskSendTo`.
    pub WskSendTo: Option<PFN_WSK_SEND_TO>,
    /// `WskReceiveFrom`.
    pub WskReceiveFrom: Option<PFN_WSK_RECEIVE_FROM>,
    /// `WskRelease` (datagram indications).
    pub WskRelease: Option<PFN_WSK_RELEASE>,
    /// `WskGetLocalAddress`.
    pub WskGetLocalAddress: Option<PFN_WSK_GET_LOCAL_ADDRESS>,
    /// `WskSendMessages` (Windows 8+).
    pub WskSendMessages: Option<PFN_WSK_SEND_MESSAGES>,
}

/// `WSK_PROVIDER_CONNECTION_DISPATCH` (104 bytes).
#[repr(C)]
pub struct WSK_PROVIDER_CONNECTION_DISPATCH {
    /// The basic calls.
    pub Basic: WSK_PROVIDER_BASIC_DISPATCH,
    /// `WskBind`.
    pub WskBind: Option<PFN_WSK_BIND>,
    /// `WskConnect` (the socket must be bound).
    pub WskConnect: Option<PFN_WSK_CONNECT>,
    /// `WskGetLocalAddress`.
    pub WskGetLocalAddress: Option<PFN_WSK_GET_LOCAL_ADDRESS>,
    /// `WskGetRemoteAddress`.
    pub WskGetRemoteAddress: Option<PFN_WSK_GET_REMOTE_ADDRESS>,
    /// `WskSend`.
    pub WskSend: Option<PFN_WSK_SEND>,
    /// `WskReceive`.
    pub WskReceive: Option<PFN_WSK_RECEIVE>,
    /// `WskDisconnect`.
    pub WskDisconnect: Option<PFN_WSK_DISCONNECT>,
    /// `WskRelease` (data indications).
    pub WskRelease: Option<PFN_WSK_RELEASE>,
    /// `WskConnectEx`.
    pub WskConnectEx: Option<PFN_WSK_CONNECT_EX>,
    /// `WskSendEx`.
    pub WskSendEx: Option<PFN_WSK_SEND_EX>,
    /// `WskReceiveEx`.
    pub WskReceiveEx: Option<PFN_WSK_RECEIVE_EX>,
}

/// `WSK_DATA_INDICATION`: one buffer of data a `WskReceiveEvent` indicates; `Next` links the
/// chain of one indication.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct WSK_DATA_INDICATION {
    /// The next buffer of the same indication, or null.
    pub Next: *mut WSK_DATA_INDICATION,
    /// The data.
    pub Buffer: WSK_BUF,
}

/// `WSK_DATAGRAM_INDICATION`: one datagram a `WskReceiveFromEvent` indicates.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct WSK_DATAGRAM_INDICATION {
    /// The next datagram of the same indication, or null.
    pub Next: *mut WSK_DATAGRAM_INDICATION,
    /// The datagram.
    pub Buffer: WSK_BUF,
    /// Control information (`CMSGHDR`s), or null.
    pub ControlInfo: PVOID,
    /// Bytes at `ControlInfo`.
    pub ControlInfoLength: u32,
    /// The sender.
    pub RemoteAddress: *mut SOCKADDR,
}

/// `PFN_WSK_RECEIVE_EVENT`: data arrived on a connection socket. Called at IRQL <=
/// `DISPATCH_LEVEL` (`WSK_FLAG_AT_DISPATCH_LEVEL` in `Flags` when at `DISPATCH_LEVEL`).
/// Returns `STATUS_SUCCESS` (consumed, `*BytesAccepted` set), `STATUS_PENDING` (the chain is
/// retained until `WskRelease`) or `STATUS_DATA_NOT_ACCEPTED` (no more indications until the
/// client posts a `WskReceive`).
pub type PFN_WSK_RECEIVE_EVENT = unsafe extern "system-unwind" fn(
    SocketContext: PVOID,
    Flags: u32,
    DataIndication: *mut WSK_DATA_INDICATION,
    BytesIndicated: SIZE_T,
    BytesAccepted: *mut SIZE_T,
) -> NTSTATUS;

/// `PFN_WSK_DISCONNECT_EVENT`: the peer disconnected (`WSK_FLAG_ABORTIVE`: reset).
pub type PFN_WSK_DISCONNECT_EVENT =
    unsafe extern "system-unwind" fn(SocketContext: PVOID, Flags: u32) -> NTSTATUS;

/// `PFN_WSK_SEND_BACKLOG_EVENT`: the ideal send backlog size changed.
pub type PFN_WSK_SEND_BACKLOG_EVENT =
    unsafe extern "system-unwind" fn(SocketContext: PVOID, IdealBacklogSize: SIZE_T) -> NTSTATUS;

/// `PFN_WSK_ACCEPT_EVENT`: a listening socket accepted a connection.
pub type PFN_WSK_ACCEPT_EVENT = unsafe extern "system-unwind" fn(
    SocketContext: PVOID,
    Flags: u32,
    LocalAddress: *mut SOCKADDR,
    RemoteAddress: *mut SOCKADDR,
    AcceptSocket: *mut WSK_SOCKET,
    AcceptSocketContext: *mut PVOID,
    AcceptSocketDispatch: *mut *const WSK_CLIENT_CONNECTION_DISPATCH,
) -> NTSTATUS;

/// `PFN_WSK_INSPECT_EVENT` (conditional accept); returns a `WSK_INSPECT_ACTION`.
pub type PFN_WSK_INSPECT_EVENT = unsafe extern "system-unwind" fn(
    SocketContext: PVOID,
    LocalAddress: *mut SOCKADDR,
    RemoteAddress: *mut SOCKADDR,
    InspectID: PVOID,
) -> i32;

/// `PFN_WSK_ABORT_EVENT` (conditional accept).
pub type PFN_WSK_ABORT_EVENT =
    unsafe extern "system-unwind" fn(SocketContext: PVOID, InspectID: PVOID) -> NTSTATUS;

/// `PFN_WSK_RECEIVE_FROM_EVENT`: datagrams arrived on a datagram socket.
pub type PFN_WSK_RECEIVE_FROM_EVENT = unsafe extern "system-unwind" fn(
    SocketContext: PVOID,
    Flags: u32,
    DataIndication: *mut WSK_DATAGRAM_INDICATION,
) -> NTSTATUS;

/// `WSK_CLIENT_CONNECTION_DISPATCH`: a connection socket's event callbacks, passed as the
/// `Dispatch` of `WskSocket`, `WskSocketConnect` or `WskAccept`; must outlive the socket.
#[repr(C)]
pub struct WSK_CLIENT_CONNECTION_DISPATCH {
    /// `WskReceiveEvent`, or none.
    pub WskReceiveEvent: Option<PFN_WSK_RECEIVE_EVENT>,
    /// `WskDisconnectEvent`, or none.
    pub WskDisconnectEvent: Option<PFN_WSK_DISCONNECT_EVENT>,
    /// `WskSendBacklogEvent`, or none.
    pub WskSendBacklogEvent: Option<PFN_WSK_SEND_BACKLOG_EVENT>,
}

/// `WSK_CLIENT_LISTEN_DISPATCH`: a listening socket's event callbacks.
#[repr(C)]
pub struct WSK_CLIENT_LISTEN_DISPATCH {
    /// `WskAcceptEvent`, or none.
    pub WskAcceptEvent: Option<PFN_WSK_ACCEPT_EVENT>,
    /// `WskInspectEvent`, or none.
    pub WskInspectEvent: Option<PFN_WSK_INSPECT_EVENT>,
    /// `WskAbortEvent`, or none.
    pub WskAbortEvent: Option<PFN_WSK_ABORT_EVENT>,
}

/// `WSK_CLIENT_DATAGRAM_DISPATCH`: a datagram socket's event callback.
#[repr(C)]
pub struct WSK_CLIENT_DATAGRAM_DISPATCH {
    /// `WskReceiveFromEvent`, or none.
    pub WskReceiveFromEvent: Option<PFN_WSK_RECEIVE_FROM_EVENT>,
}

/// `WSK_EVENT_CALLBACK_CONTROL`: the input of `SO_WSK_EVENT_CALLBACK` (and of
/// `WskControlClient`'s static event callbacks).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct WSK_EVENT_CALLBACK_CONTROL {
    /// `&NPI_WSK_INTERFACE_ID`.
    pub NpiId: *const GUID,
    /// `WSK_EVENT_*` bits, with `WSK_EVENT_DISABLE` to disable them.
    pub EventMask: u32,
}

/// `NPI_WSK_INTERFACE_ID`, the `NpiId` of [`WSK_EVENT_CALLBACK_CONTROL`].
pub const NPI_WSK_INTERFACE_ID: GUID = GUID {
    Data1: 0x2227_E803,
    Data2: 0x8D8B,
    Data3: 0x11D4,
    Data4: [0xAB, 0xAD, 0x00, 0x90, 0x27, 0x71, 0x9E, 0x09],
};

/// `SO_WSK_EVENT_CALLBACK` (`WSK_SO_BASE + 2`): enables or disables event callbacks on a
/// socket (`WskSetOption`, level `SOL_SOCKET`).
pub const SO_WSK_EVENT_CALLBACK: u32 = 0x4002;
/// `WskReceiveEvent`.
pub const WSK_EVENT_RECEIVE: u32 = 0x0000_0040;
/// `WskDisconnectEvent`.
pub const WSK_EVENT_DISCONNECT: u32 = 0x0000_0080;
/// `WskSendBacklogEvent`.
pub const WSK_EVENT_SEND_BACKLOG: u32 = 0x0000_0010;
/// `WskReceiveFromEvent`.
pub const WSK_EVENT_RECEIVE_FROM: u32 = 0x0000_0100;
/// `WskAcceptEvent`.
pub const WSK_EVENT_ACCEPT: u32 = 0x0000_0200;
/// Disables the events named with it.
pub const WSK_EVENT_DISABLE: u32 = 0x8000_0000;
/// `WSK_SET_STATIC_EVENT_CALLBACKS`: the `WskControlClient` code that enables event callbacks
/// on every socket the client creates from then on (input: a [`WSK_EVENT_CALLBACK_CONTROL`];
/// no output, no IRP; only before the client creates any socket).
pub const WSK_SET_STATIC_EVENT_CALLBACKS: u32 = 7;

/// `ADDRESS_FAMILY`.
pub type ADDRESS_FAMILY = u16;
/// Unspecified family.
pub const AF_UNSPEC: ADDRESS_FAMILY = 0;
/// IPv4.
pub const AF_INET: ADDRESS_FAMILY = 2;
/// IPv6 (23 on Windows, not Linux's 10).
pub const AF_INET6: ADDRESS_FAMILY = 23;

/// Stream sockets.
pub const SOCK_STREAM: u16 = 1;
/// Datagram sockets.
pub const SOCK_DGRAM: u16 = 2;

/// TCP.
pub const IPPROTO_TCP: u32 = 6;
/// UDP.
pub const IPPROTO_UDP: u32 = 17;
/// IPv6 option level.
pub const IPPROTO_IPV6: u32 = 41;

/// Socket-level option level.
pub const SOL_SOCKET: u32 = 0xffff;
/// Allow reuse of a bound address.
pub const SO_REUSEADDR: u32 = 0x0004;
/// Send keep-alives.
pub const SO_KEEPALIVE: u32 = 0x0008;
/// Exclusive use of the bound address (`~SO_REUSEADDR`).
pub const SO_EXCLUSIVEADDRUSE: u32 = !SO_REUSEADDR;
/// Disable Nagle's algorithm.
pub const TCP_NODELAY: u32 = 0x0001;
/// IPv6 socket accepts IPv6 only (no v4-mapped peers).
pub const IPV6_V6ONLY: u32 = 27;

/// IPv4 option level (`IPPROTO_IP`).
pub const IPPROTO_IP: u32 = 0;
/// Size of the send buffer (`ULONG`).
pub const SO_SNDBUF: u32 = 0x1001;
/// Size of the receive buffer (`ULONG`).
pub const SO_RCVBUF: u32 = 0x1002;
/// Allow sending broadcast datagrams (`ULONG` 0 or 1; datagram sockets).
pub const SO_BROADCAST: u32 = 0x0020;
/// Linger on close ([`LINGER`]).
pub const SO_LINGER: u32 = 0x0080;
/// Join an IPv4 multicast group ([`IP_MREQ`], level [`IPPROTO_IP`]).
pub const IP_ADD_MEMBERSHIP: u32 = 12;
/// Leave an IPv4 multicast group ([`IP_MREQ`], level [`IPPROTO_IP`]).
pub const IP_DROP_MEMBERSHIP: u32 = 13;
/// Join an IPv6 multicast group ([`IPV6_MREQ`], level [`IPPROTO_IPV6`]); `IPV6_ADD_MEMBERSHIP`.
pub const IPV6_JOIN_GROUP: u32 = 12;
/// Leave an IPv6 multicast group ([`IPV6_MREQ`], level [`IPPROTO_IPV6`]);
/// `IPV6_DROP_MEMBERSHIP`.
pub const IPV6_LEAVE_GROUP: u32 = 13;
/// `IOC_WSK`: `IOC_WS2 | 0x07000000`, the family of WSK socket IOCTL codes.
pub const IOC_WSK: u32 = 0x0F00_0000;
/// `IOC_IN`: the IOCTL takes input.
pub const IOC_IN: u32 = 0x8000_0000;
/// `IOC_OUT`: the IOCTL returns output.
pub const IOC_OUT: u32 = 0x4000_0000;
/// `SIO_WSK_SET_REMOTE_ADDRESS` (`_WSAIOW(IOC_WSK, 1)`): fixed remote address of a datagram
/// socket (sends go there, only its datagrams are received); an empty input clears it.
pub const SIO_WSK_SET_REMOTE_ADDRESS: u32 = IOC_IN | IOC_WSK | 0x1;
/// `SIO_WSK_SET_SENDTO_ADDRESS` (`_WSAIOW(IOC_WSK, 6)`): fixed destination of a datagram
/// socket's sends (receives stay open to every sender); an empty input clears it.
pub const SIO_WSK_SET_SENDTO_ADDRESS: u32 = IOC_IN | IOC_WSK | 0x6;
/// `SIO_WSK_QUERY_IDEAL_SEND_BACKLOG` (`_WSAIOR(IOC_WSK, 3)`): a connected connection
/// socket's ideal send backlog, a `SIZE_T` output; an IRP is required.
pub const SIO_WSK_QUERY_IDEAL_SEND_BACKLOG: u32 = IOC_OUT | IOC_WSK | 0x3;

/// `LINGER` (Winsock's `struct linger`: two `u_short`s).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LINGER {
    /// Nonzero: linger on close.
    pub l_onoff: u16,
    /// Seconds to linger.
    pub l_linger: u16,
}

/// `IP_MREQ`: an IPv4 multicast group and the local interface address to join it on.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct IP_MREQ {
    /// The group.
    pub imr_multiaddr: IN_ADDR,
    /// The local interface's address (`INADDR_ANY`: the system's choice).
    pub imr_interface: IN_ADDR,
}

/// `IPV6_MREQ`: an IPv6 multicast group and the interface index to join it on.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct IPV6_MREQ {
    /// The group (network order bytes).
    pub ipv6mr_multiaddr: [u8; 16],
    /// The interface index (0: the system's choice).
    pub ipv6mr_interface: u32,
}

/// `NS_ALL` name space for `WskGetAddressInfo`.
pub const NS_ALL: u32 = 0;
/// `NS_DNS`.
pub const NS_DNS: u32 = 12;

/// `AI_PASSIVE` (ws2def.h): an address to bind to.
pub const AI_PASSIVE: i32 = 0x01;
/// `AI_CANONNAME`: the canonical name in the first entry.
pub const AI_CANONNAME: i32 = 0x02;
/// `AI_NUMERICHOST`: the node name is a numeric address; no name lookup.
pub const AI_NUMERICHOST: i32 = 0x04;
/// `AI_ALL`: with `AI_V4MAPPED`, IPv6 and v4-mapped addresses.
pub const AI_ALL: i32 = 0x0100;
/// `AI_ADDRCONFIG`: only families the host has an address of.
pub const AI_ADDRCONFIG: i32 = 0x0400;
/// `AI_V4MAPPED`: v4-mapped addresses when no IPv6 address is found.
pub const AI_V4MAPPED: i32 = 0x0800;

/// `NI_NOFQDN` (ws2def.h): the local part only, for local hosts.
pub const NI_NOFQDN: u32 = 0x01;
/// `NI_NUMERICHOST`: the numeric form of the address, no reverse lookup.
pub const NI_NUMERICHOST: u32 = 0x02;
/// `NI_NAMEREQD`: fail when the address has no name.
pub const NI_NAMEREQD: u32 = 0x04;
/// `NI_NUMERICSERV`: the port number, not a service name.
pub const NI_NUMERICSERV: u32 = 0x08;
/// `NI_DGRAM`: the service is a datagram service.
pub const NI_DGRAM: u32 = 0x10;
/// `NI_MAXHOST`: the longest host name, in characters with the terminating NUL.
pub const NI_MAXHOST: usize = 1025;
/// `NI_MAXSERV`: the longest service name, in characters with the terminating NUL.
pub const NI_MAXSERV: usize = 32;

/// `MSG_TRUNC` (ws2def.h), in `WskReceiveFrom`'s `ControlFlags`: the datagram was larger than
/// the buffer and was truncated.
pub const MSG_TRUNC: u32 = 0x0100;
/// `IP_PKTINFO` (ws2ipdef.h), level `IPPROTO_IP`: as a control object of a send, an
/// [`IN_PKTINFO`] naming the source address (and interface) of the datagrams.
pub const IP_PKTINFO: i32 = 19;
/// `IPV6_PKTINFO` (ws2ipdef.h), level `IPPROTO_IPV6`: as a control object of a send, an
/// [`IN6_PKTINFO`].
pub const IPV6_PKTINFO: i32 = 19;

/// `WSACMSGHDR` (`CMSGHDR`, ws2def.h): the header of one control data object; its data follows
/// at [`CMSG_DATA_OFFSET`], the next object at its `cmsg_len` rounded up to
/// [`CMSG_ALIGNMENT`].
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CMSGHDR {
    /// Bytes of the object: this header (with its padding) and the data.
    pub cmsg_len: usize,
    /// The protocol level (`IPPROTO_IP`, `IPPROTO_IPV6`, ...).
    pub cmsg_level: i32,
    /// The type within the level (`IP_PKTINFO`, ...).
    pub cmsg_type: i32,
}

/// `WSA_CMSGHDR_ALIGN`/`WSA_CMSGDATA_ALIGN` on x64 (ws2def.h): control objects and their
/// data start at multiples of `sizeof(SIZE_T)`.
pub const CMSG_ALIGNMENT: usize = size_of::<usize>();
/// `WSA_CMSG_DATA`'s offset: the header rounded up to [`CMSG_ALIGNMENT`].
pub const CMSG_DATA_OFFSET: usize = size_of::<CMSGHDR>().next_multiple_of(CMSG_ALIGNMENT);

/// `IN_PKTINFO` (ws2ipdef.h): the data of an `IP_PKTINFO` control object.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct IN_PKTINFO {
    /// The IPv4 address (source address on a send), network byte order.
    pub ipi_addr: [u8; 4],
    /// The interface index (0: any).
    pub ipi_ifindex: u32,
}

/// `IN6_PKTINFO` (ws2ipdef.h): the data of an `IPV6_PKTINFO` control object.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct IN6_PKTINFO {
    /// The IPv6 address (source address on a send).
    pub ipi6_addr: [u8; 16],
    /// The interface index (0: any).
    pub ipi6_ifindex: u32,
}

/// `MSG_CTRUNC` (ws2def.h), in `WskReceiveFrom`'s `ControlFlags`: the control information was
/// larger than its buffer and was truncated.
pub const MSG_CTRUNC: u32 = 0x0200;

/// `SOCKADDR`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct SOCKADDR {
    /// Family.
    pub sa_family: ADDRESS_FAMILY,
    /// Address bytes.
    pub sa_data: [u8; 14],
}

/// `IN_ADDR`: four address bytes in network order. In C a union with a `ULONG`, hence the
/// 4-byte alignment (which makes `SOCKADDR_IN` 4-aligned).
#[repr(C, align(4))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IN_ADDR {
    /// The bytes, in order (`S_un.S_un_b` in C).
    pub s_b: [u8; 4],
}

/// `SOCKADDR_IN` (16 bytes). Port and address in network byte order.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SOCKADDR_IN {
    /// `AF_INET`.
    pub sin_family: ADDRESS_FAMILY,
    /// Port, big-endian.
    pub sin_port: u16,
    /// Address bytes, in order.
    pub sin_addr: IN_ADDR,
    /// Zero.
    pub sin_zero: [u8; 8],
}

/// `SOCKADDR_IN6` (28 bytes). Port and flow info in network byte order.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SOCKADDR_IN6 {
    /// `AF_INET6`.
    pub sin6_family: ADDRESS_FAMILY,
    /// Port, big-endian.
    pub sin6_port: u16,
    /// Flow info, big-endian.
    pub sin6_flowinfo: u32,
    /// Address bytes, in order.
    pub sin6_addr: [u8; 16],
    /// Scope id (host order).
    pub sin6_scope_id: u32,
}

/// `SOCKADDR_STORAGE` (128 bytes): room for any address.
#[allow(
    clippy::pub_underscore_fields,
    reason = "ws2def.h's names, checked by the layout probe"
)]
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SOCKADDR_STORAGE {
    /// Family.
    pub ss_family: ADDRESS_FAMILY,
    /// Padding.
    pub __ss_pad1: [u8; 6],
    /// Alignment.
    pub __ss_align: i64,
    /// Padding.
    pub __ss_pad2: [u8; 112],
}

/// `ADDRINFOEXW`, the result list of `WskGetAddressInfo`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ADDRINFOEXW {
    /// `AI_*` flags.
    pub ai_flags: i32,
    /// Address family.
    pub ai_family: i32,
    /// Socket type.
    pub ai_socktype: i32,
    /// Protocol.
    pub ai_protocol: i32,
    /// Bytes at `ai_addr`.
    pub ai_addrlen: SIZE_T,
    /// Canonical name, or null.
    pub ai_canonname: *mut u16,
    /// The address.
    pub ai_addr: *mut SOCKADDR,
    /// Blob.
    pub ai_blob: PVOID,
    /// Blob length.
    pub ai_bloblen: SIZE_T,
    /// Provider.
    pub ai_provider: *mut GUID,
    /// Next result.
    pub ai_next: *mut ADDRINFOEXW,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `NPI_WSK_INTERFACE_ID` as its 16 bytes sit in a driver image (a public dump of one):
    /// a second spelling of the value, so a typo in either field layout or digits fails.
    #[test]
    fn npi_wsk_interface_id_has_the_image_bytes() {
        let id = NPI_WSK_INTERFACE_ID;
        let mut bytes = [0u8; 16];
        bytes[..4].copy_from_slice(&id.Data1.to_le_bytes());
        bytes[4..6].copy_from_slice(&id.Data2.to_le_bytes());
        bytes[6..8].copy_from_slice(&id.Data3.to_le_bytes());
        bytes[8..].copy_from_slice(&id.Data4);
        assert_eq!(
            bytes,
            [
                0x03, 0xE8, 0x27, 0x22, 0x8B, 0x8D, 0xD4, 0x11, 0xAB, 0xAD, 0x00, 0x90, 0x27, 0x71,
                0x9E, 0x09
            ]
        );
    }

    /// The codes as public copies of wsk.h define them: `WSK_SET_STATIC_EVENT_CALLBACKS 7`,
    /// `SIO_WSK_QUERY_IDEAL_SEND_BACKLOG _WSAIOR(IOC_WSK,0x3)` with `IOC_OUT 0x40000000`.
    #[test]
    fn client_control_and_backlog_codes() {
        assert_eq!(WSK_SET_STATIC_EVENT_CALLBACKS, 7);
        assert_eq!(SIO_WSK_QUERY_IDEAL_SEND_BACKLOG, 0x4F00_0003);
        assert_eq!(crate::STATUS_EVENT_PENDING, 0x4000_0013);
    }

    /// The event masks are distinct single bits (a receive mask equal to another event's
    /// would enable the wrong callback).
    #[test]
    fn event_masks_are_distinct_bits() {
        let masks = [
            WSK_EVENT_RECEIVE,
            WSK_EVENT_DISCONNECT,
            WSK_EVENT_SEND_BACKLOG,
            WSK_EVENT_RECEIVE_FROM,
            WSK_EVENT_ACCEPT,
            WSK_EVENT_DISABLE,
        ];
        for (i, a) in masks.iter().enumerate() {
            assert_eq!(a.count_ones(), 1);
            for b in &masks[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
