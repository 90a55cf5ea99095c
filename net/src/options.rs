//! Socket options and control operations (`WskControlSocket`): buffer sizes, linger,
//! broadcast, multicast membership, a datagram socket's fixed remote or destination address,
//! and [`ControlRequest`] with the `control` methods, the typed escape hatch for any other
//! request.
//!
//! Each call is one `WskControlSocket` with an IRP on the socket's control slot (so, like the
//! other control operations, one at a time per socket; a second concurrent one fails with
//! `InvalidState`). Nothing is allocated: inputs and outputs live in the operation's slot,
//! except for `control`, whose caller's [`IoBuf`] holds them.
//!
//! # IRQL
//! "`PFN_WSK_CONTROL_SOCKET` callback function (wsk.h)"
//! (<https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wsk/nc-wsk-pfn_wsk_control_socket>):
//! callers run at <= `DISPATCH_LEVEL`, except for the `WskIoctl` codes
//! `SIO_ADDRESS_LIST_QUERY`, `SIO_ADDRESS_LIST_CHANGE` and `SIO_ADDRESS_LIST_SORT`, which
//! need `PASSIVE_LEVEL`: `control` refuses those above it (`InvalidState`) instead of calling
//! WSK. Every method here: call and poll at <= `DISPATCH_LEVEL` (the WSK call is made on the
//! first poll).
//!
//! Under Wine 8 `WskControlSocket` is a stub (`STATUS_NOT_IMPLEMENTED`): every method here
//! fails with `Unsupported` there.

use core::future::Future;
use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use core::time::Duration;

use wsk_sys::{self as sys, NTSTATUS, WSK_PROVIDER_BASIC_DISPATCH};

use crate::addr::RawAddr;
use crate::buf::IoBuf;
use crate::error::{Error, ErrorKind, Result};
use crate::raw::{CTL, Call, Held, Op, Request};
use crate::socket::{Handle, check};
use crate::time::{Operation, Target};
use crate::{TcpListener, TcpStream, UdpSocket};

/// The type of a `WskControlSocket` request (`WSK_CONTROL_SOCKET_TYPE`), for `control`.
///
/// # IRQL
/// Any: a plain value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlRequest {
    /// `WskSetOption`: set a socket option (`level`, `code`) from the input.
    SetOption,
    /// `WskGetOption`: read a socket option into the output.
    GetOption,
    /// `WskIoctl`: an I/O control operation (`code`; `level` is ignored).
    Ioctl,
}

impl ControlRequest {
    const fn raw(self) -> sys::WSK_CONTROL_SOCKET_TYPE {
        match self {
            Self::SetOption => sys::WskSetOption,
            Self::GetOption => sys::WskGetOption,
            Self::Ioctl => sys::WskIoctl,
        }
    }
}

/// Where a control operation's input comes from (in the operation's [`Held`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ControlIn {
    /// No input (`InputSize` 0, `InputBuffer` NULL).
    Empty,
    /// The 4 bytes of `held.value`.
    Value,
    /// The first `len` bytes of `held.addr[0]` (an address, or a structure that fits its 28
    /// bytes: `IP_MREQ`, `IPV6_MREQ`).
    Addr(u8),
    /// The filled part of `held.buf`, `len` bytes.
    Buf(u32),
}

/// Where a control operation's output goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ControlOut {
    /// No output.
    Empty,
    /// `held.value` (4 bytes).
    Value,
    /// A `SIZE_T` (8 bytes on 64-bit) in `held.addr[0]`.
    Size,
    /// The part of `held.buf` the `WSK_BUF` names (after the input).
    Buf,
}

