//! `cgsight logs`: the output of a detached container.

use std::io::{Read, Seek, SeekFrom, Write};
use std::thread;
use std::time::Duration;

use anyhow::{bail, Context};
use cgsight_launcher::Status;

#[derive(clap::Args)]
pub struct Args {
    /// Follow the output until the container exits.
    #[arg(short = 'f', long)]
    follow: bool,
    container: String,
}

pub fn run(a: Args) -> anyhow::Result<u8> {
    let (store, st) = super::find(&a.container)?;
    let p = store.log_path(&st.id);
    let mut f = match std::fs::File::open(&p) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("container {} has no log (only -d containers log)", st.name)
        }
        Err(e) => return Err(e).with_context(|| format!("opening {}", p.display())),
    };
    let mut out = std::io::stdout().lock();
    let mut pos = 0u64;
    loop {
        f.seek(SeekFrom::Start(pos))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        pos += buf.len() as u64;
        out.write_all(&buf)?;
        out.flush()?;
        if !a.follow {
            return Ok(0);
        }
        let running = matches!(store.load(&st.id), Ok(s) if s.status == Status::Running);
        if !running && buf.is_empty() {
            return Ok(0);
        }
        if buf.is_empty() {
            thread::sleep(Duration::from_millis(100));
        }
    }
}
