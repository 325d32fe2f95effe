//! Migration records as tables for people (`ferry migration status`).

use std::fmt::Write;

use crate::state::{FolderRecord, UserRecord, migration::now};

/// `1.5 MB`, `320 kB`, `12 B`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// `just now`, `5 min ago`, `3 h ago`, `2 d ago`, or `never`.
pub fn ago(at: Option<i64>) -> String {
    let Some(at) = at else {
        return "never".into();
    };
    match (now() - at).max(0) {
        s if s < 60 => "just now".into(),
        s if s < 3600 => format!("{} min ago", s / 60),
        s if s < 86_400 => format!("{} h ago", s / 3600),
        s => format!("{} d ago", s / 86_400),
    }
}

pub fn users_table(users: &[UserRecord]) -> String {
    let mut out = format!(
        "{:<24} {:<9} {:>9} {:>17} {:>21} {:>6}  {}\n",
        "USER", "STATE", "FOLDERS", "MESSAGES", "BYTES", "DIFFS", "LAST PASS"
    );
    for u in users {
        let state = if u.paused {
            format!("{} (paused)", u.state.as_str())
        } else {
            u.state.as_str().to_string()
        };
        let _ = writeln!(
            out,
            "{:<24} {:<9} {:>9} {:>17} {:>21} {:>6}  {}",
            u.user,
            state,
            format!("{}/{}", u.folders_done, u.folders),
            format!("{}/{}", u.messages_done, u.messages),
            format!("{}/{}", bytes(u.bytes_done), bytes(u.bytes)),
            u.differences,
            ago(u.last_pass),
        );
        if let Some(e) = &u.error {
            let _ = writeln!(out, "  error: {e}");
        }
    }
    out
}

pub fn folders_table(folders: &[FolderRecord]) -> String {
    let mut out = format!(
        "\n{:<32} {:<32} {:>9} {:>9} {:>10} {:>6}  {}\n",
        "OLD FOLDER", "ON NEW", "MESSAGES", "COPIED", "BYTES", "DIFFS", "VERIFIED"
    );
    let name = |n: &str| crate::mutf7::decode(n.as_bytes()).unwrap_or_else(|| n.to_string());
    for f in folders {
        let _ = writeln!(
            out,
            "{:<32} {:<32} {:>9} {:>9} {:>10} {:>6}  {}",
            name(&f.old_name),
            name(&f.new_name),
            f.messages,
            f.copied,
            bytes(f.bytes),
            f.differences,
            if f.verified { "yes" } else { "no" },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(bytes(12), "12 B");
        assert_eq!(bytes(320_000), "320.0 kB");
        assert_eq!(bytes(21_000_000), "21.0 MB");
        assert_eq!(ago(None), "never");
        assert_eq!(ago(Some(now() - 7200)), "2 h ago");
    }
}