/// `WskControlSocket` ([`Request::Control`]) with the input and output the request names,
/// and no `OutputSizeReturned` (an IRP is given: the size comes back in
/// `IoStatus.Information`).
///
/// # Safety
/// `call.socket` is open; `call.irp` is prepared; what `input` and `output` name is in the
/// held resources, which stay in the slot until completion.
pub(crate) unsafe fn issue_control(
    call: &mut Call,
    request: sys::WSK_CONTROL_SOCKET_TYPE,
    level: u32,
    code: u32,
    input: ControlIn,
    output: ControlOut,
) -> NTSTATUS {
    // SAFETY: every table starts with the basic dispatch; the socket is open (caller).
    let basic = unsafe { call.dispatch::<WSK_PROVIDER_BASIC_DISPATCH>() };
    let Some(control) = basic.WskControlSocket else {
        return sys::STATUS_NOT_IMPLEMENTED;
    };
    let held = call.held();
    let value: *mut u32 = &raw mut held.value;
    let addr: *mut RawAddr = &raw mut held.addr[0];
    let (base, out_offset, out_len) = match held.buf.as_mut() {
        Some(buf) => (
            buf.storage_mut().as_mut_ptr(),
            held.wsk_buf.Offset as usize,
            held.wsk_buf.Length,
        ),
        None => (core::ptr::null_mut(), 0, 0),
    };
    let (in_size, in_buf): (usize, *mut u8) = match input {
        ControlIn::Empty => (0, core::ptr::null_mut()),
        ControlIn::Value => (size_of::<u32>(), value.cast()),
        ControlIn::Addr(len) => (usize::from(len), addr.cast()),
        ControlIn::Buf(len) => (len as usize, base),
    };
    let (out_size, out_buf): (usize, *mut u8) = match output {
        ControlOut::Empty => (0, core::ptr::null_mut()),
        ControlOut::Value => (size_of::<u32>(), value.cast()),
        ControlOut::Size => (size_of::<usize>(), addr.cast()),
        // The output follows the input in the caller's buffer: `wrapping_add` stays inside
        // the storage (the offset is the input's length, at most the capacity).
        ControlOut::Buf => (out_len, base.wrapping_add(out_offset)),
    };
    let in_buf = if in_size == 0 {
        core::ptr::null_mut()
    } else {
        in_buf
    };
    let out_buf = if out_size == 0 {
        core::ptr::null_mut()
    } else {
        out_buf
    };
    // SAFETY: open socket, prepared IRP; both buffers live in the slot (or in the held
    // `IoBuf`) until completion; OutputSizeReturned is NULL with an IRP.
    unsafe {
        control(
            call.socket(),
            request,
            code,
            level,
            in_size,
            in_buf.cast(),
            out_size,
            out_buf.cast(),
            core::ptr::null_mut(),
            call.irp(),
        )
    }
}

/// One `WskControlSocket` with slot-held input and output; the output value.
async fn control_held(
    handle: &Handle,
    request: ControlRequest,
    level: u32,
    code: u32,
    held_in: (ControlIn, u32, Option<RawAddr>),
    output: ControlOut,
    name: &'static str,
) -> Result<u32> {
    let (input, value, addr) = held_in;
    let mut held = Held::new(Request::Control {
        request: request.raw(),
        level,
        code,
        input,
        output,
        name,
    });
    held.value = value;
    if let Some(addr) = addr {
        held.addr[0] = addr;
    }
    let done = Op::new(handle.inner(), CTL, held).await?;
    check(done.status, done.information, name)?;
    if output == ControlOut::Value && done.information < size_of::<u32>() {
        return Err(Error::new(ErrorKind::Other, name));
    }
    Ok(done.held.value)
}

/// Sets a `ULONG` option.
async fn set_u32(
    handle: &Handle,
    level: u32,
    code: u32,
    value: u32,
    name: &'static str,
) -> Result<()> {
    let input = (ControlIn::Value, value, None);
    control_held(
        handle,
        ControlRequest::SetOption,
        level,
        code,
        input,
        ControlOut::Empty,
        name,
    )
    .await
    .map(drop)
}

/// Reads a `ULONG` option.
async fn get_u32(handle: &Handle, level: u32, code: u32, name: &'static str) -> Result<u32> {
    let input = (ControlIn::Empty, 0, None);
    control_held(
        handle,
        ControlRequest::GetOption,
        level,
        code,
        input,
        ControlOut::Value,
        name,
    )
    .await
}

/// A structure of up to 28 bytes as input, in the slot's address storage.
async fn set_struct(
    handle: &Handle,
    request: ControlRequest,
    level: u32,
    code: u32,
    bytes: &[u8],
    name: &'static str,
) -> Result<()> {
    let mut storage = RawAddr::zeroed();
    let len = bytes.len().min(size_of::<RawAddr>());
    // SAFETY: `storage` is a plain-data union of at least `len` bytes, and `bytes` has `len`.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), (&raw mut storage).cast(), len) };
    let input = (
        ControlIn::Addr(u8::try_from(len).unwrap_or(u8::MAX)),
        0,
        Some(storage),
    );
    control_held(handle, request, level, code, input, ControlOut::Empty, name)
        .await
        .map(drop)
}

