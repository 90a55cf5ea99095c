//! Compile-time asserts that our layouts equal wdk-sys's (feature `wdk-sys`). Builds only on a
//! Windows host with the WDK installed, because wdk-sys runs bindgen over the WDK headers in
//! its build script; on Linux the layout probe does this job against two header sets.

macro_rules! same_layout {
    ($($ours:ident = $theirs:path),* $(,)?) => {
        $(
            const _: () = assert!(size_of::<crate::$ours>() == size_of::<$theirs>());
            const _: () = assert!(align_of::<crate::$ours>() == align_of::<$theirs>());
        )*
    };
}

same_layout! {
    IRP = wdk_sys::IRP,
    IO_STACK_LOCATION = wdk_sys::IO_STACK_LOCATION,
    IO_STATUS_BLOCK = wdk_sys::IO_STATUS_BLOCK,
    MDL = wdk_sys::MDL,
    KDPC = wdk_sys::KDPC,
    KEVENT = wdk_sys::KEVENT,
    KTIMER = wdk_sys::KTIMER,
    DRIVER_OBJECT = wdk_sys::DRIVER_OBJECT,
    UNICODE_STRING = wdk_sys::UNICODE_STRING,
}

const _: () = assert!(
    core::mem::offset_of!(crate::IRP, IoStatus) == core::mem::offset_of!(wdk_sys::IRP, IoStatus)
);
const _: () = assert!(
    core::mem::offset_of!(crate::IO_STACK_LOCATION, CompletionRoutine)
        == core::mem::offset_of!(wdk_sys::IO_STACK_LOCATION, CompletionRoutine)
);
