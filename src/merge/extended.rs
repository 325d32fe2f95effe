//! The extended LIST (RFC 5258) over a tree Ferry answers for itself: the
//! `Old/` folders (OLD's tree, or their copies on NEW) with the subscriptions
//! Ferry keeps for them, and NEW's folders when NEW lacks LIST-EXTENDED.
//! NEW answers for its own folders otherwise; this is the other half.

use std::collections::{BTreeMap, BTreeSet};

use imap_codec::imap_types::flag::FlagNameAttribute;

use super::{CHILD_INFO, RawEntry, SPECIAL_USE, ext, ext_name, old_attrs};
use crate::{
    mutf7,
    namespace::{NameMap, matches},
    subscriptions::Choices,
};

/// What the client asked for, of what changes the selection and attributes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Selection: subscribed names only (existing or not).
    pub subscribed: bool,
    /// Selection: also parents with a subscribed descendant (CHILDINFO).
    pub recursive_match: bool,
    /// Selection: special-use folders only.
    pub special_use: bool,
    pub return_subscribed: bool,
    pub return_children: bool,
}

/// A tree in client names, and its subscriptions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    /// Folders that exist, with their attributes (no child information).
    pub folders: BTreeMap<Vec<u8>, Vec<FlagNameAttribute<'static>>>,
    pub subscribed: BTreeSet<Vec<u8>>,
    /// Folders with children that `folders` does not list (the `Old` root
    /// when OLD's tree was not asked for).
    pub parents: BTreeSet<Vec<u8>>,
    /// `folders` holds every folder there is, so a name missing from it does
    /// not exist (`\NonExistent`); false when OLD could not say.
    pub complete: bool,
}

/// One entry of the answer, named as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtEntry {
    pub attrs: Vec<FlagNameAttribute<'static>>,
    pub name: Vec<u8>,
    /// RECURSIVEMATCH: a descendant is subscribed (`CHILDINFO ("SUBSCRIBED")`).
    pub child_subscribed: bool,
    /// STATUS is asked for it (RFC 5819): the store listed it, it can be
    /// selected, and it meets the selection itself (not only listed for
    /// RECURSIVEMATCH, as Dovecot does).
    pub takes_status: bool,
}

fn is_attr(a: &FlagNameAttribute<'_>, name: &str) -> bool {
    ext_name(a).is_some_and(|n| n == name)
}

