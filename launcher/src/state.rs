//! The container registry: `<state dir>/<id>/state.json` (default `/run/cgsight/containers`),
//! writable layers and logs under `<root dir>/<id>/` (default `/var/lib/cgsight/containers`).
//! `CGSIGHT_STATE_DIR` / `CGSIGHT_ROOT_DIR` move both (tests isolate with them).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::spec::{ContainerSpec, Limits};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    // The cause is part of the message, not a `source` (anyhow's `{:#}` would repeat it).
    #[error("{op} {path}: {error}")]
    Io {
        op: &'static str,
        path: PathBuf,
        error: io::Error,
    },
    #[error("the name {0:?} is already in use by container {1}")]
    NameInUse(String, String),
    #[error("no such container: {0}")]
    NotFound(String),
    #[error("container prefix {0:?} is ambiguous: it matches {1}")]
    Ambiguous(String, String),
    #[error("bad state file {path}: {error}")]
    Parse {
        path: PathBuf,
        error: serde_json::Error,
    },
    #[error("bad state file {path}: {what}")]
    Invalid { path: PathBuf, what: String },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StateError {
    let path = path.to_path_buf();
    move |error| StateError::Io { op, path, error }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Created,
    Running,
    Exited,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Exited => "exited",
        })
    }
}

/// The limits object of the contract: every key present, null if unset.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StateLimits {
    pub memory: Option<u64>,
    /// Memory + swap in bytes; -1 = unlimited.
    pub memory_swap: Option<i64>,
    pub cpu_quota_us: Option<u64>,
    pub cpu_period_us: Option<u64>,
    pub cpu_shares: Option<u64>,
    pub cpuset_cpus: Option<String>,
    pub pids_max: Option<u64>,
}

impl StateLimits {
    pub fn from_applied(l: &Limits, memory_swap: Option<Option<u64>>) -> Self {
        StateLimits {
            memory: l.memory,
            memory_swap: memory_swap.map(|s| s.map_or(-1, |v| v as i64)),
            cpu_quota_us: l.cpu_quota_us,
            cpu_period_us: l.cpu_period_us,
            cpu_shares: l.cpu_shares,
            cpuset_cpus: l.cpuset_cpus.clone(),
            pids_max: l.pids_max,
        }
    }
}

/// One container's state.json. Fields before `supervisor_pid` are the shared contract.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct State {
    pub id: String,
    pub name: String,
    pub image: String,
    pub cgroup_path: String,
    /// Host pid of the container's init.
    pub pid: Option<i32>,
    pub status: Status,
    pub created: f64,
    pub started: Option<f64>,
    pub exit_code: Option<i32>,
    pub oom_killed: bool,
    pub limits: StateLimits,
    pub command: Vec<String>,
    /// The `cgsight launch` process that owns the container.
    pub supervisor_pid: i32,
    /// Its start time (clock ticks since boot), so a reused pid is not mistaken for it.
    pub supervisor_start: u64,
    pub finished: Option<f64>,
    /// Set when read: the supervisor vanished while the container was not marked exited.
    #[serde(default)]
    pub supervisor_dead: bool,
    /// Address and published ports (bridge), or just the mode.
    #[serde(default)]
    pub network: Option<crate::network::NetInfo>,
    /// Where the /proc views bound in the container are served (absent: no views, or a
    /// launcher that did not record it), so a new server there can repair them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub views_mountpoint: Option<PathBuf>,
    pub spec: ContainerSpec,
}

impl State {
    /// The 12-character id shown by `ps` (the whole id if a bad file has a shorter one).
    pub fn short_id(&self) -> &str {
        short(&self.id)
    }

    /// What the file must satisfy beyond its JSON shape before anything acts on it: its id
    /// is its directory's name, and the cgroup it names is that container's own (so `rm`
    /// never removes someone else's cgroup or layers).
    fn check(&self, dir_name: &str) -> Result<(), String> {
        if self.id != dir_name || self.spec.id != self.id {
            return Err(format!(
                "its id {:?} is not its directory's {dir_name:?}",
                self.id
            ));
        }
        if self.cgroup_path != self.spec.cgroup_path() {
            return Err(format!(
                "its cgroup {:?} is not the container's own",
                self.cgroup_path
            ));
        }
        Ok(())
    }
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Where states and layers live.
#[derive(Clone, Debug)]
pub struct Store {
    pub state_dir: PathBuf,
    pub root_dir: PathBuf,
}

impl Store {
    pub fn from_env() -> Self {
        let get = |k: &str, d: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map_or_else(|| PathBuf::from(d), PathBuf::from)
        };
        Store {
            state_dir: get("CGSIGHT_STATE_DIR", "/run/cgsight/containers"),
            root_dir: get("CGSIGHT_ROOT_DIR", "/var/lib/cgsight/containers"),
        }
    }

