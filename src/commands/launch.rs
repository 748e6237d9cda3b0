//! Container lifecycle verbs.

macro_rules! verb {
    ($args:ident, $f:ident) => {
        #[derive(clap::Args)]
        pub struct $args {}
        pub fn $f(_a: $args) -> anyhow::Result<u8> {
            anyhow::bail!("this verb is not built yet")
        }
    };
}
verb!(LaunchArgs, launch);
verb!(PsArgs, ps);
verb!(ExecArgs, exec);
verb!(StopArgs, stop);
verb!(KillArgs, kill);
verb!(RmArgs, rm);
verb!(InspectArgs, inspect);
verb!(LogsArgs, logs);
verb!(InitArgs, init);
