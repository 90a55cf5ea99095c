//! The Wine end-to-end test: a fresh prefix, the driver registered as a kernel service with the
//! passive runner, real clients from Linux (`wsk-benches`' load scenarios), then unload with
//! clients still connected and the `DbgPrint` log checked for a clean report.
//!
//! The driver's idle timeout (`IdleTimeoutMs`, [`IDLE_TIMEOUT`]) puts the executor's timers
//! and the interrupt time (`KeQueryInterruptTime`, which under Wine reads `KUSER_SHARED_DATA`
//! at its user-mode address) to work in the real `.sys`: a silent client must be closed after
//! the timeout, never before, while a talking one is served.
//!
//! Every process the test starts belongs to its own prefix; `wineserver -k` on that prefix
//! ends them all, on success and failure alike.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use wsk_benches::load;

const SERVICE: &str = "WskEcho";
const SERVICE_KEY: &str = r"HKLM\System\CurrentControlSet\Services\WskEcho";
/// How long the driver may take to log that it listens.
pub(crate) const START_LIMIT: Duration = Duration::from_mins(1);
/// How long `net stop` (`DriverUnload`) may take.
pub(crate) const STOP_LIMIT: Duration = Duration::from_mins(1);
/// The driver's idle timeout in this test (`IdleTimeoutMs`). Long enough that no client of
/// the other scenarios pauses that long; the log check after unload proves none did.
const IDLE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the talking client of the idle scenario sends: well inside the timeout.
const TALK_EVERY: Duration = Duration::from_millis(100);
/// How long the idle scenario may wait for the silent client's EOF past the timeout before it
/// calls the timeout broken (a generous bound, not a speed target).
const IDLE_CLOSE_LIMIT: Duration = Duration::from_secs(30);
/// How much earlier than [`IDLE_TIMEOUT`] the silent client may be closed: the interrupt time
/// the driver takes its deadline from is the wineserver's, refreshed at least every 16 ms
/// (`server/fd.c` in Wine's source), so it may lag real time by a refresh period, or a little
/// more when the wineserver is busy. Far below the timeout, so a deadline that ignored it, or
/// a clock that ran fast, still fails.
const CLOCK_LAG: Duration = Duration::from_millis(100);

/// A prefix with its own wineserver; dropping it kills every Wine process of the prefix.
pub(crate) struct Prefix {
    pub(crate) dir: PathBuf,
}

impl Prefix {
    pub(crate) fn wine(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("wine");
        cmd.args(args);
        self.env(&mut cmd);
        cmd
    }

    fn env(&self, cmd: &mut Command) {
        cmd.env("WINEPREFIX", &self.dir)
            .env("WINEARCH", "win64")
            .env("WINEDLLOVERRIDES", "mscoree,mshtml=")
            .env("WINEDEBUG", "-all")
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY");
    }

    pub(crate) fn wineserver(&self, arg: &str) -> Result<(), String> {
        let mut cmd = Command::new("wineserver");
        cmd.arg(arg);
        self.env(&mut cmd);
        run_quiet(&mut cmd, Duration::from_mins(1)).map(|_| ())
    }

    pub(crate) fn reg_add(
        &self,
        key: &str,
        value: &str,
        kind: &str,
        data: &str,
    ) -> Result<(), String> {
        run_quiet(
            &mut self.wine(&["reg", "add", key, "/v", value, "/t", kind, "/d", data, "/f"]),
            Duration::from_mins(1),
        )
        .map(|_| ())
    }
}

impl Drop for Prefix {
    fn drop(&mut self) {
        // Fails only when no server is left, which is the state we want.
        let _ = self.wineserver("-k");
    }
}

