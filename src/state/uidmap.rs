//! Which OLD messages are on NEW, and under which NEW UIDs: runs of
//! consecutive OLD UIDs that were appended in order, so a folder of 10⁸
//! messages copied in one go is one run, not 10⁸ rows.

use std::collections::BTreeMap;

/// OLD UIDs `first..=last` are on NEW as `new_first..`, one for one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub first: u32,
    pub last: u32,
    pub new_first: u32,
}

impl Run {
    fn new_uid(&self, old: u32) -> Option<u32> {
        (self.first..=self.last)
            .contains(&old)
            .then(|| self.new_first + (old - self.first))
    }

    /// `(old, new)` continues this run.
    fn extends(&self, old: u32, new: u32) -> bool {
        self.last.checked_add(1) == Some(old)
            && self.new_first.checked_add(self.last - self.first + 1) == Some(new)
    }
}

/// The copies of one OLD folder (one UIDVALIDITY), keyed by each run's first
/// OLD UID.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UidMap {
    runs: BTreeMap<u32, Run>,
}

impl UidMap {
    pub fn from_runs(runs: impl IntoIterator<Item = Run>) -> Self {
        let mut map = UidMap::default();
        for r in runs {
            map.runs.insert(r.first, r);
        }
        map
    }

    /// The NEW UID OLD's `old` was copied to, if it was.
    pub fn new_uid(&self, old: u32) -> Option<u32> {
        self.runs
            .range(..=old)
            .next_back()
            .and_then(|(_, r)| r.new_uid(old))
    }

    pub fn contains(&self, old: u32) -> bool {
        self.new_uid(old).is_some()
    }

    /// Records that `old` is on NEW as `new`; `false` if `old` was already
    /// recorded (under any NEW UID): nothing is ever recorded twice.
    pub fn insert(&mut self, old: u32, new: u32) -> bool {
        if self.contains(old) {
            return false;
        }
        let before = self.runs.range(..old).next_back().map(|(_, r)| *r);
        let after = old
            .checked_add(1)
            .and_then(|next| self.runs.get(&next).copied());
        match (before, after) {
            (Some(b), Some(a))
                if b.extends(old, new) && new.checked_add(1) == Some(a.new_first) =>
            {
                // Closes the gap between two runs.
                self.runs.remove(&a.first);
                self.runs.insert(b.first, Run { last: a.last, ..b });
            }
            (Some(b), _) if b.extends(old, new) => {
                self.runs.insert(b.first, Run { last: old, ..b });
            }
            (_, Some(a)) if new.checked_add(1) == Some(a.new_first) => {
                self.runs.remove(&a.first);
                self.runs.insert(
                    old,
                    Run {
                        first: old,
                        last: a.last,
                        new_first: new,
                    },
                );
            }
            _ => {
                self.runs.insert(
                    old,
                    Run {
                        first: old,
                        last: old,
                        new_first: new,
                    },
                );
            }
        }
        true
    }

    /// Forgets `old` (its copy was removed from NEW), splitting its run.
    pub fn remove(&mut self, old: u32) -> bool {
        let Some(run) = self
            .runs
            .range(..=old)
            .next_back()
            .map(|(_, r)| *r)
            .filter(|r| r.new_uid(old).is_some())
        else {
            return false;
        };
        self.runs.remove(&run.first);
        if run.first < old {
            self.runs.insert(
                run.first,
                Run {
                    last: old - 1,
                    ..run
                },
            );
        }
        if old < run.last {
            let first = old + 1;
            self.runs.insert(
                first,
                Run {
                    first,
                    last: run.last,
                    new_first: run.new_first + (first - run.first),
                },
            );
        }
        true
    }

    pub fn runs(&self) -> impl Iterator<Item = &Run> {
        self.runs.values()
    }

    /// How many OLD messages are recorded.
    pub fn len(&self) -> u64 {
        self.runs
            .values()
            .map(|r| u64::from(r.last - r.first) + 1)
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_copied_in_order_is_one_run() {
        let mut m = UidMap::default();
        for (i, old) in (1..=100_000u32).enumerate() {
            assert!(m.insert(old, 500 + i as u32));
        }
        assert_eq!(m.runs().count(), 1);
        assert_eq!(m.len(), 100_000);
        assert_eq!(m.new_uid(1), Some(500));
        assert_eq!(m.new_uid(100_000), Some(100_499));
        assert_eq!(m.new_uid(100_001), None);
        assert!(!m.insert(7, 9), "recorded twice");
    }

    #[test]
    fn gaps_and_out_of_order_copies_stay_exact() {
        let mut m = UidMap::default();
        // OLD UIDs 1, 2, 5, 6 (3 and 4 expunged) appended as 10..=13.
        for (old, new) in [(1, 10), (2, 11), (5, 12), (6, 13)] {
            m.insert(old, new);
        }
        assert_eq!(m.runs().count(), 2);
        assert_eq!(m.new_uid(5), Some(12));
        assert_eq!(m.new_uid(3), None);
        // A run filled from both sides joins into one.
        let mut m = UidMap::default();
        for (old, new) in [(1, 10), (3, 12), (2, 11)] {
            m.insert(old, new);
        }
        assert_eq!(
            m.runs().collect::<Vec<_>>(),
            [&Run {
                first: 1,
                last: 3,
                new_first: 10
            }]
        );
        // Recorded in any order, every pair reads back as recorded.
        let pairs: Vec<(u32, u32)> = (1..200u32)
            .map(|i| ((i * 7919) % 211 + 1, 1000 + i))
            .collect();
        let mut m = UidMap::default();
        for (old, new) in &pairs {
            m.insert(*old, *new);
        }
        for (old, new) in &pairs {
            assert_eq!(m.new_uid(*old), Some(*new));
        }
        assert_eq!(UidMap::from_runs(m.runs().copied()), m);
    }

    #[test]
    fn the_ends_of_the_uid_space() {
        let mut m = UidMap::default();
        assert!(m.insert(u32::MAX, 1));
        assert!(m.insert(u32::MAX - 1, u32::MAX));
        assert_eq!(m.new_uid(u32::MAX), Some(1));
        assert_eq!(m.runs().count(), 2);
    }

    #[test]
    fn removing_a_copy_splits_its_run() {
        let mut m = UidMap::default();
        for old in 1..=10u32 {
            m.insert(old, old + 100);
        }
        assert!(m.remove(5));
        assert!(!m.remove(5), "removed twice");
        assert!(m.remove(1));
        assert!(m.remove(10));
        assert_eq!(m.len(), 7);
        assert_eq!(m.runs().count(), 2);
        for old in [2, 3, 4, 6, 7, 8, 9] {
            assert_eq!(m.new_uid(old), Some(old + 100));
        }
        for old in [1, 5, 10] {
            assert_eq!(m.new_uid(old), None);
        }
    }
}
