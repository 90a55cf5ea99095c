//! The Wine end-to-end test: a fresh prefix, the driver registered as a kernel service, real
//! clients from Linux, then unload and the `DbgPrint` log checked for a clean report.

use std::path::Path;

/// Runs the Wine test against the built `.sys`.
pub fn test(root: &Path, sys: &Path) -> Result<(), String> {
    let _ = (root, sys);
    Err("wine-test: not built yet (driver-example issue)".into())
}
