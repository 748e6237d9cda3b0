//! Which CPUs a container sees, and /sys/devices/system/cpu/{online,present,possible}.

/// Visible CPUs: the first `n` CPUs of the cpuset, n = min(cpuset size, ceil(quota)) when the
/// quota counts (`--cpu-view quota`), else the cpuset size. Never empty while the host has a CPU.
pub fn visible(cpuset: &[u32], quota_cpus: Option<f64>, use_quota: bool) -> Vec<u32> {
    let mut n = cpuset.len();
    if use_quota {
        if let Some(q) = quota_cpus.filter(|q| q.is_finite() && *q > 0.0) {
            // ceil with a tolerance so 1.0000001 (rounding in quota/period) stays 1
            let c = (q - 1e-6).ceil().max(1.0) as usize;
            n = n.min(c);
        }
    }
    cpuset.iter().copied().take(n.max(1)).collect()
}

/// `0-(n−1)`, or `0` for one CPU, as the kernel prints CPU lists.
pub fn render_list(n: usize) -> String {
    match n {
        0 | 1 => "0\n".to_owned(),
        n => format!("0-{}\n", n - 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_and_cpuset() {
        assert_eq!(visible(&[0, 1], Some(1.5), true), vec![0, 1]);
        assert_eq!(visible(&[0, 1], Some(0.5), true), vec![0]);
        assert_eq!(visible(&[0, 1], Some(1.0), true), vec![0]);
        assert_eq!(visible(&[0, 1], Some(1.0000001), true), vec![0]);
        assert_eq!(visible(&[2, 5, 7], Some(2.2), true), vec![2, 5, 7]);
        assert_eq!(visible(&[0, 1], Some(0.5), false), vec![0, 1]);
        assert_eq!(visible(&[0, 1], None, true), vec![0, 1]);
        assert_eq!(visible(&[3], Some(4.0), true), vec![3]);
        assert_eq!(render_list(1), "0\n");
        assert_eq!(render_list(2), "0-1\n");
    }
}