    pub fn state_path(&self, id: &str) -> PathBuf {
        self.state_dir.join(id)
    }
    /// `<root>/<id>`: upper, work, merged, log.
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.root_dir.join(id)
    }
    pub fn log_path(&self, id: &str) -> PathBuf {
        self.container_dir(id).join("log")
    }

    fn lock(&self) -> Result<Flock<fs::File>, StateError> {
        fs::create_dir_all(&self.state_dir).map_err(io_err("creating", &self.state_dir))?;
        let p = self.state_dir.join(".lock");
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(io_err("opening", &p))?;
        // Released when the returned guard is dropped.
        Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| io_err("locking", &p)(e.into()))
    }

    /// Registers a new container: the name check and the directory creation happen under one
    /// lock, so two launches cannot take the same name.
    pub fn create(&self, st: &State) -> Result<(), StateError> {
        let _lock = self.lock()?;
        for other in self.list_raw() {
            if other.name == st.name {
                return Err(StateError::NameInUse(
                    st.name.clone(),
                    other.short_id().to_owned(),
                ));
            }
        }
        let d = self.state_path(&st.id);
        fs::create_dir(&d).map_err(io_err("creating", &d))?;
        self.write(st)
    }

    /// Atomic replace: a reader never sees a half-written file.
    pub fn write(&self, st: &State) -> Result<(), StateError> {
        let d = self.state_path(&st.id);
        let tmp = d.join(".state.json.tmp");
        let fin = d.join("state.json");
        let body = serde_json::to_vec_pretty(st).map_err(|error| StateError::Parse {
            path: fin.clone(),
            error,
        })?;
        let mut f = fs::File::create(&tmp).map_err(io_err("writing", &tmp))?;
        f.write_all(&body).map_err(io_err("writing", &tmp))?;
        drop(f);
        fs::rename(&tmp, &fin).map_err(io_err("renaming", &fin))
    }

    pub fn load(&self, id: &str) -> Result<State, StateError> {
        let p = self.state_path(id).join("state.json");
        let data = match fs::read(&p) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StateError::NotFound(id.to_owned()))
            }
            Err(e) => return Err(io_err("reading", &p)(e)),
        };
        let mut st: State = serde_json::from_slice(&data).map_err(|error| StateError::Parse {
            path: p.clone(),
            error,
        })?;
        st.check(id)
            .map_err(|what| StateError::Invalid { path: p, what })?;
        reconcile(&mut st);
        Ok(st)
    }

    fn list_raw(&self) -> Vec<State> {
        let Ok(rd) = fs::read_dir(&self.state_dir) else {
            return Vec::new();
        };
        let mut out: Vec<State> = rd
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| self.load(&e.file_name().to_string_lossy()).ok())
            .collect();
        out.sort_by(|a, b| a.created.total_cmp(&b.created));
        out
    }

    /// All readable containers, oldest first (unreadable state files are skipped).
    pub fn list(&self) -> Vec<State> {
        self.list_raw()
    }

    /// By exact name, exact id or unique id prefix.
    pub fn find(&self, query: &str) -> Result<State, StateError> {
        // An exact id whose file is unreadable says why, rather than "no such container".
        if Path::new(query).file_name() == Some(query.as_ref()) && self.state_path(query).is_dir() {
            if let Err(e) = self.load(query) {
                if !matches!(e, StateError::NotFound(_)) {
                    return Err(e);
                }
            }
        }
        let all = self.list_raw();
        if let Some(s) = all.iter().find(|s| s.name == query || s.id == query) {
            return Ok(s.clone());
        }
        let hits: Vec<&State> = if query.is_empty() {
            Vec::new()
        } else {
            all.iter().filter(|s| s.id.starts_with(query)).collect()
        };
        match hits.as_slice() {
            [] => Err(StateError::NotFound(query.to_owned())),
            [one] => Ok((*one).clone()),
            many => Err(StateError::Ambiguous(
                query.to_owned(),
                many.iter()
                    .map(|s| s.short_id())
                    .collect::<Vec<_>>()
                    .join(", "),
            )),
        }
    }

    pub fn remove_state(&self, id: &str) -> Result<(), StateError> {
        let d = self.state_path(id);
        match fs::remove_dir_all(&d) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("removing", &d)(e)),
            _ => Ok(()),
        }
    }
}

/// Is the process `pid` alive and started at `start` ticks?
pub fn alive(pid: i32, start: u64) -> bool {
    pid > 0 && cgsight_cgroup::start_ticks(pid).is_ok_and(|t| t == start)
}

