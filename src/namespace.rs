//! Mailbox-name mapping between the client's view and the two stores.
//!
//! Everything works on wire names (modified UTF-7 bytes). mUTF-7 is pure ASCII and
//! its base64 runs (`&…-`) never contain a hierarchy delimiter, so prefixes and
//! delimiters are rewritten byte-wise outside those runs and every other byte
//! passes untouched: names round-trip exactly.
//!
//! Client view (merged phase), with the default prefix `Old/` and delimiter `/`:
//! - `INBOX` and every other name: the NEW store, delimiter translated if NEW's differs;
//! - `Old`: a `\Noselect` parent that exists only in Ferry;
//! - `Old/INBOX`: OLD's INBOX; `Old/a/b`: OLD's `<personal prefix>a<d>b` (e.g. `INBOX.a.b`).
//!
//! Names that cannot be mapped both ways without ambiguity are hidden, never
//! mis-mapped: an OLD name containing the client delimiter, OLD's `INBOX.INBOX`
//! (it would collide with `Old/INBOX`), OLD names outside its personal namespace,
//! and NEW names at or below the prefix (the prefix is reserved for OLD).

use thiserror::Error;

use crate::mutf7;

/// Which store a name lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Store {
    Old,
    New,
}

impl Store {
    /// 0 for OLD, 1 for NEW: the store's place in per-store arrays.
    pub fn index(self) -> usize {
        match self {
            Store::Old => 0,
            Store::New => 1,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Store::Old => "old",
            Store::New => "new",
        }
    }
}

/// How a store lays out its personal namespace, as learned from NAMESPACE/LIST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Personal namespace prefix on the wire, e.g. `INBOX.` (Courier, Cyrus) or empty.
    pub prefix: Vec<u8>,
    /// Hierarchy delimiter; `None` for a flat store.
    pub delimiter: Option<u8>,
}

impl Layout {
    /// Not asked for (phases old and new, which pass names through).
    pub fn unknown() -> Self {
        Self {
            prefix: Vec::new(),
            delimiter: None,
        }
    }

    /// Courier/Cyrus style: personal prefix `INBOX.`, delimiter `.`.
    pub fn legacy() -> Self {
        Self {
            prefix: b"INBOX.".to_vec(),
            delimiter: Some(b'.'),
        }
    }

    /// Dovecot style: no prefix, delimiter `/`.
    pub fn slash() -> Self {
        Self {
            prefix: Vec::new(),
            delimiter: Some(b'/'),
        }
    }

    pub fn flat() -> Self {
        Self {
            prefix: Vec::new(),
            delimiter: None,
        }
    }
}

/// Where a client name points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    New(Vec<u8>),
    Old(Vec<u8>),
    /// The prefix's own name (`Old`): exists only in Ferry, never selectable.
    OldRoot,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum MapError {
    #[error("mailbox name is not valid modified UTF-7")]
    BadEncoding,
    #[error("mailbox name cannot exist on the store it belongs to")]
    Unrepresentable,
}

/// The pure name mapper of one session.
#[derive(Debug, Clone)]
pub struct NameMap {
    delim: u8,
    /// `Old/` on the wire (mUTF-7), delimiter included.
    prefix: Vec<u8>,
    old: Layout,
    new: Layout,
}

fn is_inbox(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"INBOX")
}

/// Replaces `from` by `to` outside mUTF-7 base64 runs. `None` when `to` already
/// occurs outside runs (the result would be ambiguous).
pub fn translate(name: &[u8], from: u8, to: u8) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(name.len());
    let mut in_run = false;
    for &b in name {
        if in_run {
            in_run = b != b'-';
            out.push(b);
        } else if b == b'&' {
            in_run = true;
            out.push(b);
        } else if b == from {
            out.push(to);
        } else if b == to {
            return None;
        } else {
            out.push(b);
        }
    }
    Some(out)
}

impl NameMap {
    /// `prefix_utf8` is the configured prefix (`Old/`), ending in `delimiter`.
    pub fn new(prefix_utf8: &str, delimiter: char, old: Layout, new: Layout) -> Self {
        let delim = delimiter as u8;
        Self {
            delim,
            prefix: mutf7::encode(prefix_utf8).into_bytes(),
            old,
            new,
        }
    }

    pub fn delimiter(&self) -> u8 {
        self.delim
    }

    /// `Old/` as sent on the wire.
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// `Old`: the prefix without its trailing delimiter.
    pub fn root(&self) -> &[u8] {
        &self.prefix[..self.prefix.len() - 1]
    }

