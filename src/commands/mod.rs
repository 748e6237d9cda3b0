pub mod agent;
pub mod cgroup;
pub mod daemon;
pub mod fs;
pub mod launch;
