//! Prints one scrape to stdout (for eyeballing and `promtool check metrics`):
//! `cargo run -p cgsight-agent --example scrape_once [--all-cgroups] [--repeat N]`.
//! With `--repeat N` it scrapes N more times (for `perf record`) and prints to stderr the CPU
//! time per scrape after the first, which opens the files the later ones keep.
fn cpu_us() -> u64 {
    // SAFETY: rusage is plain data and `u` a valid out-pointer.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    us(u.ru_utime) + us(u.ru_stime)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let all = args.iter().any(|a| a == "--all-cgroups");
    let repeat: u64 = args
        .iter()
        .position(|a| a == "--repeat")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let h = match cgsight_cgroup::Hierarchies::detect() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let mut c =
        cgsight_agent::collect::Collector::new(h, all, cgsight_agent::DEFAULT_STATE_DIR.into());
    let mut s = String::new();
    c.scrape(&mut s);
    print!("{s}");
    if repeat > 0 {
        let t = cpu_us();
        for _ in 0..repeat {
            s.clear();
            c.scrape(&mut s);
        }
        eprintln!(
            "cpu_us_per_scrape {} kept_files {}",
            (cpu_us() - t) / repeat,
            c.kept_files()
        );
    }
}
