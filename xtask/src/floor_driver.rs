//! Building the floor driver (`floor-driver/`, `wskfloor`) as a `.sys` for
//! `x86_64-pc-windows-msvc`, checked like the echo driver's (`driver::check_image`: NT native,
//! every import exported by x64 ntoskrnl/hal/netio per mingw-w64, `KeBugCheckEx` for panics,
//! exception handlers that continue the search). `cargo xtask build-driver --floor`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::driver::{check_image, target_dir};

const TARGET: &str = "x86_64-pc-windows-msvc";

/// Builds the floor driver (release) and returns the path of `wskfloor.sys`.
pub fn build(root: &Path) -> Result<PathBuf, String> {
    let status = Command::new("cargo")
        .args([
            "build",
            "--quiet",
            "--release",
            "--lib",
            "-p",
            "wsk-floor-driver",
            "--target",
            TARGET,
        ])
        .current_dir(root)
        .status()
        .map_err(|e| format!("could not start cargo: {e}"))?;
    if !status.success() {
        return Err(format!(
            "building the floor driver for {TARGET} failed ({status})"
        ));
    }
    let out_dir = target_dir(root).join(TARGET).join("release");
    let dll = out_dir.join("wskfloor.dll");
    let sys = out_dir.join("wskfloor.sys");
    std::fs::copy(&dll, &sys)
        .map_err(|e| format!("copy {} -> {}: {e}", dll.display(), sys.display()))?;
    check_image(&sys)?;
    println!(
        "build-driver --floor: {} (checked like wskecho.sys)",
        sys.display()
    );
    Ok(sys)
}
