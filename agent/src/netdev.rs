//! `/proc/<pid>/net/dev` parsing: per-interface counters of one network namespace.

/// Counters of one interface.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Iface {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// Interfaces cAdvisor leaves out: loopback and the host side of container links.
pub fn ignored(name: &str) -> bool {
    name == "lo" || name.starts_with("veth") || name.starts_with("docker")
}

/// Parses the file's text; malformed lines are an error naming the line.
pub fn parse(text: &str) -> Result<Vec<Iface>, String> {
    let mut out = Vec::new();
    // Two header lines, then `name: rx(8 fields) tx(8 fields)`.
    for line in text.lines().skip(2) {
        if line.trim().is_empty() {
            continue;
        }
        let (name, rest) = line
            .split_once(':')
            .ok_or_else(|| format!("no ':' in {line:?}"))?;
        let name = name.trim();
        if ignored(name) {
            continue;
        }
        let mut f = [0u64; 16];
        let mut n = 0;
        for tok in rest.split_ascii_whitespace() {
            if n == 16 {
                break;
            }
            f[n] = tok
                .parse()
                .map_err(|_| format!("bad counter {tok:?} in {line:?}"))?;
            n += 1;
        }
        if n < 16 {
            return Err(format!("{n} counters instead of 16 in {line:?}"));
        }
        out.push(Iface {
            name: name.to_owned(),
            rx_bytes: f[0],
            rx_packets: f[1],
            rx_errors: f[2],
            rx_dropped: f[3],
            tx_bytes: f[8],
            tx_packets: f[9],
            tx_errors: f[10],
            tx_dropped: f[11],
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 1234567     100    0    0    0     0          0         0  1234567     100    0    0    0     0       0          0
  eth0: 52428800   40000    1    2    0     0          0        10 10485760   30000    3    4    0     0       0          0
vethab12: 5 1 0 0 0 0 0 0 5 1 0 0 0 0 0 0
docker0: 5 1 0 0 0 0 0 0 5 1 0 0 0 0 0 0
";

    #[test]
    fn parses_and_skips_lo_veth_docker() {
        let v = parse(SAMPLE).unwrap();
        assert_eq!(v.len(), 1);
        let e = &v[0];
        assert_eq!(e.name, "eth0");
        assert_eq!(
            (e.rx_bytes, e.rx_packets, e.rx_errors, e.rx_dropped),
            (52428800, 40000, 1, 2)
        );
        assert_eq!(
            (e.tx_bytes, e.tx_packets, e.tx_errors, e.tx_dropped),
            (10485760, 30000, 3, 4)
        );
    }

    #[test]
    fn malformed_is_an_error() {
        assert!(parse("h\nh\n eth0: 1 2 3\n").is_err());
        assert!(parse("h\nh\n eth0 1 2 3\n").is_err());
        assert!(parse("h\nh\n eth0: x 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n").is_err());
        assert_eq!(parse("h\nh\n").unwrap(), vec![]);
    }
}
