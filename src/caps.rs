//! Capabilities: what a store offers, and what Ferry shows its clients.
//!
//! A list is kept as its names on the wire (written as they are in
//! `* CAPABILITY` and `[CAPABILITY …]`) with the few capabilities Ferry acts
//! on found once, when the list is made, as bits: asking costs no string
//! comparison. Thousands of sessions see the same few lists, so equal lists
//! share one allocation.

use std::sync::{Arc, Mutex};

use imap_codec::imap_types::{response::Capability, status::StatusDataItemName};

/// A capability Ferry acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Cap {
    LiteralPlus,
    Unselect,
    Multiappend,
    UidPlus,
    Namespace,
    LoginDisabled,
    SaslIr,
    Id,
    Condstore,
    Qresync,
    Enable,
    Idle,
    Sort,
    SortDisplay,
    /// Any `THREAD=` algorithm.
    Thread,
    Esearch,
    Esort,
    Searchres,
    Within,
    ContextSearch,
    Binary,
    Catenate,
    UrlPartial,
    StatusSize,
    Savedate,
    Preview,
    SearchFuzzy,
    ListExtended,
    ListStatus,
    SpecialUse,
    Utf8Accept,
    Move,
    Imap4rev2,
    QuotaResMessage,
    QuotaResStorage,
}

impl Cap {
    const ALL: [(Cap, &'static str); 35] = [
        (Cap::LiteralPlus, "LITERAL+"),
        (Cap::Unselect, "UNSELECT"),
        (Cap::Multiappend, "MULTIAPPEND"),
        (Cap::UidPlus, "UIDPLUS"),
        (Cap::Namespace, "NAMESPACE"),
        (Cap::LoginDisabled, "LOGINDISABLED"),
        (Cap::SaslIr, "SASL-IR"),
        (Cap::Id, "ID"),
        (Cap::Condstore, "CONDSTORE"),
        (Cap::Qresync, "QRESYNC"),
        (Cap::Enable, "ENABLE"),
        (Cap::Idle, "IDLE"),
        (Cap::Sort, "SORT"),
        (Cap::SortDisplay, "SORT=DISPLAY"),
        (Cap::Thread, "THREAD="),
        (Cap::Esearch, "ESEARCH"),
        (Cap::Esort, "ESORT"),
        (Cap::Searchres, "SEARCHRES"),
        (Cap::Within, "WITHIN"),
        (Cap::ContextSearch, "CONTEXT=SEARCH"),
        (Cap::Binary, "BINARY"),
        (Cap::Catenate, "CATENATE"),
        (Cap::UrlPartial, "URL-PARTIAL"),
        (Cap::StatusSize, "STATUS=SIZE"),
        (Cap::Savedate, "SAVEDATE"),
        (Cap::Preview, "PREVIEW"),
        (Cap::SearchFuzzy, "SEARCH=FUZZY"),
        (Cap::ListExtended, "LIST-EXTENDED"),
        (Cap::ListStatus, "LIST-STATUS"),
        (Cap::SpecialUse, "SPECIAL-USE"),
        (Cap::Utf8Accept, "UTF8=ACCEPT"),
        (Cap::Move, "MOVE"),
        (Cap::Imap4rev2, "IMAP4rev2"),
        // RFC 9208: the STATUS items DELETED and DELETED-STORAGE.
        (Cap::QuotaResMessage, "QUOTA=RES-MESSAGE"),
        (Cap::QuotaResStorage, "QUOTA=RES-STORAGE"),
    ];

    fn bit(self) -> u64 {
        1 << self as u8
    }

    fn all() -> impl Iterator<Item = Cap> {
        Cap::ALL.iter().map(|(c, _)| *c)
    }

    /// Whether `name` (any case) is this capability; `THREAD=` stands for
    /// every threading algorithm.
    fn names(self, name: &str) -> bool {
        let (_, wire) = Cap::ALL[self as usize];
        match wire.strip_suffix('=') {
            Some(prefix) => {
                name.get(..wire.len())
                    .is_some_and(|p| p.eq_ignore_ascii_case(wire))
                    && name.len() > prefix.len() + 1
            }
            None => wire.eq_ignore_ascii_case(name),
        }
    }

    /// The name on the wire (`THREAD=` for the family).
    pub fn name(self) -> &'static str {
        Cap::ALL[self as usize].1
    }
}

/// A set of the capabilities Ferry acts on, one bit each: what a store
/// offers, what a command needs, what a client enabled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CapSet(u64);

impl CapSet {
    pub fn has(self, cap: Cap) -> bool {
        self.0 & cap.bit() != 0
    }