/// A container marked running/created whose supervisor is gone is reported as exited (dead).
fn reconcile(st: &mut State) {
    if st.status != Status::Exited && !alive(st.supervisor_pid, st.supervisor_start) {
        st.status = Status::Exited;
        st.supervisor_dead = true;
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::{now, State, StateError, StateLimits, Status, Store};
    use crate::spec::{self, RawSpec};

    /// A store in a fresh temporary directory, removed on drop.
    struct TmpStore(Store, PathBuf);

    impl TmpStore {
        fn new(tag: &str) -> Self {
            let base = std::env::temp_dir()
                .join(format!("cgsight-test-state-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&base);
            let store = Store {
                state_dir: base.join("state"),
                root_dir: base.join("root"),
            };
            TmpStore(store, base)
        }
    }

    impl Drop for TmpStore {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.1);
        }
    }

    fn state(id: &str, name: &str) -> State {
        let raw = RawSpec {
            name: Some(name.into()),
            command: vec!["true".into()],
            ..RawSpec::default()
        };
        let cpus = cgsight_cgroup::CpuList::parse("0").unwrap_or_default();
        let spec = spec::build(&raw, id, &cpus, |_| None).expect("a valid spec");
        State {
            id: id.into(),
            name: name.into(),
            image: spec.image(),
            cgroup_path: spec.cgroup_path(),
            pid: None,
            status: Status::Exited,
            created: now(),
            started: None,
            exit_code: Some(0),
            oom_killed: false,
            limits: StateLimits::default(),
            command: spec.command.clone(),
            supervisor_pid: 0,
            supervisor_start: 0,
            finished: None,
            supervisor_dead: false,
            network: None,
            views_mountpoint: None,
            spec,
        }
    }

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn write_raw(s: &Store, dir: &str, body: &[u8]) {
        let d = s.state_path(dir);
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::write(d.join("state.json"), body).expect("write");
    }

    #[test]
    fn truncated_state_files_are_errors_not_panics() {
        let t = TmpStore::new("trunc");
        let good = serde_json::to_vec_pretty(&state(ID, "good")).expect("json");
        for cut in [0, 1, 10, good.len() / 2, good.len() - 1] {
            write_raw(&t.0, ID, good.get(..cut).unwrap_or_default());
            let e = t.0.load(ID).expect_err("a truncated file must not load");
            let msg = e.to_string();
            assert!(matches!(e, StateError::Parse { .. }), "{msg}");
            assert!(!msg.contains('\n'), "one line: {msg:?}");
            // Found by exact id: the reason, not "no such container".
            let e = t.0.find(ID).expect_err("find");
            assert!(e.to_string().contains("bad state file"), "{e}");
            // ps-style listing skips it.
            assert!(t.0.list().is_empty());
        }
        write_raw(&t.0, ID, &good);
        assert_eq!(t.0.load(ID).expect("whole file").name, "good");
    }

    #[test]
    fn garbage_and_mismatched_state_files_are_refused() {
        let t = TmpStore::new("garbage");
        write_raw(&t.0, ID, b"\xff\xfe not json {{{");
        assert!(matches!(t.0.load(ID), Err(StateError::Parse { .. })));
        // Valid JSON of another container (short, non-ASCII id): refused, no slicing panic.
        let other = state("é", "x");
        write_raw(&t.0, ID, &serde_json::to_vec(&other).expect("json"));
        let e = t.0.load(ID).expect_err("mismatched id");
        assert!(matches!(e, StateError::Invalid { .. }), "{e}");
        // A cgroup that is not the container's own would let rm remove a foreign cgroup.
        let mut bad = state(ID, "y");
        bad.cgroup_path = "/".into();
        write_raw(&t.0, ID, &serde_json::to_vec(&bad).expect("json"));
        assert!(matches!(t.0.load(ID), Err(StateError::Invalid { .. })));
    }

    #[test]
    fn short_ids_never_panic() {
        let t = TmpStore::new("short");
        let mut a = state(ID, "a");
        a.id = "abc".into();
        assert_eq!(a.short_id(), "abc");
        a.id = "ééééééé".into();
        assert_eq!(a.short_id(), "éééééé");
        // Byte 12 inside a character: the whole id rather than a panic.
        a.id = "aééééééé".into();
        assert_eq!(a.short_id(), "aééééééé");
        // A name clash reports the other container's short id.
        t.0.create(&state(ID, "same")).expect("create");
        let mut b = state(&ID.replace('0', "f"), "same");
        b.spec.id = b.id.clone();
        let e = t.0.create(&b).expect_err("name in use");
        assert!(e.to_string().contains("0123456789ab"), "{e}");
    }
}
