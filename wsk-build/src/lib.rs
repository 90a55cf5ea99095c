//! The build settings a Windows kernel driver (`.sys`) needs, in one call from the driver's
//! `build.rs`, so that no driver copies them:
//!
//! ```text
//! // build.rs
//! fn main() {
//!     wsk_build::driver();
//! }
//! ```
//!
//! With `[build-dependencies] wsk-build = ...` and, in the driver's `Cargo.toml`,
//! `crate-type = ["cdylib", "rlib"]` (the cdylib is the `.sys`; the rlib lets the host kernel
//! load the same code in tests) and a release profile with `panic = "abort"` (a kernel has no
//! unwinder).
//!
//! # IRQL
//! Build time only: nothing here runs in a kernel.

/// The linker arguments of a native kernel driver image: NT-native subsystem, `/DRIVER`,
/// `DriverEntry` as the entry point, no default libraries (no CRT), x64, checksummed
/// (`/RELEASE`).
pub const DRIVER_LINK_ARGS: &[&str] = &[
    "/NODEFAULTLIB",
    "/SUBSYSTEM:NATIVE",
    "/DRIVER",
    "/ENTRY:DriverEntry",
    "/MACHINE:X64",
    "/RELEASE",
];

/// Emits the cargo instructions for a driver crate: on a `*-windows-msvc` target, links its
/// cdylib as a kernel driver with [`DRIVER_LINK_ARGS`]; elsewhere (the host kernel) nothing,
/// the crate is an ordinary library there.
pub fn driver() {
    let target = std::env::var("TARGET").unwrap_or_default();
    for line in instructions(&target) {
        println!("{line}");
    }
}

/// The lines [`driver`] prints for `target`.
#[must_use]
pub fn instructions(target: &str) -> Vec<String> {
    let mut lines = vec!["cargo:rerun-if-changed=build.rs".to_owned()];
    if target.ends_with("windows-msvc") {
        lines.extend(
            DRIVER_LINK_ARGS
                .iter()
                .map(|arg| format!("cargo:rustc-cdylib-link-arg={arg}")),
        );
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_windows_msvc_target_links_as_a_driver() {
        let windows = instructions("x86_64-pc-windows-msvc");
        assert!(windows.contains(&"cargo:rustc-cdylib-link-arg=/DRIVER".to_owned()));
        assert!(windows.contains(&"cargo:rustc-cdylib-link-arg=/ENTRY:DriverEntry".to_owned()));
        assert_eq!(windows.len(), 1 + DRIVER_LINK_ARGS.len());
        assert_eq!(
            instructions("x86_64-unknown-linux-gnu"),
            ["cargo:rerun-if-changed=build.rs"]
        );
    }
}
