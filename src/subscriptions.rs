//! Subscriptions to `Old/` folders, which neither store can keep: OLD is never
//! written and NEW refuses to subscribe names it does not hold.
//!
//! Each user's choices are a small map `client name → subscribed`; `false`
//! hides one of OLD's own subscriptions from LSUB. With a directory configured
//! they live in one file per user (written to a temporary file and renamed, so
//! a crash never leaves half a file) and are shared by every Ferry instance
//! that mounts it; without one they last until Ferry restarts.
//!
//! The files are tiny and touched only by SUBSCRIBE, UNSUBSCRIBE and LSUB, so
//! the session reads and writes them synchronously.

use std::{
    collections::{BTreeMap, HashMap},
    io,
    path::PathBuf,
    sync::Mutex,
};

/// A user's `Old/` subscription choices, by client-visible name.
pub type Choices = BTreeMap<Vec<u8>, bool>;

#[derive(Debug, Default)]
pub struct Subscriptions {
    dir: Option<PathBuf>,
    memory: Mutex<HashMap<Vec<u8>, Choices>>,
}

impl Subscriptions {
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self {
            dir,
            memory: Mutex::default(),
        }
    }

    /// The user's choices; an unreadable file counts as none (LSUB must not fail).
    pub fn get(&self, user: &[u8]) -> Choices {
        match self.path(user) {
            Some(path) => match std::fs::read(&path) {
                Ok(text) => parse(&text),
                Err(e) => {
                    if e.kind() != io::ErrorKind::NotFound {
                        tracing::warn!(path = %path.display(), error = %e, "cannot read subscriptions");
                    }
                    Choices::new()
                }
            },
            None => self.lock().get(user).cloned().unwrap_or_default(),
        }
    }

    /// Records that `name` is (un)subscribed for `user`.
    pub fn set(&self, user: &[u8], name: &[u8], subscribed: bool) -> io::Result<()> {
        let Some(path) = self.path(user) else {
            self.lock()
                .entry(user.to_vec())
                .or_default()
                .insert(name.to_vec(), subscribed);
            return Ok(());
        };
        // One writer at a time inside this process; across instances the
        // rename keeps each file whole (last writer wins).
        let _guard = self.lock();
        let mut choices = match std::fs::read(&path) {
            Ok(text) => parse(&text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Choices::new(),
            Err(e) => return Err(e),
        };
        choices.insert(name.to_vec(), subscribed);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, render(&choices))?;
        std::fs::rename(&tmp, &path)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Choices>> {
        // A panic elsewhere while holding the lock leaves plain data behind.
        self.memory.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The user's file: the name hex-encoded, so no user name can reach
    /// outside the directory or collide with another after case folding.
    fn path(&self, user: &[u8]) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        let hex: String = user.iter().map(|b| format!("{b:02x}")).collect();
        Some(dir.join(format!("{hex}.subscriptions")))
    }
}

/// One choice per line: `+name` or `-name` (names are modified UTF-7 or the
/// prefix's UTF-8, never CR or LF).
fn parse(text: &[u8]) -> Choices {
    text.split(|b| *b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .filter_map(|line| match line.split_first() {
            Some((b'+', name)) if !name.is_empty() => Some((name.to_vec(), true)),
            Some((b'-', name)) if !name.is_empty() => Some((name.to_vec(), false)),
            _ => None,
        })
        .collect()
}

fn render(choices: &Choices) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, on) in choices {
        out.push(if *on { b'+' } else { b'-' });
        out.extend_from_slice(name);
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_choices_are_per_user() {
        let s = Subscriptions::new(None);
        s.set(b"alice", b"Old/Sent", true).unwrap();
        s.set(b"alice", b"Old/INBOX", false).unwrap();
        let a = s.get(b"alice");
        assert_eq!(a.get(&b"Old/Sent"[..]), Some(&true));
        assert_eq!(a.get(&b"Old/INBOX"[..]), Some(&false));
        assert!(s.get(b"bob").is_empty());
    }

    #[test]
    fn files_survive_a_new_instance_and_stay_inside_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let s = Subscriptions::new(Some(dir.path().into()));
        s.set(b"../../etc/passwd", b"Old/&U9dP4Xux-", true).unwrap();
        s.set(b"../../etc/passwd", b"Old/Sent", true).unwrap();
        s.set(b"../../etc/passwd", b"Old/Sent", false).unwrap();
        let again = Subscriptions::new(Some(dir.path().into()));
        let c = again.get(b"../../etc/passwd");
        assert_eq!(c.len(), 2);
        assert_eq!(c.get(&b"Old/&U9dP4Xux-"[..]), Some(&true));
        assert_eq!(c.get(&b"Old/Sent"[..]), Some(&false));
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(files.len(), 1, "one file, no temporary left behind");
    }

    #[test]
    fn garbage_files_read_as_nothing_harmful() {
        let c = parse(b"+\n-\nnot a line\n\n+Old/A\r\n+Old/B");
        assert_eq!(c.len(), 2);
        assert!(c.contains_key(&b"Old/A"[..]) && c.contains_key(&b"Old/B"[..]));
    }
}
