//! docker's `--device HOST[:CONTAINER][:PERMISSIONS]`: which host node to expose, where, and the
//! rule that lets the container use it (type, major and minor come from the host node itself).

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::PathBuf;

use super::rules::{Access, Kind, Rule};
use super::DeviceError;

/// The words of a `--device` value, before the host path is looked at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceSpec {
    pub host: PathBuf,
    pub container: PathBuf,
    pub access: Access,
}

/// A `--device` resolved on this host: the node to create in the container and its rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceMapping {
    pub host: PathBuf,
    pub container: PathBuf,
    pub kind: Kind,
    pub major: u32,
    pub minor: u32,
    pub access: Access,
    /// The host node's permission bits and owner, for creating the container's node alike.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl DeviceMapping {
    /// The allow rule for this device alone.
    pub fn rule(&self) -> Rule {
        Rule::new(
            true,
            self.kind,
            Some(self.major),
            Some(self.minor),
            self.access,
        )
    }
}

/// Splits a `--device` value. With two fields the second is the permissions when it reads as
/// one (`/dev/sda:r`), else the container path, as docker decides.
pub fn parse_device_spec(spec: &str) -> Result<DeviceSpec, DeviceError> {
    let bad = |why: &str| DeviceError::Spec {
        spec: spec.to_owned(),
        why: why.to_owned(),
    };
    let fields: Vec<&str> = spec.split(':').collect();
    let (host, container, access) = match fields.as_slice() {
        [h] => (*h, *h, None),
        [h, x] => match Access::parse(x) {
            Some(a) => (*h, *h, Some(a)),
            None => (*h, *x, None),
        },
        [h, c, p] => {
            let a = Access::parse(p)
                .ok_or_else(|| bad(&format!("permissions {p:?} must be a subset of rwm")))?;
            (*h, *c, Some(a))
        }
        _ => return Err(bad("expected HOST[:CONTAINER][:PERMISSIONS]")),
    };
    if host.is_empty() {
        return Err(bad("the host path is empty"));
    }
    if !container.starts_with('/') {
        return Err(bad(&format!(
            "the container path {container:?} must be absolute"
        )));
    }
    Ok(DeviceSpec {
        host: PathBuf::from(host),
        container: PathBuf::from(container),
        access: access.unwrap_or(Access::ALL),
    })
}

/// Parses `spec` and stats the host node (following symlinks, so `/dev/disk/by-id/…` works).
pub fn resolve_device(spec: &str) -> Result<DeviceMapping, DeviceError> {
    let s = parse_device_spec(spec)?;
    let md = std::fs::metadata(&s.host).map_err(|source| DeviceError::HostPath {
        spec: spec.to_owned(),
        path: s.host.clone(),
        source,
    })?;
    let ft = md.file_type();
    let kind = if ft.is_char_device() {
        Kind::Char
    } else if ft.is_block_device() {
        Kind::Block
    } else {
        return Err(DeviceError::NotADevice {
            spec: spec.to_owned(),
            path: s.host,
        });
    };
    let rdev = md.rdev();
    Ok(DeviceMapping {
        host: s.host,
        container: s.container,
        kind,
        major: libc::major(rdev),
        minor: libc::minor(rdev),
        access: s.access,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
    })
}

/// The default rules followed by one allow rule per `--device`, so a device the defaults deny
/// (e.g. `--device /dev/fuse`) is allowed: its rule comes later on the same key.
pub fn rules_with_devices(devices: &[DeviceMapping]) -> Vec<Rule> {
    let mut rules = super::rules::default_rules();
    rules.extend(devices.iter().map(DeviceMapping::rule));
    rules
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn splits_like_docker() {
        let s = parse_device_spec("/dev/sda").unwrap();
        assert_eq!(
            (s.host.as_path(), s.container.as_path()),
            (Path::new("/dev/sda"), Path::new("/dev/sda"))
        );
        assert_eq!(s.access, Access::ALL);
        let s = parse_device_spec("/dev/sda:r").unwrap();
        assert_eq!(
            (s.container.as_path(), s.access),
            (Path::new("/dev/sda"), Access::READ)
        );
        let s = parse_device_spec("/dev/sda:/dev/xvda").unwrap();
        assert_eq!(
            (s.container.as_path(), s.access),
            (Path::new("/dev/xvda"), Access::ALL)
        );
        let s = parse_device_spec("/dev/sda:/dev/xvda:rw").unwrap();
        assert_eq!(s.access.to_string(), "rw");
    }

    #[test]
    fn spec_errors_name_the_spec() {
        for (spec, needle) in [
            ("/dev/sda:/dev/xvda:rx", "subset of rwm"),
            ("/dev/sda:/dev/xvda:", "subset of rwm"),
            ("/dev/sda:xvda", "must be absolute"),
            ("a:b:c:d", "HOST[:CONTAINER]"),
            (":/dev/x", "host path is empty"),
        ] {
            let e = parse_device_spec(spec).unwrap_err().to_string();
            assert!(e.contains(spec) && e.contains(needle), "{spec}: {e}");
        }
    }

    #[test]
    fn resolve_stats_the_host_node() {
        let m = resolve_device("/dev/null:/dev/mynull:rw").unwrap();
        assert_eq!((m.kind, m.major, m.minor), (Kind::Char, 1, 3));
        assert_eq!(m.rule().to_string(), "c 1:3 rw");
        assert_eq!(m.container, Path::new("/dev/mynull"));

        let e = resolve_device("/dev/cgsight-no-such-device")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/dev/cgsight-no-such-device") && e.contains("No such file"),
            "{e}"
        );
        let e = resolve_device("/etc/hostname").unwrap_err().to_string();
        assert!(e.contains("not a character or block device"), "{e}");
    }

    #[test]
    fn a_device_flag_overrides_the_fuse_deny() {
        let fuse = DeviceMapping {
            host: "/dev/fuse".into(),
            container: "/dev/fuse".into(),
            kind: Kind::Char,
            major: 10,
            minor: 229,
            access: Access::ALL,
            mode: 0o666,
            uid: 0,
            gid: 0,
        };
        let t = super::super::rules::Table::fold(&rules_with_devices(&[fuse]));
        assert!(t.permits(Kind::Char, 10, 229, Access::READ));
        assert!(!t.permits(Kind::Char, 10, 232, Access::READ));
    }
}
