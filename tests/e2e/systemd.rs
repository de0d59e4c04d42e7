//! The systemd unit passes `systemd-analyze verify`, with nothing to warn about.

use crate::common::*;
use std::process::Command;

fn verify(unit_text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tollgate.service");
    std::fs::write(&path, unit_text.replace("/usr/local/bin/tollgate", bin())).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze must be installed (scripts/setup.sh installs systemd)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_unit_verifies_cleanly() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/tollgate.service"
    ))
    .unwrap();
    let (ok, warnings) = verify(&unit);
    assert!(
        ok && warnings.trim().is_empty(),
        "systemd-analyze verify: {warnings}"
    );
    for needed in [
        "Type=forking",
        "PIDFile=/run/tollgate/tollgate.pid",
        "ExecStartPre=/usr/local/bin/tollgate -t",
        "ExecReload=/usr/local/bin/tollgate upgrade",
        "NoNewPrivileges=true",
        "ProtectSystem=strict",
        "ProtectHome=true",
        "PrivateTmp=true",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "RuntimeDirectory=tollgate",
        "LogsDirectory=tollgate",
        "TimeoutStopSec=",
        "User=tollgate",
    ] {
        assert!(unit.contains(needed), "the unit lacks {needed}");
    }
    // The check can fail: a misspelt directive is reported.
    let (_, warnings) = verify(&unit.replace("ExecStart=", "ExecStrat="));
    assert!(
        !warnings.trim().is_empty(),
        "a broken unit passed verification"
    );
}
