//! Callgrind plumbing shared by `cargo xtask bench --echo` ([`crate::bench_echo`]) and
//! `cargo xtask bench-echo` ([`crate::bench_echo_table`]): checking valgrind is there, running
//! a program under callgrind with one output file per thread, and splitting a file's
//! instructions by where they ran, from `callgrind_annotate`'s per-function listing.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use crate::setup;

/// Where an instruction ran, by the demangled name of the function callgrind charged it to
/// (after inlining: code inlined into a function counts as that function's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Part {
    /// The crates a bench names as its library (the driver, `wsk_net`, `wsk_executor`, the
    /// `wsk_sys` helpers, a benchmark's own loop into which the library's futures are inlined).
    Library,
    /// `wsk_host`: the emulated NT kernel, its verifier and the WSK provider, with the kernel
    /// functions it exports under their unmangled NT names (`IoAllocateIrp`, `WskRegister`,
    /// `host_current_irql`, ...).
    Host,
    /// Everything else: std, core, alloc and hashbrown code shared by name (the `SipHash` of
    /// the host kernel's `HashMap`s, thread starts with the reactor loop inlined), libc
    /// (malloc, memcpy, the socket calls). The drivers and the library are `no_std` without
    /// `alloc`, so nearly all of this runs for the host kernel.
    Runtime,
}

impl Part {
    /// Every part, in the order the benches print them.
    pub(crate) const ALL: [Part; 3] = [Part::Library, Part::Host, Part::Runtime];

    /// The part of a demangled function name such as `wsk_host::wsk::socket::pump`,
    /// `<wsk_net::raw::Op as core::future::future::Future>::poll` or
    /// `core::ptr::drop_in_place<wsk_net::raw::Held>`; `library` lists the path prefixes
    /// (`"wsk_net::"`, ...) that count as [`Part::Library`].
    pub(crate) fn of(function: &str, library: &[&str]) -> Part {
        let mut name = function.trim();
        loop {
            let before = name;
            for prefix in ["<", "&", "mut ", "dyn ", "core::ptr::drop_in_place<"] {
                name = name.strip_prefix(prefix).unwrap_or(name);
            }
            if name == before {
                break;
            }
        }
        if name.starts_with("wsk_host::") || is_host_kernel_export(name) {
            Part::Host
        } else if library.iter().any(|prefix| name.starts_with(prefix)) {
            Part::Library
        } else {
            Part::Runtime
        }
    }
}

/// Whether `name` is one of the host kernel's `#[unsafe(no_mangle)]` exports: a bare NT name
/// (`IoAllocateIrp`, `KeSetEvent`, `ExAllocatePoolWithTag`, `WskRegister`, ...) or one of its
/// `host_*` hooks. No C runtime function starts with these capitalised prefixes.
fn is_host_kernel_export(name: &str) -> bool {
    const NT_PREFIXES: [&str; 9] = ["Io", "Ke", "Ex", "Mm", "Ob", "Ps", "Zw", "Wsk", "host_"];
    !name.contains("::") && NT_PREFIXES.iter().any(|prefix| name.starts_with(prefix))
}

/// Installs valgrind where it can, and fails if `valgrind` or `callgrind_annotate` is missing.
pub(crate) fn ensure_valgrind() -> Result<(), String> {
    setup::ensure_apt_packages(&["valgrind"]);
    if !setup::has_program("valgrind") || !setup::has_program("callgrind_annotate") {
        return Err("valgrind is not installed (apt-get install valgrind)".into());
    }
    Ok(())
}

/// Empties `dir` (creating it): output files of an earlier run, one per thread, must not be
/// mistaken for this run's.
pub(crate) fn fresh_dir(dir: &Path) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))
}

/// Runs `program args` under callgrind, one output file per thread (`out_file-NN`), and
/// returns its output; the caller judges the exit status.
pub(crate) fn run(program: &Path, args: &[&str], out_file: &Path) -> Result<Output, String> {
    Command::new("valgrind")
        .args(["--tool=callgrind", "--separate-threads=yes"])
        .arg(format!("--callgrind-out-file={}", out_file.display()))
        .arg(program)
        .args(args)
        .output()
        .map_err(|e| format!("could not start valgrind: {e}"))
}

