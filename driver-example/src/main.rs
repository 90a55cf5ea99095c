//! Host mode: the echo driver on the host kernel (Linux). Boots the kernel, loads the driver
//! through its `DriverEntry`, serves until Ctrl-C, unloads, and prints the verifier's report.

fn main() {
    eprintln!("wskecho host mode: the host kernel is not available in this build yet");
}
