//! Building the echo driver as a real `.sys` for `x86_64-pc-windows-msvc` with rust-lld, and
//! checking the result is what a kernel loads and what a kernel survives:
//!
//! - an NT-native image that imports only from the kernel, the HAL and netio;
//! - every imported *symbol* exported by the x64 build of its DLL, per an independent list:
//!   mingw-w64's x64 import libraries (`libntoskrnl.a`, `libhal.a`, `libnetio.a` from Debian's
//!   `mingw-w64-x86-64-dev`). A .sys importing a name its DLL lacks does not load (Wine is no
//!   check for this: it exports `KeQueryInterruptTime`, which x64 ntoskrnl does not);
//! - a panic stops the machine: `KeBugCheckEx` is imported (`wsk_sys::bugcheck_on_panic`);
//! - every exception handler the unwind data names returns `ExceptionContinueSearch` and
//!   nothing else (an empty stub returns whatever is in EAX; 0 means "continue execution" at
//!   the faulting instruction, forever).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "x86_64-pc-windows-msvc";
/// DLLs a kernel driver of ours may import from, with the mingw-w64 x64 import library that
/// lists each one's exports.
const ALLOWED_IMPORTS: &[(&str, &str)] = &[
    ("ntoskrnl.exe", "libntoskrnl.a"),
    ("netio.sys", "libnetio.a"),
    ("hal.dll", "libhal.a"),
];
/// Where Debian's mingw-w64-x86-64-dev puts the x64 import libraries.
const MINGW_LIB_DIR: &str = "/usr/x86_64-w64-mingw32/lib";
/// Imports allowed although mingw-w64's list lacks them: (DLL, symbol, why). Functions newer
/// than that list (`ExAllocatePool2`, `KeShouldYieldProcessor`, ...) are not imported but
/// resolved at run time with `MmGetSystemRoutineAddress`, so older kernels still load the
/// driver; an entry here needs a reason as good as that, e.g. a symbol verified in a real x64
/// kernel's export table that mingw-w64 omits. Empty: nothing needs it today.
const EXTRA_EXPORTS: &[(&str, &str, &str)] = &[];
/// `mov eax, 1; ret`: `return ExceptionContinueSearch;`, the only handler code we accept.
const CONTINUE_SEARCH: &[&str] = &["mov    $0x1,%eax", "ret"];