    pub fn set_layout(&mut self, store: Store, layout: Layout) {
        match store {
            Store::Old => self.old = layout,
            Store::New => self.new = layout,
        }
    }

    /// True when NEW's names are the client's names (same delimiter).
    pub fn new_is_identity(&self) -> bool {
        self.new.delimiter.is_none_or(|d| d == self.delim)
    }

    /// True for the root and everything under the prefix.
    pub fn is_reserved(&self, client: &[u8]) -> bool {
        client == self.root() || client.starts_with(&self.prefix)
    }

    /// Client name → store and that store's name.
    pub fn to_backend(&self, client: &[u8]) -> Result<Target, MapError> {
        if mutf7::decode(client).is_none() {
            return Err(MapError::BadEncoding);
        }
        if is_inbox(client) {
            return Ok(Target::New(b"INBOX".to_vec()));
        }
        if client == self.root() {
            return Ok(Target::OldRoot);
        }
        if let Some(rest) = client.strip_prefix(self.prefix.as_slice()) {
            return self.old_name(rest).map(Target::Old);
        }
        Ok(Target::New(self.to_store(&self.new, client)?))
    }

    fn old_name(&self, rest: &[u8]) -> Result<Vec<u8>, MapError> {
        if is_inbox(rest) {
            return Ok(b"INBOX".to_vec());
        }
        let first = rest.split(|b| *b == self.delim).next().unwrap_or_default();
        if rest.is_empty() || is_inbox(first) {
            // `Old/INBOX/x` would be OLD's `INBOX.INBOX.x`, which Ferry hides.
            return Err(MapError::Unrepresentable);
        }
        let mut name = self.old.prefix.clone();
        name.extend_from_slice(&self.to_store(&self.old, rest)?);
        Ok(name)
    }

    fn to_store(&self, layout: &Layout, client: &[u8]) -> Result<Vec<u8>, MapError> {
        match layout.delimiter {
            Some(d) if d != self.delim => {
                translate(client, self.delim, d).ok_or(MapError::Unrepresentable)
            }
            Some(_) => Ok(client.to_vec()),
            // A flat store cannot hold a hierarchy.
            None if client.contains(&self.delim) => Err(MapError::Unrepresentable),
            None => Ok(client.to_vec()),
        }
    }

    fn store_to_client(&self, layout: &Layout, name: &[u8]) -> Option<Vec<u8>> {
        match layout.delimiter {
            Some(d) if d != self.delim => translate(name, d, self.delim),
            _ if layout.delimiter.is_none() && name.contains(&self.delim) => None,
            _ => Some(name.to_vec()),
        }
    }

    /// OLD name → client name; `None` when it is hidden.
    pub fn old_to_client(&self, old: &[u8]) -> Option<Vec<u8>> {
        mutf7::decode(old)?;
        let mut out = self.prefix.clone();
        if is_inbox(old) {
            out.extend_from_slice(b"INBOX");
            return Some(out);
        }
        let rest = old.strip_prefix(self.old.prefix.as_slice())?;
        let first = match self.old.delimiter {
            Some(d) => rest.split(|b| *b == d).next().unwrap_or_default(),
            None => rest,
        };
        if rest.is_empty() || is_inbox(first) {
            return None;
        }
        let mapped = self.store_to_client(&self.old, rest)?;
        if mapped.split(|b| *b == self.delim).any(<[u8]>::is_empty) {
            return None;
        }
        out.extend_from_slice(&mapped);
        Some(out)
    }

    /// Where an OLD folder's copy goes on NEW in archive mode: the folder
    /// the merged view shows as `Old/…`, named in NEW's layout (OLD's
    /// `INBOX.Archive.2019` → NEW's `Old/Archive/2019`). `None` for a name the
    /// merged view hides.
    pub fn archive_name(&self, old: &[u8]) -> Option<Vec<u8>> {
        let client = self.old_to_client(old)?;
        self.to_store(&self.new, &client).ok()
    }

    /// A client's name for a NEW folder in NEW's layout (also below the
    /// prefix: the copier's explicit map may name any NEW folder).
    pub fn new_name(&self, client: &[u8]) -> Option<Vec<u8>> {
        mutf7::decode(client)?;
        self.to_store(&self.new, client).ok()
    }

    /// An OLD folder's path below OLD's prefix in NEW's layout (OLD's
    /// `INBOX.Archive.2019` → `Archive/2019`), for merge mode; `INBOX` is
    /// `INBOX`. `None` for a name the merged view hides.
    pub fn merged_path(&self, old: &[u8]) -> Option<Vec<u8>> {
        let client = self.old_to_client(old)?;
        let rest = client.strip_prefix(self.prefix.as_slice())?;
        self.to_store(&self.new, rest).ok()
    }