    pub fn insert(&mut self, cap: Cap) {
        self.0 |= cap.bit();
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether every capability in `other` is here too.
    pub fn covers(self, other: CapSet) -> bool {
        other.0 & !self.0 == 0
    }

    /// The capabilities in the set, in [`Cap`]'s order.
    pub fn iter(self) -> impl Iterator<Item = Cap> {
        Cap::all().filter(move |c| self.has(*c))
    }

    /// The first capability here that `caps` does not offer.
    pub fn missing(self, caps: &Caps) -> Option<Cap> {
        self.iter().find(|c| !caps.has(*c))
    }
}

/// A capability list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caps {
    /// The names, space-separated, as they go on the wire.
    names: Arc<str>,
    known: CapSet,
}

impl Caps {
    /// The list of these names, in this order.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Caps {
        let mut joined = String::new();
        let mut known = CapSet::default();
        for name in names {
            if !joined.is_empty() {
                joined.push(' ');
            }
            joined.push_str(name);
            for cap in Cap::all().filter(|c| c.names(name)) {
                known.insert(cap);
            }
        }
        static SHARED: Mutex<Vec<Arc<str>>> = Mutex::new(Vec::new());
        Caps {
            names: shared(&SHARED, joined),
            known,
        }
    }

    /// A store's list as imap-codec decoded it.
    pub fn from_decoded(caps: &[Capability<'_>]) -> Caps {
        let names: Vec<String> = caps.iter().map(ToString::to_string).collect();
        Caps::from_names(names.iter().map(String::as_str))
    }

    pub fn has(&self, cap: Cap) -> bool {
        self.known.has(cap)
    }

    /// Whether a STATUS asking for `item` is one the store advertised: the
    /// RFC 3501 items always, the others with their extension.
    pub fn offers_status(&self, item: &StatusDataItemName) -> bool {
        use StatusDataItemName as S;
        match item {
            S::Messages | S::Recent | S::UidNext | S::UidValidity | S::Unseen => true,
            S::Size => self.has(Cap::StatusSize),
            S::HighestModSeq => self.has(Cap::Condstore),
            S::Deleted => self.has(Cap::Imap4rev2) || self.has(Cap::QuotaResMessage),
            S::DeletedStorage => self.has(Cap::QuotaResStorage),
        }
    }

    /// Each name as it is on the wire.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.split(' ').filter(|n| !n.is_empty())
    }

    /// The names, space-separated.
    pub fn joined(&self) -> &str {
        &self.names
    }

    /// The names for which `keep` says yes (given in upper case).
    pub fn filter(&self, mut keep: impl FnMut(&str) -> bool) -> Caps {
        let kept: Vec<&str> = self
            .names()
            .filter(|n| keep(&n.to_ascii_uppercase()))
            .collect();
        Caps::from_names(kept)
    }
}

/// One shared copy of `value` per distinct value (up to 32 are kept).
fn shared(cache: &Mutex<Vec<Arc<str>>>, value: String) -> Arc<str> {
    let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(known) = cache.iter().find(|known| ***known == *value) {
        return known.clone();
    }
    let value: Arc<str> = value.into();
    if cache.len() < 32 {
        cache.push(value.clone());
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_capabilities_are_found_once_in_any_case() {
        let c = Caps::from_names(["IMAP4rev1", "literal+", "UNSELECT", "THREAD=REFS"]);
        assert!(c.has(Cap::LiteralPlus) && c.has(Cap::Unselect));
        assert!(!c.has(Cap::Multiappend) && !c.has(Cap::UidPlus));
        assert!(c.has(Cap::Thread) && !c.has(Cap::Sort));
        assert!(!Caps::from_names(["THREAD="]).has(Cap::Thread));
        assert!(
            Cap::ALL
                .iter()
                .enumerate()
                .all(|(i, (c, _))| *c as usize == i)
        );
        assert_eq!(c.joined(), "IMAP4rev1 literal+ UNSELECT THREAD=REFS");
        let f = c.filter(|n| n != "UNSELECT");
        assert_eq!(f.joined(), "IMAP4rev1 literal+ THREAD=REFS");
        assert!(!f.has(Cap::Unselect));
    }

    #[test]
    fn status_items_need_their_extension() {
        use StatusDataItemName as S;
        let plain = Caps::from_names(["IMAP4rev1"]);
        let dovecot = Caps::from_names(["IMAP4rev1", "CONDSTORE", "STATUS=SIZE", "LIST-STATUS"]);
        assert!(plain.offers_status(&S::Unseen) && dovecot.offers_status(&S::Unseen));
        for item in [S::Size, S::HighestModSeq, S::Deleted, S::DeletedStorage] {
            assert!(!plain.offers_status(&item), "{item:?}");
        }
        assert!(dovecot.offers_status(&S::Size) && dovecot.offers_status(&S::HighestModSeq));
        assert!(!dovecot.offers_status(&S::Deleted));
        assert!(dovecot.has(Cap::ListStatus) && !dovecot.has(Cap::ListExtended));
    }

    #[test]
    fn equal_lists_share_one_allocation() {
        let a = Caps::from_names(["IMAP4rev1", "IDLE"]);
        let b = Caps::from_names(["IMAP4rev1", "IDLE"]);
        assert!(Arc::ptr_eq(&a.names, &b.names));
    }
}
