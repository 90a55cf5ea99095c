//! Basic NT scalar types, status codes, IRQL levels and the small shared structs
//! (lists, strings, I/O status) every other declaration uses.

use core::ffi::c_void;

/// `NTSTATUS`: negative values are errors, the rest success or information.
pub type NTSTATUS = i32;
/// `KIRQL`: the interrupt request level of the current processor.
pub type KIRQL = u8;
/// `BOOLEAN` (one byte, 0 or 1).
pub type BOOLEAN = u8;
/// `CCHAR`.
pub type CCHAR = i8;
/// `CSHORT`.
pub type CSHORT = i16;
/// `KPROCESSOR_MODE` (`KernelMode` or `UserMode`).
pub type KPROCESSOR_MODE = i8;
/// `HANDLE`.
pub type HANDLE = *mut c_void;
/// `PVOID`.
pub type PVOID = *mut c_void;
/// `ULONG_PTR`.
pub type ULONG_PTR = usize;
/// `SIZE_T`.
pub type SIZE_T = usize;
/// `KSPIN_LOCK`: a pointer-sized word, zero when free.
pub type KSPIN_LOCK = usize;
/// `LARGE_INTEGER` as its 64-bit value (the union is passed and stored as one `i64` on x64).
pub type LARGE_INTEGER = i64;
/// `ULARGE_INTEGER` as its 64-bit value.
pub type ULARGE_INTEGER = u64;
/// `KAFFINITY`.
pub type KAFFINITY = usize;
/// `ACCESS_MASK`.
pub type ACCESS_MASK = u32;
/// `KPRIORITY`.
pub type KPRIORITY = i32;

/// `TRUE` as a [`BOOLEAN`].
pub const TRUE: BOOLEAN = 1;
/// `FALSE` as a [`BOOLEAN`].
pub const FALSE: BOOLEAN = 0;

/// `KernelMode`.
pub const KernelMode: KPROCESSOR_MODE = 0;
/// `UserMode`.
pub const UserMode: KPROCESSOR_MODE = 1;

/// `PASSIVE_LEVEL`: threads run here; anything may wait.
pub const PASSIVE_LEVEL: KIRQL = 0;
/// `APC_LEVEL`.
pub const APC_LEVEL: KIRQL = 1;
/// `DISPATCH_LEVEL`: DPCs, completion routines and spin-lock holders; no waiting.
pub const DISPATCH_LEVEL: KIRQL = 2;
/// `HIGH_LEVEL`.
pub const HIGH_LEVEL: KIRQL = 15;

/// True for success and informational codes (`NT_SUCCESS`).
#[must_use]
pub const fn NT_SUCCESS(status: NTSTATUS) -> bool {
    status >= 0
}

/// Reinterprets the unsigned spelling of a status code (`0xC000_0001`) as an `NTSTATUS`.
const fn st(code: u32) -> NTSTATUS {
    code.cast_signed()
}