    /// NEW name → client name; `None` when it is hidden.
    pub fn new_to_client(&self, new: &[u8]) -> Option<Vec<u8>> {
        mutf7::decode(new)?;
        if is_inbox(new) {
            return Some(b"INBOX".to_vec());
        }
        let mapped = self.store_to_client(&self.new, new)?;
        (!self.is_reserved(&mapped)).then_some(mapped)
    }

    /// A NEW name that stands for a subscription to an `Old/` folder (Ferry keeps
    /// those on NEW, under the client's name) → that client name.
    pub fn new_subscription_to_client(&self, new: &[u8]) -> Option<Vec<u8>> {
        let mapped = self.store_to_client(&self.new, new)?;
        self.is_reserved(&mapped).then_some(mapped)
    }
}

/// Canonical form for matching: a leading `INBOX` level is case-insensitive.
fn canonical_inbox(name: &[u8], delim: u8) -> std::borrow::Cow<'_, [u8]> {
    if name.len() >= 5
        && name[..5].eq_ignore_ascii_case(b"INBOX")
        && (name.len() == 5 || name[5] == delim)
        && &name[..5] != b"INBOX"
    {
        let mut v = name.to_vec();
        v[..5].copy_from_slice(b"INBOX");
        return v.into();
    }
    name.into()
}

/// RFC 3501 §6.3.8 LIST matching: `*` matches anything, `%` anything but the
/// delimiter. Dynamic programming, so hostile patterns such as `*%*%*%…` cost
/// O(pattern × name), not exponential time.
pub fn matches(pattern: &[u8], name: &[u8], delim: u8) -> bool {
    let pattern = canonical_inbox(pattern, delim);
    let name = canonical_inbox(name, delim);
    let (p, n) = (pattern.as_ref(), name.as_ref());
    // row[j]: pattern prefix matches name[..j].
    let mut row = vec![false; n.len() + 1];
    row[0] = true;
    for &pc in p {
        let mut next = vec![false; n.len() + 1];
        match pc {
            b'*' => {
                let mut any = false;
                for j in 0..=n.len() {
                    any |= row[j];
                    next[j] = any;
                }
            }
            b'%' => {
                let mut any = false;
                for j in 0..=n.len() {
                    if j > 0 && n[j - 1] == delim {
                        any = false;
                    }
                    any |= row[j];
                    next[j] = any;
                }
            }
            c => {
                for j in 1..=n.len() {
                    next[j] = row[j - 1] && n[j - 1] == c;
                }
            }
        }
        row = next;
    }
    row[n.len()]
}

