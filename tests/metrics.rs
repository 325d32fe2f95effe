//! What Prometheus and a load balancer see of a Ferry that has served
//! nobody yet: a scrape `promtool check metrics` accepts, every series the
//! shipped alerts and dashboard use, probes that are not TLS failures, and
//! `/readyz` asking only for the stores the configured phases need.

mod common;

use std::{
    collections::BTreeSet,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use common::*;
use tokio::io::AsyncWriteExt;

fn with_metrics() -> TestEnvBuilder {
    TestEnv::builder()
        .seed(false)
        .extra_toml("[metrics]\nlisten = \"127.0.0.1:0\"\n")
}

fn repo_file(path: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[tokio::test]
async fn a_fresh_scrape_passes_promtool() {
    let env = with_metrics().start().await;
    let text = scrape(&env).await;
    for name in [
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        assert!(sample(&text, name, &[]) > 0.0, "{name}:\n{text}");
    }
    let start = sample(&text, "process_start_time_seconds", &[]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(start <= now + 1.0 && start > now - 3600.0, "{start} {now}");
    // Every family has its help text, whether or not promtool is here.
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let family = line.split(' ').nth(2).unwrap();
        assert!(
            text.contains(&format!("# HELP {family} ")),
            "{family} has no HELP"
        );
    }
    let Some(promtool) = ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    else {
        eprintln!(
            "\n!!!!!!!! SKIPPED: promtool is not installed (apt-get install prometheus); \
             `promtool check metrics` did not run !!!!!!!!\n"
        );
        return;
    };
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {}\n{said}\n--- scrape ---\n{text}",
        out.status
    );
}

/// The `ferry_*` selectors in `expr`: each name with its exact (`=`) and
/// alternative (`=~"a|b"`) label matchers, target labels left out.
fn selectors(expr: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut found = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("ferry_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = tail[..end].to_string();
        let mut labels = Vec::new();
        let after = &tail[end..];
        if let Some(inside) = after.strip_prefix('{') {
            let inside = &inside[..inside.find('}').unwrap()];
            for matcher in inside.split(',') {
                let matcher = matcher.trim();
                let (label, op, value) = if let Some((l, v)) = matcher.split_once("=~") {
                    (l, "=~", v)
                } else if let Some((l, v)) = matcher.split_once('=') {
                    (l, "=", v)
                } else {
                    continue;
                };
                let (label, value) = (label.trim(), value.trim().trim_matches('"'));
                if ["job", "instance"].contains(&label) || value.contains('$') {
                    continue;
                }
                match op {
                    "=" => labels.push((label.to_string(), value.to_string())),
                    _ => {
                        for alternative in value.split('|') {
                            labels.push((label.to_string(), alternative.to_string()));
                        }
                    }
                }
            }
        }
        found.push((name, labels));
        rest = &tail[end..];
    }
    found
}

/// The `expr:` entries of a Prometheus rules file (one line, or a block).
fn rule_exprs(yaml: &str) -> Vec<String> {
    let mut exprs = Vec::new();
    let mut lines = yaml.lines().peekable();
    while let Some(line) = lines.next() {
        let Some((indent, rest)) = line.split_once("expr:") else {
            continue;
        };
        if !indent.trim().is_empty() {
            continue;
        }
        let mut expr = rest.trim().trim_start_matches('|').to_string();
        while let Some(next) = lines.peek() {
            let deeper = next.len() - next.trim_start().len() > indent.len();
            if !(deeper || next.trim().is_empty()) {
                break;
            }
            expr.push('\n');
            expr.push_str(lines.next().unwrap());
        }
        exprs.push(expr);
    }
    exprs
}

fn dashboard_exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                    _ => dashboard_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| dashboard_exprs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn every_series_of_the_alerts_and_the_dashboard_exists_from_the_start() {
    let mut exprs = rule_exprs(&repo_file("deploy/prometheus/alerts.yml"));
    assert!(exprs.len() > 10, "{exprs:?}");
    let dashboard: serde_json::Value =
        serde_json::from_str(&repo_file("deploy/grafana/ferry-dashboard.json")).unwrap();
    let before = exprs.len();
    dashboard_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() > before + 20);
    let env = with_metrics().start().await;
    let text = scrape(&env).await;
    let mut checked = BTreeSet::new();
    for expr in &exprs {
        for (name, labels) in selectors(expr) {
            for (label, value) in &labels {
                let present = text.lines().any(|l| {
                    l.starts_with(&format!("{name}{{"))
                        && l.contains(&format!("{label}=\"{value}\""))
                });
                assert!(
                    present,
                    "{name}{{{label}=\"{value}\"}} of `{expr}` is not in:\n{text}"
                );
            }
            let present = text
                .lines()
                .any(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")));
            assert!(present, "{name} of `{expr}` is not in:\n{text}");
            checked.insert(name);
        }
    }
    // The alerts' own examples.
    for name in [
        "ferry_backend_errors_total",
        "ferry_backend_connects_total",
        "ferry_command_duration_seconds_bucket",
        "ferry_migration_last_pass_timestamp_seconds",
        "ferry_tls_handshake_failures_total",
    ] {
        assert!(checked.contains(name), "{name} not among {checked:?}");
    }
    // The limits and the stores' error kinds, whose first event matters.
    for limit in ["connections_per_ip", "login_failures", "backend_timeout"] {
        assert!(text.contains(&format!("ferry_limit_hits_total{{limit=\"{limit}\"}} ")));
    }
    assert!(text.contains("ferry_backend_errors_total{store=\"new\",kind=\"connect\"} "));
}

fn tls_failures(text: &str) -> f64 {
    sample(text, "ferry_tls_handshake_failures_total", &[])
}

/// HAProxy's PROXY v2 health-check header: LOCAL command, no addresses.
const PROXY_V2_LOCAL: &[u8] = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00";

#[tokio::test]
async fn probes_are_not_tls_failures() {
    let env = with_metrics().start().await;
    let imaps = env.ferry.imaps_addr().unwrap();
    // The same stores behind a balancer that speaks PROXY v2.
    let behind = env.config_toml.replacen(
        "[tls]",
        "proxy_protocol = true\ntrusted_proxies = [\"127.0.0.0/8\"]\n[tls]",
        1,
    );
    let proxied = ferry::Ferry::start(ferry::config::parse(&behind).unwrap())
        .await
        .unwrap();
    let proxied_imaps = proxied.imaps_addr().unwrap();
    let before = scrape(&env).await;
    let local = |text: &str| sample(text, "ferry_proxy_headers_total", &[("result", "local")]);

    // A monitor's TCP check: connect, close.
    for _ in 0..3 {
        drop(tokio::net::TcpStream::connect(imaps).await.unwrap());
    }
    // HAProxy's check by hand: a LOCAL header, then close.
    for _ in 0..3 {
        let mut tcp = tokio::net::TcpStream::connect(proxied_imaps).await.unwrap();
        tcp.write_all(PROXY_V2_LOCAL).await.unwrap();
    }
    // And by HAProxy itself (its checks end with a reset).
    let haproxy = Haproxy::start(
        proxied_imaps,
        "send-proxy-v2 check check-send-proxy inter 100",
    )
    .await;
    eventually(20, "HAProxy's checks reach Ferry", || async {
        local(&scrape(&env).await) - local(&before) >= 6.0
    })
    .await;
    drop(haproxy);

    // A real failure still counts: bytes that are no ClientHello.
    let mut tcp = tokio::net::TcpStream::connect(imaps).await.unwrap();
    tcp.write_all(b"a1 CAPABILITY\r\n").await.unwrap();
    eventually(10, "the failed handshake is counted", || async {
        tls_failures(&scrape(&env).await) - tls_failures(&before) >= 1.0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = scrape(&env).await;
    assert_eq!(tls_failures(&after) - tls_failures(&before), 1.0, "{after}");
    proxied.shutdown_within(Duration::from_secs(1)).await;
}

/// The environment's configuration with every user in `phase` (olga and
/// nils, who have their own, too).
fn everyone_in(env: &TestEnv, phase: &str) -> ferry::config::Config {
    let toml = env
        .config_toml
        .replace(
            "default_phase = \"merged\"",
            &format!("default_phase = \"{phase}\""),
        )
        .replace("\"olga\" = \"old\"", &format!("\"olga\" = \"{phase}\""))
        .replace("\"nils\" = \"new\"", &format!("\"nils\" = \"{phase}\""));
    ferry::config::parse(&toml).expect("valid config")
}

#[tokio::test]
async fn readyz_asks_only_for_the_stores_of_the_phases_in_use() {
    let mut env = with_metrics().seed(true).start().await;
    let addr = env.ferry.metrics_addr().unwrap();
    env.ferry.reload(everyone_in(&env, "old")).unwrap();
    env.new.stop().await;
    let (status, body) = http_get(addr, "/readyz").await;
    assert_eq!(status, 200, "NEW is down but nobody needs it: {body}");
    // And indeed a user logs in and works.
    let mut c = env.login("alice").await;
    c.cmd("SELECT INBOX").await.assert_ok();
    c.logout().await;

    // One user in merged needs NEW again.
    let mut config = everyone_in(&env, "old");
    config
        .migration
        .users
        .insert("carol".into(), ferry::config::Phase::Merged);
    env.ferry.reload(config).unwrap();
    let (status, body) = http_get(addr, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("NEW store"), "{body}");
    assert!(!body.contains("OLD store"), "{body}");

    // Everyone in new: OLD's outage is nobody's concern, NEW's is.
    env.new.restart().await;
    env.ferry.reload(everyone_in(&env, "new")).unwrap();
    env.old.stop().await;
    let (status, body) = http_get(addr, "/readyz").await;
    assert_eq!(status, 200, "OLD is down but nobody needs it: {body}");
    env.ferry.reload(everyone_in(&env, "merged")).unwrap();
    let (status, body) = http_get(addr, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("OLD store"), "{body}");
}
