//! Host mode: the floor driver on the host kernel (Linux). Boots the kernel, writes `Port` and
//! `LoopbackOnly` into the driver's `Parameters` key, loads the driver through its
//! `DriverEntry`, serves until SIGINT or SIGTERM, unloads, and prints the verifier's unload
//! report. Exits non-zero when the driver does not load, or the report is not clean, or the
//! verifier recorded a bugcheck.
//!
//! On Windows targets this file builds an empty program: the driver is the `.sys`.

#[cfg(not(target_os = "windows"))]
mod host {
    use std::process::ExitCode;

    use wsk_host::program::{self, StopSignals};
    use wsk_host::{Config, Kernel, RegValue, Registry};

    const USAGE: &str = "usage: wskfloor [--port N] [--cpus N] [--all-addresses]
  Serves RFC 862 echo with the callback-chain floor driver on the host kernel until SIGINT or
  SIGTERM, then unloads and prints the leak report. Defaults: port 7008 on 127.0.0.1
  (--all-addresses: 0.0.0.0), one emulated CPU per core.";

    struct Flags {
        port: u16,
        cpus: Option<usize>,
        loopback_only: bool,
    }

    fn parse(args: &[String]) -> Result<Flags, String> {
        let mut flags = Flags {
            port: wskfloor::DEFAULT_PORT,
            cpus: None,
            loopback_only: true,
        };
        let mut rest = args.iter();
        while let Some(flag) = rest.next() {
            match flag.as_str() {
                "--" => {}
                "--all-addresses" => flags.loopback_only = false,
                "--port" | "--cpus" => {
                    let value = rest.next().ok_or_else(|| format!("{flag} needs a value"))?;
                    let bad = || format!("{flag}: {value:?} is not a valid number");
                    if flag == "--port" {
                        flags.port = value.parse().map_err(|_| bad())?;
                    } else {
                        flags.cpus = Some(value.parse().ok().filter(|n| *n > 0).ok_or_else(bad)?);
                    }
                }
                _ => return Err(format!("unknown flag {flag}")),
            }
        }
        Ok(flags)
    }

    pub fn main() -> ExitCode {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let flags = match parse(&args) {
            Ok(flags) => flags,
            Err(message) => {
                eprintln!("wskfloor: {message}\n{USAGE}");
                return ExitCode::from(2);
            }
        };
        let signals = StopSignals::block();
        let mut config = Config::default();
        if let Some(cpus) = flags.cpus {
            config.cpus = cpus;
        }
        let kernel = Kernel::boot(config);
        let registry = Registry::new()
            .with("Parameters", "Port", RegValue::Dword(flags.port.into()))
            .with(
                "Parameters",
                "LoopbackOnly",
                RegValue::Dword(flags.loopback_only.into()),
            );
        program::serve_until_stopped(
            "wskfloor",
            &kernel,
            &signals,
            wskfloor::DriverEntry,
            "WskFloor",
            registry,
            |_| String::new(),
        )
    }
}

#[cfg(not(target_os = "windows"))]
fn main() -> std::process::ExitCode {
    host::main()
}

#[cfg(target_os = "windows")]
fn main() {}
