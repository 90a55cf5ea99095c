//! The layout probe: every struct, field and constant `wsk-sys` declares, compared with what
//! two independent C header sets say on x64: mingw-w64's (`ddk/wdm.h`, winsock) and Wine's
//! (`ddk/wdm.h`, `ddk/wsk.h`, winsock).
//!
//! One table below produces both sides: Rust values from `size_of`/`align_of`/`offset_of!`,
//! and C expressions compiled with `x86_64-w64-mingw32-gcc -S`, whose `.quad` values are read
//! back from the assembly (nothing is run, so Wine is not needed). Items a header set lacks are
//! found from the compiler's per-line errors and listed as absent, never skipped silently.
//! Any mismatch fails the test; known differences *between* the header sets (where ours
//! follows real Windows x64) are listed as KNOWN DIVERGENCE.

use std::fmt::Write as _;
use std::mem::{MaybeUninit, align_of, offset_of, size_of};
use std::path::{Path, PathBuf};
use std::process::Command;

use wsk_sys::*;

/// One compared number.
struct Item {
    /// What it is, e.g. `offsetof(IRP, IoStatus)`.
    label: String,
    /// The C expression that computes it.
    c_expr: String,
    /// Our value, masked to `bits`.
    ours: u64,
    /// Width compared (constants of 32-bit types compare their low 32 bits, because the C
    /// headers disagree on their signedness).
    bits: u32,
}

fn mask(value: u64, bits: u32) -> u64 {
    if bits >= 64 {
        value
    } else {
        value & ((1u64 << bits) - 1)
    }
}

fn pointee_size<T>(_: *const T) -> usize {
    size_of::<T>()
}

/// Records size and alignment of a type and offset and size of each listed field.
macro_rules! layout {
    ($items:ident, $ty:ident { $($($field:ident).+),* $(,)? }) => {{
        let ty = stringify!($ty);
        push(&mut $items, format!("sizeof({ty})"), format!("sizeof({ty})"), size_of::<$ty>() as u64, 64);
        push(&mut $items, format!("alignof({ty})"), format!("_Alignof({ty})"), align_of::<$ty>() as u64, 64);
        $(
            let path = stringify!($($field).+).replace(' ', "");
            push(&mut $items, format!("offsetof({ty}, {path})"), format!("offsetof({ty}, {path})"),
                offset_of!($ty, $($field).+) as u64, 64);
            let value = MaybeUninit::<$ty>::uninit();
            let base = value.as_ptr();
            // SAFETY: only the address of the field is computed (no read, no reference), on an
            // allocation that is large enough; union fields are projected the same way.
            let field = unsafe { std::ptr::addr_of!((*base).$($field).+) };
            push(&mut $items, format!("sizeof({ty}.{path})"), format!("sizeof((({ty}*)0)->{path})"),
                pointee_size(field) as u64, 64);
        )*
    }};
}

/// Records integer constants.
macro_rules! constants {
    ($items:ident, $($name:ident),* $(,)?) => {{
        $(
            let (value, bits) = ConstValue::probe($name);
            push(&mut $items, stringify!($name).to_string(), format!("(long long)({})", stringify!($name)), value, bits);
        )*
    }};
}

trait ConstValue {
    fn probe(self) -> (u64, u32);
}
macro_rules! const_value {
    ($($t:ty => $bits:expr),*) => {$(
        impl ConstValue for $t {
            #[allow(
                clippy::cast_sign_loss,
                clippy::cast_lossless,
                clippy::cast_possible_wrap,
                reason = "compared as bit patterns"
            )]
            fn probe(self) -> (u64, u32) {
                (mask(self as i64 as u64, $bits), $bits)
            }
        }
    )*};
}
const_value!(u8 => 8, i8 => 8, u16 => 16, i16 => 16, u32 => 32, i32 => 32, u64 => 64);