/// A `WskIoctl` with no input and a `SIZE_T` output (`SIO_WSK_QUERY_IDEAL_SEND_BACKLOG`).
pub(crate) async fn query_size(handle: &Handle, code: u32, name: &'static str) -> Result<usize> {
    let mut held = Held::new(Request::Control {
        request: sys::WskIoctl,
        level: 0,
        code,
        input: ControlIn::Empty,
        output: ControlOut::Size,
        name,
    });
    held.addr[0] = RawAddr::zeroed();
    let done = Op::new(handle.inner(), CTL, held).await?;
    check(done.status, done.information, name)?;
    if done.information < size_of::<usize>() {
        return Err(Error::new(ErrorKind::Other, name));
    }
    // SAFETY: the storage holds at least 8 bytes, zeroed and then written by WSK.
    Ok(unsafe {
        (&raw const done.held.addr[0])
            .cast::<usize>()
            .read_unaligned()
    })
}

/// `SO_WSK_EVENT_CALLBACK` disabling `event` (one `WSK_EVENT_*` bit) with an IRP: completes
/// once no call of that callback is in progress (the page's rule for a disable with an IRP).
pub(crate) async fn disable_event(handle: &Handle, event: u32, name: &'static str) -> Result<()> {
    static NPI_WSK: sys::GUID = sys::NPI_WSK_INTERFACE_ID;
    let control = sys::WSK_EVENT_CALLBACK_CONTROL {
        NpiId: &raw const NPI_WSK,
        EventMask: event | sys::WSK_EVENT_DISABLE,
    };
    let mut storage = RawAddr::zeroed();
    let size = size_of::<sys::WSK_EVENT_CALLBACK_CONTROL>();
    const { assert!(size_of::<sys::WSK_EVENT_CALLBACK_CONTROL>() <= size_of::<RawAddr>()) };
    // SAFETY: the zeroed storage has room for the structure (checked at compile time); an
    // unaligned write, as the storage is a byte union.
    unsafe {
        (&raw mut storage)
            .cast::<sys::WSK_EVENT_CALLBACK_CONTROL>()
            .write_unaligned(control);
    };
    let input = (
        ControlIn::Addr(u8::try_from(size).unwrap_or(u8::MAX)),
        0,
        Some(storage),
    );
    control_held(
        handle,
        ControlRequest::SetOption,
        sys::SOL_SOCKET,
        sys::SO_WSK_EVENT_CALLBACK,
        input,
        ControlOut::Empty,
        name,
    )
    .await
    .map(drop)
}

/// The codes that need `PASSIVE_LEVEL` (the `PFN_WSK_CONTROL_SOCKET` page's one exception):
/// `SIO_ADDRESS_LIST_QUERY` (`_WSAIOR(IOC_WS2, 22)`), `SIO_ADDRESS_LIST_CHANGE`
/// (`_WSAIO(IOC_WS2, 23)`), `SIO_ADDRESS_LIST_SORT` (`_WSAIORW(IOC_WS2, 25)`).
const PASSIVE_ONLY_IOCTLS: [u32; 3] = [0x4800_0016, 0x2800_0017, 0xC800_0019];

