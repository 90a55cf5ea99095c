//! Links the Windows build as a native kernel driver (`wsk_build::driver`); the host build is
//! an ordinary library.

fn main() {
    wsk_build::driver();
}
