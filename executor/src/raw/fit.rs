//! The compile-time check that a future fits a pool's slots, with a message that names both
//! sizes. A `const` panic can only print a `&str`, so the message is written into a byte
//! array by `const fn`s and read back as a `str`.
//!
//! Evaluated in [`TaskPool::spawn`](super::TaskPool::spawn) and
//! [`Runner::spawn`](crate::Runner::spawn): rustc reports the failing check together with the
//! call that instantiated the spawn, i.e. the caller's line:
//!
//! ```text
//! error[E0080]: evaluation panicked: a task of 4136 bytes (its future, or its output if
//!               larger) does not fit the pool's 2048-byte slots: spawn it into a
//!               TaskPool<4136, N> or larger
//! note: the above error was encountered while instantiating `fn Runner::spawn::<...>`
//!   --> src/lib.rs:42:5
//! ```

use core::marker::PhantomData;
use core::mem::{align_of, size_of};

use super::pool::STORAGE_ALIGN;

/// Room for the longest message (two 20-digit numbers and the text).
const MESSAGE_CAPACITY: usize = 256;

/// Appends `text` to `buf` at `at`; returns the new end.
const fn append_str(buf: &mut [u8; MESSAGE_CAPACITY], mut at: usize, text: &str) -> usize {
    let bytes = text.as_bytes();
    let mut index = 0;
    while index < bytes.len() {
        buf[at] = bytes[index];
        at += 1;
        index += 1;
    }
    at
}

/// Appends `value` in decimal to `buf` at `at`; returns the new end.
const fn append_decimal(
    buf: &mut [u8; MESSAGE_CAPACITY],
    mut at: usize,
    mut value: usize,
) -> usize {
    let mut digits = [0_u8; 20];
    let mut count = 0;
    loop {
        #[expect(clippy::cast_possible_truncation, reason = "a decimal digit, below 10")]
        let digit = (value % 10) as u8;
        digits[count] = b'0' + digit;
        count += 1;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    while count > 0 {
        count -= 1;
        buf[at] = digits[count];
        at += 1;
    }
    at
}

/// The checks for storing a `T` (a task's future-or-output) in `SIZE`-byte slots.
pub(crate) struct Fits<T, const SIZE: usize>(PhantomData<T>);

impl<T, const SIZE: usize> Fits<T, SIZE> {
    /// The message bytes and their length.
    const MESSAGE: ([u8; MESSAGE_CAPACITY], usize) = {
        let mut buf = [0_u8; MESSAGE_CAPACITY];
        let mut at = append_str(&mut buf, 0, "a task of ");
        at = append_decimal(&mut buf, at, size_of::<T>());
        at = append_str(
            &mut buf,
            at,
            " bytes (its future, or its output if larger) does not fit the pool's ",
        );
        at = append_decimal(&mut buf, at, SIZE);
        at = append_str(&mut buf, at, "-byte slots: spawn it into a TaskPool<");
        at = append_decimal(&mut buf, at, size_of::<T>());
        at = append_str(&mut buf, at, ", N> or larger");
        (buf, at)
    };

    /// Why a `T` does not fit, naming both sizes.
    pub(crate) const TOO_BIG: &'static str = {
        let (text, _) = Self::MESSAGE.0.split_at(Self::MESSAGE.1);
        match core::str::from_utf8(text) {
            Ok(text) => text,
            Err(_) => "the future does not fit in the pool's slots",
        }
    };

    /// Fails compilation, with [`TOO_BIG`](Self::TOO_BIG) or the alignment's message, when a
    /// `T` does not fit a slot.
    pub(crate) const CHECK: () = {
        assert!(size_of::<T>() <= SIZE, "{}", Self::TOO_BIG);
        assert!(
            align_of::<T>() <= STORAGE_ALIGN,
            "the future needs an alignment above 16 bytes (STORAGE_ALIGN), more than a slot has"
        );
    };
}

#[cfg(test)]
mod tests {
    use super::Fits;

    #[test]
    fn the_message_names_the_task_size_and_the_slot_size() {
        assert_eq!(
            Fits::<[u8; 4136], 2048>::TOO_BIG,
            "a task of 4136 bytes (its future, or its output if larger) does not fit the \
             pool's 2048-byte slots: spawn it into a TaskPool<4136, N> or larger"
        );
        assert_eq!(
            Fits::<(), 0>::TOO_BIG,
            "a task of 0 bytes (its future, or its output if larger) does not fit the pool's \
             0-byte slots: spawn it into a TaskPool<0, N> or larger"
        );
    }

    #[test]
    fn a_fitting_task_passes_the_check() {
        // Evaluating the check is the test: a failure would not compile.
        let () = Fits::<[u64; 256], 2048>::CHECK;
        let () = Fits::<[u8; 2048], 2048>::CHECK;
    }
}
