//! Where each OLD folder is copied to on NEW.
//!
//! - `archive` (the default): under the archive prefix, by the names the
//!   merged view shows (`INBOX.Archive.2019` → `Old/Archive/2019`), so the
//!   user sees the same tree before and after the cutover.
//! - `merge`: INBOX into INBOX, a special-use folder (RFC 6154) into NEW's
//!   folder of the same use, anything else by its path — what imapsync's
//!   `--automap` does.
//!
//! An explicit map (`"Sent Items" = "Sent"`, OLD's path below its prefix and
//! NEW's name, both as a client sees them) wins over either. A NEW folder
//! that exists is reused; nothing is ever renamed or emptied.

use std::collections::HashMap;

use crate::{mutf7, namespace::NameMap};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Archive,
    Merge,
}

/// The special uses (RFC 6154) a folder is matched by in merge mode.
const USES: [&str; 6] = [
    "\\Sent",
    "\\Drafts",
    "\\Trash",
    "\\Junk",
    "\\Archive",
    "\\Flagged",
];

/// A folder as a store's LIST shows it: its wire name and attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub name: Vec<u8>,
    pub attributes: Vec<String>,
}

impl Listed {
    fn special_use(&self) -> Option<&'static str> {
        USES.into_iter()
            .find(|u| self.attributes.iter().any(|a| a.eq_ignore_ascii_case(u)))
    }
}

/// One OLD folder and where it goes on NEW (wire names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub old: Vec<u8>,
    pub new: Vec<u8>,
    /// The copy is the merged view's own `Old/…` name on NEW (archive mode,
    /// NEW's layout like the client's): the merged view may serve the
    /// folder from it once it is verified.
    pub servable: bool,
}

/// Where OLD's folders go. `explicit` maps OLD paths to NEW names in UTF-8
/// with the client's delimiter; `old` and `new` are the stores' LISTs.
/// Folders the merged view hides (and `\Noselect` ones) are not copied.
pub fn plan(
    mode: Mode,
    names: &NameMap,
    explicit: &HashMap<String, String>,
    old: &[Listed],
    new: &[Listed],
) -> Vec<Route> {
    let by_use: HashMap<&str, &[u8]> = new
        .iter()
        .filter_map(|f| Some((f.special_use()?, f.name.as_slice())))
        .collect();
    old.iter()
        .filter(|f| {
            !f.attributes
                .iter()
                .any(|a| a.eq_ignore_ascii_case("\\Noselect"))
        })
        .filter_map(|f| {
            let path = names.merged_path(&f.name)?;
            let shown = mutf7::decode(&path).unwrap_or_default();
            let new = if let Some(to) = explicit.get(&shown) {
                let client = mutf7::encode(to).into_bytes();
                names.new_name(&client)?
            } else {
                match mode {
                    Mode::Archive => names.archive_name(&f.name)?,
                    Mode::Merge => match f.special_use().and_then(|u| by_use.get(u)) {
                        Some(same_use) => same_use.to_vec(),
                        None => path,
                    },
                }
            };
            let servable = names.old_to_client(&f.name).as_ref() == Some(&new);
            Some(Route {
                old: f.name.clone(),
                new,
                servable,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::namespace::Layout;

    fn listed(name: &str, attributes: &[&str]) -> Listed {
        Listed {
            name: name.as_bytes().to_vec(),
            attributes: attributes.iter().map(|a| a.to_string()).collect(),
        }
    }

    fn names() -> NameMap {
        NameMap::new("Old/", '/', Layout::legacy(), Layout::slash())
    }

    fn old() -> Vec<Listed> {
        vec![
            listed("INBOX", &[]),
            listed("INBOX.Sent Items", &["\\Sent"]),
            listed("INBOX.Archive", &["\\Noselect"]),
            listed("INBOX.Archive.2019", &[]),
            listed("INBOX.&U9dP4Xux-.&eBR6dluk-", &[]),
            // Hidden by the merged view: never copied.
            listed("INBOX.INBOX", &[]),
        ]
    }

    fn new() -> Vec<Listed> {
        vec![
            listed("INBOX", &[]),
            listed("Sent", &["\\Sent"]),
            listed("Trash", &["\\Trash"]),
        ]
    }

    fn routes(mode: Mode, explicit: &[(&str, &str)]) -> Vec<(String, String)> {
        let explicit = explicit
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        plan(mode, &names(), &explicit, &old(), &new())
            .into_iter()
            .map(|r| {
                (
                    String::from_utf8(r.old).unwrap(),
                    String::from_utf8(r.new).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn archive_mode_keeps_the_merged_views_names() {
        assert_eq!(
            routes(Mode::Archive, &[]),
            [
                ("INBOX", "Old/INBOX"),
                ("INBOX.Sent Items", "Old/Sent Items"),
                ("INBOX.Archive.2019", "Old/Archive/2019"),
                ("INBOX.&U9dP4Xux-.&eBR6dluk-", "Old/&U9dP4Xux-/&eBR6dluk-"),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
    }

    #[test]
    fn only_copies_under_the_merged_views_own_names_are_servable() {
        let servable = |mode, explicit: &[(&str, &str)]| {
            let explicit = explicit
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
            plan(mode, &names(), &explicit, &old(), &new())
                .iter()
                .filter(|r| r.servable)
                .count()
        };
        assert_eq!(servable(Mode::Archive, &[]), 4);
        assert_eq!(servable(Mode::Merge, &[]), 0);
        assert_eq!(
            servable(Mode::Archive, &[("Archive/2019", "Archives/2019")]),
            3
        );
        // A NEW layout unlike the client's: the names differ, nothing is.
        let dotted = NameMap::new("Old/", '/', Layout::legacy(), Layout::legacy());
        assert!(
            plan(Mode::Archive, &dotted, &HashMap::new(), &old(), &new())
                .iter()
                .all(|r| !r.servable)
        );
    }

    #[test]
    fn merge_mode_follows_inbox_special_use_and_paths() {
        assert_eq!(
            routes(Mode::Merge, &[]),
            [
                ("INBOX", "INBOX"),
                ("INBOX.Sent Items", "Sent"),
                ("INBOX.Archive.2019", "Archive/2019"),
                ("INBOX.&U9dP4Xux-.&eBR6dluk-", "&U9dP4Xux-/&eBR6dluk-"),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
    }

    #[test]
    fn the_explicit_map_wins_in_utf8() {
        let r = routes(
            Mode::Archive,
            &[
                ("Archive/2019", "Archives/Year 2019"),
                ("受信箱/研究室", "研究室"),
            ],
        );
        assert!(
            r.contains(&("INBOX.Archive.2019".into(), "Archives/Year 2019".into())),
            "{r:?}"
        );
        assert!(
            r.contains(&("INBOX.&U9dP4Xux-.&eBR6dluk-".into(), "&eBR6dluk-".into())),
            "{r:?}"
        );
        assert!(r.contains(&("INBOX".into(), "Old/INBOX".into())), "{r:?}");
    }
}
