//! Subordinate id ranges: which host ids `--userns auto` may hand out, cut into
//! [`RANGE_SIZE`] slots. Parsing is pure; [`Pool::load`] reads the files.

use std::path::Path;

use super::{spans_overlap, IdRange, UsernsError, RANGE_SIZE};

/// The system files, in shadow-utils' `owner:start:count` format.
pub const SUBUID: &str = "/etc/subuid";
pub const SUBGID: &str = "/etc/subgid";
/// The owner whose entries `--userns auto` uses (podman's equivalent is `containers`).
pub const DEFAULT_OWNER: &str = "cgsight";
/// Used when the owner has no entries: far above ordinary users (< 65536) and systemd's
/// dynamic users, inside the span systemd reserves for containers (0x80000-0x6FFFFFFF).
pub const BUILTIN_START: u32 = 0x1000_0000;
/// 4096 containers' worth.
pub const BUILTIN_COUNT: u32 = 0x1000_0000;

/// One `owner:start:count` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubidEntry {
    pub owner: String,
    pub start: u32,
    pub count: u32,
}

/// Parses a subuid/subgid file; `path` only names it in errors. Blank and `#` lines are skipped.
pub fn parse(path: &Path, text: &str) -> Result<Vec<SubidEntry>, UsernsError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |reason: &str| UsernsError::Subid {
            path: path.to_owned(),
            line: i + 1,
            reason: format!("{reason}: {line:?}"),
        };
        let mut fields = line.split(':');
        let (Some(owner), Some(start), Some(count), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(bad("expected owner:start:count"));
        };
        let start: u32 = start.parse().map_err(|_| bad("bad start"))?;
        let count: u32 = count.parse().map_err(|_| bad("bad count"))?;
        if owner.is_empty() {
            return Err(bad("empty owner"));
        }
        if u64::from(start) + u64::from(count) > 1 << 32 {
            return Err(bad("range ends past 2^32"));
        }
        out.push(SubidEntry {
            owner: owner.to_owned(),
            start,
            count,
        });
    }
    Ok(out)
}

/// The slots containers are allocated from, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pool {
    pub slots: Vec<IdRange>,
}

/// Whole slots of the entries (in file order).
fn slot_starts<'a>(entries: impl Iterator<Item = &'a SubidEntry>) -> Vec<u32> {
    let mut out = Vec::new();
    for e in entries {
        for k in 0..e.count / RANGE_SIZE {
            // Checked: entries built by hand (not parsed) may claim ids past 2^32.
            let end = u64::from(e.start) + u64::from(k + 1) * u64::from(RANGE_SIZE);
            match e.start.checked_add(k * RANGE_SIZE) {
                Some(s) if end <= 1 << 32 => out.push(s),
                _ => break,
            }
        }
    }
    out
}

impl Pool {
    /// The pool for `owner` (matched by name or by any of `keys`, e.g. its numeric uid): the
    /// owner's subuid slots paired in order with its subgid slots. Without entries for the owner
    /// in either file, the built-in range minus every slot another entry overlaps.
    pub fn from_entries(
        owner: &str,
        keys: &[String],
        uids: &[SubidEntry],
        gids: &[SubidEntry],
    ) -> Result<Pool, UsernsError> {
        let mine = |e: &&SubidEntry| e.owner == owner || keys.contains(&e.owner);
        let (u, g) = (
            slot_starts(uids.iter().filter(mine)),
            slot_starts(gids.iter().filter(mine)),
        );
        let has_u = uids.iter().any(|e| mine(&e));
        let has_g = gids.iter().any(|e| mine(&e));
        if has_u || has_g {
            if u.is_empty() || g.is_empty() {
                return Err(UsernsError::Pool {
                    owner: owner.to_owned(),
                    reason: format!(
                        "needs at least {RANGE_SIZE} ids in both {SUBUID} and {SUBGID} \
                         (found {} and {} whole ranges)",
                        u.len(),
                        g.len()
                    ),
                });
            }
            let slots = u
                .into_iter()
                .zip(g)
                .map(|(uid, gid)| IdRange {
                    uid,
                    gid,
                    count: RANGE_SIZE,
                })
                .collect();
            return Ok(Pool { slots });
        }
        let taken = |s: u32, list: &[SubidEntry]| {
            list.iter()
                .any(|e| spans_overlap(s, RANGE_SIZE, e.start, e.count))
        };
        let slots = slot_starts(std::iter::once(&SubidEntry {
            owner: String::new(),
            start: BUILTIN_START,
            count: BUILTIN_COUNT,
        }))
        .into_iter()
        .filter(|&s| !taken(s, uids) && !taken(s, gids))
        .map(|s| IdRange {
            uid: s,
            gid: s,
            count: RANGE_SIZE,
        })
        .collect();
        Ok(Pool { slots })
    }

    /// Reads the two files (a missing file counts as empty) and builds the pool for `owner`,
    /// also matching entries keyed by the owner's numeric uid when the user exists.
    pub fn load(owner: &str, subuid: &Path, subgid: &Path) -> Result<Pool, UsernsError> {
        let read = |p: &Path| match std::fs::read_to_string(p) {
            Ok(t) => parse(p, &t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(UsernsError::io(p, e)),
        };
        let keys: Vec<String> = nix::unistd::User::from_name(owner)
            .ok()
            .flatten()
            .map(|u| vec![u.uid.to_string()])
            .unwrap_or_default();
        Pool::from_entries(owner, &keys, &read(subuid)?, &read(subgid)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(t: &str) -> Vec<SubidEntry> {
        parse(Path::new("t"), t).unwrap()
    }

    #[test]
    fn parses_and_rejects() {
        let e = p("# c\n\nalice:100000:65536\n1001:200000:131072\n");
        assert_eq!(e.len(), 2);
        assert_eq!(e[1].owner, "1001");
        assert_eq!(e[1].count, 131072);
        for bad in [
            "a:1",
            "a:x:1",
            "a:1:2:3",
            ":1:2",
            "a:4294967295:2",
            "a:-1:5",
        ] {
            let err = parse(Path::new("f"), bad).unwrap_err().to_string();
            assert!(err.starts_with("f: line 1:"), "{bad}: {err}");
        }
    }

    #[test]
    fn owner_slots_pair_uid_and_gid() {
        let u = p("other:0:65536\ncgsight:100000:131072\n");
        let g = p("1500:300000:200000\n");
        let pool = Pool::from_entries("cgsight", &["1500".into()], &u, &g).unwrap();
        assert_eq!(pool.slots.len(), 2, "min(2 uid slots, 3 gid slots)");
        assert_eq!((pool.slots[1].uid, pool.slots[1].gid), (165536, 365536));
    }

    #[test]
    fn owner_with_too_few_ids_is_an_error() {
        let u = p("cgsight:100000:1000\n");
        let err = Pool::from_entries("cgsight", &[], &u, &[]).unwrap_err();
        assert!(err.to_string().contains("at least 65536"), "{err}");
    }

    #[test]
    fn builtin_skips_other_owners_ranges() {
        let u = p(&format!("bob:{}:10\n", BUILTIN_START + RANGE_SIZE));
        let pool = Pool::from_entries("cgsight", &[], &u, &[]).unwrap();
        assert_eq!(pool.slots.len() as u32, BUILTIN_COUNT / RANGE_SIZE - 1);
        assert_eq!(pool.slots[0].uid, BUILTIN_START);
        assert_eq!(pool.slots[1].uid, BUILTIN_START + 2 * RANGE_SIZE);
    }
}
