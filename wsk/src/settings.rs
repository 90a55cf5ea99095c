//! Typed settings from the service's `Parameters` registry key
//! (`HKLM\System\CurrentControlSet\Services\<name>\Parameters`), without allocating.
//!
//! Every read returns `Ok(None)` for a value that is not there, so a default is
//! `.unwrap_or(default)`; a value that is there but unusable is an [`Error`] that names it and
//! says what is wrong (wrong type, too long, out of range, not valid text).
//!
//! ```no_run
//! # fn demo(entry: &wsk::driver::Entry<'_>) -> Result<(), wsk::settings::Error> {
//! let parameters = entry.parameters()?;
//! let port = parameters.dword_in("Port", 0..=65535)?.unwrap_or(7007);
//! let mut text = [0u8; 64];
//! let runner = parameters.string("Runner", &mut text)?.unwrap_or("dpc");
//! let mut list = [0u8; 256];
//! for peer in parameters.multi_string("Peers", &mut list)?.into_iter().flatten() {
//!     wsk::kprint!("peer {peer}\n");
//! }
//! # let _ = (port, runner); Ok(()) }
//! ```
//!
//! # IRQL
//! Everything here: `PASSIVE_LEVEL` (the registry is pageable); above it each call fails with
//! [`ErrorKind::NotPassive`].

use core::fmt;
use core::ops::RangeInclusive;
use core::str::FromStr;

use wsk_sys::{
    self as sys, HANDLE, KEY_READ, KEY_VALUE_PARTIAL_INFORMATION, KeGetCurrentIrql,
    KeyValuePartialInformation, NTSTATUS, OBJ_CASE_INSENSITIVE, OBJ_KERNEL_HANDLE, PASSIVE_LEVEL,
    REG_BINARY, REG_DWORD, REG_EXPAND_SZ, REG_MULTI_SZ, REG_SZ, STATUS_BUFFER_OVERFLOW,
    STATUS_BUFFER_TOO_SMALL, STATUS_INVALID_DEVICE_STATE, STATUS_INVALID_PARAMETER,
    STATUS_OBJECT_NAME_NOT_FOUND, UNICODE_STRING,
};

use crate::driver::Entry;

/// The most data one value may hold, in bytes (UTF-16 for text): 2 KiB, read on the stack.
pub const MAX_VALUE_BYTES: usize = 2048;
/// The longest value name, in UTF-16 units.
pub const MAX_NAME_UNITS: usize = 128;
/// The longest `Parameters` key path, in UTF-16 units.
const MAX_PATH_UNITS: usize = 512;
/// `STATUS_OBJECT_PATH_NOT_FOUND`: a missing key on the way to `Parameters`.
const STATUS_OBJECT_PATH_NOT_FOUND: NTSTATUS = 0xC000_003A_u32.cast_signed();
/// The key's name, as errors about the key itself name it.
const KEY_NAME: &str = "Parameters";

/// A registry value type, as [`ErrorKind::WrongType`] names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValueType(pub u32);

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            REG_SZ => f.write_str("REG_SZ"),
            REG_EXPAND_SZ => f.write_str("REG_EXPAND_SZ"),
            REG_BINARY => f.write_str("REG_BINARY"),
            REG_DWORD => f.write_str("REG_DWORD"),
            REG_MULTI_SZ => f.write_str("REG_MULTI_SZ"),
            other => write!(f, "registry type {other}"),
        }
    }
}

/// What is wrong with a setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The `Parameters` key does not exist ([`Parameters::open`] only).
    MissingKey,
    /// The value has another type than the one asked for.
    WrongType {
        /// The type asked for.
        expected: ValueType,
        /// The type the value has.
        found: ValueType,
    },
    /// The value (or its name, or the key's path) is longer than what holds it.
    TooLong {
        /// Its size in bytes, where known (0 when not).
        bytes: usize,
        /// The room there is, in bytes.
        capacity: usize,
    },
    /// A `REG_DWORD` whose data is not 4 bytes.
    BadDword,
    /// Text that is not valid UTF-16.
    NotText,
    /// A number outside the range the reader accepts.
    OutOfRange {
        /// The value read.
        value: u32,
        /// The smallest allowed.
        min: u32,
        /// The largest allowed.
        max: u32,
    },
    /// Text the reader could not parse, and what it should have been ("an IP address").
    Invalid(&'static str),
    /// The registry call failed with this status.
    Query(NTSTATUS),
    /// Called above `PASSIVE_LEVEL`.
    NotPassive,
}