fn push(items: &mut Vec<Item>, label: String, c_expr: String, ours: u64, bits: u32) {
    items.push(Item {
        label,
        c_expr,
        ours: mask(ours, bits),
        bits,
    });
}

#[allow(
    clippy::too_many_lines,
    reason = "one flat table is easiest to check against sys"
)]
/// The table: every `#[repr(C)]` type `sys` declares (helper types for C's anonymous unions
/// are covered through the fields of the struct that holds them) and the constants.
fn table() -> Vec<Item> {
    let mut v = Vec::new();
    layout!(v, LIST_ENTRY { Flink, Blink });
    layout!(v, SINGLE_LIST_ENTRY { Next });
    layout!(
        v,
        UNICODE_STRING {
            Length,
            MaximumLength,
            Buffer
        }
    );
    layout!(
        v,
        IO_STATUS_BLOCK {
            Status,
            Information
        }
    );
    layout!(
        v,
        GUID {
            Data1,
            Data2,
            Data3,
            Data4
        }
    );
    layout!(
        v,
        PROCESSOR_NUMBER {
            Group,
            Number,
            Reserved
        }
    );
    layout!(
        v,
        OBJECT_ATTRIBUTES {
            Length,
            RootDirectory,
            ObjectName,
            Attributes,
            SecurityDescriptor,
            SecurityQualityOfService,
        }
    );
    layout!(
        v,
        CLIENT_ID {
            UniqueProcess,
            UniqueThread
        }
    );
    layout!(
        v,
        KEY_VALUE_PARTIAL_INFORMATION {
            TitleIndex,
            Type,
            DataLength,
            Data
        }
    );
    layout!(v, IRP {
        Type, Size, MdlAddress, Flags, AssociatedIrp, AssociatedIrp.MasterIrp, AssociatedIrp.IrpCount,
        AssociatedIrp.SystemBuffer, ThreadListEntry, IoStatus, IoStatus.Status, IoStatus.Information,
        RequestorMode, PendingReturned, StackCount, CurrentLocation, Cancel, CancelIrql, ApcEnvironment,
        AllocationFlags, UserIosb, UserEvent, Overlay, CancelRoutine, UserBuffer, Tail, Tail.Overlay,
        Tail.Overlay.DriverContext, Tail.Overlay.Thread, Tail.Overlay.AuxiliaryBuffer, Tail.Overlay.ListEntry,
        Tail.Overlay.CurrentStackLocation, Tail.Overlay.OriginalFileObject, Tail.Apc, Tail.CompletionKey,
    });
    layout!(v, IO_STACK_LOCATION {
        MajorFunction, MinorFunction, Flags, Control, Parameters, Parameters.Others,
        Parameters.Others.Argument1, Parameters.Others.Argument2, Parameters.Others.Argument3,
        Parameters.Others.Argument4, DeviceObject, FileObject, CompletionRoutine, Context,
    });
    layout!(
        v,
        MDL {
            Next,
            Size,
            MdlFlags,
            AllocationProcessorNumber,
            Reserved,
            Process,
            MappedSystemVa,
            StartVa,
            ByteCount,
            ByteOffset,
        }
    );
    layout!(
        v,
        KDPC {
            Type,
            Importance,
            Number,
            DpcListEntry,
            DeferredRoutine,
            DeferredContext,
            SystemArgument1,
            SystemArgument2,
            DpcData,
        }
    );
    layout!(
        v,
        DISPATCHER_HEADER {
            Type,
            Absolute,
            Size,
            Inserted,
            SignalState,
            WaitListHead
        }
    );
    layout!(v, KEVENT { Header });
    layout!(
        v,
        KSYSTEM_TIME {
            LowPart,
            High1Time,
            High2Time
        }
    );
    // Only the head of KUSER_SHARED_DATA is declared; wdm.h's x64 macros say where it is and
    // where InterruptTime sits in it (what sys's inline KeQueryInterruptTime reads).
    push(
        &mut v,
        "KI_USER_SHARED_DATA".into(),
        "(long long)KI_USER_SHARED_DATA".into(),
        KI_USER_SHARED_DATA,
        64,
    );
    push(
        &mut v,
        "offsetof(KUSER_SHARED_DATA, InterruptTime)".into(),
        "(long long)(SharedInterruptTime - KI_USER_SHARED_DATA)".into(),
        offset_of!(KUSER_SHARED_DATA_HEAD, InterruptTime) as u64,
        64,
    );
    layout!(
        v,
        KTIMER {
            Header,
            DueTime,
            TimerListEntry,
            Dpc,
            Processor,
            Period
        }
    );
    layout!(
        v,
        DRIVER_OBJECT {
            Type,
            Size,
            DeviceObject,
            Flags,
            DriverStart,
            DriverSize,
            DriverSection,
            DriverExtension,
            DriverName,
            HardwareDatabase,
            FastIoDispatch,
            DriverInit,
            DriverStartIo,
            DriverUnload,
            MajorFunction,
        }
    );
    layout!(
        v,
        WSK_REGISTRATION {
            ReservedRegistrationState,
            ReservedRegistrationContext,
            ReservedRegistrationLock
        }
    );
    layout!(
        v,
        WSK_CLIENT_DISPATCH {
            Version,
            Reserved,
            WskClientEvent
        }
    );
    layout!(
        v,
        WSK_CLIENT_NPI {
            ClientContext,
            Dispatch
        }
    );
    layout!(v, WSK_PROVIDER_NPI { Client, Dispatch });
    layout!(v, WSK_SOCKET { Dispatch });
    layout!(
        v,
        WSK_BUF {
            Mdl,
            Offset,
            Length
        }
    );
    layout!(
        v,
        WSK_PROVIDER_DISPATCH {
            Version,
            Reserved,
            WskSocket,
            WskSocketConnect,
            WskControlClient,
            WskGetAddressInfo,
            WskFreeAddressInfo,
            WskGetNameInfo,
        }
    );
    layout!(
        v,
        WSK_PROVIDER_BASIC_DISPATCH {
            WskControlSocket,
            WskCloseSocket
        }
    );
    layout!(v, WSK_PROVIDER_LISTEN_DISPATCH {
        Basic, Basic.WskControlSocket, Basic.WskCloseSocket, WskBind, WskAccept, WskInspectComplete,
        WskGetLocalAddress,
    });
    layout!(
        v,
        WSK_PROVIDER_DATAGRAM_DISPATCH {
            Basic,
            WskBind,
            WskSendTo,
            WskReceiveFrom,
            WskRelease,
            WskGetLocalAddress,
            WskSendMessages,
        }
    );
    layout!(
        v,
        WSK_PROVIDER_CONNECTION_DISPATCH {
            Basic,
            WskBind,
            WskConnect,
            WskGetLocalAddress,
            WskGetRemoteAddress,
            WskSend,
            WskReceive,
            WskDisconnect,
            WskRelease,
            WskConnectEx,
            WskSendEx,
            WskReceiveEx,
        }
    );
    layout!(v, WSK_DATA_INDICATION { Next, Buffer });
    layout!(
        v,
        WSK_DATAGRAM_INDICATION {
            Next,
            Buffer,
            ControlInfo,
            ControlInfoLength,
            RemoteAddress,
        }
    );
    layout!(
        v,
        WSK_CLIENT_CONNECTION_DISPATCH {
            WskReceiveEvent,
            WskDisconnectEvent,
            WskSendBacklogEvent,
        }
    );
    layout!(
        v,
        WSK_CLIENT_LISTEN_DISPATCH {
            WskAcceptEvent,
            WskInspectEvent,
            WskAbortEvent,
        }
    );
    // WSK_CLIENT_DATAGRAM_DISPATCH (one pointer) and WSK_EVENT_CALLBACK_CONTROL (a pointer
    // and a ULONG) are in neither header set; their layouts follow from repr(C).
    layout!(v, SOCKADDR { sa_family, sa_data });
    layout!(v, IN_ADDR { s_b });
    layout!(
        v,
        SOCKADDR_IN {
            sin_family,
            sin_port,
            sin_addr,
            sin_zero
        }
    );
    layout!(
        v,
        SOCKADDR_IN6 {
            sin6_family,
            sin6_port,
            sin6_flowinfo,
            sin6_addr,
            sin6_scope_id
        }
    );
    layout!(
        v,
        SOCKADDR_STORAGE {
            ss_family,
            __ss_pad1,
            __ss_align,
            __ss_pad2
        }
    );
    layout!(
        v,
        ADDRINFOEXW {
            ai_flags,
            ai_family,
            ai_socktype,
            ai_protocol,
            ai_addrlen,
            ai_canonname,
            ai_addr,
            ai_blob,
            ai_bloblen,
            ai_provider,
            ai_next,
        }
    );
    layout!(
        v,
        CMSGHDR {
            cmsg_len,
            cmsg_level,
            cmsg_type
        }
    );
    layout!(
        v,
        IN_PKTINFO {
            ipi_addr,
            ipi_ifindex
        }
    );
    layout!(
        v,
        IN6_PKTINFO {
            ipi6_addr,
            ipi6_ifindex
        }
    );
    constants!(
        v,
        STATUS_SUCCESS,
        STATUS_ALERTED,
        STATUS_TIMEOUT,
        STATUS_PENDING,
        STATUS_MORE_PROCESSING_REQUIRED,
        STATUS_UNSUCCESSFUL,
        STATUS_NOT_IMPLEMENTED,
        STATUS_INVALID_HANDLE,
        STATUS_INVALID_PARAMETER,
        STATUS_NO_MEMORY,
        STATUS_ACCESS_DENIED,
        STATUS_BUFFER_TOO_SMALL,
        STATUS_BUFFER_OVERFLOW,
        STATUS_SHARING_VIOLATION,
        STATUS_INSUFFICIENT_RESOURCES,
        STATUS_DEVICE_NOT_READY,
        STATUS_IO_TIMEOUT,
        STATUS_NOT_SUPPORTED,
        STATUS_CANCELLED,
        STATUS_LOCAL_DISCONNECT,
        STATUS_REMOTE_DISCONNECT,
        STATUS_INVALID_ADDRESS,
        STATUS_INVALID_DEVICE_STATE,
        STATUS_ADDRESS_ALREADY_EXISTS,
        STATUS_CONNECTION_DISCONNECTED,
        STATUS_CONNECTION_RESET,
        STATUS_INVALID_ADDRESS_COMPONENT,
        STATUS_NOT_FOUND,
        STATUS_CONNECTION_REFUSED,
        STATUS_GRACEFUL_DISCONNECT,
        STATUS_NETWORK_UNREACHABLE,
        STATUS_HOST_UNREACHABLE,
        STATUS_PROTOCOL_UNREACHABLE,
        STATUS_PORT_UNREACHABLE,
        STATUS_REQUEST_ABORTED,
        STATUS_CONNECTION_ABORTED,
        STATUS_DATA_NOT_ACCEPTED,
        STATUS_ADDRESS_ALREADY_ASSOCIATED,
        STATUS_INVALID_ADDRESS_WILDCARD,
        PASSIVE_LEVEL,
        APC_LEVEL,
        DISPATCH_LEVEL,
        HIGH_LEVEL,
        KernelMode,
        UserMode,
        SL_PENDING_RETURNED,
        SL_ERROR_RETURNED,
        SL_INVOKE_ON_CANCEL,
        SL_INVOKE_ON_SUCCESS,
        SL_INVOKE_ON_ERROR,
        IO_TYPE_IRP,
        IO_NO_INCREMENT,
        IO_TYPE_DRIVER,
        MDL_MAPPED_TO_SYSTEM_VA,
        MDL_PAGES_LOCKED,
        MDL_SOURCE_IS_NONPAGED_POOL,
        MDL_ALLOCATED_FIXED_SIZE,
        MDL_PARTIAL,
        NotificationEvent,
        SynchronizationEvent,
        NotificationTimer,
        SynchronizationTimer,
        Executive,
        NonPagedPool,
        PagedPool,
        NonPagedPoolNx,
        POOL_FLAG_USE_QUOTA,
        POOL_FLAG_UNINITIALIZED,
        POOL_FLAG_CACHE_ALIGNED,
        POOL_FLAG_RAISE_ON_FAILURE,
        POOL_FLAG_NON_PAGED,
        POOL_FLAG_NON_PAGED_EXECUTE,
        POOL_FLAG_PAGED,
        OBJ_KERNEL_HANDLE,
        OBJ_CASE_INSENSITIVE,
        KeyValuePartialInformation,
        REG_SZ,
        REG_EXPAND_SZ,
        REG_DWORD,
        KEY_READ,
        SYNCHRONIZE,
        WSK_NO_WAIT,
        WSK_INFINITE_WAIT,
        WSK_FLAG_BASIC_SOCKET,
        WSK_FLAG_LISTEN_SOCKET,
        WSK_FLAG_CONNECTION_SOCKET,
        WSK_FLAG_DATAGRAM_SOCKET,
        WSK_FLAG_STREAM_SOCKET,
        WSK_FLAG_ABORTIVE,
        WSK_FLAG_NODELAY,
        WSK_FLAG_WAITALL,
        WSK_FLAG_DRAIN,
        WSK_FLAG_RELEASE_ASAP,
        WSK_FLAG_ENTIRE_MESSAGE,
        WSK_FLAG_AT_DISPATCH_LEVEL,
        SO_WSK_EVENT_CALLBACK,
        WSK_EVENT_RECEIVE,
        WSK_EVENT_DISCONNECT,
        WSK_EVENT_SEND_BACKLOG,
        WSK_EVENT_RECEIVE_FROM,
        WSK_EVENT_ACCEPT,
        WSK_EVENT_DISABLE,
        WskSetOption,
        WskGetOption,
        WskIoctl,
        AF_UNSPEC,
        AF_INET,
        AF_INET6,
        SOCK_STREAM,
        SOCK_DGRAM,
        IPPROTO_TCP,
        IPPROTO_UDP,
        IPPROTO_IPV6,
        SOL_SOCKET,
        SO_REUSEADDR,
        SO_KEEPALIVE,
        SO_EXCLUSIVEADDRUSE,
        TCP_NODELAY,
        IPV6_V6ONLY,
        IP_PKTINFO,
        IPV6_PKTINFO,
        MSG_TRUNC,
        MSG_CTRUNC,
        NS_ALL,
        NS_DNS,
        DPFLTR_IHVDRIVER_ID,
        DPFLTR_ERROR_LEVEL,
        DPFLTR_WARNING_LEVEL,
        DPFLTR_TRACE_LEVEL,
        DPFLTR_INFO_LEVEL,
        ALL_PROCESSOR_GROUPS,
    );
    push(
        &mut v,
        "IRP_MJ_MAXIMUM_FUNCTION".into(),
        "(long long)IRP_MJ_MAXIMUM_FUNCTION".into(),
        IRP_MJ_MAXIMUM_FUNCTION as u64,
        64,
    );
    push(
        &mut v,
        "MAKE_WSK_VERSION(1, 0)".into(),
        "(long long)MAKE_WSK_VERSION(1, 0)".into(),
        u64::from(MAKE_WSK_VERSION(1, 0)),
        16,
    );
    v
}

