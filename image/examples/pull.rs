//! Pulls one image into a store root and prints how long pull + unpack took, per layer too:
//! `cargo run --release -p cgsight-image --example pull -- ROOT REFERENCE`.

use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(root), Some(reference)) = (args.next(), args.next()) else {
        eprintln!("usage: pull ROOT REFERENCE");
        std::process::exit(2);
    };
    let store = match cgsight_image::Store::open(std::path::Path::new(&root)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    let t = Instant::now();
    let res = cgsight_image::pull(&store, &reference, &Default::default(), &mut |p| {
        if matches!(
            p.phase,
            cgsight_image::Phase::Done | cgsight_image::Phase::Cached
        ) {
            println!(
                "layer {}/{} {} {:?} at {:?}",
                p.index + 1,
                p.count,
                p.digest,
                p.phase,
                t.elapsed()
            );
        }
    });
    match res {
        Ok(r) => println!(
            "pulled {} ({}) in {:?}",
            r.reference,
            r.manifest,
            t.elapsed()
        ),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
