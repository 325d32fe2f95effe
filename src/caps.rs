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

/// Lists derived from lists, by the list they were derived from
/// ([`Caps::derived`]).
pub type Derived = Mutex<Vec<(Arc<str>, Caps)>>;

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
        Caps::from_listed(names)
    }

    /// A store's list as imap-codec decoded it.
    pub fn from_decoded(caps: &[Capability<'_>]) -> Caps {
        Caps::from_listed(caps)
    }

    /// The list of these names, written as they go on the wire. Every
    /// login sees one of a few lists (a store's, before and after login,
    /// and what Ferry shows): each distinct list is read for the
    /// capabilities Ferry acts on once, and shares one allocation.
    fn from_listed<T: std::fmt::Display>(names: impl IntoIterator<Item = T>) -> Caps {
        use std::fmt::Write;
        let mut joined = String::new();
        for name in names {
            if !joined.is_empty() {
                joined.push(' ');
            }
            let _ = write!(joined, "{name}");
        }
        static SEEN: Mutex<Vec<Caps>> = Mutex::new(Vec::new());
        let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(known) = seen.iter().find(|c| *c.names == *joined) {
            return known.clone();
        }
        let mut known = CapSet::default();
        for name in joined.split(' ') {
            for cap in Cap::all().filter(|c| c.names(name)) {
                known.insert(cap);
            }
        }
        let caps = Caps {
            names: joined.into(),
            known,
        };
        // Bounded: a store that varies its list only misses the cache.
        if seen.len() < 32 {
            seen.push(caps.clone());
        }
        caps
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

    /// `derive(self)`, worked out once per distinct list and kept in
    /// `cache` (the caller's, one per derivation): every login to a store
    /// shows its clients the same list made from the store's.
    pub fn derived(&self, cache: &Derived, derive: impl FnOnce(&Caps) -> Caps) -> Caps {
        let lock = || cache.lock().unwrap_or_else(|p| p.into_inner());
        // Lists are shared per distinct list, so the same list is the same
        // allocation; the entry keeps it alive, so its address is not reused.
        if let Some((_, out)) = lock()
            .iter()
            .find(|(from, _)| Arc::ptr_eq(from, &self.names))
        {
            return out.clone();
        }
        let out = derive(self);
        let mut seen = lock();
        if seen.len() < 32 {
            seen.push((self.names.clone(), out.clone()));
        }
        out
    }

    /// The names for which `keep` says yes (given in upper case).
    pub fn filter(&self, mut keep: impl FnMut(&str) -> bool) -> Caps {
        let mut upper = String::new();
        let kept: Vec<&str> = self
            .names()
            .filter(|n| {
                upper.clear();
                upper.push_str(n);
                upper.make_ascii_uppercase();
                keep(&upper)
            })
            .collect();
        Caps::from_names(kept)
    }
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
        // A list seen before keeps what was found in it.
        assert!(a.has(Cap::Idle) && b.has(Cap::Idle) && !b.has(Cap::Move));
        let c = Caps::from_names(["imap4rev1", "IDLE"]);
        assert!(!Arc::ptr_eq(&a.names, &c.names) && c.has(Cap::Idle));
    }
}
