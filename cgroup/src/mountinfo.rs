//! `/proc/<pid>/mountinfo`: the one reader every part of cgsight uses (cgroup layout detection,
//! the views' mount checks, the agent's root device, the launcher's views liveness check).

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::parse;

/// One line of mountinfo, unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_id: u32,
    pub parent_id: u32,
    /// `major:minor` of the filesystem.
    pub dev: String,
    /// The path inside the filesystem this mount exposes (field 4).
    pub root: String,
    pub mount_point: PathBuf,
    /// Per-mount options (`rw,nosuid,…`).
    pub mount_opts: String,
    pub fstype: String,
    pub source: String,
    /// Per-superblock options (for cgroup v1: the controllers).
    pub super_opts: String,
}

/// Reads and parses this process's mountinfo.
pub fn read_self() -> Result<Vec<MountEntry>> {
    read(Path::new("/proc/self/mountinfo"))
}

/// Reads and parses a mountinfo file (e.g. `/proc/PID/mountinfo` of another mount namespace).
pub fn read(path: &Path) -> Result<Vec<MountEntry>> {
    Ok(parse(&parse::read(path)?).collect())
}

/// Parses mountinfo text; malformed lines are skipped (the kernel never writes them, and a
/// truncated read must not fail the whole table).
pub fn parse(text: &str) -> impl Iterator<Item = MountEntry> + '_ {
    text.lines().filter_map(parse_line)
}

/// Is `mp` (as the kernel spells it, i.e. canonical) a mount point in `entries`?
pub fn is_mount_point(entries: &[MountEntry], mp: &Path) -> bool {
    entries.iter().any(|e| e.mount_point == mp)
}

/// The last (topmost) mount at `mp`, which is what a path lookup there reaches.
pub fn top_mount_at<'a>(entries: &'a [MountEntry], mp: &Path) -> Option<&'a MountEntry> {
    entries.iter().rev().find(|e| e.mount_point == mp)
}

fn parse_line(line: &str) -> Option<MountEntry> {
    // id parent maj:min root mount_point opts [optional...] - fstype source superopts
    let (left, right) = line.split_once(" - ")?;
    let mut l = left.split(' ');
    let mount_id = l.next()?.parse().ok()?;
    let parent_id = l.next()?.parse().ok()?;
    let dev = l.next()?.to_owned();
    let root = unescape(l.next()?);
    let mount_point = PathBuf::from(unescape(l.next()?));
    let mount_opts = l.next()?.to_owned();
    let mut r = right.split(' ');
    let fstype = r.next()?.to_owned();
    let source = unescape(r.next()?);
    let super_opts = r.next().unwrap_or_default().to_owned();
    Some(MountEntry {
        mount_id,
        parent_id,
        dev,
        root,
        mount_point,
        mount_opts,
        fstype,
        source,
        super_opts,
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal `\ooo`.
pub fn unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_owned();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                let v = (u32::from(d[0] - b'0') << 6)
                    | (u32::from(d[1] - b'0') << 3)
                    | u32::from(d[2] - b'0');
                out.push(v as u8);
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
77 22 0:50 / /var/lib/cgsight/my\\040fs rw,nosuid,nodev,relatime - fuse.cgsight cgsight rw,user_id=0
not a mountinfo line
78 22 0:51 / /short rw -
";

    #[test]
    fn fields_are_split_and_unescaped() {
        let m: Vec<_> = parse(TEXT).collect();
        assert_eq!(m.len(), 4, "the two malformed lines are skipped: {m:?}");
        assert_eq!(m[0].mount_point, Path::new("/"));
        assert_eq!(m[0].source, "/dev/vda");
        assert_eq!(m[0].fstype, "ext4");
        assert_eq!(m[0].mount_opts, "rw,relatime");
        assert_eq!(m[2].super_opts, "rw,xattr,name=systemd");
        assert_eq!(m[3].mount_point, Path::new("/var/lib/cgsight/my fs"));
        assert_eq!(m[3].fstype, "fuse.cgsight");
        assert_eq!((m[3].mount_id, m[3].parent_id), (77, 22));
        assert_eq!(m[3].dev, "0:50");
        assert!(is_mount_point(&m, Path::new("/sys/fs/cgroup")));
        assert!(!is_mount_point(&m, Path::new("/sys/fs")));
        assert_eq!(
            top_mount_at(&m, Path::new("/")).map(|e| e.mount_id),
            Some(22)
        );
    }

    #[test]
    fn unescape_octal_only() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/x\\\\y"), "/x\\\\y");
        assert_eq!(unescape("/end\\04"), "/end\\04");
        assert_eq!(unescape("/nl\\012"), "/nl\n");
    }

    #[test]
    fn this_machine_parses() {
        let m = read_self().expect("read /proc/self/mountinfo");
        assert!(m.iter().any(|e| e.mount_point == Path::new("/")));
    }
}
