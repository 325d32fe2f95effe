//! The deployment kit ships files other programs read: each is checked by
//! the program that reads it.

use std::{path::Path, process::Command};

/// `deploy/haproxy/haproxy.cfg` is valid for HAProxy (`haproxy -c`).
#[test]
fn the_shipped_haproxy_configuration_is_valid() {
    let binary = ["/usr/sbin/haproxy", "/usr/bin/haproxy"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("haproxy is needed for this test (apt-get install -y haproxy)");
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/haproxy/haproxy.cfg");
    let out = Command::new(binary)
        .arg("-c")
        .arg("-f")
        .arg(&cfg)
        .output()
        .expect("run haproxy -c");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The kit's Ferry configurations pass `ferry check-config` but for the
/// files a site supplies (certificate, key, token): only those may fail.
#[test]
fn the_shipped_ferry_configurations_name_only_site_files_as_missing() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in [
        "deploy/ferry.example.toml",
        "deploy/kubernetes/base/ferry.toml",
        "deploy/kubernetes/overlays/example/ferry.toml",
        "deploy/compose/ferry/ferry.toml",
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .arg("check-config")
            .arg(root.join(file))
            .output()
            .expect("run ferry check-config");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() || err.contains("No such file"),
            "{file}: {err}"
        );
    }
}
