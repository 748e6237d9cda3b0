//! The image a container runs on, as the CLI resolved it in the image store: the launcher
//! only needs its layer directories (overlay lowerdirs) and names to record.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRef {
    /// The normalised reference (`127.0.0.1:5000/app:1`), shown by `ps`, `inspect`, the agent.
    pub reference: String,
    /// The manifest digest: what `rmi` and `commit` match on, whatever tags come and go.
    pub id: String,
    /// Layer directories, top layer first (overlay's lowerdir order).
    pub lowers: Vec<PathBuf>,
    /// The image store they belong to (another store's image with the same digest is another
    /// copy, which this container does not use).
    #[serde(default)]
    pub store: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::ImageRef;
    use crate::spec::{build, RawSpec};

    #[test]
    fn an_image_names_the_container_and_excludes_rootfs() {
        let cpus = cgsight_cgroup::CpuList::parse("0").unwrap_or_default();
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let mut raw = RawSpec {
            command: vec!["true".into()],
            image_ref: Some(ImageRef {
                reference: "127.0.0.1:5000/a:1".into(),
                id: format!("sha256:{}", "b".repeat(64)),
                lowers: vec!["/var/lib/cgsight/l/x".into()],
                store: "/var/lib/cgsight".into(),
            }),
            user: Some("1000:1000".into()),
            ..RawSpec::default()
        };
        let s = build(&raw, id, &cpus, |_| None).expect("spec");
        assert_eq!(s.image(), "127.0.0.1:5000/a:1");
        // Older state files, without the new fields, still load.
        let mut v = serde_json::to_value(&s).expect("json");
        for k in ["image_ref", "user", "stop_signal"] {
            v.as_object_mut().expect("object").remove(k);
        }
        let old: crate::ContainerSpec = serde_json::from_value(v).expect("old spec");
        assert_eq!(old.image(), "host");
        raw.rootfs = Some("/".into());
        assert!(build(&raw, id, &cpus, |_| None).is_err());
        raw.rootfs = None;
        raw.user = Some(":5".into());
        let e = build(&raw, id, &cpus, |_| None).expect_err("bad user");
        assert!(e.to_string().contains("--user"), "{e}");
    }
}