/// Runs a command to completion with a bound, output captured; its error names the command.
///
/// Output goes to files, not pipes: a Wine command can leave a wineserver behind that inherited
/// its output handles, and a pipe would then never reach end-of-file.
pub(crate) fn run_quiet(cmd: &mut Command, limit: Duration) -> Result<String, String> {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let name = format!("{cmd:?}");
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let base = std::env::temp_dir().join(format!("xtask-wine-{}-{run}", std::process::id()));
    let (out_path, err_path) = (base.with_extension("out"), base.with_extension("err"));
    let file = |path: &Path| fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()));
    let child = cmd
        .stdin(Stdio::null())
        .stdout(file(&out_path)?)
        .stderr(file(&err_path)?)
        .spawn()
        .map_err(|e| format!("{name}: {e}"));
    let status =
        child.and_then(|child| wait_bounded(child, limit).map_err(|e| format!("{name}: {e}")));
    let stdout = fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = fs::read_to_string(&err_path).unwrap_or_default();
    let _ = fs::remove_file(&out_path);
    let _ = fs::remove_file(&err_path);
    let status = status?;
    if status.success() {
        Ok(stdout)
    } else {
        Err(format!("{name} exited with {status}: {}", stderr.trim()))
    }
}

/// Waits for `child`, killing it after `limit`.
pub(crate) fn wait_bounded(
    mut child: Child,
    limit: Duration,
) -> Result<std::process::ExitStatus, String> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("still running after {limit:?}; killed"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls the log until a line contains `wanted` (Ok) or one of `fatal` (Err), within `limit`.
pub(crate) fn wait_for_log(
    log: &Path,
    wanted: &str,
    fatal: &[&str],
    limit: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        let text = fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| fatal.iter().any(|f| l.contains(f))) {
            return Err(format!("driver log: {}", line.trim()));
        }
        if text.contains(wanted) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("driver log has no {wanted:?} after {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The driver's own lines (`<driver>: ...`, `wsk-net: ...`, `wsk-executor: ...`) from Wine's
/// debug log.
pub(crate) fn driver_lines(log: &Path, driver: &str) -> Vec<String> {
    let own = format!("{driver}: ");
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            [own.as_str(), "wsk-net: ", "wsk-executor: "]
                .iter()
                .find_map(|tag| l.find(tag).map(|at| l[at..].trim_end().to_string()))
        })
        .collect()
}

/// A fresh work directory `<target>/<name>` holding a prefix (`prefix/`) and the path of the
/// driver's log in it (`driver.log`).
pub(crate) fn fresh_prefix(root: &Path, name: &str) -> Result<(Prefix, PathBuf), String> {
    let work = crate::driver::target_dir(root).join(name);
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let prefix = Prefix {
        dir: work.join("prefix"),
    };
    Ok((prefix, work.join("driver.log")))
}

/// Boots the prefix, copies `sys` in as `drivers\<file_name>` and registers it as the
/// demand-start kernel service `service_key`; its `Parameters` are the caller's.
pub(crate) fn install_driver(
    prefix: &Prefix,
    sys: &Path,
    file_name: &str,
    service_key: &str,
) -> Result<(), String> {
    run_quiet(
        &mut prefix.wine(&["wineboot", "-i"]),
        Duration::from_mins(3),
    )?;
    prefix.reg_add(
        r"HKCU\Software\Wine\WineDbg",
        "ShowCrashDialog",
        "REG_DWORD",
        "0",
    )?;
    let drivers = prefix.dir.join("drive_c/windows/system32/drivers");
    fs::create_dir_all(&drivers).map_err(|e| e.to_string())?;
    fs::copy(sys, drivers.join(file_name)).map_err(|e| format!("copy .sys: {e}"))?;
    prefix.reg_add(service_key, "Type", "REG_DWORD", "1")?;
    prefix.reg_add(service_key, "Start", "REG_DWORD", "3")?;
    prefix.reg_add(service_key, "ErrorControl", "REG_DWORD", "1")?;
    prefix.reg_add(
        service_key,
        "ImagePath",
        "REG_EXPAND_SZ",
        &format!(r"C:\windows\system32\drivers\{file_name}"),
    )
}

/// Starts `service` (`net start`, which returns once `DriverEntry` did) under a persistent
/// wineserver, its debug output in `log`, and waits for a log line containing `listening`
/// (an error on one containing any of `fatal`).
pub(crate) fn start_service(
    prefix: &Prefix,
    log: &Path,
    service: &str,
    listening: &str,
    fatal: &[&str],
) -> Result<(), String> {
    // services.exe reads the services at start; a persistent server keeps winedevice.exe (the
    // driver's host) alive after `net start` returns, writing to the log we hand it.
    // `-k` fails when no server is running, which is fine.
    let _ = prefix.wineserver("-k");
    prefix.wineserver("-p")?;
    let log_file = fs::File::create(log).map_err(|e| e.to_string())?;
    let mut start = prefix.wine(&["net", "start", service]);
    start
        .env("WINEDEBUG", "+debugstr,fixme+ntoskrnl,fixme+netio")
        .stdout(Stdio::null())
        .stderr(log_file);
    let child = start.spawn().map_err(|e| format!("wine net start: {e}"))?;
    let status =
        wait_bounded(child, START_LIMIT).map_err(|e| format!("wine net start {service}: {e}"))?;
    if !status.success() {
        return Err(format!("wine net start {service} exited with {status}"));
    }
    wait_for_log(log, listening, fatal, START_LIMIT)
}

