//! Prints one scrape to stdout (for eyeballing and `promtool check metrics`):
//! `cargo run -p cgsight-agent --example scrape_once [--all-cgroups]`.
fn main() {
    let all = std::env::args().any(|a| a == "--all-cgroups");
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
}