/// A header set: its compiler flags and the translation units items are tried in, in order.
struct HeaderSet {
    name: &'static str,
    flags: Vec<String>,
    units: [(&'static str, &'static str); 2],
}

fn header_sets() -> Vec<HeaderSet> {
    vec![
        HeaderSet {
            name: "mingw-w64",
            flags: vec![],
            units: [
                ("ddk", "#include <ddk/wdm.h>\n"),
                (
                    "winsock",
                    "#include <winsock2.h>\n#include <ws2tcpip.h>\n#include <mstcpip.h>\n",
                ),
            ],
        },
        HeaderSet {
            name: "wine",
            flags: vec!["-I/usr/include/wine/wine/windows".into()],
            units: [
                (
                    "ddk",
                    "#include <ntstatus.h>\n#define WIN32_NO_STATUS\n#include <windef.h>\n#include <winbase.h>\n\
                     #include <winternl.h>\n#include <ddk/wdm.h>\n#include <ddk/wsk.h>\n",
                ),
                ("winsock", "#include <winsock2.h>\n#include <ws2tcpip.h>\n"),
            ],
        },
    ]
}

/// Known differences between the header sets, where our declaration follows real Windows x64
/// (the WDK, which mingw-w64's ddk follows). Each is printed, never hidden.
const KNOWN_DIVERGENCES: &[(&str, &str, &str)] = &[
    (
        "wine",
        "offsetof(KTIMER, Period)",
        "Wine's KTIMER has no x64 `Processor` field, so `Period` sits 4 bytes earlier; the size (64) agrees",
    ),
    (
        "wine",
        "sizeof(KDPC.Type)",
        "Wine declares the NT 3.x KDPC head (CSHORT Type; UCHAR Number; UCHAR Importance); the WDK and mingw-w64 have UCHAR Type, UCHAR Importance, USHORT Number; same 4 bytes, offsets of everything after agree",
    ),
    (
        "wine",
        "offsetof(KDPC, Importance)",
        "same KDPC head as above",
    ),
    ("wine", "sizeof(KDPC.Number)", "same KDPC head as above"),
];