/// Neither `\Noselect` nor `\NonExistent` (which implies it).
pub fn selectable(attrs: &[FlagNameAttribute<'_>]) -> bool {
    !attrs
        .iter()
        .any(|a| *a == FlagNameAttribute::Noselect || is_attr(a, "nonexistent"))
}

/// Whether a store's extended LIST entry gets a STATUS (see
/// [`ExtEntry::takes_status`]): under SUBSCRIBED selection, only a
/// subscribed one.
pub fn takes_status(attrs: &[FlagNameAttribute<'_>], subscribed_selection: bool) -> bool {
    selectable(attrs) && (!subscribed_selection || attrs.iter().any(|a| is_attr(a, "subscribed")))
}

/// `name` with the delimiter after it: what every descendant starts with.
fn below(name: &[u8], delim: u8) -> Vec<u8> {
    let mut p = name.to_vec();
    p.push(delim);
    p
}

fn has_below<V>(map: &BTreeMap<Vec<u8>, V>, name: &[u8], delim: u8) -> bool {
    let p = below(name, delim);
    map.range(p.clone()..)
        .next()
        .is_some_and(|(k, _)| k.starts_with(&p))
}

fn has_below_set(set: &BTreeSet<Vec<u8>>, name: &[u8], delim: u8) -> bool {
    let p = below(name, delim);
    set.range(p.clone()..)
        .next()
        .is_some_and(|k| k.starts_with(&p))
}

/// Every proper ancestor of `name` (`a/b/c` → `a/b`, `a`).
fn ancestors(name: &[u8], delim: u8) -> impl Iterator<Item = &[u8]> {
    (0..name.len())
        .rev()
        .filter(move |i| name[*i] == delim)
        .map(move |i| &name[..i])
}

/// The entries of `tree` the client's patterns and options select, with the
/// attributes RFC 5258 asks for, in name order.
pub fn select(tree: &Tree, patterns: &[Vec<u8>], delim: u8, opts: &Options) -> Vec<ExtEntry> {
    let implied: BTreeSet<Vec<u8>> = tree
        .folders
        .keys()
        .flat_map(|n| ancestors(n, delim))
        .filter(|a| !tree.folders.contains_key(*a))
        .map(<[u8]>::to_vec)
        .collect();
    let mut names: BTreeSet<Vec<u8>> = BTreeSet::new();
    if opts.subscribed {
        names.extend(tree.subscribed.iter().cloned());
        if opts.recursive_match {
            for s in &tree.subscribed {
                names.extend(ancestors(s, delim).map(<[u8]>::to_vec));
            }
        }
    } else {
        names.extend(tree.folders.keys().cloned());
        names.extend(implied.iter().cloned());
    }
    let mut out = Vec::new();
    for name in names {
        // A name that is no modified UTF-7 (a store's literal, say) is never
        // shown: the session writes names as valid astrings.
        if !patterns.iter().any(|p| matches(p, &name, delim)) || mutf7::decode(&name).is_none() {
            continue;
        }
        let is_sub = tree.subscribed.contains(&name);
        let sub_child = has_below_set(&tree.subscribed, &name, delim);
        if opts.subscribed && !is_sub && !(opts.recursive_match && sub_child) {
            continue;
        }
        let listed = tree.folders.get(&name);
        let mut attrs: Vec<FlagNameAttribute<'static>> = match listed {
            Some(a) => a
                .iter()
                .filter(|a| {
                    ext_name(a)
                        .is_none_or(|n| !CHILD_INFO.contains(&n.as_str()) && n != "subscribed")
                })
                .cloned()
                .collect(),
            None if tree.complete || implied.contains(&name) => vec![ext("NonExistent")],
            // A subscription whose folder Ferry could not look up.
            None => Vec::new(),
        };
        let special = attrs
            .iter()
            .any(|a| ext_name(a).is_some_and(|n| SPECIAL_USE.contains(&n.as_str())));
        if opts.special_use && !special {
            continue;
        }
        let takes_status = listed.is_some() && selectable(&attrs) && (is_sub || !opts.subscribed);
        if is_sub && (opts.subscribed || opts.return_subscribed) {
            attrs.push(ext("Subscribed"));
        }
        if opts.return_children {
            let has = tree.parents.contains(&name) || has_below(&tree.folders, &name, delim);
            attrs.push(ext(if has { "HasChildren" } else { "HasNoChildren" }));
        }
        out.push(ExtEntry {
            attrs,
            name,
            child_subscribed: opts.recursive_match && sub_child,
            takes_status,
        });
    }
    out
}

/// What Ferry has of the `Old/` folders for one extended LIST.
pub struct OldSources<'a> {
    /// The folders as listed: OLD's `LIST "" *`, or with `copies` NEW's
    /// `LIST` below the prefix; `None` when not asked or OLD did not answer.
    pub tree: Option<&'a [RawEntry]>,
    /// Every `Old/` folder is served from its NEW copy (`tree` is NEW's).
    pub copies: bool,
    /// OLD can be reached: when its tree was not asked for, the root is
    /// taken to have children, as the plain LIST does.
    pub reachable: bool,
    /// OLD's own subscriptions (`LSUB "" *`).
    pub old_lsub: &'a [RawEntry],
    /// NEW's subscriptions below the prefix (those of served copies).
    pub new_lsub: &'a [RawEntry],
    /// Ferry's choices, which win.
    pub kept: &'a Choices,
}

/// The `Old/` tree in client names: the root (a folder of folders that only
/// Ferry has), OLD's folders without special use, the subscriptions of both
/// stores and Ferry's choices, merged as LSUB merges them.
pub fn old_tree(map: &NameMap, src: OldSources<'_>) -> Tree {
    let root = map.root().to_vec();
    let mut t = Tree::default();
    match src.tree {
        Some(entries) => {
            t.complete = true;
            for e in entries {
                let name = if src.copies {
                    (map.is_reserved(&e.name) && e.name != root && map.new_is_identity())
                        .then(|| e.name.clone())
                } else {
                    map.old_to_client(&e.name)
                };
                if let Some(name) = name {
                    t.folders.insert(name, old_attrs(&e.attrs));
                }
            }
        }
        None if src.reachable => {
            t.parents.insert(root.clone());
        }
        None => {}
    }
    t.folders
        .insert(root.clone(), vec![FlagNameAttribute::Noselect]);
    for e in src.old_lsub {
        if let Some(name) = map.old_to_client(&e.name) {
            t.subscribed.insert(name);
        }
    }
    for e in src.new_lsub {
        if let Some(name) = map.new_subscription_to_client(&e.name)
            && name != root
        {
            t.subscribed.insert(name);
        }
    }
    for (name, on) in src.kept {
        if *on {
            t.subscribed.insert(name.clone());
        } else {
            t.subscribed.remove(name);
        }
    }
    t
}

