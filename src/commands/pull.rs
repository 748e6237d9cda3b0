//! `cgsight pull`: an image from a registry into the store, with per-layer progress.

use std::io::{IsTerminal, Write};

use cgsight_image::{ClientOptions, Credentials, LayerProgress, Phase};

use crate::images;

/// How to reach the registry and whether to show progress (`pull` and `push`).
#[derive(clap::Args)]
pub struct RegistryArgs {
    /// Registry credentials (default: ~/.docker/config.json).
    #[arg(long, value_name = "USER:PASS")]
    creds: Option<String>,
    /// Plain HTTP to a registry that is not on loopback.
    #[arg(long)]
    insecure: bool,
    /// Suppress the progress output.
    #[arg(short = 'q', long)]
    quiet: bool,
}

impl RegistryArgs {
    pub fn client_options(&self) -> cgsight_image::Result<ClientOptions> {
        Ok(ClientOptions {
            insecure: self.insecure,
            credentials: self.creds.as_deref().map(Credentials::parse).transpose()?,
            connect_timeout: None,
        })
    }

    /// The progress callback's body: the display, unless `-q`.
    pub fn progress(&self) -> impl FnMut(&LayerProgress) {
        let mut d = (!self.quiet).then(Display::new);
        move |p| {
            if let Some(d) = &mut d {
                d.report(p)
            }
        }
    }
}

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    registry: RegistryArgs,
    /// Image reference, e.g. 127.0.0.1:5000/app:1.
    image: String,
}

/// Per-layer progress: on a terminal one line per layer redrawn in place, otherwise a plain
/// line each time a layer changes phase (download bytes are not repeated line by line).
pub struct Display {
    tty: bool,
    lines: Vec<String>,
    phases: Vec<Option<Phase>>,
    drawn: usize,
}

impl Display {
    pub fn new() -> Self {
        Display {
            tty: std::io::stderr().is_terminal(),
            lines: Vec::new(),
            phases: Vec::new(),
            drawn: 0,
        }
    }

    pub fn report(&mut self, p: &LayerProgress) {
        if self.lines.len() < p.count {
            self.lines.resize(p.count, String::new());
            self.phases.resize(p.count, None);
        }
        let line = render(p);
        let changed_phase = self.phases.get(p.index).copied().flatten() != Some(p.phase);
        if let (Some(l), Some(ph)) = (self.lines.get_mut(p.index), self.phases.get_mut(p.index)) {
            if *l == line {
                return;
            }
            *l = line.clone();
            *ph = Some(p.phase);
        }
        let mut err = std::io::stderr().lock();
        if self.tty {
            // Back to the first layer's line, then every line again (erasing each).
            if self.drawn > 0 {
                let _ = write!(err, "\x1b[{}A", self.drawn);
            }
            for l in &self.lines {
                let _ = writeln!(err, "\r\x1b[2K{l}");
            }
            self.drawn = self.lines.len();
        } else if changed_phase {
            let _ = writeln!(err, "{line}");
        }
    }
}

fn render(p: &LayerProgress) -> String {
    let id = images::short_digest(p.digest);
    let n = format!("[{}/{}] {id}", p.index + 1, p.count);
    let sz = |b| crate::fmt::bytes(b);
    match p.phase {
        Phase::Cached => format!("{n}: already in the store"),
        Phase::Download if p.total > 0 => format!(
            "{n}: downloading {} / {} ({}%)",
            sz(p.done),
            sz(p.total),
            p.done.saturating_mul(100) / p.total
        ),
        Phase::Download => format!("{n}: downloading {}", sz(p.done)),
        Phase::Upload => format!("{n}: pushing {}", sz(p.total)),
        Phase::Exists => format!("{n}: already in the registry"),
        Phase::Unpack => format!("{n}: unpacking"),
        Phase::Done => format!("{n}: done"),
    }
}

pub fn run(a: Args) -> anyhow::Result<u8> {
    Ok(images::with_store(|store| {
        let opts = a.registry.client_options()?;
        let rec = cgsight_image::pull(store, &a.image, &opts, &mut a.registry.progress())?;
        println!("{}", rec.reference);
        println!("digest: {}", rec.manifest);
        Ok(0)
    }))
}
