//! The load bench (`benches/load.py`) completes a short smoke run with the binaries under test:
//! every scenario serves requests without an error, the peers (nginx, HAProxy, Caddy) included
//! when they are installed (their policies scenarios refuse a request without a key before they
//! are measured), and the idle-connection mode reports. Numbers from this run mean nothing and are not asserted.

use std::path::Path;
use std::process::Command;

#[test]
fn load_bench_smoke_run() {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_tollgate"))
        .parent()
        .expect("binary directory");
    let out = tempfile::tempdir().unwrap();
    let run = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/benches/load.py"))
        .arg("--smoke")
        .arg("--generator")
        .arg("bundled")
        .arg("--bin-dir")
        .arg(bin_dir)
        .arg("--out")
        .arg(out.path())
        .arg("--name")
        .arg("smoke")
        .output()
        .expect("python3 runs the bench");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "bench failed:\n{stdout}\n{stderr}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("smoke.json")).unwrap()).unwrap();
    let installed = |peer: &str| report["versions"][peer].is_string();
    let nginx = installed("nginx");
    let mut expected = vec!["direct", "proxy", "policies", "cache-hit"];
    // Bare Pingora runs when its example binary has been built (cargo builds examples along
    // with the tests, but not before every test binary starts).
    if bin_dir.join("examples").join("bare_proxy").exists() {
        expected.push("pingora-bare");
    }
    if nginx {
        expected.extend(["nginx-proxy", "nginx-policies", "nginx-cache-hit"]);
    }
    if installed("haproxy") {
        expected.extend(["haproxy-proxy", "haproxy-policies"]);
    }
    if installed("caddy") {
        expected.push("caddy-proxy");
    }
    let scenarios = report["scenarios"].as_array().unwrap();
    let names: Vec<&str> = scenarios
        .iter()
        .map(|s| s["scenario"].as_str().unwrap())
        .collect();
    assert_eq!(names, expected);
    for s in scenarios {
        assert!(s["requests"].as_u64().unwrap() > 0, "{s}");
        assert_eq!(s["errors"], 0, "{s}");
        assert_eq!(s["non_2xx"], 0, "{s}");
        if s["scenario"] != "direct" {
            assert!(s["cpu_us_per_request"].as_f64().unwrap() > 0.0, "{s}");
            assert!(s["peak_rss_kib"].as_u64().unwrap() > 0, "{s}");
        }
    }
    let idle = report["idle"].as_array().unwrap();
    assert_eq!(idle.len(), if nginx { 2 } else { 1 });
    assert!(idle.iter().all(|i| i["connections"] == 200));
    let md = std::fs::read_to_string(out.path().join("smoke.md")).unwrap();
    assert!(md.contains("| proxy |"), "{md}");
    assert!(md.contains("Proxy pinned to CPU"), "{md}");
}