/// Instructions by part, from `callgrind_annotate`'s per-function listing of `file`, each
/// function's count added to the part `library` puts it in (see [`Part::of`]).
pub(crate) fn by_part(file: &Path, library: &[&str]) -> Result<BTreeMap<Part, u64>, String> {
    let output = Command::new("callgrind_annotate")
        .args(["--threshold=100", "--inclusive=no", "--auto=no"])
        .arg(file)
        .output()
        .map_err(|e| format!("could not start callgrind_annotate: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "callgrind_annotate {} failed ({}):\n{}",
            file.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let mut parts = BTreeMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        if let Some((count, function)) = function_line(line) {
            *parts.entry(Part::of(function, library)).or_insert(0) += count;
        }
    }
    Ok(parts)
}

/// A function line of `callgrind_annotate`:
/// `7,429,140 (22.11%)  ???:core::hash::BuildHasher::hash_one [/path/echo_cost]` (the
/// percentage and the object are optional) as its count and function name.
fn function_line(line: &str) -> Option<(u64, &str)> {
    let line = line.trim_start();
    let (count, rest) = line.split_once(' ')?;
    let count: u64 = count.replace(',', "").parse().ok()?;
    let mut rest = rest.trim_start();
    if rest.starts_with('(') {
        rest = rest.split_once(')')?.1.trim_start();
    }
    // `file:function`: the file (a path, or `???` without debug information) has no colon.
    let (_, function) = rest.split_once(':')?;
    if function.is_empty() {
        return None;
    }
    let function = match function.rfind(" [") {
        Some(at) if function.ends_with(']') => &function[..at],
        _ => function,
    };
    Some((count, function))
}

#[cfg(test)]
mod tests {
    use super::{Part, function_line};

    #[test]
    fn functions_are_split_by_crate() {
        let library = ["wsk_net::", "wskfloor::"];
        assert_eq!(
            Part::of("wsk_host::wsk::socket::pump", &library),
            Part::Host
        );
        assert_eq!(Part::of("IoAllocateIrp", &library), Part::Host);
        assert_eq!(Part::of("host_current_irql", &library), Part::Host);
        assert_eq!(Part::of("memcpy", &library), Part::Runtime);
        assert_eq!(
            Part::of(
                "<wsk_net::raw::Op as core::future::future::Future>::poll",
                &library
            ),
            Part::Library
        );
        assert_eq!(
            Part::of("core::ptr::drop_in_place<wsk_net::raw::Held>", &library),
            Part::Library
        );
        assert_eq!(
            Part::of("wskfloor::server::receive_done", &library),
            Part::Library
        );
        assert_eq!(Part::of("wsk_sys::inline::helper", &library), Part::Runtime);
        assert_eq!(
            Part::of("core::hash::BuildHasher::hash_one", &library),
            Part::Runtime
        );
        assert_eq!(
            Part::of("__memcpy_avx_unaligned_erms", &library),
            Part::Runtime
        );
    }

    #[test]
    fn annotate_lines_parse() {
        assert_eq!(
            function_line(
                "7,429,140 (22.11%)  ???:core::hash::BuildHasher::hash_one [/t/echo_cost]"
            ),
            Some((7_429_140, "core::hash::BuildHasher::hash_one"))
        );
        assert_eq!(
            function_line("  3,064,950  ./string/memmove.S:__memcpy_avx_unaligned_erms"),
            Some((3_064_950, "__memcpy_avx_unaligned_erms"))
        );
        assert_eq!(
            function_line("1,234 (5.00%)  ???:wskfloor::x [/bin/y]"),
            Some((1234, "wskfloor::x"))
        );
        assert_eq!(function_line("33,603,539 (100.0%)  PROGRAM TOTALS"), None);
        assert_eq!(function_line("Ir                  file:function"), None);
    }
}
