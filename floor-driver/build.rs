//! Links the Windows build as a native kernel driver: NT-native subsystem, `DriverEntry` entry point, no CRT.
//! Only the windows-msvc target gets these; the host build is an ordinary library.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    if target.ends_with("windows-msvc") {
        for arg in [
            "/NODEFAULTLIB",
            "/SUBSYSTEM:NATIVE",
            "/DRIVER",
            "/ENTRY:DriverEntry",
            "/MACHINE:X64",
            "/RELEASE",
        ] {
            println!("cargo:rustc-cdylib-link-arg={arg}");
        }
    }
}
