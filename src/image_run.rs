//! `cgsight launch IMAGE [CMD...]`: which form the user typed, and the image's config applied
//! to the flags the way docker applies it (Entrypoint/Cmd, Env, WorkingDir, User, StopSignal,
//! each overridable by a flag).

use cgsight_image::{RunConfig, Store};
use cgsight_launcher::spec::{ImageRef, RawSpec};

/// True when the first positional argument names an image: `launch [flags] IMAGE [CMD...]`.
/// `launch [flags] -- CMD...` (the host root) has the `--` right before the command, which
/// clap consumes; the command is always the tail of the arguments, so the token before it tells.
pub fn is_image_form(argv: &[String], command: &[String]) -> bool {
    let Some(before) = argv.len().checked_sub(command.len() + 1) else {
        return true;
    };
    argv.get(before).is_none_or(|t| t != "--")
}

/// docker's rule: `--entrypoint` replaces the image's Entrypoint and drops its Cmd (an empty
/// one means none); CLI arguments replace the Cmd.
pub fn compose_command(cfg: &RunConfig, entrypoint: Option<&str>, args: &[String]) -> Vec<String> {
    let (ep, default_cmd): (Vec<String>, &[String]) = match entrypoint {
        Some("") => (Vec::new(), &[]),
        Some(e) => (vec![e.to_owned()], &[]),
        None => (cfg.entrypoint.clone(), &cfg.cmd),
    };
    let cmd = if args.is_empty() { default_cmd } else { args };
    ep.into_iter().chain(cmd.iter().cloned()).collect()
}

/// Fills `raw` from the stored image `name`: its layers as the root, its config under the
/// flags the user gave. `args` are the command-line arguments after the image.
pub fn apply(
    store: &Store,
    raw: &mut RawSpec,
    name: &str,
    entrypoint: Option<&str>,
    args: &[String],
) -> cgsight_image::Result<()> {
    let rec = store.image(name)?;
    let cfg = store.inspect(name)?;
    // Refuses a layer chain too long for one mount option, before anything is created.
    store.lowerdir(name)?;
    raw.image_ref = Some(ImageRef {
        reference: rec.reference.clone(),
        id: rec.manifest.to_string(),
        lowers: store.lower_paths(name)?,
        store: store.root().to_path_buf(),
    });
    raw.command = compose_command(&cfg, entrypoint, args);
    // The image's variables first, so -e replaces them; a bare KEY in a config is meaningless
    // (it would copy the launcher's own variable) and is skipped.
    let image_env = cfg.env.iter().filter(|e| e.contains('=')).cloned();
    raw.env = image_env.chain(raw.env.drain(..)).collect();
    if raw.workdir.is_none() {
        raw.workdir = cfg.working_dir.clone();
    }
    if raw.user.is_none() {
        raw.user = cfg.user.clone();
    }
    raw.stop_signal = cfg.stop_signal.clone();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn form_by_the_token_before_the_command() {
        let cmd = v(&["sh", "-c", "true"]);
        assert!(!is_image_form(
            &v(&["cgsight", "launch", "--", "sh", "-c", "true"]),
            &cmd
        ));
        assert!(is_image_form(
            &v(&["cgsight", "launch", "-m", "1g", "sh", "-c", "true"]),
            &cmd
        ));
        assert!(is_image_form(&v(&["cgsight", "run", "img"]), &v(&["img"])));
        assert!(is_image_form(&v(&["x"]), &cmd));
    }

    #[test]
    fn entrypoint_and_cmd_as_docker() {
        let cfg = RunConfig {
            entrypoint: v(&["/bin/busybox"]),
            cmd: v(&["sh"]),
            ..Default::default()
        };
        assert_eq!(compose_command(&cfg, None, &[]), v(&["/bin/busybox", "sh"]));
        assert_eq!(
            compose_command(&cfg, None, &v(&["ls"])),
            v(&["/bin/busybox", "ls"])
        );
        assert_eq!(
            compose_command(&cfg, Some("/bin/cat"), &[]),
            v(&["/bin/cat"])
        );
        assert_eq!(
            compose_command(&cfg, Some("/bin/cat"), &v(&["/x"])),
            v(&["/bin/cat", "/x"])
        );
        assert_eq!(
            compose_command(&cfg, Some(""), &v(&["ls", "/"])),
            v(&["ls", "/"])
        );
    }
}
