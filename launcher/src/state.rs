//! The container registry: `<state dir>/<id>/state.json` (default `/run/cgsight/containers`),
//! writable layers and logs under `<root dir>/<id>/` (default `/var/lib/cgsight/containers`).
//! `CGSIGHT_STATE_DIR` / `CGSIGHT_ROOT_DIR` move both (tests isolate with them).

use std::fs;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::spec::{ContainerSpec, Limits};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("the name {0:?} is already in use by container {1}")]
    NameInUse(String, String),
    #[error("no such container: {0}")]
    NotFound(String),
    #[error("container prefix {0:?} is ambiguous: it matches {1}")]
    Ambiguous(String, String),
    #[error("bad state file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StateError {
    let path = path.to_path_buf();
    move |source| StateError::Io { op, path, source }
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
    pub spec: ContainerSpec,
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

    fn lock(&self) -> Result<fs::File, StateError> {
        fs::create_dir_all(&self.state_dir).map_err(io_err("creating", &self.state_dir))?;
        let p = self.state_dir.join(".lock");
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(io_err("opening", &p))?;
        // SAFETY: flock on a valid fd; released when the file is closed.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io_err("locking", &p)(io::Error::last_os_error()));
        }
        Ok(f)
    }

    /// Registers a new container: the name check and the directory creation happen under one
    /// lock, so two launches cannot take the same name.
    pub fn create(&self, st: &State) -> Result<(), StateError> {
        let _lock = self.lock()?;
        for other in self.list_raw() {
            if other.name == st.name {
                return Err(StateError::NameInUse(
                    st.name.clone(),
                    other.id[..12].to_owned(),
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
        let body = serde_json::to_vec_pretty(st).map_err(|source| StateError::Parse {
            path: fin.clone(),
            source,
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
        let mut st: State = serde_json::from_slice(&data)
            .map_err(|source| StateError::Parse { path: p, source })?;
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
                    .map(|s| &s.id[..12])
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