/// Items neither header set declares, each with why that is expected.
const OURS_ONLY: &[&str] = &[
    // Newer WDKs split MDL's padding after MdlFlags into these two fields; both header sets
    // still show padding there (offsets of the fields after it are checked).
    "offsetof(MDL, AllocationProcessorNumber)",
    "sizeof(MDL.AllocationProcessorNumber)",
    "offsetof(MDL, Reserved)",
    "sizeof(MDL.Reserved)",
    // C spells this union member S_un.S_un_b; IN_ADDR's size and alignment, and sin_addr's
    // offset and size inside SOCKADDR_IN, are compared.
    "offsetof(IN_ADDR, s_b)",
    "sizeof(IN_ADDR.s_b)",
    // Neither Wine's wsk.h nor mingw-w64 defines the send/receive/event flags or
    // ExAllocatePool2's POOL_FLAG_*; their values were checked by hand against the WDK's own
    // wsk.h and wdm.h (public copies) on 2026-11-24: ABORTIVE 1, NODELAY 2, WAITALL 2,
    // DRAIN 4, RELEASE_ASAP 2, ENTIRE_MESSAGE 4, AT_DISPATCH_LEVEL 8; POOL_FLAG_USE_QUOTA 1,
    // UNINITIALIZED 2, CACHE_ALIGNED 8, RAISE_ON_FAILURE 0x20, NON_PAGED 0x40,
    // NON_PAGED_EXECUTE 0x80, PAGED 0x100.
    "WSK_FLAG_ABORTIVE",
    "WSK_FLAG_NODELAY",
    "WSK_FLAG_WAITALL",
    "WSK_FLAG_DRAIN",
    "WSK_FLAG_RELEASE_ASAP",
    "WSK_FLAG_ENTIRE_MESSAGE",
    "WSK_FLAG_AT_DISPATCH_LEVEL",
    "POOL_FLAG_USE_QUOTA",
    "POOL_FLAG_UNINITIALIZED",
    "POOL_FLAG_CACHE_ALIGNED",
    "POOL_FLAG_RAISE_ON_FAILURE",
    "POOL_FLAG_NON_PAGED",
    "POOL_FLAG_NON_PAGED_EXECUTE",
    "POOL_FLAG_PAGED",
    // Neither header set defines the event-callback option or masks, nor NPI_WSK_INTERFACE_ID;
    // the values were checked by hand on 2026-11-29 against two public copies of the WDK's
    // wsk.h and three drivers that define the GUID themselves (one a byte dump of the binary):
    // WSK_SO_BASE 0x4000 + 2; RECEIVE 0x40, DISCONNECT 0x80, SEND_BACKLOG 0x10, RECEIVE_FROM
    // 0x100, ACCEPT 0x200, DISABLE 0x80000000; the GUID
    // {2227E803-8D8B-11D4-ABAD-009027719E09}. A first version had RECEIVE 4, DISCONNECT 8 and the GUID's last byte 0x89 from
    // memory: the host provider, which uses the same constants, could not notice.
    "SO_WSK_EVENT_CALLBACK",
    "WSK_EVENT_RECEIVE",
    "WSK_EVENT_DISCONNECT",
    "WSK_EVENT_SEND_BACKLOG",
    "WSK_EVENT_RECEIVE_FROM",
    "WSK_EVENT_ACCEPT",
    "WSK_EVENT_DISABLE",
];

