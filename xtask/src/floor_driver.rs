//! Building the floor driver (`floor-driver/`, `wskfloor`) as a `.sys` for
//! `x86_64-pc-windows-msvc`, checked like the echo driver's (`driver::check_image`: NT native,
//! every import exported by x64 ntoskrnl/hal/netio per mingw-w64, `KeBugCheckEx` for panics,
//! exception handlers that continue the search). `cargo xtask build-driver --floor`.

use std::path::{Path, PathBuf};

use crate::driver::build_sys;

/// Builds the floor driver (release) and returns the path of `wskfloor.sys`.
pub fn build(root: &Path) -> Result<PathBuf, String> {
    let sys = build_sys(root, "wsk-floor-driver", "wskfloor")?;
    println!(
        "build-driver --floor: {} (checked like wskecho.sys)",
        sys.display()
    );
    Ok(sys)
}
