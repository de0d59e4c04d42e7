//! The load bench (`benches/load.py`) completes a short smoke run with the binaries under test:
//! every scenario serves requests without an error, the peers (nginx, HAProxy, Caddy) included
//! when they are installed (their policies scenarios refuse a request without a key before they
//! are measured), TLS keep-alive, a full TLS handshake per request, HTTP/2 (h2load) and
//! pipelined requests included, and the idle-connection mode reports. Numbers from this run
//! mean nothing and are not asserted.

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
    let tool = |name: &str| report["tools"][name] == true;
    let nginx = installed("nginx");
    // Bare Pingora runs when its example binary has been built (cargo builds examples along
    // with the tests, but not before every test binary starts).
    let bare = bin_dir.join("examples").join("bare_proxy").exists();
    let peers = [
        ("", true),
        ("pingora-bare-", bare),
        ("nginx-", nginx),
        ("haproxy-", installed("haproxy")),
    ];
    let mut expected: Vec<String> = ["direct", "proxy", "access-log", "policies", "cache-hit"]
        .map(String::from)
        .into();
    for (name, runs) in [
        ("pingora-bare", bare),
        ("pingora-bare-forwarding", bare),
        ("nginx-proxy", nginx),
        ("nginx-policies", nginx),
        ("nginx-cache-hit", nginx),
        ("haproxy-proxy", installed("haproxy")),
        ("haproxy-policies", installed("haproxy")),
        ("caddy-proxy", installed("caddy")),
    ] {
        if runs {
            expected.push(name.into());
        }
    }
    // The transport variants, for Tollgate and each installed peer: TLS needs openssl for its
    // certificates, HTTP/2 needs h2load.
    for (mode, runs) in [
        ("tls", tool("openssl")),
        ("tls-handshake", tool("openssl")),
        ("h2", tool("openssl") && tool("h2load")),
        ("pipelined", true),
    ] {
        for (prefix, installed) in peers {
            // Bare Pingora has the TLS variants only (it does not serve pipelined requests).
            let variant = prefix != "pingora-bare-" || mode != "pipelined";
            if runs && installed && variant {
                expected.push(format!("{prefix}{mode}"));
            }
        }
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
    assert_eq!(idle.len(), 1 + nginx as usize + bare as usize);
    assert!(idle.iter().all(|i| i["connections"] == 200));
    let md = std::fs::read_to_string(out.path().join("smoke.md")).unwrap();
    assert!(md.contains("| proxy |"), "{md}");
    assert!(md.contains("Proxy pinned to CPU"), "{md}");
}
