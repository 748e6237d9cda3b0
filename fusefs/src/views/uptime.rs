//! /proc/uptime: the age of the container's init, and idle as the kernel counts it
//! (summed over the visible CPUs): age × CPUs − CPU time used, at least 0.

/// sysinfo(2)'s `uptime`: whole seconds, a started second counting as one (the kernel's rounding).
pub fn whole_secs(age_ns: u64) -> i64 {
    i64::try_from(age_ns.div_ceil(1_000_000_000)).unwrap_or(i64::MAX)
}

pub fn render(age_secs: f64, visible_cpus: usize, used_secs: f64) -> String {
    let age = age_secs.max(0.0);
    let idle = (age * visible_cpus as f64 - used_secs).max(0.0);
    format!("{age:.2} {idle:.2}\n")
}

#[cfg(test)]
mod tests {
    #[test]
    fn idle_scales_and_clamps() {
        assert_eq!(super::render(10.0, 2, 5.0), "10.00 15.00\n");
        assert_eq!(super::render(1.0, 1, 5.0), "1.00 0.00\n");
        assert_eq!(super::render(-0.5, 1, 0.0), "0.00 0.00\n");
        assert_eq!(super::whole_secs(0), 0);
        assert_eq!(super::whole_secs(1), 1);
        assert_eq!(super::whole_secs(2_000_000_000), 2);
    }
}
