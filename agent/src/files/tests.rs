//! Kept-open and watched files on real cgroups.

use super::*;
use std::path::PathBuf;

/// A real cgroup directory, removed on drop: in the cgroup2 mount where there is one, else
/// in the v1 pids hierarchy (a legacy host), with three files of that layout. The first
/// two take the numbers the budget test writes.
struct TestCg(PathBuf, [&'static str; 3]);

impl TestCg {
    fn new(tag: &str) -> Option<Self> {
        let h = cgsight_cgroup::Hierarchies::detect().ok()?;
        let (root, files) = match h.unified() {
            Some(u) => (
                u.mount_point.clone(),
                ["cgroup.max.depth", "cgroup.max.descendants", "cgroup.type"],
            ),
            None => (
                h.mount_for(cgsight_cgroup::Controller::Pids)?
                    .mount_point
                    .clone(),
                ["pids.max", "cgroup.clone_children", "notify_on_release"],
            ),
        };
        let dir = root.join(format!("cgsight-test-files-{tag}-{}", std::process::id()));
        std::fs::create_dir(&dir).ok()?;
        Some(TestCg(dir, files))
    }
}

impl Drop for TestCg {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Descriptors of this process open on files under `dir` (other tests' files in this
/// process do not count, so parallel tests cannot disturb the number).
fn fds_under(dir: &Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|rd| {
            rd.flatten()
                .filter(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.starts_with(dir)))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn a_removed_cgroups_descriptors_are_released() {
    let cg = TestCg::new("removed").expect("a cgroup mount and root");
    let files_of = cg.1;
    let mut r = Reader::with_limit(100);
    let mut files = r.cgroup(files_of.len() + 1);
    for (i, f) in files_of.iter().enumerate() {
        assert!(r.read(&mut files, i, &cg.0, f).unwrap().is_some());
    }
    assert_eq!(
        r.read(&mut files, files_of.len(), &cg.0, "no.such.file")
            .unwrap(),
        None
    );
    assert_eq!((r.kept(), fds_under(&cg.0)), (3, 3));
    std::fs::remove_dir(&cg.0).unwrap();
    // The kept descriptor now reads ENODEV: the cgroup is gone and all its files close.
    let e = r.read(&mut files, 0, &cg.0, files_of[0]).unwrap_err();
    assert!(is_gone(&e), "{e}");
    assert_eq!((r.kept(), fds_under(&cg.0)), (0, 0));
    // Dropping a cgroup's files (discovery no longer lists it) closes them too.
    let cg = TestCg::new("dropped").expect("cgroup");
    let mut files = r.cgroup(files_of.len());
    for (i, f) in files_of.iter().enumerate() {
        r.read(&mut files, i, &cg.0, f).unwrap();
    }
    assert_eq!((r.kept(), fds_under(&cg.0)), (3, 3));
    drop(files);
    assert_eq!((r.kept(), fds_under(&cg.0)), (0, 0));
}

#[test]
fn past_the_descriptor_budget_files_are_read_per_open_with_the_same_values() {
    let cg = TestCg::new("budget").expect("cgroup");
    let files_of = cg.1;
    std::fs::write(cg.0.join(files_of[0]), "7").unwrap();
    std::fs::write(cg.0.join(files_of[1]), "1").unwrap();
    let mut r = Reader::with_limit(1);
    let mut files = r.cgroup(files_of.len());
    for scrape in 0..3 {
        r.next_scrape();
        files.per_read = false;
        for (i, f) in files_of.iter().enumerate() {
            let want = std::fs::read_to_string(cg.0.join(f)).unwrap();
            let got = r.read(&mut files, i, &cg.0, f).unwrap().map(str::to_owned);
            assert_eq!(got.as_deref(), Some(want.as_str()), "{f}, scrape {scrape}");
        }
        assert!(files.per_read);
        assert_eq!((r.kept(), fds_under(&cg.0)), (1, 1));
        // Values change under both kinds of slot and are read fresh.
        std::fs::write(cg.0.join(files_of[0]), format!("{}", 8 + scrape)).unwrap();
        // 0 or 1: the v1 file is a flag.
        std::fs::write(cg.0.join(files_of[1]), format!("{}", scrape % 2)).unwrap();
    }
}

#[test]
fn a_watched_file_holds_no_descriptor_and_is_read_again_after_a_write() {
    let cg = TestCg::new("watched").expect("cgroup");
    let f = cg.1[0];
    std::fs::write(cg.0.join(f), "7").unwrap();
    // A budget of nothing: a watched file needs no descriptor and is not "open per read".
    let mut r = Reader::with_limit(0);
    let mut files = r.cgroup(1);
    r.next_scrape();
    let got = r.read_watched(&mut files, 0, &cg.0, f).unwrap();
    assert_eq!(got.map(str::trim), Some("7"));
    assert_eq!((r.kept(), fds_under(&cg.0), files.per_read), (0, 0, false));
    for (scrape, v) in ["9", "1", "9"].iter().enumerate() {
        std::fs::write(cg.0.join(f), v).unwrap();
        r.next_scrape();
        let got = r.read_watched(&mut files, 0, &cg.0, f).unwrap();
        assert_eq!(got.map(str::trim), Some(*v), "scrape {scrape}");
        // Unwritten since: the same text, still without a descriptor.
        r.next_scrape();
        let got = r.read_watched(&mut files, 0, &cg.0, f).unwrap();
        assert_eq!(got.map(str::trim), Some(*v), "scrape {scrape}, again");
        assert_eq!(fds_under(&cg.0), 0);
    }
    let mut other = r.cgroup(1);
    let missing = r.read_watched(&mut other, 0, &cg.0, "no.such.file");
    assert_eq!(missing.unwrap(), None);
}