/// Joins a LIST reference and pattern into the canonical form of RFC 3501
/// §6.3.8: concatenation, except that a pattern starting with the delimiter is
/// taken as absolute (as Dovecot does).
pub fn join_reference(reference: &[u8], pattern: &[u8], delim: u8) -> Vec<u8> {
    if reference.is_empty() || pattern.first() == Some(&delim) {
        return pattern.to_vec();
    }
    [reference, pattern].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> NameMap {
        NameMap::new("Old/", '/', Layout::legacy(), Layout::slash())
    }

    #[test]
    fn client_to_backend() {
        let m = map();
        let t = |s: &str| m.to_backend(s.as_bytes());
        assert_eq!(t("INBOX"), Ok(Target::New(b"INBOX".to_vec())));
        assert_eq!(t("inbox"), Ok(Target::New(b"INBOX".to_vec())));
        assert_eq!(t("Work/2024"), Ok(Target::New(b"Work/2024".to_vec())));
        assert_eq!(t("Old"), Ok(Target::OldRoot));
        assert_eq!(t("Old/INBOX"), Ok(Target::Old(b"INBOX".to_vec())));
        assert_eq!(t("Old/inbox"), Ok(Target::Old(b"INBOX".to_vec())));
        assert_eq!(t("Old/Sent"), Ok(Target::Old(b"INBOX.Sent".to_vec())));
        assert_eq!(
            t("Old/Archive/2019"),
            Ok(Target::Old(b"INBOX.Archive.2019".to_vec()))
        );
        assert_eq!(
            t("Old/&U9dP4Xux-/&eBR6dluk-"),
            Ok(Target::Old(b"INBOX.&U9dP4Xux-.&eBR6dluk-".to_vec()))
        );
        assert_eq!(t("Old/a.b"), Err(MapError::Unrepresentable));
        assert_eq!(t("Old/INBOX/x"), Err(MapError::Unrepresentable));
        assert_eq!(t("Old/"), Err(MapError::Unrepresentable));
        assert_eq!(t("bad&name"), Err(MapError::BadEncoding));
    }

    #[test]
    fn backend_to_client() {
        let m = map();
        let o = |s: &str| {
            m.old_to_client(s.as_bytes())
                .map(|v| String::from_utf8(v).unwrap())
        };
        assert_eq!(o("INBOX").as_deref(), Some("Old/INBOX"));
        assert_eq!(o("INBOX.Sent").as_deref(), Some("Old/Sent"));
        assert_eq!(o("INBOX.Archive.2019").as_deref(), Some("Old/Archive/2019"));
        assert_eq!(o("INBOX.a/b"), None, "contains the client delimiter");
        assert_eq!(o("INBOX.INBOX"), None, "would collide with Old/INBOX");
        assert_eq!(o("INBOX.inbox.x"), None);
        assert_eq!(o("shared.x"), None, "outside the personal namespace");
        assert_eq!(o("INBOX."), None);
        assert_eq!(o("INBOX.a..b"), None);
        let n = |s: &str| {
            m.new_to_client(s.as_bytes())
                .map(|v| String::from_utf8(v).unwrap())
        };
        assert_eq!(n("inbox").as_deref(), Some("INBOX"));
        assert_eq!(n("Sent").as_deref(), Some("Sent"));
        assert_eq!(n("Old"), None, "the prefix is reserved for OLD");
        assert_eq!(n("Old/x"), None);
        assert_eq!(n("Older").as_deref(), Some("Older"));
    }

    #[test]
    fn round_trips_are_exact() {
        let m = map();
        for old in [
            "INBOX.Sent",
            "INBOX.&U9dP4Xux-.&eBR6dluk-",
            "INBOX.R&-D",
            "INBOX.a b.c",
        ] {
            let client = m.old_to_client(old.as_bytes()).unwrap();
            assert_eq!(
                m.to_backend(&client),
                Ok(Target::Old(old.as_bytes().to_vec()))
            );
        }
    }

    #[test]
    fn new_store_with_dot_delimiter() {
        let m = NameMap::new(
            "Old/",
            '/',
            Layout::flat(),
            Layout {
                prefix: vec![],
                delimiter: Some(b'.'),
            },
        );
        assert_eq!(m.to_backend(b"a/b"), Ok(Target::New(b"a.b".to_vec())));
        assert_eq!(m.to_backend(b"a.b"), Err(MapError::Unrepresentable));
        assert_eq!(m.new_to_client(b"a.b"), Some(b"a/b".to_vec()));
        assert_eq!(m.new_to_client(b"a/b"), None);
    }

    #[test]
    fn non_ascii_prefix() {
        let m = NameMap::new("旧メール/", '/', map().old, map().new);
        assert_eq!(m.prefix(), "&Zecw4TD8MOs-/".as_bytes());
        assert_eq!(
            m.old_to_client(b"INBOX.Sent"),
            Some(b"&Zecw4TD8MOs-/Sent".to_vec())
        );
        assert_eq!(m.to_backend(b"&Zecw4TD8MOs-"), Ok(Target::OldRoot));
    }

    #[test]
    fn list_matching() {
        let d = b'/';
        let yes = |p: &str, n: &str| assert!(matches(p.as_bytes(), n.as_bytes(), d), "{p} ~ {n}");
        let no = |p: &str, n: &str| assert!(!matches(p.as_bytes(), n.as_bytes(), d), "{p} !~ {n}");
        yes("*", "Old/Archive/2019");
        yes("%", "Old");
        no("%", "Old/INBOX");
        yes("Old/%", "Old/INBOX");
        no("Old/%", "Old/Archive/2019");
        yes("Old/*", "Old/Archive/2019");
        yes("%/%", "Old/Sent");
        no("%/%", "Old");
        yes("inbox", "INBOX");
        yes("INBOX", "inbox");
        no("INBOX", "INBOXES");
        yes("O*9", "Old/Archive/2019");
        no("", "INBOX");
        let evil = "*%".repeat(200) + "x";
        no(&evil, &"a/".repeat(200));
    }

    #[test]
    fn reference_joining() {
        assert_eq!(join_reference(b"", b"%", b'/'), b"%");
        assert_eq!(join_reference(b"Old/", b"%", b'/'), b"Old/%");
        assert_eq!(join_reference(b"Old", b"%", b'/'), b"Old%");
        assert_eq!(join_reference(b"Old", b"/x", b'/'), b"/x");
    }
}