/// The escape hatch behind every `control` method.
async fn control_buf(
    handle: &Handle,
    request: ControlRequest,
    level: u32,
    code: u32,
    mut buf: IoBuf,
) -> (Result<usize>, IoBuf) {
    const NAME: &str = "WskControlSocket";
    if request == ControlRequest::Ioctl
        && PASSIVE_ONLY_IOCTLS.contains(&code)
        && sys::KeGetCurrentIrql() != sys::PASSIVE_LEVEL
    {
        return (Err(Error::new(ErrorKind::InvalidState, NAME)), buf);
    }
    let input_len = buf.len();
    let Ok(input) = u32::try_from(input_len) else {
        return (Err(Error::new(ErrorKind::InvalidInput, NAME)), buf);
    };
    let spare = buf.spare_capacity();
    // Zeroes the storage once, so that the output region is initialised before WSK writes.
    let _ = buf.storage_mut();
    let output = if spare == 0 {
        ControlOut::Empty
    } else {
        ControlOut::Buf
    };
    let held = Held::with_buf_range(
        Request::Control {
            request: request.raw(),
            level,
            code,
            input: if input == 0 {
                ControlIn::Empty
            } else {
                ControlIn::Buf(input)
            },
            output,
            name: NAME,
        },
        buf,
        input_len,
        spare,
    );
    match Op::new(handle.inner(), CTL, held).await {
        Ok(mut done) => {
            let mut buf = done.held.buf.take().expect("control carries its buffer");
            let result = check(done.status, done.information, NAME).map(|n| n.min(spare));
            if let Ok(n) = result {
                // The output, after the input: written by WSK (and zeroed before).
                let _ = buf.set_len(input_len + n);
            }
            (result, buf)
        }
        Err(mut refused) => {
            let buf = refused.held.buf.take().expect("control carries its buffer");
            (Err(refused.error), buf)
        }
    }
}

/// The buffer-size methods and `control`, the same on every socket type.
macro_rules! common_options {
    ($what:literal) => {
        /// Sets the size of the send buffer (`SO_SNDBUF`; WDK page
        /// <https://learn.microsoft.com/en-us/windows-hardware/drivers/network/so-sndbuf>).
        #[doc = $what]
        ///
        /// ```no_run
        /// # async fn demo(socket: &wsk_net::TcpStream) -> wsk_net::Result<()> {
        /// socket.set_send_buffer_size(256 * 1024).await?;
        /// # Ok(()) }
        /// ```
        ///
        /// # Errors
        /// `Unsupported` where the transport or provider lacks it (Wine); `InvalidState`
        /// after close or with another control operation in flight; provider errors.
        ///
        /// # IRQL
        /// Call and poll at <= `DISPATCH_LEVEL`.
        pub fn set_send_buffer_size(&self, bytes: u32) -> Operation<'_, impl Future<Output = Result<()>> + '_> {
            Operation::new(Target::Borrowed(self.handle.inner()), CTL, "set_send_buffer_size", async move {
                set_u32(
                    &self.handle,
                    sys::SOL_SOCKET,
                    sys::SO_SNDBUF,
                    bytes,
                    "SO_SNDBUF",
                )
                .await
            })
        }

        /// The size of the send buffer (`SO_SNDBUF`), as set (or the transport's default).
        ///
        /// # Errors
        /// As [`Self::set_send_buffer_size`].
        ///
        /// # IRQL
        /// Call and poll at <= `DISPATCH_LEVEL`.
        pub fn send_buffer_size(&self) -> Operation<'_, impl Future<Output = Result<u32>> + '_> {
            Operation::new(Target::Borrowed(self.handle.inner()), CTL, "send_buffer_size", async move {
                get_u32(&self.handle, sys::SOL_SOCKET, sys::SO_SNDBUF, "SO_SNDBUF").await
            })
        }

        /// Sets the size of the receive buffer (`SO_RCVBUF`; WDK page
        /// <https://learn.microsoft.com/en-us/windows-hardware/drivers/network/so-rcvbuf>).
        #[doc = $what]
        ///
        /// # Errors
        /// As [`Self::set_send_buffer_size`].
        ///
        /// # IRQL
        /// Call and poll at <= `DISPATCH_LEVEL`.
        pub fn set_recv_buffer_size(&self, bytes: u32) -> Operation<'_, impl Future<Output = Result<()>> + '_> {
            Operation::new(Target::Borrowed(self.handle.inner()), CTL, "set_recv_buffer_size", async move {
                set_u32(
                    &self.handle,
                    sys::SOL_SOCKET,
                    sys::SO_RCVBUF,
                    bytes,
                    "SO_RCVBUF",
                )
                .await
            })
        }

        /// The size of the receive buffer (`SO_RCVBUF`), as set (or the transport's default).
        ///
        /// # Errors
        /// As [`Self::set_send_buffer_size`].
        ///
        /// # IRQL
        /// Call and poll at <= `DISPATCH_LEVEL`.
        pub fn recv_buffer_size(&self) -> Operation<'_, impl Future<Output = Result<u32>> + '_> {
            Operation::new(Target::Borrowed(self.handle.inner()), CTL, "recv_buffer_size", async move {
                get_u32(&self.handle, sys::SOL_SOCKET, sys::SO_RCVBUF, "SO_RCVBUF").await
            })
        }

        /// Any `WskControlSocket` request, for options and IOCTLs this crate has no method
        /// for: `buf`'s filled part is the input (`InputSize` = `buf.len()`, none when
        /// empty), its spare capacity receives the output (`OutputSize`), appended after the
        /// input. Returns the output's length; the buffer comes back in every case, held by
        /// WSK until the request completes (also when the future is dropped).
        ///
        /// ```no_run
        /// # async fn demo(socket: &wsk_net::TcpStream) -> wsk_net::Result<()> {
        /// use wsk_net::{ControlRequest, IoBuf};
        /// const SOL_SOCKET: u32 = 0xffff;
        /// const SO_RCVBUF: u32 = 0x1002;
        /// let buf = IoBuf::with_capacity(4)?; // no input, 4 bytes of output
        /// let (got, buf) = socket.control(ControlRequest::GetOption, SOL_SOCKET, SO_RCVBUF, buf).await;
        /// let size = u32::from_le_bytes(buf[..got?].try_into().unwrap());
        /// # let _ = size;
        /// # Ok(()) }
        /// ```
        ///
        /// # Errors
        /// `InvalidState` for `SIO_ADDRESS_LIST_QUERY`/`CHANGE`/`SORT` above
        /// `PASSIVE_LEVEL` (their documented IRQL), after close, or with another control
        /// operation in flight; `Unsupported` for a request the provider does not know (and
        /// under Wine); provider errors (`STATUS_BUFFER_TOO_SMALL` is `Other`).
        ///
        /// # IRQL
        /// Call and poll at <= `DISPATCH_LEVEL`; `PASSIVE_LEVEL` for the
        /// `SIO_ADDRESS_LIST_*` IOCTLs.
        pub fn control(
            &self,
            request: ControlRequest,
            level: u32,
            code: u32,
            buf: IoBuf,
        ) -> Operation<'_, impl Future<Output = (Result<usize>, IoBuf)> + '_> {
            Operation::new(Target::Borrowed(self.handle.inner()), CTL, "control", async move {
                control_buf(&self.handle, request, level, code, buf).await
            })
        }
    };
}

