//! Basic-auth checks that cannot stall scrapes. bcrypt is deliberately slow (tens of ms at cost
//! 10), so:
//! - verdicts are cached by a salted SHA-256 of user and password (never the password itself),
//!   so Prometheus's repeated header costs a hash and a lookup on the request's own thread;
//!   the key covers the exact pair, so a cached verdict can never admit a different password;
//! - uncached checks go to one dedicated verifier thread through a bounded queue: when the queue
//!   is full the request is refused at once ([`Verdict::Busy`]) instead of waiting, and bcrypt
//!   never occupies the async workers or the blocking pool that collects metrics;
//! - an unknown user is verified against a dummy hash of the same cost, so known and unknown
//!   users take the same time.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use ring::digest;

/// Uncached checks that may wait for the verifier; more are refused as busy.
const QUEUE: usize = 8;
/// Verdicts kept per kind; a full set is cleared (accepted ones only grow with real users).
const CACHE: usize = 4096;

/// The outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Denied,
    /// Too many uncached checks are queued; try again shortly.
    Busy,
}

type Key = [u8; 32];

struct Inner {
    users: HashMap<String, String>,
    salt: [u8; 16],
    accepted: Mutex<HashSet<Key>>,
    refused: Mutex<HashSet<Key>>,
}

struct Job {
    user: String,
    pass: String,
    key: Key,
    reply: tokio::sync::oneshot::Sender<bool>,
}

/// The configured users and the verifier thread (which ends when this is dropped).
pub struct BasicAuth {
    inner: Arc<Inner>,
    queue: SyncSender<Job>,
}

impl BasicAuth {
    /// None when no users are configured (auth off). Spawns the verifier thread.
    pub fn new(users: HashMap<String, String>) -> Option<Self> {
        if users.is_empty() {
            return None;
        }
        let (auth, rx, cost) = Self::unstarted(users);
        let worker = auth.inner.clone();
        let spawned = std::thread::Builder::new()
            .name("cgsight-bcrypt".into())
            .spawn(move || {
                // Made here, not at start-up: hashing costs as much as one check.
                let dummy = bcrypt::hash_with_salt("cgsight-unknown-user", cost, [7u8; 16])
                    .map(|h| h.format_for_version(bcrypt::Version::TwoB))
                    .unwrap_or_default();
                while let Ok(job) = rx.recv() {
                    let ok = worker.verify(&job.user, &job.pass, &dummy);
                    worker.remember(job.key, ok);
                    let _ = job.reply.send(ok);
                }
            });
        if let Err(e) = spawned {
            tracing::error!("starting the basic-auth verifier: {e}; every request will be refused");
        }
        Some(auth)
    }

    /// The checker and its queue's receiving end, without a verifier thread; and the cost of
    /// the dummy hash.
    fn unstarted(users: HashMap<String, String>) -> (Self, Receiver<Job>, u32) {
        let cost = users
            .values()
            .filter_map(|h| h.parse::<bcrypt::HashParts>().ok())
            .map(|p| p.get_cost())
            .max()
            .unwrap_or(bcrypt::DEFAULT_COST);
        let mut salt = [0u8; 16];
        // A failed RNG leaves a zero salt: the cache stays correct, only less opaque.
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt);
        let inner = Arc::new(Inner {
            users,
            salt,
            accepted: Mutex::new(HashSet::new()),
            refused: Mutex::new(HashSet::new()),
        });
        let (queue, rx) = sync_channel::<Job>(QUEUE);
        (BasicAuth { inner, queue }, rx, cost)
    }

    /// Checks an `Authorization` header value.
    pub async fn check(&self, header: Option<&str>) -> Verdict {
        let Some((user, pass)) = header.and_then(credentials) else {
            return Verdict::Denied;
        };
        let key = self.inner.key(&user, &pass);
        if let Some(ok) = self.inner.cached(&key) {
            return if ok {
                Verdict::Allowed
            } else {
                Verdict::Denied
            };
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Job {
            user,
            pass,
            key,
            reply,
        };
        match self.queue.try_send(job) {
            Ok(()) => match answer.await {
                Ok(true) => Verdict::Allowed,
                Ok(false) => Verdict::Denied,
                // The verifier is gone: fail closed.
                Err(_) => Verdict::Denied,
            },
            Err(TrySendError::Full(_)) => Verdict::Busy,
            Err(TrySendError::Disconnected(_)) => Verdict::Denied,
        }
    }
}

