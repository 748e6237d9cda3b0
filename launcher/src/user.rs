//! `-u USER[:GROUP]` / an image's User: names looked up in the container's own /etc/passwd
//! and /etc/group (after pivot_root), then setgroups, setgid, setuid. Parsing is pure.

use nix::unistd::{Gid, Uid};

/// Who the command runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups: those of /etc/group that list the user by name.
    pub groups: Vec<u32>,
    pub home: Option<String>,
}

/// `(name, uid, gid, home)` of passwd lines; malformed lines are skipped.
fn passwd_entries(text: &str) -> impl Iterator<Item = (&str, u32, u32, &str)> {
    text.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        match f.as_slice() {
            [name, _, uid, gid, _, home, ..] => {
                Some((*name, uid.parse().ok()?, gid.parse().ok()?, *home))
            }
            _ => None,
        }
    })
}

/// `(name, gid, members)` of group lines; malformed lines are skipped.
fn group_entries(text: &str) -> impl Iterator<Item = (&str, u32, Vec<&str>)> {
    text.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        match f.as_slice() {
            [name, _, gid, members, ..] => Some((
                *name,
                gid.parse().ok()?,
                members.split(',').filter(|m| !m.is_empty()).collect(),
            )),
            _ => None,
        }
    })
}

/// Resolves `spec` (`user`, `uid`, `user:group`, `uid:gid`) against the files' text, as docker
/// does: a numeric uid need not exist (gid then defaults to 0), a name must.
pub fn resolve(spec: &str, passwd: &str, group: &str) -> Result<Ids, String> {
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if u.is_empty() {
        return Err(format!("invalid user {spec:?}"));
    }
    let entry = passwd_entries(passwd)
        .find(|(name, uid, _, _)| *name == u || u.parse::<u32>().is_ok_and(|n| n == *uid));
    let (name, uid, mut gid, home) = match (entry, u.parse::<u32>()) {
        (Some((n, uid, gid, home)), _) => (Some(n), uid, gid, Some(home.to_owned())),
        (None, Ok(uid)) => (None, uid, 0, None),
        (None, Err(_)) => {
            return Err(format!(
                "unable to find user {u}: no matching entries in passwd file"
            ))
        }
    };
    if let Some(g) = g {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => group_entries(group)
                .find(|(n, _, _)| *n == g)
                .map(|(_, id, _)| id)
                .ok_or_else(|| {
                    format!("unable to find group {g}: no matching entries in group file")
                })?,
        };
    }
    let groups = match (name, g) {
        // An explicit group replaces the supplementary ones too (docker's -u user:group).
        (Some(n), None) => group_entries(group)
            .filter(|(_, _, m)| m.contains(&n))
            .map(|(_, id, _)| id)
            .collect(),
        _ => Vec::new(),
    };
    Ok(Ids {
        uid,
        gid,
        groups,
        home,
    })
}

/// Reads the container's /etc/passwd and /etc/group (missing ones are empty) and resolves.
pub fn lookup(spec: &str) -> Result<Ids, String> {
    let read = |p| std::fs::read_to_string(p).unwrap_or_default();
    resolve(spec, &read("/etc/passwd"), &read("/etc/group"))
}

/// Becomes `ids` (needs CAP_SETGID/CAP_SETUID; setuid away from 0 drops the capabilities).
pub fn switch(ids: &Ids) -> Result<(), String> {
    let groups: Vec<Gid> = ids.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    nix::unistd::setgroups(&groups).map_err(|e| format!("setgroups: {e}"))?;
    nix::unistd::setgid(Gid::from_raw(ids.gid)).map_err(|e| format!("setgid {}: {e}", ids.gid))?;
    nix::unistd::setuid(Uid::from_raw(ids.uid)).map_err(|e| format!("setuid {}: {e}", ids.uid))
}

#[cfg(test)]
mod tests {
    use super::resolve;

    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/sh\nbad line\napp:x:1000:1001::/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\napp:x:1001:\nextra:x:2000:app,other\nx\n";

    #[test]
    fn names_numbers_and_groups() {
        let a = resolve("app", PASSWD, GROUP).unwrap();
        assert_eq!((a.uid, a.gid, a.groups.clone()), (1000, 1001, vec![2000]));
        assert_eq!(a.home.as_deref(), Some("/home/app"));
        let n = resolve("4242", PASSWD, GROUP).unwrap();
        assert_eq!((n.uid, n.gid, n.home), (4242, 0, None));
        let ug = resolve("1000:1000", PASSWD, GROUP).unwrap();
        assert_eq!((ug.uid, ug.gid, ug.groups), (1000, 1000, vec![]));
        assert_eq!(resolve("app:extra", PASSWD, GROUP).unwrap().gid, 2000);
        assert!(resolve("nobody", PASSWD, GROUP).is_err());
        assert!(resolve("app:nogroup", PASSWD, GROUP).is_err());
        assert!(resolve(":1", PASSWD, GROUP).is_err());
        assert_eq!(resolve("0", "", "").unwrap().uid, 0);
    }
}
