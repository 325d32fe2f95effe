//! Pure merging of what the two stores report: LIST/LSUB trees and capabilities.

use std::collections::BTreeMap;

use imap_codec::imap_types::{core::Atom, flag::FlagNameAttribute};

use crate::{
    caps::Caps,
    namespace::{NameMap, matches},
};

pub mod extended;

/// One LIST/LSUB entry as a store reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry {
    pub attrs: Vec<FlagNameAttribute<'static>>,
    pub name: Vec<u8>,
}

/// One entry of the merged view, named as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub attrs: Vec<FlagNameAttribute<'static>>,
    pub name: Vec<u8>,
}

fn ext(name: &'static str) -> FlagNameAttribute<'static> {
    // Invariant: the names passed here are valid atoms.
    FlagNameAttribute::from(Atom::try_from(name).expect("static atom"))
}

fn ext_name(attr: &FlagNameAttribute<'_>) -> Option<String> {
    match attr {
        FlagNameAttribute::Extension(_) => Some(
            attr.to_string()
                .trim_start_matches('\\')
                .to_ascii_lowercase(),
        ),
        _ => None,
    }
}

/// RFC 6154 special-use attributes: an `Old/` folder must not be a second `\Sent`.
const SPECIAL_USE: [&str; 8] = [
    "all",
    "archive",
    "drafts",
    "flagged",
    "junk",
    "sent",
    "trash",
    "important",
];
const CHILD_INFO: [&str; 2] = ["haschildren", "hasnochildren"];

/// The merged LIST (or LSUB) answer for `pattern` (canonical: reference joined).
///
/// What the stores (and Ferry's own subscription list) reported for one LIST/LSUB.
pub struct Sources<'a> {
    /// NEW's answer to the same pattern.
    pub new: &'a [RawEntry],
    /// OLD's full tree (`*`), or `None` when OLD was not asked (the pattern
    /// cannot reach below the prefix) or is unavailable.
    pub old: Option<&'a [RawEntry]>,
    /// Whether OLD answered at all.
    pub old_reachable: bool,
    /// LSUB only: `Old/` subscriptions Ferry keeps (client names → subscribed);
    /// `false` hides one of OLD's own.
    pub kept: &'a crate::subscriptions::Choices,
    /// NEW's folders under the prefix are the copies the `Old/` folders are
    /// served from (all of them): they stand for OLD's tree.
    pub copies: bool,
}

