//! Compiled programs on disk, so a profile is compiled once, not per launch.
//!
//! A file is named by the key (sha256 of profile text, capabilities, kernel, arch, crate and
//! libseccomp versions) and holds: magic, key, program length, sha256 of the program, program.
//! A file whose header, length or hash does not check out is recompiled and replaced; writes
//! go to a temporary file renamed into place, so readers never see half a file.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use crate::compile::compile;
use crate::error::{Error, Result};
use crate::profile::{filter_flags, Profile};
use crate::program::Program;
use crate::resolve::Target;

const MAGIC: &[u8; 8] = b"CGSBPF01";
const HEADER: usize = 8 + 32 + 4 + 32;

/// Where compiled programs are kept, e.g. /var/lib/cgsight/seccomp. Only root may write
/// there: the hash catches damage, not a forger, and a file there decides what containers may do.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

/// A program from the cache or freshly compiled.
#[derive(Debug)]
pub struct Loaded {
    pub program: Program,
    /// True when the program came from a valid cache file.
    pub cache_hit: bool,
    /// Syscall names skipped at compile time (empty on a cache hit: they were reported then).
    pub unknown_syscalls: Vec<String>,
    pub path: PathBuf,
}

impl Cache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The cached program for (profile, target), compiling and storing it on a miss or when
    /// the file is damaged.
    pub fn load_or_compile(&self, profile: &Profile, target: &Target) -> Result<Loaded> {
        let key = key(profile, target);
        let path = self.dir.join(format!("{}.bpf", hex(&key)));
        match std::fs::read(&path) {
            Ok(bytes) => match decode(&bytes, &key) {
                Ok(program) => {
                    // Flags are not in the file: they come with the profile (and its key).
                    let program = program.with_flags(filter_flags(&profile.flags)?);
                    return Ok(Loaded {
                        program,
                        cache_hit: true,
                        unknown_syscalls: vec![],
                        path,
                    });
                }
                Err(why) => {
                    tracing::warn!(path = %path.display(), why, "seccomp cache file is damaged; recompiling")
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(Error::Cache { path, source }),
        }
        let compiled = compile(profile, target)?;
        // A profile that names syscalls this system does not know is never cached: a hit
        // could not report them, and the caller may refuse such a profile every time.
        if compiled.unknown_syscalls.is_empty() {
            write_atomically(&self.dir, &path, &encode(&compiled.program, &key)).map_err(
                |source| Error::Cache {
                    path: path.clone(),
                    source,
                },
            )?;
        }
        Ok(Loaded {
            program: compiled.program,
            cache_hit: false,
            unknown_syscalls: compiled.unknown_syscalls,
            path,
        })
    }
}

/// Everything the compiled bytes depend on.
fn key(profile: &Profile, target: &Target) -> [u8; 32] {
    let lib = libseccomp::ScmpVersion::current()
        .map(|v| format!("{}.{}.{}", v.major, v.minor, v.micro))
        .unwrap_or_default();
    let mut h = Sha256::new();
    for part in [
        concat!("cgsight-seccomp ", env!("CARGO_PKG_VERSION")),
        &lib,
        std::env::consts::ARCH,
        &format!("{:016x}", target.caps.0),
        &target.kernel.to_string(),
    ] {
        // Length-prefixed so that no two different part lists hash the same bytes.
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    // The profile's derived Hash, fed straight into the digest: it writes every field with
    // lengths and variant tags (as unambiguous as the JSON text was), without building that
    // ~40 KB text on each launch (~150 µs of a cached launch, measured).
    profile.hash(&mut DigestHasher(&mut h));
    h.finalize().into()
}

/// `std::hash::Hasher` over a SHA-256 state: only `write` is used.
struct DigestHasher<'a>(&'a mut Sha256);

impl Hasher for DigestHasher<'_> {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        0
    }
}

fn encode(program: &Program, key: &[u8; 32]) -> Vec<u8> {
    let body = program.to_bpf_bytes();
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(key);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&Sha256::digest(&body));
    out.extend_from_slice(&body);
    out
}

/// The program in a cache file, or why the file cannot be trusted.
fn decode(bytes: &[u8], key: &[u8; 32]) -> std::result::Result<Program, String> {
    let (magic, rest) = bytes.split_at_checked(8).ok_or("shorter than its header")?;
    let (file_key, rest) = rest.split_at_checked(32).ok_or("shorter than its header")?;
    let (len, rest) = rest.split_at_checked(4).ok_or("shorter than its header")?;
    let (hash, body) = rest.split_at_checked(32).ok_or("shorter than its header")?;
    if magic != MAGIC {
        return Err("not a cgsight seccomp cache file".into());
    }
    if file_key != key {
        return Err("made for another profile or target".into());
    }
    let len = u32::from_le_bytes(len.try_into().map_err(|_| "bad length field")?) as usize;
    if len != body.len() {
        return Err(format!(
            "program is {} bytes, header says {len}",
            body.len()
        ));
    }
    if Sha256::digest(body).as_slice() != hash {
        return Err("program does not match its hash".into());
    }
    Program::from_bpf_bytes(body).map_err(|e| e.to_string())
}

fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!(
        "tmp.{}.{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn damaged_files_are_refused() {
        let ret = 0x06u16.to_ne_bytes();
        let k = 0x7fff_0000u32.to_ne_bytes();
        let p = Program::from_bpf_bytes(&[ret[0], ret[1], 0, 0, k[0], k[1], k[2], k[3]]).unwrap();
        let key = [7u8; 32];
        let good = encode(&p, &key);
        assert_eq!(decode(&good, &key).unwrap(), p);
        assert!(decode(&good, &[8u8; 32]).is_err());
        for cut in 0..good.len() {
            assert!(
                decode(good.get(..cut).unwrap(), &key).is_err(),
                "truncated at {cut}"
            );
        }
        let mut flipped = good.clone();
        if let Some(last) = flipped.last_mut() {
            *last ^= 1;
        }
        assert!(decode(&flipped, &key).is_err());
    }

    #[test]
    fn the_key_follows_every_part_of_the_profile_and_target() {
        use crate::profile::Action;
        use crate::{CapSet, KernelVersion};
        let target = Target {
            caps: CapSet(0xa80425fb),
            kernel: KernelVersion::new(6, 1),
        };
        let base = Profile::docker_default();
        assert_eq!(
            key(&base, &target),
            key(&Profile::docker_default(), &target)
        );
        let mut errno = base.clone();
        errno.default_action = Action::Errno(38);
        let mut notify = base.clone();
        notify.set_action("sysinfo", Action::Notify);
        let mut renamed = base.clone();
        if let Some(n) = renamed.rules.first_mut().and_then(|r| r.names.first_mut()) {
            n.push('x');
        }
        let other_kernel = Target {
            kernel: KernelVersion::new(6, 2),
            ..target
        };
        let keys = [
            key(&base, &target),
            key(&errno, &target),
            key(&notify, &target),
            key(&renamed, &target),
            key(&base, &other_kernel),
        ];
        for (i, a) in keys.iter().enumerate() {
            for b in keys.iter().skip(i + 1) {
                assert_ne!(a, b);
            }
        }
    }
}