/// NEW's own folders (the prefix excluded) from its plain `LIST "" *` and
/// `LSUB "" *`, for a NEW without LIST-EXTENDED.
pub fn new_tree(map: &NameMap, list: &[RawEntry], lsub: &[RawEntry]) -> Tree {
    let mut t = Tree {
        complete: true,
        ..Tree::default()
    };
    for e in list {
        if let Some(name) = map.new_to_client(&e.name) {
            t.folders.insert(name, e.attrs.clone());
        }
    }
    for e in lsub {
        if let Some(name) = map.new_to_client(&e.name) {
            t.subscribed.insert(name);
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::super::tests::{map, raw};
    use super::*;

    /// As `merge::tests::show`, with CHILDINFO and whether STATUS is asked.
    fn show(entries: &[ExtEntry]) -> Vec<String> {
        entries
            .iter()
            .map(|e| {
                let attrs: Vec<String> = e.attrs.iter().map(|a| a.to_string()).collect();
                format!(
                    "({}) {}{}{}",
                    attrs.join(" "),
                    String::from_utf8_lossy(&e.name),
                    if e.child_subscribed { " CHILDINFO" } else { "" },
                    if e.takes_status { " +status" } else { "" },
                )
            })
            .collect()
    }

    fn pats(p: &[&str]) -> Vec<Vec<u8>> {
        p.iter().map(|p| p.as_bytes().to_vec()).collect()
    }

    fn old_list() -> Vec<RawEntry> {
        vec![
            raw("INBOX", &["HasChildren"]),
            raw("INBOX.Sent", &["HasNoChildren", "Sent"]),
            raw("INBOX.Archive.2019", &["HasNoChildren"]),
            raw("INBOX.Empty", &["Noselect", "HasNoChildren"]),
        ]
    }

    fn tree(kept: &Choices, old_lsub: &[RawEntry], new_lsub: &[RawEntry]) -> Tree {
        let list = old_list();
        old_tree(
            &map(),
            OldSources {
                tree: Some(&list),
                copies: false,
                reachable: true,
                old_lsub,
                new_lsub,
                kept,
            },
        )
    }

    #[test]
    fn old_folders_lose_special_use_and_gain_child_information_when_asked() {
        let t = tree(&Choices::new(), &[], &[]);
        let children = Options {
            return_children: true,
            ..Options::default()
        };
        assert_eq!(
            show(&select(&t, &pats(&["*"]), b'/', &children)),
            [
                "(\\Noselect \\HasChildren) Old",
                "(\\NonExistent \\HasChildren) Old/Archive",
                "(\\HasNoChildren) Old/Archive/2019 +status",
                "(\\Noselect \\HasNoChildren) Old/Empty",
                "(\\HasNoChildren) Old/INBOX +status",
                "(\\HasNoChildren) Old/Sent +status",
            ]
        );
        // Without CHILDREN, as Dovecot answers an extended LIST: none.
        assert_eq!(
            show(&select(
                &t,
                &pats(&["Old/%", "INBOX"]),
                b'/',
                &Options::default()
            )),
            [
                "(\\NonExistent) Old/Archive",
                "(\\Noselect) Old/Empty",
                "() Old/INBOX +status",
                "() Old/Sent +status",
            ]
        );
        // No Old/ folder has a special use.
        let special = Options {
            special_use: true,
            ..Options::default()
        };
        assert!(select(&t, &pats(&["*"]), b'/', &special).is_empty());
    }

    #[test]
    fn subscriptions_of_both_stores_and_ferrys_choices() {
        let kept: Choices = [
            (b"Old/Projects/X".to_vec(), true),
            (b"Old/INBOX".to_vec(), false),
        ]
        .into();
        let old_lsub = [raw("INBOX", &[]), raw("INBOX.Sent", &[])];
        let new_lsub = [
            raw("Old/Archive/2019", &[]),
            raw("Work", &[]),
            raw("Old/bad&name", &[]),
        ];
        let t = tree(&kept, &old_lsub, &new_lsub);
        let subscribed: Vec<&[u8]> = t.subscribed.iter().map(Vec::as_slice).collect();
        assert_eq!(
            subscribed,
            [
                &b"Old/Archive/2019"[..],
                b"Old/Projects/X",
                b"Old/Sent",
                b"Old/bad&name"
            ]
        );
        let sel = Options {
            subscribed: true,
            ..Options::default()
        };
        assert_eq!(
            show(&select(&t, &pats(&["*"]), b'/', &sel)),
            [
                "(\\Subscribed) Old/Archive/2019 +status",
                "(\\NonExistent \\Subscribed) Old/Projects/X",
                "(\\Subscribed) Old/Sent +status",
            ]
        );
        let recursive = Options {
            subscribed: true,
            recursive_match: true,
            return_children: true,
            ..Options::default()
        };
        assert_eq!(
            show(&select(&t, &pats(&["%", "Old/%"]), b'/', &recursive)),
            [
                "(\\Noselect \\HasChildren) Old CHILDINFO",
                "(\\NonExistent \\HasChildren) Old/Archive CHILDINFO",
                "(\\NonExistent \\HasNoChildren) Old/Projects CHILDINFO",
                "(\\Subscribed \\HasNoChildren) Old/Sent +status",
            ]
        );
        let returned = Options {
            return_subscribed: true,
            ..Options::default()
        };
        assert_eq!(
            show(&select(&t, &pats(&["Old/S*", "Old/I*"]), b'/', &returned)),
            ["() Old/INBOX +status", "(\\Subscribed) Old/Sent +status"]
        );
    }

    #[test]
    fn a_parent_listed_for_recursivematch_alone_gets_no_status() {
        let list = [raw("INBOX.Archive", &[]), raw("INBOX.Archive.2019", &[])];
        let kept: Choices = [(b"Old/Archive/2019".to_vec(), true)].into();
        let t = old_tree(
            &map(),
            OldSources {
                tree: Some(&list),
                copies: false,
                reachable: true,
                old_lsub: &[],
                new_lsub: &[],
                kept: &kept,
            },
        );
        let recursive = Options {
            subscribed: true,
            recursive_match: true,
            ..Options::default()
        };
        assert_eq!(
            show(&select(&t, &pats(&["Old/*"]), b'/', &recursive)),
            [
                "() Old/Archive CHILDINFO",
                "(\\Subscribed) Old/Archive/2019 +status"
            ]
        );
        let sub = |attrs: &[&'static str]| raw("x", attrs).attrs;
        assert!(takes_status(&sub(&["Subscribed"]), true));
        assert!(!takes_status(&sub(&[]), true) && takes_status(&sub(&[]), false));
        assert!(!takes_status(&sub(&["NonExistent", "Subscribed"]), true));
        assert!(!takes_status(&sub(&["Noselect"]), false));
    }

    #[test]
    fn the_root_alone_needs_no_old() {
        let kept: Choices = [(b"Old".to_vec(), true)].into();
        let not_asked = |reachable| {
            old_tree(
                &map(),
                OldSources {
                    tree: None,
                    copies: false,
                    reachable,
                    old_lsub: &[],
                    new_lsub: &[],
                    kept: &kept,
                },
            )
        };
        let opts = Options {
            return_children: true,
            return_subscribed: true,
            ..Options::default()
        };
        assert_eq!(
            show(&select(&not_asked(true), &pats(&["%"]), b'/', &opts)),
            ["(\\Noselect \\Subscribed \\HasChildren) Old"]
        );
        assert_eq!(
            show(&select(&not_asked(false), &pats(&["%"]), b'/', &opts)),
            ["(\\Noselect \\Subscribed \\HasNoChildren) Old"]
        );
    }

    #[test]
    fn served_copies_stand_for_the_old_tree() {
        let new = [
            raw("Old", &["HasChildren"]),
            raw("Old/Sent", &["HasNoChildren", "Sent"]),
            raw("Old/INBOX", &["HasNoChildren"]),
        ];
        let new_lsub = [raw("Old/Sent", &[])];
        let t = old_tree(
            &map(),
            OldSources {
                tree: Some(&new),
                copies: true,
                reachable: true,
                old_lsub: &[],
                new_lsub: &new_lsub,
                kept: &Choices::new(),
            },
        );
        let opts = Options {
            return_subscribed: true,
            ..Options::default()
        };
        assert_eq!(
            show(&select(&t, &pats(&["*"]), b'/', &opts)),
            [
                "(\\Noselect) Old",
                "() Old/INBOX +status",
                "(\\Subscribed) Old/Sent +status"
            ]
        );
    }

    #[test]
    fn new_without_list_extended_is_selected_from_list_and_lsub() {
        let list = [
            raw("INBOX", &["HasNoChildren"]),
            raw("Sent", &["HasNoChildren", "Sent"]),
            raw("Work", &["Noselect", "HasChildren"]),
            raw("Work/2024", &["HasNoChildren"]),
            raw("Old/Copy", &["HasNoChildren"]),
        ];
        let lsub = [raw("Sent", &[]), raw("Work/2024", &[]), raw("Gone", &[])];
        let t = new_tree(&map(), &list, &lsub);
        let sel = Options {
            subscribed: true,
            recursive_match: true,
            ..Options::default()
        };
        assert_eq!(
            show(&select(&t, &pats(&["%"]), b'/', &sel)),
            [
                "(\\NonExistent \\Subscribed) Gone",
                "(\\Sent \\Subscribed) Sent +status",
                "(\\Noselect) Work CHILDINFO",
            ]
        );
        let special = Options {
            special_use: true,
            ..Options::default()
        };
        assert_eq!(
            show(&select(&t, &pats(&["*"]), b'/', &special)),
            ["(\\Sent) Sent +status"]
        );
    }
}