/// An `Old/` folder's attributes: no special use (a client must not find
/// two `\Sent`), child information recomputed for the merged tree.
fn old_attrs(attrs: &[FlagNameAttribute<'static>]) -> Vec<FlagNameAttribute<'static>> {
    attrs
        .iter()
        .filter(|a| {
            ext_name(a).is_none_or(|n| {
                !SPECIAL_USE.contains(&n.as_str()) && !CHILD_INFO.contains(&n.as_str())
            })
        })
        .cloned()
        .collect()
}

pub fn list(map: &NameMap, pattern: &[u8], lsub: bool, src: Sources<'_>) -> Vec<Entry> {
    let Sources {
        new,
        old,
        old_reachable,
        kept,
        copies,
    } = src;
    let delim = map.delimiter();
    let mut out = Vec::new();
    // Subscriptions to Old/ names live on NEW under the client's name.
    let mut old_tree: BTreeMap<Vec<u8>, Vec<FlagNameAttribute<'static>>> = BTreeMap::new();
    for e in new {
        if let Some(name) = map.new_to_client(&e.name) {
            if matches(pattern, &name, delim) {
                out.push(Entry {
                    attrs: e.attrs.clone(),
                    name,
                });
            }
        } else if lsub
            && let Some(name) = map.new_subscription_to_client(&e.name)
            && name != map.root()
        {
            old_tree.entry(name).or_default();
        } else if copies
            && !lsub
            && map.is_reserved(&e.name)
            && e.name != map.root()
            && map.new_is_identity()
        {
            // A copy, named as the client knows the folder; shown like an
            // OLD folder (no special use, child flags recomputed).
            old_tree.insert(e.name.clone(), old_attrs(&e.attrs));
        }
    }
    for e in old.unwrap_or_default() {
        if let Some(name) = map.old_to_client(&e.name) {
            old_tree.insert(name, old_attrs(&e.attrs));
        }
    }
    if lsub {
        for (name, on) in kept {
            if *on {
                old_tree.entry(name.clone()).or_default();
            } else {
                old_tree.remove(name);
            }
        }
    }
    // Parents the tree implies but OLD does not list (including the root `Old`).
    let mut ancestors: Vec<Vec<u8>> = Vec::new();
    for name in old_tree.keys() {
        let mut end = name.len();
        while let Some(i) = name[..end].iter().rposition(|b| *b == delim) {
            end = i;
            ancestors.push(name[..end].to_vec());
        }
    }
    for a in ancestors {
        old_tree
            .entry(a)
            .or_insert_with(|| vec![FlagNameAttribute::Noselect]);
    }
    if !lsub && !copies && (old.is_none() || !old_reachable) {
        // Not asked (or unreachable): the root still exists as a parent.
        let has = if old_reachable {
            "HasChildren"
        } else {
            "HasNoChildren"
        };
        old_tree
            .entry(map.root().to_vec())
            .or_insert_with(|| vec![FlagNameAttribute::Noselect, ext(has)]);
    }
    let names: Vec<Vec<u8>> = old_tree.keys().cloned().collect();
    for (name, mut attrs) in old_tree {
        if !matches(pattern, &name, delim) {
            continue;
        }
        if !lsub
            && !attrs
                .iter()
                .any(|a| ext_name(a).is_some_and(|n| CHILD_INFO.contains(&n.as_str())))
        {
            let mut child = name.clone();
            child.push(delim);
            let has = names.iter().any(|n| n.starts_with(&child));
            attrs.push(ext(if has { "HasChildren" } else { "HasNoChildren" }));
        }
        out.push(Entry { attrs, name });
    }
    out
}

/// Post-login capabilities when one store is passed through: its own, minus what
/// a proxy in the middle cannot carry (compression, TLS and login mechanisms).
pub fn passthrough_capabilities(store: &Caps) -> Caps {
    static SHOWN: crate::caps::Derived = std::sync::Mutex::new(Vec::new());
    store.derived(&SHOWN, |store| {
        let kept = store.filter(|n| {
            !(n.starts_with("AUTH=")
                || n.starts_with("COMPRESS")
                || ["STARTTLS", "LOGINDISABLED", "SASL-IR", "LOGIN-REFERRALS"].contains(&n))
        });
        // The store's COMPRESS is not passed on; Ferry's own is offered instead.
        Caps::from_names(kept.names().chain(["COMPRESS=DEFLATE"]))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::namespace::Layout;
    use crate::subscriptions::Choices;

    pub(super) fn map() -> NameMap {
        NameMap::new("Old/", '/', Layout::legacy(), Layout::slash())
    }

    pub(super) fn raw(name: &str, attrs: &[&'static str]) -> RawEntry {
        RawEntry {
            attrs: attrs
                .iter()
                .map(|a| match *a {
                    "Noselect" => FlagNameAttribute::Noselect,
                    a => ext(a),
                })
                .collect(),
            name: name.as_bytes().to_vec(),
        }
    }

    fn show(entries: &[Entry]) -> Vec<String> {
        entries
            .iter()
            .map(|e| {
                let attrs: Vec<String> = e.attrs.iter().map(|a| a.to_string()).collect();
                format!("({}) {}", attrs.join(" "), String::from_utf8_lossy(&e.name))
            })
            .collect()
    }

    fn src<'a>(
        new: &'a [RawEntry],
        old: Option<&'a [RawEntry]>,
        old_reachable: bool,
        kept: &'a Choices,
    ) -> Sources<'a> {
        Sources {
            new,
            old,
            old_reachable,
            kept,
            copies: false,
        }
    }

    fn old_tree() -> Vec<RawEntry> {
        vec![
            raw("INBOX", &["HasChildren"]),
            raw("INBOX.Sent", &["HasNoChildren", "Sent"]),
            raw("INBOX.Archive.2019", &["HasNoChildren"]),
            raw("INBOX.INBOX", &["HasNoChildren"]),
            raw("INBOX.a/b", &["HasNoChildren"]),
        ]
    }

    #[test]
    fn full_tree() {
        let new = [
            raw("INBOX", &["HasNoChildren"]),
            raw("Sent", &["HasNoChildren", "Sent"]),
            raw("Old", &["HasNoChildren"]),
        ];
        let got = list(
            &map(),
            b"*",
            false,
            src(&new, Some(&old_tree()), true, &Choices::new()),
        );
        assert_eq!(
            show(&got),
            [
                "(\\HasNoChildren) INBOX",
                "(\\HasNoChildren \\Sent) Sent",
                "(\\Noselect \\HasChildren) Old",
                "(\\Noselect \\HasChildren) Old/Archive",
                "(\\HasNoChildren) Old/Archive/2019",
                "(\\HasNoChildren) Old/INBOX",
                "(\\HasNoChildren) Old/Sent",
            ]
        );
    }

    #[test]
    fn percent_patterns() {
        let m = map();
        let got = list(
            &m,
            b"%",
            false,
            src(&[raw("INBOX", &[])], None, true, &Choices::new()),
        );
        assert_eq!(show(&got), ["() INBOX", "(\\Noselect \\HasChildren) Old"]);
        let got = list(
            &m,
            b"Old/%",
            false,
            src(&[], Some(&old_tree()), true, &Choices::new()),
        );
        assert_eq!(
            show(&got),
            [
                "(\\Noselect \\HasChildren) Old/Archive",
                "(\\HasNoChildren) Old/INBOX",
                "(\\HasNoChildren) Old/Sent"
            ]
        );
        let got = list(&m, b"%", false, src(&[], None, false, &Choices::new()));
        assert_eq!(show(&got), ["(\\Noselect \\HasNoChildren) Old"]);
    }

    #[test]
    fn lsub_merges_old_new_and_kept_subscriptions() {
        let m = map();
        let new = [raw("INBOX", &[]), raw("Old/Archive/2019", &[])];
        let old = [raw("INBOX.Sent", &[]), raw("INBOX.Drafts", &[])];
        let kept: Choices = [
            (b"Old/Projects/X".to_vec(), true),
            (b"Old/Drafts".to_vec(), false),
        ]
        .into();
        let got = list(&m, b"*", true, src(&new, Some(&old), true, &kept));
        assert_eq!(
            show(&got),
            [
                "() INBOX",
                "(\\Noselect) Old",
                "(\\Noselect) Old/Archive",
                "() Old/Archive/2019",
                "(\\Noselect) Old/Projects",
                "() Old/Projects/X",
                "() Old/Sent"
            ]
        );
    }

    #[test]
    fn all_folders_served_list_the_copies_as_the_old_tree() {
        let m = map();
        let new = vec![
            raw("INBOX", &["HasNoChildren"]),
            raw("Sent", &["HasNoChildren", "Sent"]),
            raw("Old", &["HasChildren"]),
            raw("Old/INBOX", &["HasNoChildren"]),
            raw("Old/Sent", &["HasNoChildren", "Sent"]),
            raw("Old/Archive/2019", &["HasNoChildren"]),
        ];
        let kept = Choices::new();
        let served = Sources {
            copies: true,
            ..src(&new, None, true, &kept)
        };
        assert_eq!(
            show(&list(&m, b"*", false, served)),
            [
                "(\\HasNoChildren) INBOX",
                "(\\HasNoChildren \\Sent) Sent",
                "(\\Noselect \\HasChildren) Old",
                // Not a folder of its own on NEW: a parent only, as on OLD.
                "(\\Noselect \\HasChildren) Old/Archive",
                "(\\HasNoChildren) Old/Archive/2019",
                "(\\HasNoChildren) Old/INBOX",
                "(\\HasNoChildren) Old/Sent",
            ]
        );
    }
}
