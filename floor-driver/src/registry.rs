//! The floor's settings from `<registry path>\Parameters`: `Port`, `LoopbackOnly` and
//! `DeferToThread` (all `REG_DWORD`). A missing or malformed value keeps its default.

use wsk_sys::{
    self as sys, HANDLE, KEY_READ, KEY_VALUE_PARTIAL_INFORMATION, KeyValuePartialInformation,
    OBJ_CASE_INSENSITIVE, OBJ_KERNEL_HANDLE, REG_DWORD, UNICODE_STRING,
};

/// What the floor serves on.
pub(crate) struct Settings {
    /// TCP port.
    pub port: u16,
    /// Listen on 127.0.0.1 rather than every address.
    pub loopback_only: bool,
    /// Make each next call on a worker thread (`server::Deferral::Worker`).
    pub defer_to_thread: bool,
}

/// Reads the settings.
///
/// # Safety
/// `PASSIVE_LEVEL`; `registry_path` is a valid counted string for the call.
pub(crate) unsafe fn read(registry_path: *const UNICODE_STRING) -> Settings {
    let mut settings = Settings {
        port: crate::DEFAULT_PORT,
        loopback_only: false,
        defer_to_thread: false,
    };
    // SAFETY: forwarded contract.
    let Some(key) = (unsafe { open_parameters(registry_path) }) else {
        return settings;
    };
    if let Some(port) = dword(key, "Port").and_then(|p| u16::try_from(p).ok()) {
        settings.port = port;
    }
    if let Some(flag) = dword(key, "LoopbackOnly") {
        settings.loopback_only = flag != 0;
    }
    if let Some(flag) = dword(key, "DeferToThread") {
        settings.defer_to_thread = flag != 0;
    }
    // SAFETY: a handle ZwOpenKey gave us, closed once.
    unsafe { sys::ZwClose(key) };
    settings
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

/// A `REG_DWORD` value of the open key.
fn dword(key: HANDLE, name: &str) -> Option<u32> {
    #[repr(C, align(8))]
    struct ValueBuf([u8; 64]);
    let mut buf = ValueBuf([0; 64]);
    let mut wide = [0u16; 32];
    let len = name.encode_utf16().count().min(wide.len());
    for (dst, src) in wide.iter_mut().zip(name.encode_utf16()) {
        *dst = src;
    }
    let mut value_name = UNICODE_STRING::from_wide(&wide[..len]);
    let mut returned = 0u32;
    let size = u32::try_from(buf.0.len()).unwrap_or(u32::MAX);
    // SAFETY: PASSIVE_LEVEL; the output buffer is ours, 8-aligned and `size` bytes long.
    let status = unsafe {
        sys::ZwQueryValueKey(
            key,
            &raw mut value_name,
            KeyValuePartialInformation,
            buf.0.as_mut_ptr().cast(),
            size,
            &raw mut returned,
        )
    };
    if !sys::NT_SUCCESS(status) {
        return None;
    }
    let field = |offset: usize| {
        let b = &buf.0[offset..offset + 4];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    };
    let kind = field(core::mem::offset_of!(KEY_VALUE_PARTIAL_INFORMATION, Type));
    let data_len = field(core::mem::offset_of!(
        KEY_VALUE_PARTIAL_INFORMATION,
        DataLength
    ));
    let data = core::mem::offset_of!(KEY_VALUE_PARTIAL_INFORMATION, Data);
    (kind == REG_DWORD && data_len >= 4).then(|| field(data))
}