impl Inner {
    fn key(&self, user: &str, pass: &str) -> Key {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(&self.salt);
        ctx.update(&(user.len() as u64).to_le_bytes());
        ctx.update(user.as_bytes());
        ctx.update(pass.as_bytes());
        let mut k = [0u8; 32];
        k.copy_from_slice(ctx.finish().as_ref());
        k
    }

    fn cached(&self, key: &Key) -> Option<bool> {
        if self.accepted.lock().is_ok_and(|a| a.contains(key)) {
            return Some(true);
        }
        if self.refused.lock().is_ok_and(|r| r.contains(key)) {
            return Some(false);
        }
        None
    }

    fn remember(&self, key: Key, ok: bool) {
        let set = if ok { &self.accepted } else { &self.refused };
        if let Ok(mut s) = set.lock() {
            if s.len() >= CACHE {
                s.clear();
            }
            s.insert(key);
        }
    }

    fn verify(&self, user: &str, pass: &str, dummy: &str) -> bool {
        match self.users.get(user) {
            Some(hash) => bcrypt::verify(pass, hash).unwrap_or(false),
            None => {
                // Same work as a known user, same answer as a wrong password.
                let _ = bcrypt::verify(pass, dummy);
                false
            }
        }
    }
}

/// (user, password) of a `Basic` header value.
fn credentials(h: &str) -> Option<(String, String)> {
    let b64 = h
        .strip_prefix("Basic ")
        .or_else(|| h.strip_prefix("basic "))?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (user, pass) = s.split_once(':')?;
    Some((user.to_owned(), pass.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(s: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(s)
        )
    }

    fn auth() -> BasicAuth {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        BasicAuth::new(HashMap::from([("alice".to_owned(), hash)])).unwrap()
    }

    #[tokio::test]
    async fn checks_passwords_and_caches_only_exact_pairs() {
        let a = auth();
        assert_eq!(a.check(Some(&enc("alice:s3cret"))).await, Verdict::Allowed);
        // Cached now; a different password is still checked, and refused.
        assert_eq!(a.check(Some(&enc("alice:s3cret"))).await, Verdict::Allowed);
        assert_eq!(a.check(Some(&enc("alice:s3cret2"))).await, Verdict::Denied);
        assert_eq!(a.check(Some(&enc("alice:s3cre"))).await, Verdict::Denied);
        assert_eq!(a.check(Some(&enc("alice:wrong"))).await, Verdict::Denied);
        assert_eq!(a.check(Some(&enc("alice:wrong"))).await, Verdict::Denied);
        assert_eq!(a.check(Some(&enc("bob:s3cret"))).await, Verdict::Denied);
        // The user/password boundary is part of the key.
        assert_eq!(a.check(Some(&enc("alic:es3cret"))).await, Verdict::Denied);
        assert_eq!(a.check(Some("Bearer x")).await, Verdict::Denied);
        assert_eq!(a.check(Some("Basic !!!")).await, Verdict::Denied);
        assert_eq!(a.check(None).await, Verdict::Denied);
        assert!(BasicAuth::new(HashMap::new()).is_none());
    }

    #[tokio::test]
    async fn a_full_queue_is_refused_as_busy_not_waited_on() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        // No verifier: whatever is queued stays queued.
        let (a, rx, _) = BasicAuth::unstarted(HashMap::from([("alice".to_owned(), hash)]));
        a.inner.remember(a.inner.key("alice", "s3cret"), true);
        for i in 0..QUEUE {
            let (reply, _) = tokio::sync::oneshot::channel();
            let key = a.inner.key("alice", &i.to_string());
            let job = Job {
                user: "alice".into(),
                pass: i.to_string(),
                key,
                reply,
            };
            assert!(a.queue.try_send(job).is_ok());
        }
        assert_eq!(a.check(Some(&enc("alice:other"))).await, Verdict::Busy);
        // Cached verdicts do not need the queue.
        assert_eq!(a.check(Some(&enc("alice:s3cret"))).await, Verdict::Allowed);
        drop(rx);
        // Without a verifier the check fails closed.
        assert_eq!(a.check(Some(&enc("alice:other"))).await, Verdict::Denied);
    }
}