/// Builds the driver (release) and returns the path of `wskecho.sys`.
pub fn build(root: &Path) -> Result<PathBuf, String> {
    let sys = build_sys(root, "wsk-driver-example", "wskecho")?;
    println!(
        "build-driver: {} (NT native; every import exported by x64 {} per mingw-w64's import \
         libraries; panics call KeBugCheckEx; exception handlers return ExceptionContinueSearch)",
        sys.display(),
        ALLOWED_IMPORTS
            .iter()
            .map(|(dll, _)| *dll)
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(sys)
}

/// Builds the chat relay driver (`chat-example/`, release) and returns the path of
/// `wskchat.sys`, checked like `wskecho.sys`. `cargo xtask build-driver --chat`.
pub fn build_chat(root: &Path) -> Result<PathBuf, String> {
    let sys = build_sys(root, "wsk-chat-example", "wskchat")?;
    println!(
        "build-driver --chat: {} (checked like wskecho.sys)",
        sys.display()
    );
    Ok(sys)
}

/// Builds `package`'s cdylib `library` (release) for the Windows target, copies
/// `library.dll` to `library.sys` and checks the image ([`check_image`]); returns the `.sys`.
pub(crate) fn build_sys(root: &Path, package: &str, library: &str) -> Result<PathBuf, String> {
    let status = Command::new("cargo")
        .args(["build", "--quiet", "--release", "--lib", "-p", package])
        .args(["--target", TARGET])
        .current_dir(root)
        .status()
        .map_err(|e| format!("could not start cargo: {e}"))?;
    if !status.success() {
        return Err(format!("building {package} for {TARGET} failed ({status})"));
    }
    let out_dir = target_dir(root).join(TARGET).join("release");
    let dll = out_dir.join(format!("{library}.dll"));
    let sys = out_dir.join(format!("{library}.sys"));
    // Linking straight to .sys (/OUT) would hide the file from cargo; copy instead.
    std::fs::copy(&dll, &sys)
        .map_err(|e| format!("copy {} -> {}: {e}", dll.display(), sys.display()))?;
    check_image(&sys)?;
    Ok(sys)
}

/// Where cargo puts build output (honours `CARGO_TARGET_DIR`).
pub fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

/// Runs a mingw-w64 binutils program and returns its standard output.
fn mingw_tool(tool: &str, args: &[&std::ffi::OsStr]) -> Result<String, String> {
    let out = Command::new(tool).args(args).output().map_err(|e| {
        format!(
            "{tool} is missing (apt package binutils-mingw-w64-x86-64; `cargo xtask setup`): {e}"
        )
    })?;
    if !out.status.success() {
        return Err(format!(
            "{tool} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Checks the image: subsystem, imported DLLs and symbols, the panic path and the exception
/// handlers (see the module documentation).
fn check_image(sys: &Path) -> Result<(), String> {
    let text = mingw_tool(
        "x86_64-w64-mingw32-objdump",
        &["-x".as_ref(), sys.as_os_str()],
    )?;
    let native = text
        .lines()
        .any(|l| l.starts_with("Subsystem") && l.contains("(NT native)"));
    if !native {
        return Err(format!(
            "{} is not an NT-native image (Subsystem line missing or different)",
            sys.display()
        ));
    }
    let imports = imports(&text);
    if imports.is_empty() {
        return Err(format!("{} has no import table", sys.display()));
    }
    let bad: Vec<&String> = imports
        .keys()
        .filter(|d| {
            !ALLOWED_IMPORTS
                .iter()
                .any(|(a, _)| a.eq_ignore_ascii_case(d))
        })
        .collect();
    if !bad.is_empty() {
        return Err(format!(
            "{} imports from {bad:?}; only {:?} are allowed",
            sys.display(),
            ALLOWED_IMPORTS
                .iter()
                .map(|(dll, _)| *dll)
                .collect::<Vec<_>>()
        ));
    }
    check_import_symbols(sys, &imports)?;
    let bugcheck = imports.iter().any(|(dll, names)| {
        dll.eq_ignore_ascii_case("ntoskrnl.exe") && names.contains("KeBugCheckEx")
    });
    if !bugcheck {
        return Err(format!(
            "{} does not import ntoskrnl.exe!KeBugCheckEx: its panic handler cannot stop the \
             machine (a #[panic_handler] must call wsk_sys::bugcheck_on_panic)",
            sys.display()
        ));
    }
    check_exception_handlers(sys, &text)
}

/// The import table as objdump prints it: DLL name -> imported symbol names.
fn imports(objdump_x: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut imports: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in objdump_x.lines() {
        let trimmed = line.trim();
        if let Some(dll) = trimmed.strip_prefix("DLL Name: ") {
            current = Some(dll.to_owned());
            imports.entry(dll.to_owned()).or_default();
        } else if trimmed.is_empty() {
            current = None;
        } else if let Some(dll) = &current {
            // "<vma>\t<hint> <name>", after a "vma:  Hint/Ord Member-Name Bound-To" header.
            let fields: Vec<&str> = trimmed.split_whitespace().collect();
            if fields.len() >= 3 && fields[0] != "vma:" {
                imports
                    .get_mut(dll)
                    .expect("entry created at its DLL Name line")
                    .insert(fields[2].to_owned());
            }
        }
    }
    imports
}

/// Every imported symbol must be in the x64 export list of its DLL (mingw-w64's import
/// library: `__imp_<name>` symbols) or in [`EXTRA_EXPORTS`].
fn check_import_symbols(
    sys: &Path,
    imports: &BTreeMap<String, BTreeSet<String>>,
) -> Result<(), String> {
    let mut unknown = Vec::new();
    for (dll, names) in imports {
        let (_, lib) = ALLOWED_IMPORTS
            .iter()
            .find(|(a, _)| a.eq_ignore_ascii_case(dll))
            .expect("DLLs were checked against ALLOWED_IMPORTS");
        let lib = Path::new(MINGW_LIB_DIR).join(lib);
        if !lib.exists() {
            return Err(format!(
                "{} is missing (apt package mingw-w64-x86-64-dev; `cargo xtask setup`): it lists \
                 what x64 {dll} exports",
                lib.display()
            ));
        }
        let listing = mingw_tool("x86_64-w64-mingw32-nm", &[lib.as_os_str()])?;
        let exported: BTreeSet<&str> = listing
            .lines()
            .filter_map(|l| l.split_whitespace().last()?.strip_prefix("__imp_"))
            .collect();
        for name in names {
            let extra = EXTRA_EXPORTS
                .iter()
                .any(|(d, n, _)| d.eq_ignore_ascii_case(dll) && n == name);
            if !exported.contains(name.as_str()) && !extra {
                unknown.push(format!("{dll}!{name}"));
            }
        }
    }
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} imports {} that x64 Windows does not export (not in mingw-w64's x64 import \
             libraries in {MINGW_LIB_DIR}): the driver would not load. Make it inline, resolve \
             it at run time with MmGetSystemRoutineAddress, or (verified) list it in \
             EXTRA_EXPORTS",
            sys.display(),
            unknown.join(", ")
        ))
    }
}

/// Every language-specific handler named by the unwind data (`Handler: <address>` in
/// objdump's `.xdata` dump) must be exactly `mov eax, 1; ret`.
fn check_exception_handlers(sys: &Path, objdump_x: &str) -> Result<(), String> {
    let handlers: BTreeSet<u64> = objdump_x
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Handler: "))
        .filter_map(|a| u64::from_str_radix(a.trim_end_matches('.'), 16).ok())
        .collect();
    for handler in handlers {
        let start = format!("--start-address={handler:#x}");
        let stop = format!("--stop-address={:#x}", handler + 16);
        let listing = mingw_tool(
            "x86_64-w64-mingw32-objdump",
            &[
                "-d".as_ref(),
                start.as_ref(),
                stop.as_ref(),
                sys.as_os_str(),
            ],
        )?;
        // Instruction lines: "<address>:\t<bytes>\t<mnemonic operands>".
        let code: Vec<String> = listing
            .lines()
            .filter_map(|l| l.split('\t').nth(2))
            .map(|i| i.split_whitespace().collect::<Vec<_>>().join(" "))
            .take(CONTINUE_SEARCH.len())
            .collect();
        let want: Vec<String> = CONTINUE_SEARCH
            .iter()
            .map(|i| i.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        if code != want {
            return Err(format!(
                "{}: the exception handler at {handler:#x} (named by the unwind data; \
                 __CxxFrameHandler3 in our images) is {code:?}, not {want:?}: it must return \
                 ExceptionContinueSearch (1); anything else can resume a faulting instruction \
                 forever",
                sys.display()
            ));
        }
    }
    Ok(())
}
