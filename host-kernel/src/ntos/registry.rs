//! An in-memory registry: keys by full path (case-insensitive), with `REG_DWORD`, `REG_SZ`,
//! `REG_MULTI_SZ` and `REG_BINARY` values, read through `ZwOpenKey` and `ZwQueryValueKey`.

use std::borrow::ToOwned;
use std::boxed::Box;
use std::collections::BTreeMap;
use std::string::String;
use std::vec::Vec;

use super::irql;
use super::machine::{self, lock};
use super::object::{self, Body, KeyObject};
use crate::{
    ACCESS_MASK, HANDLE, KEY_VALUE_PARTIAL_INFORMATION, KeyValuePartialInformation, NTSTATUS,
    OBJECT_ATTRIBUTES, PASSIVE_LEVEL, PVOID, REG_BINARY, REG_DWORD, REG_MULTI_SZ, REG_SZ,
    STATUS_BUFFER_OVERFLOW, STATUS_BUFFER_TOO_SMALL, STATUS_INVALID_HANDLE,
    STATUS_INVALID_PARAMETER, STATUS_OBJECT_NAME_NOT_FOUND, STATUS_SUCCESS, UNICODE_STRING,
};

/// A registry value.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegValue {
    /// `REG_DWORD`.
    Dword(u32),
    /// `REG_SZ` (stored as UTF-16 with a terminating NUL).
    Sz(String),
    /// `REG_BINARY`.
    Binary(Vec<u8>),
    /// `REG_MULTI_SZ` (each string NUL-terminated, then one more NUL).
    MultiSz(Vec<String>),
}

impl RegValue {
    fn kind(&self) -> u32 {
        match self {
            RegValue::Dword(_) => REG_DWORD,
            RegValue::Sz(_) => REG_SZ,
            RegValue::Binary(_) => REG_BINARY,
            RegValue::MultiSz(_) => REG_MULTI_SZ,
        }
    }

    fn data(&self) -> Vec<u8> {
        match self {
            RegValue::Dword(v) => v.to_le_bytes().to_vec(),
            RegValue::Sz(s) => s
                .encode_utf16()
                .chain([0])
                .flat_map(u16::to_le_bytes)
                .collect(),
            RegValue::Binary(b) => b.clone(),
            RegValue::MultiSz(strings) => strings
                .iter()
                .flat_map(|s| s.encode_utf16().chain([0]))
                .chain([0])
                .flat_map(u16::to_le_bytes)
                .collect(),
        }
    }
}

/// Registry contents a test or host program hands to `Kernel::load_driver`: keys relative to
/// the driver's service key (`""` is the service key itself, `"Parameters"` its `Parameters`
/// subkey), or absolute (`\Registry\Machine\...`).
#[derive(Clone, Debug, Default)]
pub struct Registry {
    pub(crate) keys: BTreeMap<String, BTreeMap<String, (String, RegValue)>>,
}

impl Registry {
    /// An empty registry.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) value `name` under `key`, creating the key.
    #[must_use]
    pub fn with(mut self, key: &str, name: &str, value: RegValue) -> Self {
        self.set(key, name, value);
        self
    }

    /// Adds (or replaces) value `name` under `key`, creating the key.
    pub fn set(&mut self, key: &str, name: &str, value: RegValue) {
        self.keys
            .entry(key.trim_matches('\\').to_owned())
            .or_default()
            .insert(name.to_lowercase(), (name.to_owned(), value));
    }

    /// Creates `key` with no values.
    #[must_use]
    pub fn with_key(mut self, key: &str) -> Self {
        self.keys
            .entry(key.trim_matches('\\').to_owned())
            .or_default();
        self
    }
}

/// The machine's registry: full lower-case key paths without trailing separators.
#[derive(Default)]
pub(crate) struct Store {
    keys: BTreeMap<String, BTreeMap<String, RegValue>>,
}

fn normalize(path: &str) -> String {
    path.trim_end_matches('\\').to_lowercase()
}

impl Store {
    /// Mounts `registry` under `base` (relative keys) or at its absolute paths.
    pub(crate) fn mount(&mut self, base: &str, registry: &Registry) {
        self.keys.entry(normalize(base)).or_default();
        for (key, values) in &registry.keys {
            let path = if key.to_lowercase().starts_with("registry\\") {
                std::format!("\\{key}")
            } else if key.is_empty() {
                base.to_owned()
            } else {
                std::format!("{base}\\{key}")
            };
            let entry = self.keys.entry(normalize(&path)).or_default();
            for (name, (_, value)) in values {
                entry.insert(name.clone(), value.clone());
            }
        }
    }

    /// Sets one value at an absolute key path.
    pub(crate) fn set(&mut self, key: &str, name: &str, value: RegValue) {
        self.keys
            .entry(normalize(key))
            .or_default()
            .insert(name.to_lowercase(), value);
    }

    fn exists(&self, path: &str) -> bool {
        self.keys.contains_key(path) || {
            let prefix = std::format!("{path}\\");
            self.keys
                .range(prefix.clone()..)
                .next()
                .is_some_and(|(k, _)| k.starts_with(&prefix))
        }
    }
}

