//! Human-readable sizes and durations for CLI output.

pub fn bytes(b: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub fn limit(l: Option<u64>) -> String {
    l.map_or_else(|| "unlimited".to_string(), bytes)
}

pub fn secs_ns(ns: u64) -> String {
    format!("{:.3} s", ns as f64 / 1e9)
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes() {
        assert_eq!(super::bytes(512), "512 B");
        assert_eq!(super::bytes(268435456), "256.0 MiB");
        assert_eq!(super::limit(None), "unlimited");
    }
}
