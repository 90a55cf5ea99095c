//! Host mode: the echo driver on the host kernel (Linux). Boots the kernel, writes the
//! command-line settings into the driver's `Parameters` registry key, loads the driver through
//! its `DriverEntry` (so the same registry code runs as on Windows), serves until Ctrl-C or
//! SIGTERM, unloads, and prints the verifier's unload report. Exits non-zero if the report is
//! not clean.
//!
//! On Windows targets this file builds an empty program: the driver is the `.sys`.

#[cfg(not(target_os = "windows"))]
mod host {
    use std::net::IpAddr;
    use std::process::ExitCode;

    use wsk_host::{Config, Kernel, RegValue, Registry};
    use wskecho::config::{DEFAULT_PORT, parse_runner};

    const USAGE: &str = "usage: wskecho [--port N] [--bind ADDR] [--runner dpc|passive] \
                         [--max-connections N] [--cpus N]
  Serves RFC 862 echo on the host kernel until Ctrl-C, then unloads and prints the leak report.
  Defaults: port 7007 on 0.0.0.0, the DPC runner, 1024 connections, one emulated CPU per core.";

    /// The service name: the registry key is `...\Services\WskEcho`.
    const SERVICE: &str = "WskEcho";

    /// Command-line settings, written to the registry as the driver expects them.
    struct Flags {
        port: u16,
        bind: IpAddr,
        runner: String,
        max_connections: u32,
        cpus: Option<usize>,
    }

    fn parse(args: &[String]) -> Result<Flags, String> {
        let mut flags = Flags {
            port: DEFAULT_PORT,
            bind: IpAddr::from([0, 0, 0, 0]),
            runner: "dpc".into(),
            max_connections: 1024,
            cpus: None,
        };
        let mut rest = args.iter();
        while let Some(flag) = rest.next() {
            if flag == "--" {
                // `cargo xtask run -- --port 7008` passes the separator through.
                continue;
            }
            if flag == "--help" || flag == "-h" {
                return Err(String::new());
            }
            let value = rest.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let bad = |what: &str| format!("{flag}: {value:?} is not {what}");
            match flag.as_str() {
                "--port" => flags.port = value.parse().map_err(|_| bad("a port"))?,
                "--bind" => flags.bind = value.parse().map_err(|_| bad("an IP address"))?,
                "--runner" => {
                    parse_runner(value).ok_or_else(|| bad("dpc or passive"))?;
                    flags.runner.clone_from(value);
                }
                "--max-connections" => {
                    flags.max_connections = value
                        .parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| bad("a positive count"))?;
                }
                "--cpus" => {
                    flags.cpus = Some(
                        value
                            .parse()
                            .ok()
                            .filter(|n| *n > 0)
                            .ok_or_else(|| bad("a positive count"))?,
                    );
                }
                _ => return Err(format!("unknown flag {flag}")),
            }
        }
        Ok(flags)
    }

    /// Blocks SIGINT and SIGTERM in this thread and every thread it starts later, so that
    /// [`wait_for_stop_signal`] receives them instead of the default handler killing the
    /// process with the driver still loaded.
    fn block_stop_signals() -> libc::sigset_t {
        // SAFETY: sigset_t is plain data that sigemptyset initialises.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid sigset_t; the signal numbers are valid; pthread_sigmask
        // only changes this thread's mask (inherited by threads spawned afterwards).
        unsafe {
            libc::sigemptyset(&raw mut set);
            libc::sigaddset(&raw mut set, libc::SIGINT);
            libc::sigaddset(&raw mut set, libc::SIGTERM);
            libc::pthread_sigmask(libc::SIG_BLOCK, &raw const set, std::ptr::null_mut());
        }
        set
    }

    fn wait_for_stop_signal(set: &libc::sigset_t) -> i32 {
        let mut signal = 0;
        // SAFETY: the set holds signals blocked in every thread of the process, so sigwait
        // is the only way they are delivered.
        unsafe { libc::sigwait(set, &raw mut signal) };
        signal
    }

    pub fn main() -> ExitCode {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let flags = match parse(&args) {
            Ok(flags) => flags,
            Err(message) => {
                if !message.is_empty() {
                    eprintln!("wskecho: {message}");
                }
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        };
        let signals = block_stop_signals();

        let mut config = Config::default();
        if let Some(cpus) = flags.cpus {
            config.cpus = cpus;
        }
        let kernel = Kernel::boot(config);
        let registry = Registry::new()
            .with("Parameters", "Port", RegValue::Dword(flags.port.into()))
            .with(
                "Parameters",
                "BindAddress",
                RegValue::Sz(flags.bind.to_string()),
            )
            .with("Parameters", "Runner", RegValue::Sz(flags.runner.clone()))
            .with(
                "Parameters",
                "MaxConnections",
                RegValue::Dword(flags.max_connections),
            );
        let driver = match kernel.load_driver(wskecho::DriverEntry, SERVICE, registry) {
            Ok(driver) => driver,
            Err(status) => {
                eprintln!("wskecho: DriverEntry failed with NTSTATUS {status:#010x}");
                return ExitCode::FAILURE;
            }
        };
        eprintln!("wskecho host mode: serving; Ctrl-C unloads the driver");
        let signal = wait_for_stop_signal(&signals);
        eprintln!("wskecho host mode: signal {signal}, unloading");
        let report = kernel.unload(driver);
        println!("wskecho host mode: unload report: {report}");
        if report.is_clean() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}

#[cfg(not(target_os = "windows"))]
fn main() -> std::process::ExitCode {
    host::main()
}

#[cfg(target_os = "windows")]
fn main() {}