/// A setting that is present but unusable, naming the value (or the `Parameters` key).
///
/// ```
/// use wsk::settings::{Error, ErrorKind};
/// let e = Error::new("MaxConnections", ErrorKind::OutOfRange { value: 5000, min: 1, max: 1024 });
/// assert_eq!(e.to_string(), "MaxConnections 5000 is outside 1 to 1024");
/// ```
///
/// # IRQL
/// Any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Error {
    name: &'static str,
    kind: ErrorKind,
}

impl Error {
    /// An error about value `name`: for a driver's own checks, worded like the library's.
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub const fn new(name: &'static str, kind: ErrorKind) -> Self {
        Self { name, kind }
    }

    /// The value's name (`Parameters` for the key itself).
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// What is wrong.
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub const fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The status to fail `DriverEntry` with: the registry's own for a failed query,
    /// `STATUS_INVALID_DEVICE_STATE` above `PASSIVE_LEVEL`, `STATUS_INVALID_PARAMETER` for a
    /// value that is there but wrong, `STATUS_OBJECT_NAME_NOT_FOUND` for a missing key.
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub const fn status(&self) -> NTSTATUS {
        match self.kind {
            ErrorKind::MissingKey => STATUS_OBJECT_NAME_NOT_FOUND,
            ErrorKind::Query(status) => status,
            ErrorKind::NotPassive => STATUS_INVALID_DEVICE_STATE,
            _ => STATUS_INVALID_PARAMETER,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.name;
        match self.kind {
            ErrorKind::MissingKey => write!(f, "the {name} registry key is missing"),
            ErrorKind::WrongType { expected, found } => {
                write!(f, "{name} is a {found} value, not {expected}")
            }
            ErrorKind::TooLong { bytes: 0, capacity } => {
                write!(
                    f,
                    "{name} is longer than the {capacity} bytes there is room for"
                )
            }
            ErrorKind::TooLong { bytes, capacity } => write!(
                f,
                "{name} is {bytes} bytes, longer than the {capacity} there is room for"
            ),
            ErrorKind::BadDword => write!(f, "{name} is a REG_DWORD without 4 bytes of data"),
            ErrorKind::NotText => write!(f, "{name} is not valid UTF-16 text"),
            ErrorKind::OutOfRange { value, min, max } => {
                write!(f, "{name} {value} is outside {min} to {max}")
            }
            ErrorKind::Invalid(what) => write!(f, "{name} is not {what}"),
            ErrorKind::Query(status) => write!(
                f,
                "{name} could not be read: NTSTATUS {:#010X}",
                status.cast_unsigned()
            ),
            ErrorKind::NotPassive => {
                write!(f, "{name}: the registry can only be read at PASSIVE_LEVEL")
            }
        }
    }
}

impl core::error::Error for Error {}

/// The service's open `Parameters` key (closed on drop), or a missing one read as empty.
///
/// # IRQL
/// `PASSIVE_LEVEL` for every method and for the drop.
pub struct Parameters {
    key: Option<HANDLE>,
}

impl Parameters {
    /// Opens `<registry path>\Parameters` for reading.
    ///
    /// # Errors
    /// [`ErrorKind::MissingKey`] when there is no such key; [`ErrorKind::Query`] when it
    /// cannot be opened; [`ErrorKind::TooLong`] for a registry path over 500 characters;
    /// [`ErrorKind::NotPassive`].
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL`.
    pub fn open(entry: &Entry<'_>) -> Result<Self, Error> {
        match Self::open_or_empty(entry)? {
            Self { key: None } => Err(Error::new(KEY_NAME, ErrorKind::MissingKey)),
            found => Ok(found),
        }
    }

    /// As [`open`](Self::open), but a missing key reads as one without values: every
    /// setting takes its default.
    ///
    /// # Errors
    /// As [`open`](Self::open), less [`ErrorKind::MissingKey`].
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL`.
    pub fn open_or_empty(entry: &Entry<'_>) -> Result<Self, Error> {
        const SUFFIX: &str = "\\Parameters";
        require_passive(KEY_NAME)?;
        let base = entry.registry_path();
        let total = base.len() + SUFFIX.len();
        let mut path = [0u16; MAX_PATH_UNITS];
        if total > path.len() {
            return Err(Error::new(
                KEY_NAME,
                ErrorKind::TooLong {
                    bytes: total * 2,
                    capacity: MAX_PATH_UNITS * 2,
                },
            ));
        }
        path[..base.len()].copy_from_slice(base);
        for (unit, suffix_unit) in path[base.len()..total]
            .iter_mut()
            .zip(SUFFIX.encode_utf16())
        {
            *unit = suffix_unit;
        }
        let mut name = UNICODE_STRING::from_wide(&path[..total]);
        let mut attributes = sys::InitializeObjectAttributes(
            &raw mut name,
            OBJ_KERNEL_HANDLE | OBJ_CASE_INSENSITIVE,
            core::ptr::null_mut(),
            core::ptr::null_mut(),
        );
        let mut key: HANDLE = core::ptr::null_mut();
        // SAFETY: PASSIVE_LEVEL (checked above); every pointer refers to a live local.
        let status = unsafe { sys::ZwOpenKey(&raw mut key, KEY_READ, &raw mut attributes) };
        match status {
            s if sys::NT_SUCCESS(s) => Ok(Self { key: Some(key) }),
            STATUS_OBJECT_NAME_NOT_FOUND | STATUS_OBJECT_PATH_NOT_FOUND => Ok(Self { key: None }),
            s => Err(Error::new(KEY_NAME, ErrorKind::Query(s))),
        }
    }

