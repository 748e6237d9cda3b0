//! /proc/loadavg: the kernel's fixed-point exponential moving averages, fed with the
//! container's runnable + uninterruptible threads every 5 s.

pub const FSHIFT: u32 = 11;
pub const FIXED_1: u64 = 1 << FSHIFT;
/// 1/exp(5s/1min), 1/exp(5s/5min), 1/exp(5s/15min) in fixed point.
pub const EXP: [u64; 3] = [1884, 2014, 2037];
pub const SAMPLE_SECS: u64 = 5;

/// One step of the kernel's `calc_load`.
pub fn calc_load(load: u64, exp: u64, active_tasks: u64) -> u64 {
    let active = active_tasks * FIXED_1;
    let mut newload = load * exp + active * (FIXED_1 - exp);
    if active >= load {
        newload += FIXED_1 - 1;
    }
    newload / FIXED_1
}

/// Applies one sample to the three averages.
pub fn step(loads: &mut [u64; 3], active_tasks: u64) {
    for (l, e) in loads.iter_mut().zip(EXP) {
        *l = calc_load(*l, e, active_tasks);
    }
}

/// sysinfo(2)'s `loads`: the same averages with 16 fraction bits (SI_LOAD_SHIFT), as the kernel
/// converts its own.
pub fn sysinfo_loads(loads: &[u64; 3]) -> [u64; 3] {
    loads.map(|l| l << (16 - FSHIFT))
}

pub fn render(loads: &[u64; 3], running: u64, total: u64, last_pid: u64) -> String {
    let f = |x: u64| {
        let x = x + FIXED_1 / 200;
        format!(
            "{}.{:02}",
            x >> FSHIFT,
            ((x & (FIXED_1 - 1)) * 100) >> FSHIFT
        )
    };
    format!(
        "{} {} {} {running}/{total} {last_pid}\n",
        f(loads[0]),
        f(loads[1]),
        f(loads[2])
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ema_rises_toward_active_and_formats_like_the_kernel() {
        let mut l = [0u64; 3];
        assert_eq!(render(&l, 0, 1, 1), "0.00 0.00 0.00 0/1 1\n");
        step(&mut l, 1);
        // the kernel's first step from 0 with one task: 1 - 1884/2048 ≈ 0.08
        assert_eq!(render(&l, 1, 3, 42), "0.08 0.02 0.01 1/3 42\n");
        for _ in 0..200 {
            step(&mut l, 1);
        }
        assert!(
            render(&l, 1, 3, 42).starts_with("1.00 "),
            "{}",
            render(&l, 1, 3, 42)
        );
        for _ in 0..400 {
            step(&mut l, 0);
        }
        assert!(render(&l, 0, 3, 42).starts_with("0.00 "));
        assert_eq!(sysinfo_loads(&[FIXED_1, 0, FIXED_1 / 2]), [65536, 0, 32768]);
    }
}