/// Prints the test's outcome (`<test>: PASS in ...` with the driver's log lines, or the log
/// lines on stderr) and returns it, the error prefixed with `test`.
pub(crate) fn report_outcome(
    test: &str,
    started: Instant,
    log: &Path,
    driver: &str,
    result: Result<String, String>,
) -> Result<(), String> {
    let lines = driver_lines(log, driver);
    match result {
        Ok(summary) => {
            println!("{test}: driver log:");
            for line in &lines {
                println!("    {line}");
            }
            println!("{test}: PASS in {:.0?}: {summary}", started.elapsed());
            Ok(())
        }
        Err(e) => {
            eprintln!("{test}: driver log ({}):", log.display());
            for line in &lines {
                eprintln!("    {line}");
            }
            Err(format!("{test}: {e}"))
        }
    }
}

/// Waits for the driver's `<driver>: unload complete` report after `net stop`, checks it ends
/// with `clean` and that the WSK client deregistered; returns the whole log and the report.
pub(crate) fn unload_report(
    log: &Path,
    driver: &str,
    clean: &str,
) -> Result<(String, String), String> {
    let complete = format!("{driver}: unload complete");
    wait_for_log(log, &complete, &[&format!("{driver}: panic")], STOP_LIMIT)?;
    let text = fs::read_to_string(log).unwrap_or_default();
    let report = text
        .lines()
        .find_map(|l| l.find(&complete).map(|at| l[at..].trim().to_string()))
        .unwrap_or_default();
    if !report.ends_with(clean) {
        return Err(format!("unload reported: {report}"));
    }
    if !text.contains(&format!("{driver}: deregistered")) {
        return Err("the WSK client did not deregister".into());
    }
    Ok((text, report))
}

/// Runs the Wine test against the built `.sys`.
///
/// # Errors
/// The first step or scenario that failed, with the driver's log lines.
pub fn test(root: &Path, sys: &Path) -> Result<(), String> {
    let started = Instant::now();
    let (prefix, log) = fresh_prefix(root, "wine-test")?;
    println!("wine-test: fresh prefix in {}", prefix.dir.display());
    let result = install(&prefix, sys)
        .and_then(|port| {
            // `net start` returns once DriverEntry did, which binds the listener first.
            start_service(
                &prefix,
                &log,
                SERVICE,
                "wskecho: listening on",
                &[
                    "wskecho: not started",
                    "wskecho: cannot listen",
                    "wskecho: panic",
                ],
            )
            .map(|()| port)
        })
        .and_then(|port| scenarios(&prefix, &log, SocketAddr::from((Ipv4Addr::LOCALHOST, port))));
    drop(prefix);
    report_outcome("wine-test", started, &log, "wskecho", result)
}

/// Installs `wskecho.sys` as the service with its `Parameters`; returns the port it will
/// listen on.
fn install(prefix: &Prefix, sys: &Path) -> Result<u16, String> {
    install_driver(prefix, sys, "wskecho.sys", SERVICE_KEY)?;
    let port = load::free_loopback_port()?;
    let params = format!(r"{SERVICE_KEY}\Parameters");
    prefix.reg_add(&params, "Port", "REG_DWORD", &port.to_string())?;
    prefix.reg_add(&params, "Runner", "REG_SZ", "passive")?;
    prefix.reg_add(&params, "BindAddress", "REG_SZ", "127.0.0.1")?;
    // Event-driven receive where the provider has it: Wine 8's WskControlSocket is a stub
    // (STATUS_NOT_IMPLEMENTED), so the driver says so and receives with IRPs; reported below.
    prefix.reg_add(&params, "EventDriven", "REG_DWORD", "1")?;
    prefix.reg_add(
        &params,
        "IdleTimeoutMs",
        "REG_DWORD",
        &IDLE_TIMEOUT.as_millis().to_string(),
    )?;
    Ok(port)
}

