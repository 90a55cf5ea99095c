//! The echo driver loaded, serving, unloaded and loaded again in one process, as Windows does
//! when a service is stopped and started: its statics (runner, task pools, client cell) must
//! work again after `DriverUnload`. Twice over, with the DPC then the passive runner, each
//! load checked with a real client and each unload checked clean by the verifier.

mod common;

use wsk_host::testing::net::{connect_client, echo_round_trip};
use wsk_host::{Config, Kernel};

use common::load_echo;

#[test]
fn the_echo_driver_serves_again_after_unload_and_reload() {
    let kernel = Kernel::boot(Config::default());
    for (round, runner) in ["dpc", "passive", "dpc"].into_iter().enumerate() {
        let (driver, addr) = load_echo(&kernel, "WskEcho", runner, &[]);
        let mut client = connect_client(addr).unwrap_or_else(|e| panic!("round {round}: {e}"));
        let payload = format!("round {round} on the {runner} runner\n");
        echo_round_trip(&mut client, payload.as_bytes())
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        drop(client);
        let report = kernel.unload(driver);
        assert!(report.is_clean(), "round {round}: unload report: {report}");
        let bugchecks = kernel.take_bugchecks();
        assert!(bugchecks.is_empty(), "round {round}: {bugchecks:#?}");
        let log = kernel.debug_log();
        assert_eq!(
            log.matches("wskecho: unload complete: no leaks").count(),
            round + 1,
            "driver log:\n{log}"
        );
    }
}