impl TcpStream {
    common_options!("");

    /// Lingers on close (`SO_LINGER`): `Some(time)` makes a close with unsent data wait up
    /// to `time` (whole seconds, at most 65535) for it to go out, `Some(ZERO)` makes the
    /// close reset the connection; `None` turns lingering off. Not on the WSK options page:
    /// Winsock's option (a `LINGER`), which the transport takes through `WskControlSocket`.
    ///
    /// ```no_run
    /// # async fn demo(stream: &wsk_net::TcpStream) -> wsk_net::Result<()> {
    /// stream.set_linger(Some(core::time::Duration::from_secs(5))).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `InvalidInput` over 65535 s; as [`TcpStream::set_send_buffer_size`].
    ///
    /// # IRQL
    /// Call and poll at <= `DISPATCH_LEVEL`.
    pub fn set_linger(
        &self,
        linger: Option<Duration>,
    ) -> Operation<'_, impl Future<Output = Result<()>> + '_> {
        Operation::new(
            Target::Borrowed(self.handle.inner()),
            CTL,
            "set_linger",
            async move {
                let value = match linger {
                    None => 0,
                    Some(time) => {
                        let Ok(secs) = u16::try_from(time.as_secs()) else {
                            return Err(Error::new(ErrorKind::InvalidInput, "SO_LINGER"));
                        };
                        linger_value(true, secs)
                    }
                };
                set_u32(
                    &self.handle,
                    sys::SOL_SOCKET,
                    sys::SO_LINGER,
                    value,
                    "SO_LINGER",
                )
                .await
            },
        )
    }