/// The operation completed successfully.
pub const STATUS_SUCCESS: NTSTATUS = 0;
/// A wait was satisfied by the first object.
pub const STATUS_WAIT_0: NTSTATUS = 0;
/// A wait was alerted.
pub const STATUS_ALERTED: NTSTATUS = 0x101;
/// A wait timed out.
pub const STATUS_TIMEOUT: NTSTATUS = 0x102;
/// The operation will complete later, through the IRP.
pub const STATUS_PENDING: NTSTATUS = 0x103;
/// Returned by a completion routine to stop completion of the IRP.
pub const STATUS_MORE_PROCESSING_REQUIRED: NTSTATUS = st(0xC000_0016);
/// Unspecified failure.
pub const STATUS_UNSUCCESSFUL: NTSTATUS = st(0xC000_0001);
/// The function is not implemented (Wine's WSK stubs return it without completing the IRP).
pub const STATUS_NOT_IMPLEMENTED: NTSTATUS = st(0xC000_0002);
/// A handle was invalid.
pub const STATUS_INVALID_HANDLE: NTSTATUS = st(0xC000_0008);
/// A parameter was invalid.
pub const STATUS_INVALID_PARAMETER: NTSTATUS = st(0xC000_000D);
/// Not enough memory.
pub const STATUS_NO_MEMORY: NTSTATUS = st(0xC000_0017);
/// Access denied.
pub const STATUS_ACCESS_DENIED: NTSTATUS = st(0xC000_0022);
/// The buffer is too small.
pub const STATUS_BUFFER_TOO_SMALL: NTSTATUS = st(0xC000_0023);
/// The data did not fit the buffer (warning).
pub const STATUS_BUFFER_OVERFLOW: NTSTATUS = st(0x8000_0005);
/// Sharing violation (also reported for an address already in exclusive use).
pub const STATUS_SHARING_VIOLATION: NTSTATUS = st(0xC000_0043);
/// Not enough system resources.
pub const STATUS_INSUFFICIENT_RESOURCES: NTSTATUS = st(0xC000_009A);
/// The device is not ready.
pub const STATUS_DEVICE_NOT_READY: NTSTATUS = st(0xC000_00A3);
/// An I/O operation timed out.
pub const STATUS_IO_TIMEOUT: NTSTATUS = st(0xC000_00B5);
/// The request is not supported.
pub const STATUS_NOT_SUPPORTED: NTSTATUS = st(0xC000_00BB);
/// The I/O request was cancelled.
pub const STATUS_CANCELLED: NTSTATUS = st(0xC000_0120);
/// The local side disconnected.
pub const STATUS_LOCAL_DISCONNECT: NTSTATUS = st(0xC000_013B);
/// The remote side disconnected.
pub const STATUS_REMOTE_DISCONNECT: NTSTATUS = st(0xC000_013C);
/// The address is invalid.
pub const STATUS_INVALID_ADDRESS: NTSTATUS = st(0xC000_0141);
/// The object is in the wrong state for the request.
pub const STATUS_INVALID_DEVICE_STATE: NTSTATUS = st(0xC000_0184);
/// The address is already in use.
pub const STATUS_ADDRESS_ALREADY_EXISTS: NTSTATUS = st(0xC000_020A);
/// The connection was disconnected.
pub const STATUS_CONNECTION_DISCONNECTED: NTSTATUS = st(0xC000_020C);
/// The connection was reset by the peer.
pub const STATUS_CONNECTION_RESET: NTSTATUS = st(0xC000_020D);
/// A component of the address is invalid.
pub const STATUS_INVALID_ADDRESS_COMPONENT: NTSTATUS = st(0xC000_0207);
/// The object name (a registry key or value) was not found.
pub const STATUS_OBJECT_NAME_NOT_FOUND: NTSTATUS = st(0xC000_0034);
/// The requested name or object was not found.
pub const STATUS_NOT_FOUND: NTSTATUS = st(0xC000_0225);
/// The remote system refused the connection.
pub const STATUS_CONNECTION_REFUSED: NTSTATUS = st(0xC000_0236);
/// The connection was closed gracefully.
pub const STATUS_GRACEFUL_DISCONNECT: NTSTATUS = st(0xC000_0237);
/// The network is unreachable.
pub const STATUS_NETWORK_UNREACHABLE: NTSTATUS = st(0xC000_023C);
/// The host is unreachable.
pub const STATUS_HOST_UNREACHABLE: NTSTATUS = st(0xC000_023D);
/// The protocol is unreachable.
pub const STATUS_PROTOCOL_UNREACHABLE: NTSTATUS = st(0xC000_023E);
/// The port is unreachable.
pub const STATUS_PORT_UNREACHABLE: NTSTATUS = st(0xC000_023F);
/// The request was aborted.
pub const STATUS_REQUEST_ABORTED: NTSTATUS = st(0xC000_0240);
/// The connection was aborted by the local system.
pub const STATUS_CONNECTION_ABORTED: NTSTATUS = st(0xC000_0241);
/// An event callback did not take the data indicated: no more indications until a
/// `WskReceive`.
pub const STATUS_DATA_NOT_ACCEPTED: NTSTATUS = st(0xC000_021B);
/// `{TDI Event Pending}`: `WskControlSocket` disabling an event callback, without an IRP,
/// while a call of that callback is in progress; it is disabled once the call returns
/// (`SO_WSK_EVENT_CALLBACK` page). A success code (severity 1, informational).
pub const STATUS_EVENT_PENDING: NTSTATUS = st(0x4000_0013);
/// A `WskAcceptEvent` callback refused the connection it was indicated: the provider closes
/// the accepted socket.
pub const STATUS_REQUEST_NOT_ACCEPTED: NTSTATUS = st(0xC000_00D0);
/// The address is already associated with an endpoint.
pub const STATUS_ADDRESS_ALREADY_ASSOCIATED: NTSTATUS = st(0xC000_0238);
/// The address is not valid for this context (not a local address).
pub const STATUS_INVALID_ADDRESS_WILDCARD: NTSTATUS = st(0xC000_0208);

/// `LIST_ENTRY`: a doubly linked list link.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct LIST_ENTRY {
    /// Next entry.
    pub Flink: *mut LIST_ENTRY,
    /// Previous entry.
    pub Blink: *mut LIST_ENTRY,
}

/// `SINGLE_LIST_ENTRY`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct SINGLE_LIST_ENTRY {
    /// Next entry.
    pub Next: *mut SINGLE_LIST_ENTRY,
}