/// The client scenarios against the running driver, then unload with clients connected.
fn scenarios(prefix: &Prefix, log: &Path, addr: SocketAddr) -> Result<String, String> {
    let mut summary = Vec::new();
    let t = Instant::now();
    let echo = load::concurrent_echo(addr, 50, 200, 64 * 1024)?;
    summary.push(format!(
        "{} clients echoed {} messages ({} bytes) byte-exact in {:.1?}",
        echo.connections,
        echo.messages,
        echo.bytes,
        t.elapsed()
    ));
    println!("wine-test: {}", summary[0]);

    let t = Instant::now();
    let churn = load::churn(addr, 1000, 8)?;
    summary.push(format!(
        "{} connect/echo/close in {:.1?}",
        churn.connections,
        t.elapsed()
    ));
    println!("wine-test: {}", summary[1]);

    load::reset_mid_message(addr)?;
    summary.push("reset mid-message, still serving".into());
    println!("wine-test: {}", summary[2]);

    let (closed_after, echoes) = idle_close(addr)?;
    summary.push(format!(
        "a silent client closed (EOF) {closed_after:.3?} after connecting (idle timeout \
         {IDLE_TIMEOUT:?}) while a talking one got {echoes} echoes"
    ));
    println!("wine-test: {}", summary[3]);

    let held_at = Instant::now();
    let held = load::hold_connections(addr, 8)?;
    let held_count = held.len();
    println!("wine-test: unloading with {held_count} clients connected");
    let stop = run_quiet(&mut prefix.wine(&["net", "stop", SERVICE]), STOP_LIMIT);
    // The clients must see the server close them whatever `net stop` said.
    let closed = held.wait_closed(Duration::from_secs(30));
    // Past the idle timeout the log check below cannot tell the unload's closes from idle
    // ones (it fails on the latter): say how close this run came.
    let held_for = held_at.elapsed();
    stop?;
    let closed = closed?;
    if closed != held_count {
        return Err(format!(
            "unload closed {closed} of {held_count} held clients"
        ));
    }
    let (text, report) = unload_report(log, "wskecho", "no leaks")?;
    // The runner's start recognised Wine and reads the clock where Wine maps it, instead of
    // faulting on the kernel address for Wine to emulate each read.
    if !text.contains("wskecho: clock: KUSER_SHARED_DATA at its user-mode address") {
        return Err("the driver did not switch its clock to Wine's KUSER_SHARED_DATA".into());
    }
    // The idle scenario's silent client is the only connection that may have idled out: the
    // driver logs its 1st, 2nd, 4th... idle close, so a 2nd means a client of another
    // scenario, or a held one the unload should have closed, was closed for idling.
    let idle_line = format!(
        "wskecho: closing a connection idle for {} ms (1 so far)",
        IDLE_TIMEOUT.as_millis()
    );
    if !text.contains(&idle_line) {
        return Err(format!("the driver log lacks {idle_line:?}"));
    }
    if let Some(line) = text
        .lines()
        .find(|l| l.contains("wskecho: closing a connection idle for") && !l.contains(&idle_line))
    {
        return Err(format!(
            "another connection was closed for idling: {}",
            line.trim()
        ));
    }
    if let Some(lacks) = provider_lacks(&text)? {
        summary.push(lacks);
    }
    summary.push(format!(
        "unloaded with {held_count} clients connected, all closed {held_for:.1?} after \
         connecting: {report}"
    ));
    summary.push(event_callbacks_line(&text)?);
    println!("wine-test: {}", summary[summary.len() - 1]);
    Ok(summary.join("; "))
}

/// What the driver log says about receive event callbacks (`EventDriven` 1): Wine lacks them
/// (the driver fell back to receive IRPs) or has them. An error when it says neither: then no
/// connection was served at all.
fn event_callbacks_line(log: &str) -> Result<String, String> {
    if log.contains("wskecho: the provider has no receive events") {
        let accepts = if log.contains("wskecho: the provider has no accept events") {
            " and accept IRPs"
        } else {
            ""
        };
        Ok(format!(
            "Wine lacks: WSK event callbacks (SO_WSK_EVENT_CALLBACK); EventDriven fell back to \
            receive IRPs{accepts}"
        ))
    } else if log.contains("connection(s) event-driven so far") {
        Ok("Wine has WSK receive event callbacks: the connections were event-driven".into())
    } else {
        Err("the driver log says nothing about receive events (EventDriven 1)".into())
    }
}