    /// The linger setting (`SO_LINGER`): `None` when off.
    ///
    /// # Errors
    /// As [`TcpStream::set_send_buffer_size`].
    ///
    /// # IRQL
    /// Call and poll at <= `DISPATCH_LEVEL`.
    pub fn linger(&self) -> Operation<'_, impl Future<Output = Result<Option<Duration>>> + '_> {
        Operation::new(
            Target::Borrowed(self.handle.inner()),
            CTL,
            "linger",
            async move {
                let value =
                    get_u32(&self.handle, sys::SOL_SOCKET, sys::SO_LINGER, "SO_LINGER").await?;
                let [on_lo, on_hi, secs_lo, secs_hi] = value.to_le_bytes();
                let on = u16::from_le_bytes([on_lo, on_hi]) != 0;
                let secs = u16::from_le_bytes([secs_lo, secs_hi]);
                Ok(on.then(|| Duration::from_secs(u64::from(secs))))
            },
        )
    }
}

/// A `LINGER` (`u_short l_onoff, l_linger`) as the 4 bytes of a little-endian `u32`, which
/// is how it sits in `held.value` on x64 (and on the little-endian hosts).
fn linger_value(on: bool, secs: u16) -> u32 {
    let mut bytes = [0u8; 4];
    bytes[..2].copy_from_slice(&u16::from(on).to_le_bytes());
    bytes[2..].copy_from_slice(&secs.to_le_bytes());
    u32::from_le_bytes(bytes)
}

impl TcpListener {
    common_options!(
        "On a listener, accepted connections inherit it (the WDK page); set it before they arrive."
    );
}

impl UdpSocket {
    common_options!("");

    /// Allows sending to broadcast addresses (`SO_BROADCAST`, datagram sockets; WDK page
    /// <https://learn.microsoft.com/en-us/windows-hardware/drivers/network/so-broadcast>).
    ///
    /// ```no_run
    /// # async fn demo(socket: &wsk_net::UdpSocket) -> wsk_net::Result<()> {
    /// socket.set_broadcast(true).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`UdpSocket::set_send_buffer_size`].
    ///
    /// # IRQL
    /// Call and poll at <= `DISPATCH_LEVEL`.
    pub fn set_broadcast(&self, on: bool) -> Operation<'_, impl Future<Output = Result<()>> + '_> {
        Operation::new(
            Target::Borrowed(self.handle.inner()),
            CTL,
            "set_broadcast",
            async move {
                set_u32(
                    &self.handle,
                    sys::SOL_SOCKET,
                    sys::SO_BROADCAST,
                    u32::from(on),
                    "SO_BROADCAST",
                )
                .await
            },
        )
    }

    /// Whether sending to broadcast addresses is allowed (`SO_BROADCAST`).
    ///
    /// # Errors
    /// As [`UdpSocket::set_send_buffer_size`].
    ///
    /// # IRQL
    /// Call and poll at <= `DISPATCH_LEVEL`.
    pub fn broadcast(&self) -> Operation<'_, impl Future<Output = Result<bool>> + '_> {
        Operation::new(
            Target::Borrowed(self.handle.inner()),
            CTL,
            "broadcast",
            async move {
                get_u32(
                    &self.handle,
                    sys::SOL_SOCKET,
                    sys::SO_BROADCAST,
                    "SO_BROADCAST",
                )
                .await
                .map(|v| v != 0)
            },
        )
    }

    /// Joins the IPv4 multicast `group` on the interface with address `interface`
    /// (`Ipv4Addr::UNSPECIFIED`: the system's choice): `IP_ADD_MEMBERSHIP` with an `IP_MREQ`
    /// (Winsock's option, taken by the transport through `WskControlSocket`; not on the WSK
    /// options page). The socket must be an IPv4 one, bound.
    ///
    /// ```no_run
    /// # async fn demo(socket: &wsk_net::UdpSocket) -> wsk_net::Result<()> {
    /// use core::net::Ipv4Addr;
    /// socket.join_multicast_v4(Ipv4Addr::new(239, 1, 2, 3), Ipv4Addr::UNSPECIFIED).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `InvalidInput` for an IPv6 socket or a group that is not multicast; as
    /// [`UdpSocket::set_send_buffer_size`].
    ///
    /// # IRQL
    /// Call and poll at <= `DISPATCH_LEVEL`.
    pub fn join_multicast_v4(
        &self,
        group: Ipv4Addr,
        interface: Ipv4Addr,
    ) -> Operation<'_, impl Future<Output = Result<()>> + '_> {
        Operation::new(
            Target::Borrowed(self.handle.inner()),
            CTL,
            "join_multicast_v4",
            async move {
                self.membership_v4(
                    sys::IP_ADD_MEMBERSHIP,
                    group,
                    interface,
                    "IP_ADD_MEMBERSHIP",
                )
                .await
            },
        )
    }