/// `UNICODE_STRING`: a counted UTF-16 string (lengths in bytes, not characters).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct UNICODE_STRING {
    /// Length in bytes, without any terminator.
    pub Length: u16,
    /// Size of `Buffer` in bytes.
    pub MaximumLength: u16,
    /// The characters.
    pub Buffer: *mut u16,
}

impl UNICODE_STRING {
    /// A counted string over `chars` (no terminator needed). Lengths saturate at 32 767 characters.
    #[must_use]
    pub fn from_wide(chars: &[u16]) -> Self {
        let bytes = u16::try_from(chars.len().saturating_mul(2)).unwrap_or(0xFFFE);
        Self {
            Length: bytes,
            MaximumLength: bytes,
            Buffer: chars.as_ptr().cast_mut(),
        }
    }

    /// The characters as a slice; empty for a null buffer.
    ///
    /// # Safety
    /// `Buffer` must point to `Length` readable bytes that outlive the returned slice.
    #[must_use]
    pub unsafe fn as_wide(&self) -> &[u16] {
        if self.Buffer.is_null() {
            return &[];
        }
        // SAFETY: the caller guarantees Buffer holds Length bytes (Length / 2 UTF-16 units).
        unsafe { core::slice::from_raw_parts(self.Buffer, usize::from(self.Length / 2)) }
    }
}

/// `IO_STATUS_BLOCK`: the final status of an I/O request and its information word.
///
/// In C, `Status` shares its 8 bytes with a `PVOID Pointer`; declaring only the status keeps
/// the same size, alignment and offsets (4 bytes of padding follow it).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct IO_STATUS_BLOCK {
    /// The final status.
    pub Status: NTSTATUS,
    /// Request-specific information: bytes transferred, or a new object (WSK puts sockets here).
    pub Information: ULONG_PTR,
}

/// `GUID`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GUID {
    /// First group.
    pub Data1: u32,
    /// Second group.
    pub Data2: u16,
    /// Third group.
    pub Data3: u16,
    /// Last eight bytes.
    pub Data4: [u8; 8],
}

/// `PROCESSOR_NUMBER`: a processor's group and number within it.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PROCESSOR_NUMBER {
    /// Processor group.
    pub Group: u16,
    /// Number within the group.
    pub Number: u8,
    /// Reserved, zero.
    pub Reserved: u8,
}

/// `OBJECT_ATTRIBUTES`, as `InitializeObjectAttributes` fills it.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct OBJECT_ATTRIBUTES {
    /// `size_of::<OBJECT_ATTRIBUTES>()`.
    pub Length: u32,
    /// Directory the name is relative to, or null.
    pub RootDirectory: HANDLE,
    /// The object's name, or null.
    pub ObjectName: *mut UNICODE_STRING,
    /// `OBJ_*` flags.
    pub Attributes: u32,
    /// Security descriptor, or null.
    pub SecurityDescriptor: PVOID,
    /// Quality of service, or null.
    pub SecurityQualityOfService: PVOID,
}

/// The handle is a kernel handle, not accessible from user mode.
pub const OBJ_KERNEL_HANDLE: u32 = 0x0000_0200;
/// Name lookup ignores case.
pub const OBJ_CASE_INSENSITIVE: u32 = 0x0000_0040;

/// `CLIENT_ID`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CLIENT_ID {
    /// Process id.
    pub UniqueProcess: HANDLE,
    /// Thread id.
    pub UniqueThread: HANDLE,
}

/// `KEY_VALUE_PARTIAL_INFORMATION` header; `Data` continues past the struct.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct KEY_VALUE_PARTIAL_INFORMATION {
    /// Unused.
    pub TitleIndex: u32,
    /// `REG_*` type.
    pub Type: u32,
    /// Bytes of data.
    pub DataLength: u32,
    /// First byte of the data.
    pub Data: [u8; 1],
}

/// `KeyValuePartialInformation` for `ZwQueryValueKey`.
pub const KeyValuePartialInformation: i32 = 2;
/// `REG_SZ`.
pub const REG_SZ: u32 = 1;
/// `REG_EXPAND_SZ`.
pub const REG_EXPAND_SZ: u32 = 2;
/// `REG_BINARY`.
pub const REG_BINARY: u32 = 3;
/// `REG_DWORD`.
pub const REG_DWORD: u32 = 4;
/// `REG_MULTI_SZ`: NUL-terminated UTF-16 strings, the list ending with an empty one.
pub const REG_MULTI_SZ: u32 = 7;
/// `KEY_READ` access.
pub const KEY_READ: ACCESS_MASK = 0x0002_0019;
/// `THREAD_ALL_ACCESS` (the modern value).
pub const THREAD_ALL_ACCESS: ACCESS_MASK = 0x001F_FFFF;
/// `SYNCHRONIZE`.
pub const SYNCHRONIZE: ACCESS_MASK = 0x0010_0000;
