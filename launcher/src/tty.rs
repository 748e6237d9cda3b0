//! The supervisor's side of a container's pty: our terminal in raw mode, sizes copied over,
//! and the end of our input turned into the pty's end-of-file.

use std::cell::Cell;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::sys::termios::{self, LocalFlags, SetArg, SpecialCharacterIndices, Termios};

use crate::pty;
use crate::sys;

/// Copies between the host terminal and the container's pty.
pub struct TtyProxy {
    master: OwnedFd,
    pub(crate) forward_stdin: bool,
    saved: Option<Termios>,
    /// The last byte forwarded was not a newline (a pending partial line).
    line_open: Cell<bool>,
}

impl TtyProxy {
    pub fn new(master: OwnedFd, forward_stdin: bool) -> Self {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(&stdin).ok();
        if let Some(t) = &saved {
            let mut raw = t.clone();
            termios::cfmakeraw(&mut raw);
            let _ = termios::tcsetattr(&stdin, SetArg::TCSANOW, &raw);
        }
        let p = TtyProxy {
            master,
            forward_stdin,
            saved,
            line_open: Cell::new(false),
        };
        p.resize();
        p
    }

    pub(crate) fn master(&self) -> BorrowedFd<'_> {
        self.master.as_fd()
    }

    /// Copies our terminal's size to the container's pty (on start and on SIGWINCH).
    pub(crate) fn resize(&self) {
        pty::copy_winsize(self.master.as_fd());
    }

    /// Forwards our input to the command.
    pub(crate) fn input(&self, buf: &[u8]) {
        sys::write_all_fd(&self.master, buf);
        if let Some(&last) = buf.last() {
            self.line_open.set(last != b'\n');
        }
    }

    /// Our stdin ended (e.g. `-t -i` fed from a pipe): type the pty's EOF character so the
    /// command sees end of input instead of waiting forever, as `script` does. A pending
    /// partial line takes one EOF to flush and a second to read as end of input.
    pub(crate) fn send_eof(&self) {
        let Ok(t) = termios::tcgetattr(&self.master) else {
            return;
        };
        if !t.local_flags.contains(LocalFlags::ICANON) {
            return;
        }
        let eof = t.control_chars[SpecialCharacterIndices::VEOF as usize];
        let n = if self.line_open.get() { 2 } else { 1 };
        for _ in 0..n {
            sys::write_all_fd(&self.master, &[eof]);
        }
    }
}

impl Drop for TtyProxy {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSANOW, t);
        }
    }
}