    /// Leaves an IPv4 multicast group joined with [`UdpSocket::join_multicast_v4`]
    /// (`IP_DROP_MEMBERSHIP`).
    ///
    /// # Errors
    /// As [`UdpSocket::join_multicast_v4`]; `AddrNotAvailable`-like provider errors for a
    /// group not joined.
    ///
    /// # IRQL
    /// Call and poll at <= `DISPATCH_LEVEL`.
    pub fn leave_multicast_v4(
        &self,
        group: Ipv4Addr,
        interface: Ipv4Addr,
    ) -> Operation<'_, impl Future<Output = Result<()>> + '_> {
        Operation::new(
            Target::Borrowed(self.handle.inner()),
            CTL,
            "leave_multicast_v4",
            async move {
                self.membership_v4(
                    sys::IP_DROP_MEMBERSHIP,
                    group,
                    interface,
                    "IP_DROP_MEMBERSHIP",
                )
                .await
            },
        )
    }

    async fn membership_v4(
        &self,
        code: u32,
        group: Ipv4Addr,
        interface: Ipv4Addr,
        name: &'static str,
    ) -> Result<()> {
        if !group.is_multicast() {
            return Err(Error::new(ErrorKind::InvalidInput, name));
        }
        let mut mreq = [0u8; 8];
        mreq[..4].copy_from_slice(&group.octets());
        mreq[4..].copy_from_slice(&interface.octets());
        set_struct(
            &self.handle,
            ControlRequest::SetOption,
            sys::IPPROTO_IP,
            code,
            &mreq,
            name,
        )
        .await
    }

    /// Joins the IPv6 multicast `group` on interface index `interface` (0: the system's
    /// choice): `IPV6_JOIN_GROUP` with an `IPV6_MREQ` (Winsock's option; not on the WSK
    /// options page). The socket must be an IPv6 one, bound.
    ///
    /// ```no_run
    /// # async fn demo(socket: &wsk_net::UdpSocket) -> wsk_net::Result<()> {
    /// let group: core::net::Ipv6Addr = "ff02::1:3".parse().unwrap();
    /// socket.join_multicast_v6(group, 0).await?;
    /// // ... receive the group's datagrams ...
    /// socket.leave_multicast_v6(group, 0).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `InvalidInput` for an IPv4 socket or a group that is not multicast; as
    /// [`UdpSocket::set_send_buffer_size`].
    ///
    /// # IRQL
    /// Call and poll at <= `DISPATCH_LEVEL`.
    pub fn join_multicast_v6(
        &self,
        group: Ipv6Addr,
        interface: u32,
    ) -> Operation<'_, impl Future<Output = Result<()>> + '_> {
        Operation::new(
            Target::Borrowed(self.handle.inner()),
            CTL,
            "join_multicast_v6",
            async move {
                self.membership_v6(sys::IPV6_JOIN_GROUP, group, interface, "IPV6_JOIN_GROUP")
                    .await
            },
        )
    }

    /// Leaves an IPv6 multicast group (`IPV6_LEAVE_GROUP`).
    ///
    /// # Errors
    /// As [`UdpSocket::join_multicast_v6`].
    ///
    /// # IRQL
    /// Call and poll at <= `DISPATCH_LEVEL`.
    pub fn leave_multicast_v6(
        &self,
        group: Ipv6Addr,
        interface: u32,
    ) -> Operation<'_, impl Future<Output = Result<()>> + '_> {
        Operation::new(
            Target::Borrowed(self.handle.inner()),
            CTL,
            "leave_multicast_v6",
            async move {
                self.membership_v6(sys::IPV6_LEAVE_GROUP, group, interface, "IPV6_LEAVE_GROUP")
                    .await
            },
        )
    }

