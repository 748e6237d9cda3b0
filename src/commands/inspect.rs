//! `cgsight inspect`: a container's spec, limits, state and paths as JSON.

use cgsight_cgroup::{Hierarchies, Managed};
use cgsight_launcher::{security, userns, Status};

#[derive(clap::Args)]
pub struct Args {
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn run(a: Args) -> anyhow::Result<u8> {
    let h = Hierarchies::detect()?;
    let mut out = Vec::new();
    let rc = super::for_each_container(&a.containers, |store, st| {
        let m = Managed::open(&h, &st.cgroup_path);
        let dir = store.container_dir(&st.id);
        let mut v = serde_json::to_value(&st)?;
        // Docker's names too, for scripts written against `docker inspect`.
        v["OOMKilled"] = st.oom_killed.into();
        v["ExitCode"] = st.exit_code.into();
        v["pids"] = serde_json::to_value(m.all_procs())?;
        if let Some(n) = st.network.as_ref().filter(|_| st.status == Status::Running) {
            // docker's shape: "8080/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}].
            let mut ports = serde_json::Map::new();
            for p in &n.ports {
                let key = format!("{}/{}", p.ctr_port, p.proto.as_str());
                let ip = p
                    .host_ip
                    .map_or_else(|| "0.0.0.0".to_owned(), |i| i.to_string());
                let e = ports.entry(key).or_insert_with(|| serde_json::json!([]));
                if let Some(a) = e.as_array_mut() {
                    a.push(serde_json::json!({"HostIp": ip, "HostPort": p.host_port.to_string()}));
                }
            }
            v["NetworkSettings"] = serde_json::json!({
                "NetworkMode": n.mode,
                "Bridge": n.bridge,
                "IPAddress": n.ip.map(|i| i.to_string()).unwrap_or_default(),
                "IPPrefixLen": n.prefix_len.unwrap_or(0),
                "Gateway": n.gateway.map(|i| i.to_string()).unwrap_or_default(),
                "Ports": ports,
            });
        }
        v["cgroup_dirs"] = serde_json::to_value(m.dirs())?;
        v["paths"] = serde_json::json!({
            "state": store.state_path(&st.id).join("state.json"),
            "root": dir,
            "upper": dir.join("upper"),
            "work": dir.join("work"),
            "merged": dir.join("merged"),
            "log": store.log_path(&st.id),
        });
        let sec = &st.spec.security;
        v["security"] = serde_json::json!({
            "seccomp": sec.seccomp.describe(),
            "devices": sec.devices.iter().map(|d| &d.spec).collect::<Vec<_>>(),
            "device_rules": security::device_rules(sec).iter()
                .map(|r| format!("{} {r}", if r.allow { "allow" } else { "deny" }))
                .collect::<Vec<_>>(),
            "privileged": sec.privileged,
            "capabilities": format!("{:016x}", sec.caps()),
            "userns": sec.userns,
            "userns_range": userns::setup::recorded(&st.id)
                .map(|r| serde_json::json!({"uid": r.uid, "gid": r.gid, "count": r.count})),
            "no_new_privileges": true,
        });
        // The stored profile text is for `exec`; the path above names it.
        if let Some(s) = v.pointer_mut("/spec/security/seccomp") {
            if let Some(o) = s.as_object_mut() {
                o.remove("json");
            }
        }
        if st.status == Status::Running {
            if let Ok(mem) = m.cgroup().memory() {
                v["memory_usage"] = mem.usage.into();
            }
            if let Some(pid) = st.pid {
                v["views"] = cgsight_launcher::views::health(pid).as_str().into();
            }
        }
        out.push(v);
        Ok(0)
    })?;
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(rc)
}
