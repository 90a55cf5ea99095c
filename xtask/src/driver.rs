//! Building the echo driver as a real `.sys` for `x86_64-pc-windows-msvc` with rust-lld, and
//! checking the result is what a kernel loads: an NT-native image that imports only from the
//! kernel and netio.

use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "x86_64-pc-windows-msvc";
/// DLLs a kernel driver of ours may import from.
const ALLOWED_IMPORTS: &[&str] = &["ntoskrnl.exe", "netio.sys", "hal.dll"];

/// Builds the driver (release) and returns the path of `wskecho.sys`.
pub fn build(root: &Path) -> Result<PathBuf, String> {
    let status = Command::new("cargo")
        .args([
            "build",
            "--quiet",
            "--release",
            "--lib",
            "-p",
            "wsk-driver-example",
            "--target",
            TARGET,
        ])
        .current_dir(root)
        .status()
        .map_err(|e| format!("could not start cargo: {e}"))?;
    if !status.success() {
        return Err(format!(
            "building the driver for {TARGET} failed ({status})"
        ));
    }
    let out_dir = target_dir(root).join(TARGET).join("release");
    let dll = out_dir.join("wskecho.dll");
    let sys = out_dir.join("wskecho.sys");
    // Linking straight to .sys (/OUT) would hide the file from cargo; copy instead.
    std::fs::copy(&dll, &sys)
        .map_err(|e| format!("copy {} -> {}: {e}", dll.display(), sys.display()))?;
    check_image(&sys)?;
    println!(
        "build-driver: {} (NT native; imports only from {})",
        sys.display(),
        ALLOWED_IMPORTS.join(", ")
    );
    Ok(sys)
}

/// Where cargo puts build output (honours `CARGO_TARGET_DIR`).
pub fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

/// Checks the subsystem and the import table with mingw's objdump.
fn check_image(sys: &Path) -> Result<(), String> {
    let out = Command::new("x86_64-w64-mingw32-objdump")
        .arg("-x")
        .arg(sys)
        .output()
        .map_err(|e| {
            format!("x86_64-w64-mingw32-objdump is missing (binutils-mingw-w64-x86-64): {e}")
        })?;
    if !out.status.success() {
        return Err(format!("objdump -x {} failed", sys.display()));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let native = text
        .lines()
        .any(|l| l.starts_with("Subsystem") && l.contains("(NT native)"));
    if !native {
        return Err(format!(
            "{} is not an NT-native image (Subsystem line missing or different)",
            sys.display()
        ));
    }
    let dlls: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("DLL Name: "))
        .collect();
    if dlls.is_empty() {
        return Err(format!("{} has no import table", sys.display()));
    }
    let bad: Vec<&&str> = dlls
        .iter()
        .filter(|d| !ALLOWED_IMPORTS.iter().any(|a| a.eq_ignore_ascii_case(d)))
        .collect();
    if !bad.is_empty() {
        return Err(format!(
            "{} imports from {bad:?}; only {ALLOWED_IMPORTS:?} are allowed",
            sys.display()
        ));
    }
    Ok(())
}