/// Host implementation of `ZwOpenKey`. `PASSIVE_LEVEL`.
///
/// # Safety
/// `KeyHandle` writable; `ObjectAttributes` valid with a valid name.
#[unsafe(no_mangle)]
pub unsafe extern "system-unwind" fn ZwOpenKey(
    KeyHandle: *mut HANDLE,
    DesiredAccess: ACCESS_MASK,
    ObjectAttributes: *mut OBJECT_ATTRIBUTES,
) -> NTSTATUS {
    let _ = DesiredAccess;
    // WDK "ZwOpenKey function (wdm.h)" (learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-zwopenkey): IRQL =
    // PASSIVE_LEVEL.
    irql::require_at_most(PASSIVE_LEVEL, "ZwOpenKey");
    let machine = machine::current("ZwOpenKey");
    // SAFETY: the caller guarantees valid attributes.
    let attributes = unsafe { &*ObjectAttributes };
    if attributes.ObjectName.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: the caller guarantees a valid name (checked non-null).
    let name = unsafe { &*attributes.ObjectName };
    // SAFETY: as above: its buffer holds `Length` bytes.
    let wide = unsafe { name.as_wide() };
    let (root, name) = (attributes.RootDirectory, String::from_utf16_lossy(wide));
    let path = if root.is_null() {
        normalize(&name)
    } else {
        let objects = lock(&machine.objects);
        match objects.resolve(root) {
            Some(Body::Key(key)) => normalize(&std::format!("{}\\{name}", key.path)),
            _ => return STATUS_INVALID_HANDLE,
        }
    };
    if !lock(&machine.registry).exists(&path) {
        return STATUS_OBJECT_NAME_NOT_FOUND;
    }
    let handle = object::open(&machine, Body::Key(Box::new(KeyObject { path })));
    // SAFETY: the caller guarantees a writable out-pointer.
    unsafe { KeyHandle.write(handle) };
    STATUS_SUCCESS
}

/// Host implementation of `ZwQueryValueKey` (`KeyValuePartialInformation` only).
/// `PASSIVE_LEVEL`.
///
/// # Safety
/// `ValueName` valid; `KeyValueInformation` writable for `Length` bytes; `ResultLength`
/// writable.
#[unsafe(no_mangle)]
pub unsafe extern "system-unwind" fn ZwQueryValueKey(
    KeyHandle: HANDLE,
    ValueName: *mut UNICODE_STRING,
    KeyValueInformationClass: i32,
    KeyValueInformation: PVOID,
    Length: u32,
    ResultLength: *mut u32,
) -> NTSTATUS {
    // WDK "ZwQueryValueKey function (wdm.h)" (learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-zwqueryvaluekey): IRQL =
    // PASSIVE_LEVEL.
    irql::require_at_most(PASSIVE_LEVEL, "ZwQueryValueKey");
    let machine = machine::current("ZwQueryValueKey");
    if KeyValueInformationClass != KeyValuePartialInformation {
        return STATUS_INVALID_PARAMETER;
    }
    let path = match lock(&machine.objects).resolve(KeyHandle) {
        Some(Body::Key(key)) => key.path.clone(),
        _ => return STATUS_INVALID_HANDLE,
    };
    // SAFETY: the caller guarantees a valid name.
    let name = unsafe { &*ValueName };
    // SAFETY: as above: its buffer holds `Length` bytes.
    let name = String::from_utf16_lossy(unsafe { name.as_wide() }).to_lowercase();
    let value = lock(&machine.registry)
        .keys
        .get(&path)
        .and_then(|values| values.get(&name).cloned());
    let Some(value) = value else {
        return STATUS_OBJECT_NAME_NOT_FOUND;
    };
    let data = value.data();
    let header = core::mem::offset_of!(KEY_VALUE_PARTIAL_INFORMATION, Data);
    let needed = header + data.len();
    let needed32 = u32::try_from(needed).unwrap_or(u32::MAX);
    let length = Length as usize;
    // SAFETY: the caller guarantees ResultLength is writable.
    unsafe { ResultLength.write(needed32) };
    if length < header {
        return STATUS_BUFFER_TOO_SMALL;
    }
    // The caller guarantees the buffer holds Length bytes: the header fits (checked above).
    let out = KeyValueInformation.cast::<u8>();
    let words = [
        0u32,
        value.kind(),
        u32::try_from(data.len()).unwrap_or(u32::MAX),
    ];
    for (i, word) in words.iter().enumerate() {
        // SAFETY: word `i` of the header, inside the buffer (as said above).
        let at = unsafe { out.add(i * 4) };
        // SAFETY: 4 bytes at `at`, inside the buffer; a local array does not overlap it.
        unsafe { core::ptr::copy_nonoverlapping(word.to_le_bytes().as_ptr(), at, 4) };
    }
    if length < needed {
        return STATUS_BUFFER_OVERFLOW;
    }
    // SAFETY: the data follows the header, and the buffer holds it all (checked above).
    let at = unsafe { out.add(header) };
    // SAFETY: `data.len()` bytes at `at`, inside the buffer; the data is our own copy.
    unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), at, data.len()) };
    STATUS_SUCCESS
}