    /// True when the key exists (a missing one reads as empty).
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub fn exists(&self) -> bool {
        self.key.is_some()
    }

    /// A `REG_DWORD` value.
    ///
    /// # Errors
    /// [`ErrorKind::WrongType`], [`ErrorKind::BadDword`], [`ErrorKind::Query`],
    /// [`ErrorKind::NotPassive`], [`ErrorKind::TooLong`] (a name over [`MAX_NAME_UNITS`]).
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL`.
    pub fn dword(&self, name: &'static str) -> Result<Option<u32>, Error> {
        let mut buf = ValueBuf::new();
        let Some(data) = self.query(name, REG_DWORD, &mut buf)? else {
            return Ok(None);
        };
        let bytes: [u8; 4] = data
            .try_into()
            .map_err(|_| Error::new(name, ErrorKind::BadDword))?;
        Ok(Some(u32::from_le_bytes(bytes)))
    }

    /// A `REG_DWORD` value that must lie in `range`.
    ///
    /// # Errors
    /// As [`dword`](Self::dword), and [`ErrorKind::OutOfRange`].
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL`.
    pub fn dword_in(
        &self,
        name: &'static str,
        range: RangeInclusive<u32>,
    ) -> Result<Option<u32>, Error> {
        match self.dword(name)? {
            Some(value) if !range.contains(&value) => Err(Error::new(
                name,
                ErrorKind::OutOfRange {
                    value,
                    min: *range.start(),
                    max: *range.end(),
                },
            )),
            value => Ok(value),
        }
    }

