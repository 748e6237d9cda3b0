//! Progress reports of long store work, one per layer step, for the CLI to render.

use crate::digest::Digest;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Already present: nothing to transfer or unpack.
    Cached,
    /// Bytes received so far (`done` of `total`).
    Download,
    /// Bytes sent (push).
    Upload,
    /// The registry already had it (push).
    Exists,
    /// Being unpacked into the layer store.
    Unpack,
    Done,
}

#[derive(Clone, Debug)]
pub struct LayerProgress<'a> {
    /// 0-based layer position and layer count of the image.
    pub index: usize,
    pub count: usize,
    pub digest: &'a Digest,
    pub phase: Phase,
    pub done: u64,
    pub total: u64,
}

/// The callback type; `&mut |_| {}` when nobody watches.
pub type Progress<'a> = &'a mut dyn FnMut(&LayerProgress);
