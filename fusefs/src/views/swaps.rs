//! /proc/swaps: the host header, then one synthetic line when the container may swap.

pub fn render(host: &str, total_kb: u64, free_kb: u64) -> String {
    let header = host
        .lines()
        .next()
        .unwrap_or("Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority");
    let mut out = format!("{header}\n");
    if total_kb > 0 {
        let used = total_kb.saturating_sub(free_kb);
        out.push_str(&format!(
            "{:<40}virtual\t\t{total_kb}\t\t{used}\t\t0\n",
            "none"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn header_and_line() {
        let host =
            "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n/dev/vda2 partition 100 0 -2\n";
        assert_eq!(super::render(host, 0, 0).lines().count(), 1);
        let out = super::render(host, 1024, 1000);
        assert!(out.ends_with("virtual\t\t1024\t\t24\t\t0\n"), "{out}");
        assert!(!out.contains("/dev/vda2"));
    }
}
