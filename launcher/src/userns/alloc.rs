//! One [`IdRange`] per container, recorded as `<dir>/<id>.range` ("uid gid count"). Every
//! read-modify-write holds an exclusive flock on `<dir>/.lock`, so concurrent launches (threads
//! or processes) never get the same range.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use super::{IdRange, Pool, UsernsError};

const SUFFIX: &str = ".range";

pub struct Allocator {
    dir: PathBuf,
    pool: Pool,
}

/// Parses a record's text (pure): three decimal numbers.
pub fn parse_record(text: &str) -> Result<IdRange, String> {
    let mut it = text.split_ascii_whitespace().map(str::parse::<u32>);
    match (it.next(), it.next(), it.next(), it.next()) {
        (Some(Ok(uid)), Some(Ok(gid)), Some(Ok(count)), None) if count > 0 => {
            Ok(IdRange { uid, gid, count })
        }
        _ => Err(format!("expected \"uid gid count\", found {text:?}")),
    }
}

fn check_id(id: &str) -> Result<(), UsernsError> {
    let ok = !id.is_empty()
        && !id.starts_with('.')
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(UsernsError::BadId(id.to_owned()))
    }
}

impl Allocator {
    /// Records live in `dir` (created on first use, mode 0700), e.g. /var/lib/cgsight/userns.
    pub fn new(dir: impl Into<PathBuf>, pool: Pool) -> Self {
        Allocator {
            dir: dir.into(),
            pool,
        }
    }

    fn record(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}{SUFFIX}"))
    }

    fn lock(&self) -> Result<Flock<File>, UsernsError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| UsernsError::io(&self.dir, e))?;
        let path = self.dir.join(".lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| UsernsError::io(&path, e))?;
        Flock::lock(f, FlockArg::LockExclusive)
            .map_err(|(_, e)| UsernsError::io(&path, std::io::Error::from(e)))
    }

    fn read_record(path: &Path) -> Result<IdRange, UsernsError> {
        // Bytes, not a string: a garbage record is a State error, not an I/O one.
        let bytes = fs::read(path).map_err(|e| UsernsError::io(path, e))?;
        parse_record(&String::from_utf8_lossy(&bytes)).map_err(|reason| UsernsError::State {
            path: path.to_owned(),
            reason,
        })
    }

    /// Every recorded range. A record that does not parse is an error: its range might be in
    /// use, so handing out anything while it is unknown could give two containers the same ids.
    fn all(&self) -> Result<Vec<IdRange>, UsernsError> {
        let mut out = Vec::new();
        for ent in fs::read_dir(&self.dir).map_err(|e| UsernsError::io(&self.dir, e))? {
            let ent = ent.map_err(|e| UsernsError::io(&self.dir, e))?;
            let name = ent.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || !name.ends_with(SUFFIX) {
                continue;
            }
            out.push(Self::read_record(&ent.path())?);
        }
        Ok(out)
    }

    /// The range recorded for `id`, if any.
    pub fn get(&self, id: &str) -> Result<Option<IdRange>, UsernsError> {
        check_id(id)?;
        let path = self.record(id);
        match fs::metadata(&path) {
            Ok(_) => Self::read_record(&path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(UsernsError::io(path, e)),
        }
    }

    /// The range of container `id`: its existing record, or the first pool slot that overlaps
    /// no recorded range, recorded atomically (temp file + rename) under the lock.
    pub fn allocate(&self, id: &str) -> Result<IdRange, UsernsError> {
        check_id(id)?;
        let _lock = self.lock()?;
        if let Some(r) = self.get(id)? {
            return Ok(r);
        }
        let used = self.all()?;
        let slot = self
            .pool
            .slots
            .iter()
            .find(|s| !used.iter().any(|u| u.overlaps(s)))
            .copied()
            .ok_or(UsernsError::Exhausted(self.pool.slots.len()))?;
        let tmp = self.dir.join(format!(".{id}{SUFFIX}.tmp"));
        let write = || -> std::io::Result<()> {
            let mut f = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .mode(0o600)
                .open(&tmp)?;
            writeln!(f, "{} {} {}", slot.uid, slot.gid, slot.count)?;
            f.sync_all()
        };
        write().map_err(|e| UsernsError::io(&tmp, e))?;
        let path = self.record(id);
        fs::rename(&tmp, &path).map_err(|e| UsernsError::io(&path, e))?;
        Ok(slot)
    }

    /// Returns `id`'s range to the pool. Removes the record even when it is garbage (that is
    /// how an unreadable record is cleared); freeing an unknown id is not an error.
    pub fn free(&self, id: &str) -> Result<(), UsernsError> {
        check_id(id)?;
        let _lock = self.lock()?;
        let path = self.record(id);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(UsernsError::io(path, e)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records() {
        assert_eq!(
            parse_record("1 2 3\n"),
            Ok(IdRange {
                uid: 1,
                gid: 2,
                count: 3
            })
        );
        for bad in ["", "1 2", "1 2 3 4", "1 2 x", "1 2 0", "\u{0}\u{0}"] {
            assert!(parse_record(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ids() {
        assert!(check_id("abc-1.2_3").is_ok());
        for bad in ["", ".x", "a/b", "..", "a b"] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
    }
}
