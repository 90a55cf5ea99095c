//! Host mode: the chat relay driver on the host kernel (Linux). Boots the kernel, writes the
//! command-line settings into the driver's `Parameters` registry key, loads the driver through
//! its `DriverEntry`, serves until Ctrl-C or SIGTERM, unloads and prints the verifier's
//! report. Exits non-zero when the driver does not load (a port in use, say), when the report
//! is not clean, or when the verifier recorded a bugcheck. `WSK_FAULTS`/`WSK_SEED` choose a
//! fault plan, as for the tests.
//!
//! `cargo run -p wsk-chat-example -- [--port N] [--bind ADDR] [--idle-seconds S]
//! [--runner dpc|passive]`; then
//! `nc localhost N` in two terminals.
//!
//! On Windows targets this file builds an empty program: the driver is the `.sys`.

#[cfg(not(target_os = "windows"))]
mod host {
    use std::process::ExitCode;

    use wsk_host::faults::Faults;
    use wsk_host::program::{self, StopSignals};
    use wsk_host::{Config, Kernel, RegValue, Registry};

    const USAGE: &str = "usage: wsk-chat-example [--port N] [--bind ADDR] [--idle-seconds S] \
                         [--runner dpc|passive]
  Relays each line a client sends to every other client, on the host kernel, until Ctrl-C;
  then unloads the driver and prints the leak report. Defaults: port 7008 on 127.0.0.1,
  300 s idle timeout, the DPC runner. WSK_FAULTS and WSK_SEED choose a fault plan.";

    /// The registry values the flags set: `(--flag, value name, is a number)`.
    const FLAGS: [(&str, &str, bool); 4] = [
        ("--port", "Port", true),
        ("--bind", "BindAddress", false),
        ("--idle-seconds", "IdleSeconds", true),
        ("--runner", "Runner", false),
    ];

    /// The driver's `Parameters` from the command line; the driver checks the values (a bad
    /// one fails its load, with its reason logged).
    fn parse(args: &[String]) -> Result<Registry, String> {
        let mut registry = Registry::new();
        let mut rest = args.iter().filter(|arg| *arg != "--");
        while let Some(flag) = rest.next() {
            let (_, name, number) = FLAGS
                .iter()
                .find(|(known, _, _)| known == flag)
                .ok_or_else(|| format!("unknown flag {flag}"))?;
            let value = rest.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let value = if *number {
                RegValue::Dword(
                    value
                        .parse()
                        .map_err(|_| format!("{flag}: {value:?} is not a number"))?,
                )
            } else {
                RegValue::Sz(value.clone())
            };
            registry = registry.with("Parameters", name, value);
        }
        Ok(registry)
    }

    pub fn main() -> ExitCode {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let registry = match parse(&args) {
            Ok(registry) => registry,
            Err(message) => {
                eprintln!("wskchat: {message}\n{USAGE}");
                return ExitCode::from(2);
            }
        };
        let signals = StopSignals::block();
        let mut config = Config::default();
        match Faults::from_env() {
            Ok(Some(plan)) => config.faults = plan,
            Ok(None) => {}
            Err(message) => {
                eprintln!("wskchat: {message}");
                return ExitCode::from(2);
            }
        }
        let kernel = Kernel::boot(config);
        program::serve_until_stopped(
            "wskchat",
            &kernel,
            &signals,
            wskchat::DriverEntry,
            "WskChat",
            registry,
            |kernel| format!("the kernel's debug log:\n{}", kernel.debug_log()),
        )
    }
}

#[cfg(not(target_os = "windows"))]
fn main() -> std::process::ExitCode {
    host::main()
}

#[cfg(target_os = "windows")]
fn main() {}