/// What the driver's start-up feature probes (driver-example's `probe`) found Wine's provider
/// lacks, as a summary line (`None` when it lacks nothing); a probe that failed for another
/// reason than `Unsupported` is an error: Wine's gaps are reported, not failed.
fn provider_lacks(log: &str) -> Result<Option<String>, String> {
    const LACKS: &str = "wskecho: provider lacks ";
    if let Some(line) = log
        .lines()
        .find(|l| l.contains("wskecho: feature ") && l.contains(": failed: "))
    {
        return Err(format!("a feature probe failed: {}", line.trim()));
    }
    let lacks: Vec<&str> = log
        .lines()
        .filter_map(|l| l.find(LACKS).map(|at| l[at + LACKS.len()..].trim()))
        .collect();
    if lacks.is_empty() {
        return Ok(None);
    }
    println!("wine-test: Wine lacks: {}", lacks.join("; "));
    Ok(Some(format!("Wine lacks: {}", lacks.join("; "))))
}

/// Sends `message` and reads the same bytes back.
fn echo_once(stream: &mut TcpStream, message: &[u8]) -> Result<(), String> {
    stream
        .write_all(message)
        .map_err(|e| format!("talking client: write: {e}"))?;
    let mut back = vec![0; message.len()];
    stream
        .read_exact(&mut back)
        .map_err(|e| format!("talking client: read: {e}"))?;
    if back != message {
        return Err(format!(
            "talking client: sent {message:?}, got {back:?} back"
        ));
    }
    Ok(())
}

/// The idle timeout in the real driver: one client connects and stays silent while another
/// talks every [`TALK_EVERY`]; the silent one must see EOF no earlier than [`IDLE_TIMEOUT`]
/// (less [`CLOCK_LAG`]) after it connected, and within [`IDLE_CLOSE_LIMIT`] after that; the
/// talking one must be served before and after. Returns when the silent client was closed
/// and how many echoes the talking one got.
fn idle_close(addr: SocketAddr) -> Result<(Duration, u32), String> {
    // Timed from before the connect: the driver's idle clock starts later, at its receive.
    let connected = Instant::now();
    let mut silent = TcpStream::connect(addr).map_err(|e| format!("silent client: {e}"))?;
    let mut talking = TcpStream::connect(addr).map_err(|e| format!("talking client: {e}"))?;
    // The silent client's reads time out quickly: each one asks whether the server closed it
    // yet, and paces the talking client. The talking client's echo gets the whole bound.
    silent
        .set_read_timeout(Some(TALK_EVERY))
        .map_err(|e| e.to_string())?;
    talking
        .set_read_timeout(Some(IDLE_CLOSE_LIMIT))
        .map_err(|e| e.to_string())?;
    let mut echoes = 0u32;
    let mut byte = [0u8; 1];
    let closed_after = loop {
        match silent.read(&mut byte) {
            Ok(0) => break connected.elapsed(),
            Ok(_) => return Err("the silent client received data it never asked for".into()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => {
                return Err(format!(
                    "the silent client should see EOF, got {e} after {:.1?}",
                    connected.elapsed()
                ));
            }
        }
        if connected.elapsed() > IDLE_TIMEOUT + IDLE_CLOSE_LIMIT {
            return Err(format!(
                "the silent client is still open {:.1?} after connecting (idle timeout \
                 {IDLE_TIMEOUT:?})",
                connected.elapsed()
            ));
        }
        echo_once(&mut talking, &echoes.to_le_bytes())?;
        echoes += 1;
    };
    if closed_after + CLOCK_LAG < IDLE_TIMEOUT {
        return Err(format!(
            "the silent client was closed {closed_after:.1?} after connecting, before the \
             {IDLE_TIMEOUT:?} idle timeout"
        ));
    }
    echo_once(&mut talking, b"still here")?;
    Ok((closed_after, echoes + 1))
}
