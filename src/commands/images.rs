//! `cgsight images`: the stored images as docker's table.

use cgsight_image::{ImageRecord, Reference, Store};

use crate::images::short_digest;

#[derive(clap::Args)]
pub struct Args {
    /// Only print image ids.
    #[arg(short = 'q', long)]
    quiet: bool,
}

/// REPOSITORY and TAG of a stored reference; an image kept only under its digest has none.
fn repo_tag(reference: &str) -> (String, String) {
    match Reference::parse(reference) {
        Ok(r) if !reference.starts_with("sha256:") => (
            format!("{}/{}", r.registry, r.repository),
            r.tag.unwrap_or_else(|| "<none>".into()),
        ),
        _ => ("<none>".into(), "<none>".into()),
    }
}

/// Seconds since the epoch of an RFC 3339 UTC-or-offset time's date and clock (fraction and
/// offset ignored: the table shows hours at best).
fn parse_time(s: &str) -> Option<i64> {
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some((era * 146_097 + doe - 719_468) * 86_400 + hh * 3600 + mm * 60 + ss)
}

fn ago(created: Option<i64>) -> String {
    let Some(t) = created else {
        return "N/A".into();
    };
    let s = (cgsight_launcher::state::now() as i64 - t).max(0);
    match s {
        0..=59 => format!("{s} seconds ago"),
        60..=3599 => format!("{} minutes ago", s / 60),
        3600..=86_399 => format!("{} hours ago", s / 3600),
        _ => format!("{} days ago", s / 86_400),
    }
}

fn created(store: &Store, rec: &ImageRecord) -> Option<i64> {
    let bytes = store.blobs().read(&rec.config).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    parse_time(v.get("created")?.as_str()?)
}

pub fn run(a: Args) -> anyhow::Result<u8> {
    Ok(crate::images::with_store(|store| {
        let list = store.images()?;
        if a.quiet {
            for r in &list {
                println!("{}", short_digest(&r.manifest));
            }
            return Ok(0);
        }
        println!(
            "{:<40}  {:<12}  {:<12}  {:<16}  SIZE",
            "REPOSITORY", "TAG", "IMAGE ID", "CREATED"
        );
        for r in &list {
            let (repo, tag) = repo_tag(&r.reference);
            let size: u64 = r.layers.iter().map(|l| l.blob.size).sum();
            println!(
                "{repo:<40}  {tag:<12}  {:<12}  {:<16}  {}",
                short_digest(&r.manifest),
                ago(created(store, r)),
                crate::fmt::bytes(size)
            );
        }
        Ok(0)
    }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_and_names() {
        assert_eq!(super::parse_time("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            super::parse_time("2026-12-31T23:59:59.123Z"),
            Some(1_798_761_599)
        );
        assert_eq!(super::parse_time("2026-1"), None);
        assert_eq!(
            super::repo_tag("127.0.0.1:5000/a/b:v1"),
            ("127.0.0.1:5000/a/b".into(), "v1".into())
        );
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(super::repo_tag(&d), ("<none>".into(), "<none>".into()));
    }
}
