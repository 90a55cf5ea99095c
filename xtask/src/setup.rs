//! Machine set-up: everything the project needs, installed by the project itself. As root on
//! Debian it installs missing apt packages; it adds the Windows target and, for Miri, the
//! nightly toolchain's components. What it cannot install it says, loudly.

use std::process::Command;

/// Debian packages: the mingw-w64 C compiler and headers and Wine's headers for the layout
/// probe, mingw-w64's x64 import libraries (`build-driver` checks every import of the .sys
/// against them) and binutils for inspecting the .sys, and Wine to load it.
const APT_PACKAGES: &[&str] = &[
    "gcc-mingw-w64-x86-64",
    "mingw-w64-x86-64-dev",
    "binutils-mingw-w64-x86-64",
    "libwine-dev",
    "wine",
    "wine64",
];

/// Installs what is missing. Never fails: what cannot be installed is said loudly here and
/// reported as NOT RUN by the suite that needs it.
pub fn ensure() {
    ensure_apt_packages(APT_PACKAGES);
    ensure_rustup_target("x86_64-pc-windows-msvc");
    ensure_nightly_miri();
}

/// Installs whichever of `packages` are missing (as root, with apt-get); says loudly if it
/// cannot.
pub fn ensure_apt_packages(packages: &[&str]) {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|pkg| !dpkg_installed(pkg))
        .collect();
    if missing.is_empty() {
        return;
    }
    if !is_root() || !has_program("apt-get") {
        loud(&format!(
            "missing Debian packages {missing:?} and cannot install them here (needs root and \
             apt-get): the suites that need them will report NOT RUN"
        ));
        return;
    }
    println!("setup: installing {}", missing.join(" "));
    let update = Command::new("apt-get")
        .args(["update", "-qq"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status();
    if !matches!(update, Ok(s) if s.success()) {
        loud("apt-get update failed; trying the install anyway");
    }
    let install = Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status();
    if !matches!(install, Ok(s) if s.success()) {
        loud(&format!("apt-get install {missing:?} failed"));
    }
}

fn ensure_rustup_target(target: &str) {
    if has_rust_target(target) {
        return;
    }
    println!("setup: rustup target add {target}");
    let ok = Command::new("rustup")
        .args(["target", "add", target])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        loud(&format!("could not add the Rust target {target}"));
    }
}

fn ensure_nightly_miri() {
    if has_nightly_miri() {
        return;
    }
    println!("setup: installing nightly with miri and rust-src (Miri only; the product is stable)");
    let ok = Command::new("rustup")
        .args(["toolchain", "install", "nightly", "--profile", "minimal"])
        .args(["--component", "miri", "--component", "rust-src"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        loud("could not install nightly Miri: the Miri suite will report NOT RUN");
    }
}

/// Whether rustup has the standard library for `target`.
pub fn has_rust_target(target: &str) -> bool {
    Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == target)
        })
}

/// Whether `cargo +nightly miri` works.
pub fn has_nightly_miri() -> bool {
    Command::new("cargo")
        .args(["+nightly", "miri", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn dpkg_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Whether `program` is on PATH.
pub fn has_program(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// Prints a warning nobody can miss.
pub fn loud(message: &str) {
    eprintln!("\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
    eprintln!("!!! {message}");
    eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n");
}
