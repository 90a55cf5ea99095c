//! Host mode: the echo driver on the host kernel (Linux). Boots the kernel, writes the
//! command-line settings into the driver's `Parameters` registry key, loads the driver through
//! its `DriverEntry` (so the same registry code runs as on Windows), serves until Ctrl-C or
//! SIGTERM, unloads, and prints the verifier's unload report. Exits non-zero with the reason
//! when the driver does not load (a port in use, say), when the report is not clean, or when
//! the verifier recorded any bugcheck. Raises its soft descriptor limit to what
//! `--max-connections` needs (one descriptor per connection on the host), or says at start-up
//! why it cannot.
//!
//! On Windows targets this file builds an empty program: the driver is the `.sys`.

#[cfg(not(target_os = "windows"))]
mod host {
    use std::net::IpAddr;
    use std::process::ExitCode;

    use wsk_host::faults::{Faults, parse_seed};
    use wsk_host::program::{self, StopSignals};
    use wsk_host::{Config, Kernel, RegValue, Registry};
    use wskecho::config::{DEFAULT_PORT, parse_max_connections, parse_runner};
    use wskecho::echo::MAX_CONNECTIONS;

    const USAGE: &str = "usage: wskecho [--port N] [--bind ADDR] [--runner dpc|passive] \
                         [--max-connections N] [--event-driven] [--cpus N] [--faults PLAN] \
                         [--seed N]
  Serves RFC 862 echo on the host kernel until Ctrl-C, then unloads and prints the leak report.
  Defaults: port 7007 on 0.0.0.0 (--port 0: an ephemeral port, logged), the DPC runner,
  1024 connections (the most; 12288 in a build with the scale feature), one emulated CPU
  per core, no faults injected.
  --event-driven: receive through WSK event callbacks instead of receive IRPs (EventDriven 1).
  --faults PLAN --seed N: the host kernel's fault plan, e.g. mixed,reorder,delay=1ms,lowres=5
  (see wsk_host::faults::Faults::parse); default: WSK_FAULTS and WSK_SEED if set.";

    /// The service name: the registry key is `...\Services\WskEcho`.
    const SERVICE: &str = "WskEcho";

    /// Command-line settings, written to the registry as the driver expects them.
    struct Flags {
        port: u16,
        bind: IpAddr,
        runner: String,
        max_connections: u32,
        event_driven: bool,
        cpus: Option<usize>,
        faults: Option<String>,
        seed: Option<u64>,
    }

    fn parse(args: &[String]) -> Result<Flags, String> {
        let mut flags = Flags {
            port: DEFAULT_PORT,
            bind: IpAddr::from([0, 0, 0, 0]),
            runner: "dpc".into(),
            max_connections: 1024,
            event_driven: false,
            cpus: None,
            faults: None,
            seed: None,
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
            if flag == "--event-driven" {
                flags.event_driven = true;
                continue;
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
                    let what = format!("a count from 1 to {MAX_CONNECTIONS}");
                    let count = value.parse().map_err(|_| bad(&what))?;
                    parse_max_connections(count).map_err(|_| bad(&what))?;
                    flags.max_connections = count;
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
                "--faults" => {
                    Faults::parse(value, 0).map_err(|e| format!("{flag}: {e}"))?;
                    flags.faults = Some(value.clone());
                }
                "--seed" => {
                    flags.seed = Some(parse_seed(value).map_err(|e| format!("{flag}: {e}"))?);
                }
                _ => return Err(format!("unknown flag {flag}")),
            }
        }
        Ok(flags)
    }

    /// Descriptors the host program needs besides one per connection: standard streams, the
    /// WSK provider's poller and waker, the listener, the driver's reserve socket and a
    /// connection being reset, with room to spare.
    const DESCRIPTORS_BESIDES_CONNECTIONS: u64 = 64;

    /// Raises the descriptor limit to what `max_connections` needs (each connection is a host
    /// socket), up to the hard limit. Returns a warning when even the hard limit is too low
    /// (or the limit cannot be read or set): the driver then resets the connections it has no
    /// descriptor for.
    fn raise_descriptor_limit(max_connections: u32) -> Option<String> {
        let needed = u64::from(max_connections) + DESCRIPTORS_BESIDES_CONNECTIONS;
        program::raise_descriptor_limit(needed).err().map(|why| {
            format!(
                "{why} by {max_connections} connections: clients the host has no descriptor \
                 for are reset (raise the hard limit, e.g. `ulimit -Hn {needed}`, or lower \
                 --max-connections)"
            )
        })
    }

    /// The fault plan: `--faults`/`--seed` (either alone: the other from the environment or
    /// its default), else `WSK_FAULTS`/`WSK_SEED`, else none.
    fn fault_plan(flags: &Flags) -> Result<Option<Faults>, String> {
        let from_env = Faults::from_env()?;
        if flags.faults.is_none() && flags.seed.is_none() {
            return Ok(from_env);
        }
        let seed = flags
            .seed
            .unwrap_or_else(|| from_env.as_ref().map_or(1, |plan| plan.seed));
        let spec = flags
            .faults
            .clone()
            .unwrap_or_else(|| from_env.as_ref().map_or_else(String::new, Faults::spec));
        Faults::parse(&spec, seed).map(Some)
    }

    /// The driver's own line saying why it did not start, from the kernel's debug log.
    fn start_failure_reason(kernel: &Kernel) -> String {
        const PREFIX: &str = "wskecho: not started: ";
        kernel
            .debug_log()
            .lines()
            .find_map(|line| line.split_once(PREFIX).map(|(_, why)| why.to_owned()))
            .unwrap_or_else(|| "DriverEntry gave no reason".to_owned())
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
        if let Some(warning) = raise_descriptor_limit(flags.max_connections) {
            eprintln!("wskecho host mode: {warning}");
        }
        let signals = StopSignals::block();

        let mut config = Config::default();
        if let Some(cpus) = flags.cpus {
            config.cpus = cpus;
        }
        match fault_plan(&flags) {
            Ok(Some(plan)) => {
                eprintln!("wskecho host mode: faults: {}", plan.replay_env());
                config.faults = plan;
            }
            Ok(None) => {}
            Err(message) => {
                eprintln!("wskecho: {message}");
                return ExitCode::from(2);
            }
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
            )
            .with(
                "Parameters",
                "EventDriven",
                RegValue::Dword(flags.event_driven.into()),
            );
        program::serve_until_stopped(
            "wskecho",
            &kernel,
            &signals,
            wskecho::DriverEntry,
            SERVICE,
            registry,
            start_failure_reason,
        )
    }
}

#[cfg(not(target_os = "windows"))]
fn main() -> std::process::ExitCode {
    host::main()
}

#[cfg(target_os = "windows")]
fn main() {}