/// Where this test writes its generated C (under the cargo target directory).
fn work_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("layout-probe");
    std::fs::create_dir_all(&dir).expect("create the probe directory");
    dir
}

const PRELUDE_END: &str = "__attribute__((used)) const long long probe_values[] = {\n";

/// Compiles the items' expressions in one unit, dropping the lines gcc rejects, until it
/// compiles. Returns each item's value, or `None` when this unit does not have it.
fn evaluate(dir: &Path, set: &HeaderSet, unit: (&str, &str), exprs: &[&str]) -> Vec<Option<i64>> {
    let mut present: Vec<bool> = vec![true; exprs.len()];
    let file = dir.join(format!("{}-{}.c", set.name, unit.0));
    for _pass in 0..8 {
        let mut src = String::new();
        src.push_str(unit.1);
        src.push_str("#include <stddef.h>\n");
        src.push_str(PRELUDE_END);
        let first_line = src.lines().count() + 1;
        let mut line_of = Vec::new();
        for (i, expr) in exprs.iter().enumerate() {
            if present[i] {
                line_of.push((first_line + line_of.len(), i));
                writeln!(src, "({expr}),").unwrap();
            }
        }
        src.push_str("0 };\n");
        std::fs::write(&file, &src).expect("write the probe source");
        let out = Command::new("x86_64-w64-mingw32-gcc")
            .args(&set.flags)
            .args(["-S", "-o", "-", "-w"])
            .arg(&file)
            .output()
            .expect("x86_64-w64-mingw32-gcc is missing: apt-get install gcc-mingw-w64-x86-64 mingw-w64-x86-64-dev libwine-dev");
        if out.status.success() {
            let asm = String::from_utf8_lossy(&out.stdout);
            let values = read_quads(&asm);
            let mut result = vec![None; exprs.len()];
            for (k, (_, i)) in line_of.iter().enumerate() {
                result[*i] = Some(values[k]);
            }
            return result;
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let name = file.display().to_string();
        let mut rejected = 0;
        for line in stderr.lines() {
            let Some(rest) = line.strip_prefix(&format!("{name}:")) else {
                continue;
            };
            if !rest.contains("error") {
                continue;
            }
            let Some(number) = rest.split(':').next().and_then(|n| n.parse::<usize>().ok()) else {
                continue;
            };
            if let Some((_, i)) = line_of.iter().find(|(l, _)| *l == number)
                && present[*i]
            {
                present[*i] = false;
                rejected += 1;
            }
        }
        assert!(
            rejected > 0,
            "{} {} unit does not compile for a reason outside the probe lines (missing headers? \
             install gcc-mingw-w64-x86-64 mingw-w64-x86-64-dev libwine-dev):\n{stderr}",
            set.name,
            unit.0
        );
    }
    panic!("{} {} unit still failing after 8 passes", set.name, unit.0);
}

/// The `.quad` values after the `probe_values:` label, in order.
fn read_quads(asm: &str) -> Vec<i64> {
    let mut lines = asm.lines().skip_while(|l| !l.starts_with("probe_values:"));
    lines.next();
    lines
        .map(str::trim)
        .take_while(|l| l.starts_with(".quad"))
        .map(|l| {
            l.trim_start_matches(".quad")
                .trim()
                .parse::<i64>()
                .expect("a .quad value")
        })
        .collect()
}

#[test]
fn layouts_match_mingw_and_wine_headers() {
    let items = table();
    let dir = work_dir();
    let mut failures = Vec::new();
    let mut summary = Vec::new();
    let mut absent_everywhere = vec![true; items.len()];
    for set in header_sets() {
        let exprs: Vec<&str> = items.iter().map(|i| i.c_expr.as_str()).collect();
        let mut values = evaluate(&dir, &set, set.units[0], &exprs);
        let missing: Vec<usize> = (0..items.len()).filter(|&i| values[i].is_none()).collect();
        if !missing.is_empty() {
            let second: Vec<&str> = missing.iter().map(|&i| exprs[i]).collect();
            for (k, value) in evaluate(&dir, &set, set.units[1], &second)
                .into_iter()
                .enumerate()
            {
                values[missing[k]] = value;
            }
        }
        let (mut compared, mut mismatches, mut absent, mut known) = (0, 0, Vec::new(), 0);
        println!("---- layout probe: {} headers ----", set.name);
        for (index, (item, value)) in items.iter().zip(&values).enumerate() {
            if value.is_some() {
                absent_everywhere[index] = false;
            }
            let Some(theirs) = value else {
                absent.push(item.label.as_str());
                continue;
            };
            #[allow(clippy::cast_sign_loss, reason = "compared as bit patterns")]
            let theirs = mask(*theirs as u64, item.bits);
            compared += 1;
            if theirs == item.ours {
                println!(
                    "ok        {:60} ours {:>12} {} {:>12}",
                    item.label, item.ours, set.name, theirs
                );
            } else if let Some((_, _, why)) = KNOWN_DIVERGENCES
                .iter()
                .find(|(s, label, _)| *s == set.name && *label == item.label)
            {
                known += 1;
                println!(
                    "KNOWN DIVERGENCE {:51} ours {:>12} {} {:>12}: {why}",
                    item.label, item.ours, set.name, theirs
                );
            } else {
                mismatches += 1;
                println!(
                    "MISMATCH  {:60} ours {:>12} {} {:>12}",
                    item.label, item.ours, set.name, theirs
                );
                failures.push(format!(
                    "{}: {} ours {} theirs {}",
                    set.name, item.label, item.ours, theirs
                ));
            }
        }
        for label in &absent {
            println!(
                "absent    {label:60} ({} headers do not declare it)",
                set.name
            );
        }
        summary.push(format!(
            "layout probe: {}: {compared} compared, {mismatches} mismatches, {known} known divergences, {} absent",
            set.name,
            absent.len()
        ));
    }
    for (item, absent) in items.iter().zip(&absent_everywhere) {
        if *absent && !OURS_ONLY.contains(&item.label.as_str()) {
            failures.push(format!("{}: in neither header set, so nothing checks it (add it to OURS_ONLY if that is right)", item.label));
        } else if *absent {
            println!(
                "ours only {:60} (in neither header set; see OURS_ONLY)",
                item.label
            );
        }
    }
    for line in &summary {
        println!("{line}");
    }
    assert!(
        failures.is_empty(),
        "layout mismatches:\n{}",
        failures.join("\n")
    );
}
