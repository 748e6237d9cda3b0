//! /proc/cpuinfo: the host's processor blocks for the visible CPUs, renumbered 0..n−1.

/// The host's cpuinfo split into processor blocks, parsed once and cached by the caller.
#[derive(Clone, Debug, Default)]
pub struct HostCpuinfo {
    /// (host cpu number, the block's lines after `processor : N`, each ending in '\n').
    pub blocks: Vec<(u32, String)>,
    /// Anything after the last block that is not part of one (kept verbatim).
    pub trailer: String,
}

impl HostCpuinfo {
    pub fn parse(text: &str) -> HostCpuinfo {
        let mut out = HostCpuinfo::default();
        let mut cur: Option<(u32, String)> = None;
        for line in text.lines() {
            if line.starts_with("processor") {
                if let Some(b) = cur.take() {
                    out.blocks.push(b);
                }
                let n = line
                    .split_once(':')
                    .and_then(|(_, v)| v.trim().parse().ok())
                    .unwrap_or(out.blocks.len() as u32);
                cur = Some((n, String::new()));
            } else if let Some((_, b)) = cur.as_mut() {
                if !line.is_empty() {
                    b.push_str(line);
                    b.push('\n');
                }
            } else {
                out.trailer.push_str(line);
                out.trailer.push('\n');
            }
        }
        if let Some(b) = cur.take() {
            out.blocks.push(b);
        }
        out
    }
}

/// Blocks of `visible` host CPUs, in that order, numbered from 0. `siblings` and `cpu cores`
/// say n, so tools that derive a core count from them agree with the processor count.
pub fn render(host: &HostCpuinfo, visible: &[u32]) -> String {
    let n = visible.len();
    let mut out = String::with_capacity(host.blocks.first().map_or(0, |b| b.1.len() + 32) * n);
    let mut i = 0usize;
    for cpu in visible {
        let Some((_, block)) = host.blocks.iter().find(|(c, _)| c == cpu) else {
            continue;
        };
        out.push_str("processor\t: ");
        out.push_str(&i.to_string());
        out.push('\n');
        for line in block.lines() {
            let key = line.split(':').next().unwrap_or("").trim_end();
            match key {
                "siblings" | "cpu cores" => {
                    out.push_str(line.split(':').next().unwrap_or(""));
                    out.push_str(": ");
                    out.push_str(&n.to_string());
                }
                _ => out.push_str(line),
            }
            out.push('\n');
        }
        out.push('\n');
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "processor\t: 0\nvendor_id\t: GenuineIntel\nsiblings\t: 4\ncore id\t\t: 0\ncpu cores\t: 4\nflags\t\t: fpu vme\n\nprocessor\t: 1\nvendor_id\t: GenuineIntel\nsiblings\t: 4\ncore id\t\t: 1\ncpu cores\t: 4\nflags\t\t: fpu vme\n\nprocessor\t: 2\nvendor_id\t: GenuineIntel\nsiblings\t: 4\ncore id\t\t: 2\ncpu cores\t: 4\nflags\t\t: fpu vme\n\n";

    #[test]
    fn filters_and_renumbers() {
        let h = HostCpuinfo::parse(HOST);
        assert_eq!(h.blocks.len(), 3);
        let out = render(&h, &[2, 1]);
        let procs: Vec<&str> = out.lines().filter(|l| l.starts_with("processor")).collect();
        assert_eq!(procs, ["processor\t: 0", "processor\t: 1"]);
        assert!(out.contains("core id\t\t: 2\n"), "{out}");
        assert!(out.contains("siblings\t: 2\n"), "{out}");
        assert!(out.contains("cpu cores\t: 2\n"), "{out}");
        assert!(out.ends_with("fpu vme\n\n"));
        assert_eq!(render(&h, &[]), "");
    }
}