    /// A `REG_DWORD` value converted to `T` (a `u16` port, say); `what` says what it should
    /// be, for the error ("a port").
    ///
    /// # Errors
    /// As [`dword`](Self::dword), and [`ErrorKind::Invalid`] when `T` cannot hold it.
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL`.
    pub fn dword_as<T: TryFrom<u32>>(
        &self,
        name: &'static str,
        what: &'static str,
    ) -> Result<Option<T>, Error> {
        self.dword(name)?
            .map(|value| T::try_from(value).map_err(|_| Error::new(name, ErrorKind::Invalid(what))))
            .transpose()
    }

    /// A `REG_SZ` value as UTF-8 in `out` (up to its first NUL).
    ///
    /// # Errors
    /// [`ErrorKind::WrongType`], [`ErrorKind::NotText`], [`ErrorKind::TooLong`] (longer than
    /// `out` or [`MAX_VALUE_BYTES`]), [`ErrorKind::Query`], [`ErrorKind::NotPassive`].
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL`.
    pub fn string<'b>(
        &self,
        name: &'static str,
        out: &'b mut [u8],
    ) -> Result<Option<&'b str>, Error> {
        let mut buf = ValueBuf::new();
        let Some(data) = self.query(name, REG_SZ, &mut buf)? else {
            return Ok(None);
        };
        let len = utf16_to_utf8(name, data, out, false)?;
        Ok(Some(as_str(name, &out[..len])?))
    }

    /// A `REG_SZ` value parsed as `T` (an address, a number...); `what` says what it should
    /// be, for the error ("an IP address").
    ///
    /// # Errors
    /// As [`string`](Self::string) with 128 bytes of room, and [`ErrorKind::Invalid`].
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL`.
    pub fn parsed<T: FromStr>(
        &self,
        name: &'static str,
        what: &'static str,
    ) -> Result<Option<T>, Error> {
        let mut text = [0u8; 128];
        match self.string(name, &mut text)? {
            None => Ok(None),
            Some(text) => text
                .parse()
                .map(Some)
                .map_err(|_| Error::new(name, ErrorKind::Invalid(what))),
        }
    }

    /// A `REG_MULTI_SZ` value: its strings, as UTF-8 in `out`.
    ///
    /// # Errors
    /// As [`string`](Self::string), with `REG_MULTI_SZ` as the expected type.
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL`.
    pub fn multi_string<'b>(
        &self,
        name: &'static str,
        out: &'b mut [u8],
    ) -> Result<Option<MultiString<'b>>, Error> {
        let mut buf = ValueBuf::new();
        let Some(data) = self.query(name, REG_MULTI_SZ, &mut buf)? else {
            return Ok(None);
        };
        let len = utf16_to_utf8(name, data, out, true)?;
        Ok(Some(MultiString {
            rest: as_str(name, &out[..len])?,
        }))
    }

    /// Reads value `name` into `buf`: its data if it has type `expected`, `None` if it (or
    /// the key) is missing.
    fn query<'b>(
        &self,
        name: &'static str,
        expected: u32,
        buf: &'b mut ValueBuf,
    ) -> Result<Option<&'b [u8]>, Error> {
        require_passive(name)?;
        let Some(key) = self.key else {
            return Ok(None);
        };
        let mut wide = [0u16; MAX_NAME_UNITS];
        let mut len = 0;
        for unit in name.encode_utf16() {
            let Some(slot) = wide.get_mut(len) else {
                return Err(Error::new(
                    name,
                    ErrorKind::TooLong {
                        bytes: name.encode_utf16().count() * 2,
                        capacity: MAX_NAME_UNITS * 2,
                    },
                ));
            };
            *slot = unit;
            len += 1;
        }
        let mut value_name = UNICODE_STRING::from_wide(&wide[..len]);
        let mut needed = 0u32;
        let size = u32::try_from(buf.0.len()).unwrap_or(u32::MAX);
        // SAFETY: PASSIVE_LEVEL (checked above); `key` is open (closed only on drop); the
        // output buffer is ours, 8-aligned and `size` bytes long; the rest are live locals.
        let status = unsafe {
            sys::ZwQueryValueKey(
                key,
                &raw mut value_name,
                KeyValuePartialInformation,
                buf.0.as_mut_ptr().cast(),
                size,
                &raw mut needed,
            )
        };
        let header = core::mem::offset_of!(KEY_VALUE_PARTIAL_INFORMATION, Data);
        match status {
            STATUS_OBJECT_NAME_NOT_FOUND => return Ok(None),
            STATUS_BUFFER_OVERFLOW | STATUS_BUFFER_TOO_SMALL => {
                return Err(Error::new(
                    name,
                    ErrorKind::TooLong {
                        bytes: usize::try_from(needed).map_or(0, |n| n.saturating_sub(header)),
                        capacity: MAX_VALUE_BYTES,
                    },
                ));
            }
            s if !sys::NT_SUCCESS(s) => return Err(Error::new(name, ErrorKind::Query(s))),
            _ => {}
        }
        // The buffer starts with a KEY_VALUE_PARTIAL_INFORMATION header; its fields are read
        // as bytes, so no reference to the struct is made.
        let field = |offset: usize| {
            let mut word = [0u8; 4];
            word.copy_from_slice(&buf.0[offset..offset + 4]);
            u32::from_le_bytes(word)
        };
        let found = field(core::mem::offset_of!(KEY_VALUE_PARTIAL_INFORMATION, Type));
        if found != expected {
            return Err(Error::new(
                name,
                ErrorKind::WrongType {
                    expected: ValueType(expected),
                    found: ValueType(found),
                },
            ));
        }
        let data_len = field(core::mem::offset_of!(
            KEY_VALUE_PARTIAL_INFORMATION,
            DataLength
        ));
        let len = usize::try_from(data_len)
            .unwrap_or(usize::MAX)
            .min(buf.0.len() - header);
        Ok(Some(&buf.0[header..header + len]))
    }
}

impl Drop for Parameters {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            // SAFETY: a handle ZwOpenKey gave us, closed once.
            unsafe { sys::ZwClose(key) };
        }
    }
}

impl fmt::Debug for Parameters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Parameters")
            .field("exists", &self.exists())
            .finish()
    }
}

/// The strings of a `REG_MULTI_SZ` value, in order (an iterator).
///
/// # IRQL
/// Any.
#[derive(Debug, Clone)]
pub struct MultiString<'b> {
    rest: &'b str,
}

impl<'b> Iterator for MultiString<'b> {
    type Item = &'b str;

    fn next(&mut self) -> Option<&'b str> {
        if self.rest.is_empty() {
            return None;
        }
        let (first, rest) = self.rest.split_once('\0').unwrap_or((self.rest, ""));
        self.rest = rest;
        Some(first)
    }
}