    async fn membership_v6(
        &self,
        code: u32,
        group: Ipv6Addr,
        interface: u32,
        name: &'static str,
    ) -> Result<()> {
        if !group.is_multicast() {
            return Err(Error::new(ErrorKind::InvalidInput, name));
        }
        let mut mreq = [0u8; 20];
        mreq[..16].copy_from_slice(&group.octets());
        mreq[16..].copy_from_slice(&interface.to_le_bytes());
        set_struct(
            &self.handle,
            ControlRequest::SetOption,
            sys::IPPROTO_IPV6,
            code,
            &mreq,
            name,
        )
        .await
    }

    /// Fixes the socket's remote address (`SIO_WSK_SET_REMOTE_ADDRESS`; WDK page
    /// <https://learn.microsoft.com/en-us/windows-hardware/drivers/network/sio-wsk-set-remote-address>),
    /// UDP's "connect": [`UdpSocket::send`] goes to `remote`, and only datagrams from
    /// `remote` are received. `None` clears it. [`UdpSocket::send_to`] may still name
    /// another address (whose replies are not received).
    ///
    /// ```no_run
    /// # async fn demo(socket: &wsk_net::UdpSocket) -> wsk_net::Result<()> {
    /// socket.connect(Some("192.0.2.1:53".parse().unwrap())).await?;
    /// let (sent, _buf) = socket.send(wsk_net::IoBuf::from_slice(b"query")?).await;
    /// sent?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `InvalidInput` for an address of the other family; as
    /// [`UdpSocket::set_send_buffer_size`].
    ///
    /// # IRQL
    /// Call and poll at <= `DISPATCH_LEVEL`.
    pub fn connect(
        &self,
        remote: Option<SocketAddr>,
    ) -> Operation<'_, impl Future<Output = Result<()>> + '_> {
        Operation::new(
            Target::Borrowed(self.handle.inner()),
            CTL,
            "connect",
            async move {
                self.fixed_address(
                    sys::SIO_WSK_SET_REMOTE_ADDRESS,
                    remote,
                    "SIO_WSK_SET_REMOTE_ADDRESS",
                )
                .await
            },
        )
    }

    /// Fixes the destination of [`UdpSocket::send`] (`SIO_WSK_SET_SENDTO_ADDRESS`; WDK page
    /// <https://learn.microsoft.com/en-us/windows-hardware/drivers/network/sio-wsk-set-sendto-address>)
    /// without filtering receives (datagrams from every sender still arrive). `None` clears
    /// it.
    ///
    /// ```no_run
    /// # async fn demo(socket: &wsk_net::UdpSocket) -> wsk_net::Result<()> {
    /// socket.set_send_to_address(Some("192.0.2.7:514".parse().unwrap())).await?;
    /// let (sent, _buf) = socket.send(wsk_net::IoBuf::from_slice(b"<14>up")?).await;
    /// sent?;
    /// let (got, _buf) = socket.recv_from(wsk_net::IoBuf::with_capacity(1500)?).await;
    /// let (_n, _any_sender) = got?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`UdpSocket::connect`].
    ///
    /// # IRQL
    /// Call and poll at <= `DISPATCH_LEVEL`.
    pub fn set_send_to_address(
        &self,
        to: Option<SocketAddr>,
    ) -> Operation<'_, impl Future<Output = Result<()>> + '_> {
        Operation::new(
            Target::Borrowed(self.handle.inner()),
            CTL,
            "set_send_to_address",
            async move {
                self.fixed_address(
                    sys::SIO_WSK_SET_SENDTO_ADDRESS,
                    to,
                    "SIO_WSK_SET_SENDTO_ADDRESS",
                )
                .await
            },
        )
    }

    async fn fixed_address(
        &self,
        code: u32,
        addr: Option<SocketAddr>,
        name: &'static str,
    ) -> Result<()> {
        let input = match addr {
            None => (ControlIn::Empty, 0, None),
            Some(addr) => {
                let len = if addr.is_ipv4() {
                    size_of::<sys::SOCKADDR_IN>()
                } else {
                    size_of::<sys::SOCKADDR_IN6>()
                };
                let len = u8::try_from(len).unwrap_or(u8::MAX);
                (ControlIn::Addr(len), 0, Some(RawAddr::from(addr)))
            }
        };
        control_held(
            &self.handle,
            ControlRequest::Ioctl,
            0,
            code,
            input,
            ControlOut::Empty,
            name,
        )
        .await
        .map(drop)
    }
}