/// `ZwQueryValueKey` output: header plus [`MAX_VALUE_BYTES`] of data, 8-aligned.
#[repr(C, align(8))]
struct ValueBuf([u8; MAX_VALUE_BYTES + 16]);

impl ValueBuf {
    fn new() -> Self {
        Self([0; MAX_VALUE_BYTES + 16])
    }
}

fn require_passive(name: &'static str) -> Result<(), Error> {
    if KeGetCurrentIrql() == PASSIVE_LEVEL {
        Ok(())
    } else {
        Err(Error::new(name, ErrorKind::NotPassive))
    }
}

/// Decodes UTF-16LE `data` into `out` as UTF-8; returns the length written. Stops at the
/// first NUL, or with `multi`, at a NUL following a NUL (or at the start), writing single
/// NULs between strings.
fn utf16_to_utf8(
    name: &'static str,
    data: &[u8],
    out: &mut [u8],
    multi: bool,
) -> Result<usize, Error> {
    let units = data
        .chunks_exact(2)
        .map(|pair| u16::from_le_bytes([pair[0], pair[1]]));
    let mut len = 0;
    let mut after_nul = true;
    for decoded in char::decode_utf16(units) {
        let c = decoded.map_err(|_| Error::new(name, ErrorKind::NotText))?;
        if c == '\0' {
            if !multi || after_nul {
                break;
            }
            after_nul = true;
        } else {
            after_nul = false;
        }
        let needed = c.len_utf8();
        let Some(room) = out.get_mut(len..len + needed) else {
            return Err(Error::new(
                name,
                ErrorKind::TooLong {
                    bytes: 0,
                    capacity: out.len(),
                },
            ));
        };
        c.encode_utf8(room);
        len += needed;
    }
    // A trailing separator before the list's end is not an empty last string.
    if multi && len > 0 && out[len - 1] == 0 {
        len -= 1;
    }
    Ok(len)
}

fn as_str<'b>(name: &'static str, bytes: &'b [u8]) -> Result<&'b str, Error> {
    core::str::from_utf8(bytes).map_err(|_| Error::new(name, ErrorKind::NotText))
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::ToString;

    use super::*;

    fn utf16(text: &str) -> [u8; 64] {
        let mut out = [0u8; 64];
        for (i, unit) in text.encode_utf16().enumerate() {
            out[i * 2..i * 2 + 2].copy_from_slice(&unit.to_le_bytes());
        }
        out
    }

    #[test]
    fn text_stops_at_its_nul_and_a_list_at_the_double_nul() {
        let mut out = [0u8; 32];
        let len = utf16_to_utf8("S", &utf16("héllo\0junk"), &mut out, false).unwrap();
        assert_eq!(&out[..len], "héllo".as_bytes());
        let len = utf16_to_utf8("M", &utf16("a\0bc\0\0junk"), &mut out, true).unwrap();
        let list = MultiString {
            rest: as_str("M", &out[..len]).unwrap(),
        };
        assert!(list.eq(["a", "bc"]));
        let len = utf16_to_utf8("M", &utf16("\0"), &mut out, true).unwrap();
        assert_eq!(len, 0, "an empty list");
    }

    #[test]
    fn text_longer_than_the_buffer_is_an_error_naming_the_value() {
        let mut out = [0u8; 4];
        let e = utf16_to_utf8("BindAddress", &utf16("127.0.0.1"), &mut out, false).unwrap_err();
        assert_eq!(
            e.kind(),
            ErrorKind::TooLong {
                bytes: 0,
                capacity: 4
            }
        );
        assert_eq!(
            e.to_string(),
            "BindAddress is longer than the 4 bytes there is room for"
        );
    }

    #[test]
    fn unpaired_surrogates_are_not_text() {
        let mut out = [0u8; 8];
        let data = 0xD800u16.to_le_bytes();
        assert_eq!(
            utf16_to_utf8("S", &data, &mut out, false)
                .unwrap_err()
                .kind(),
            ErrorKind::NotText
        );
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let wrong = Error::new(
            "Port",
            ErrorKind::WrongType {
                expected: ValueType(REG_DWORD),
                found: ValueType(REG_SZ),
            },
        );
        assert_eq!(wrong.to_string(), "Port is a REG_SZ value, not REG_DWORD");
        assert_eq!(wrong.status(), STATUS_INVALID_PARAMETER);
        assert_eq!(
            Error::new(KEY_NAME, ErrorKind::MissingKey).to_string(),
            "the Parameters registry key is missing"
        );
    }
}
