//! Runs the `fluid-fuse` daemons outside the node plugin's pod, so that replacing the plugin
//! (a DaemonSet rollout, `helm upgrade`, a crash of its container) does not kill them and with
//! them every FUSE mount of the node's pods.
//!
//! Deleting a container kills every process of its cgroup (runc `kill --all`; the kubelet then
//! empties the pod's cgroup), and without hostPID the end of its PID namespace kills the rest.
//! So the node plugin runs with hostPID, sees the host's cgroup hierarchies at
//! `--host-cgroup-root` (the chart mounts the host's /sys/fs/cgroup there), and moves each daemon
//! it starts into the cgroup `--daemon-cgroup` (e.g. `fluid-fuse`) directly under the root of
//! every hierarchy. The daemon keeps running there; a new plugin adopts it from its volume record
//! (pid, start time, boot id), as after a plain restart. What changes for the operator: the
//! daemons' memory and CPU are no longer counted in the plugin pod but in that cgroup, where they
//! can be watched and limited.

use std::path::{Path, PathBuf};

/// The cgroup the daemons are moved into, one folder per hierarchy.
#[derive(Debug, Clone)]
pub struct DaemonCgroup {
    dirs: Vec<PathBuf>,
}

impl DaemonCgroup {
    /// Creates `name` under the root of each cgroup hierarchy mounted below `host_root`.
    /// Refuses when PID 1 is visibly in our own mount namespace: we are then not in the host's
    /// PID namespace (no hostPID), and the daemons would die with the pod's PID namespace
    /// whatever their cgroup. (A PID 1 we may not inspect is not ours: the host's init.)
    pub fn prepare(name: &str, host_root: &Path) -> Result<Self, String> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(format!(
                "give one folder name, e.g. fluid-fuse, not {name:?}"
            ));
        }
        let ours = std::fs::read_link("/proc/self/ns/mnt")
            .map_err(|e| format!("reading /proc/self/ns/mnt: {e}"))?;
        if std::fs::read_link("/proc/1/ns/mnt").is_ok_and(|init| init == ours) {
            return Err(
                "PID 1 shares this process's mount namespace: the plugin does not run in the \
                 host's PID namespace (the node plugin pod needs hostPID: true)"
                    .into(),
            );
        }
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("reading /proc/self/mountinfo: {e}"))?;
        let mut dirs = Vec::new();
        for root in cgroup_roots(&mountinfo, host_root) {
            let dir = root.join(name);
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("creating {}: {e}", dir.display()))?;
            inherit_cpuset(&dir)?;
            dirs.push(dir);
        }
        if dirs.is_empty() {
            return Err(format!(
                "no cgroup hierarchy is mounted at its root below {} (mount the host's \
                 /sys/fs/cgroup there)",
                host_root.display()
            ));
        }
        Ok(DaemonCgroup { dirs })
    }

    /// The `cgroup.procs` files of the daemon cgroup, open for writing: a child writes "0"
    /// (itself) to each between fork and exec, so that it is inside before it starts
    /// processes of its own (the keeper's serving process), which stay where they start.
    pub fn procs_files(&self) -> Vec<std::fs::File> {
        self.dirs
            .iter()
            .filter_map(|d| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(d.join("cgroup.procs"))
                    .ok()
            })
            .collect()
    }

    /// Moves process `pid` (all its threads) into the daemon cgroup of every hierarchy.
    pub fn enter(&self, pid: u32) -> Result<(), String> {
        for dir in &self.dirs {
            let procs = dir.join("cgroup.procs");
            std::fs::write(&procs, pid.to_string())
                .map_err(|e| format!("moving pid {pid} into {}: {e}", procs.display()))?;
        }
        Ok(())
    }
}

/// Room above the mem tiers' budget for the daemons' own memory (code, buffers, tables).
pub const DAEMON_MEMORY_HEADROOM: u64 = 1 << 30;

/// The daemon cgroup's memory limit for a node's `--mem-budget`: the budget and
/// [`DAEMON_MEMORY_HEADROOM`]; no budget, no limit.
pub fn memory_max(mem_budget: Option<u64>) -> Option<u64> {
    mem_budget.map(|b| b.saturating_add(DAEMON_MEMORY_HEADROOM))
}

impl DaemonCgroup {
    /// Caps the memory of all daemons together: `memory.max` (cgroup2) or
    /// `memory.limit_in_bytes` (the v1 memory hierarchy). Their mem tiers are memory files the
    /// daemons fill, charged here; outside any pod, nothing else would bound them.
    pub fn limit_memory(&self, bytes: u64) -> Result<(), String> {
        let mut set = false;
        for dir in &self.dirs {
            for file in ["memory.max", "memory.limit_in_bytes"] {
                let path = dir.join(file);
                if path.exists() {
                    std::fs::write(&path, bytes.to_string())
                        .map_err(|e| format!("writing {}: {e}", path.display()))?;
                    set = true;
                }
            }
        }
        if set {
            Ok(())
        } else {
            Err("no memory controller in the daemon cgroup".into())
        }
    }
}

/// The mount points at or below `below` of cgroup (v1) and cgroup2 hierarchies mounted at the
/// hierarchy's root (a bind of a sub-cgroup, which is what a container sees, is skipped).
fn cgroup_roots(mountinfo: &str, below: &Path) -> Vec<PathBuf> {
    let mut roots = Vec::new();
    for line in mountinfo.lines() {
        // id parent major:minor root mountpoint options [optional...] - fstype source super
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = left.split(' ').collect();
        let Some(fstype) = right.split(' ').next() else {
            continue;
        };
        if fields.len() < 5 || !matches!(fstype, "cgroup" | "cgroup2") || fields[3] != "/" {
            continue;
        }
        let mountpoint = PathBuf::from(fields[4].replace("\\040", " "));
        if mountpoint.starts_with(below) && !roots.contains(&mountpoint) {
            roots.push(mountpoint);
        }
    }
    roots
}

/// A new cpuset (v1) cgroup has no CPUs or memory nodes, and no process can enter it until it
/// gets its parent's.
fn inherit_cpuset(dir: &Path) -> Result<(), String> {
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let own = dir.join(file);
        let Ok(current) = std::fs::read_to_string(&own) else {
            continue;
        };
        if !current.trim().is_empty() {
            continue;
        }
        let parent = dir.parent().map(|p| p.join(file));
        let value = parent
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default();
        std::fs::write(&own, value.trim())
            .map_err(|e| format!("writing {}: {e}", own.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_hierarchy_roots_and_skips_bound_sub_cgroups() {
        let mountinfo = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
90 80 0:32 /kubepods/pod1/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
91 80 0:32 / /other/memory rw - cgroup cgroup rw,memory
";
        assert_eq!(
            cgroup_roots(mountinfo, Path::new("/sys/fs/cgroup")),
            vec![
                PathBuf::from("/sys/fs/cgroup/cpu"),
                PathBuf::from("/sys/fs/cgroup/memory"),
                PathBuf::from("/sys/fs/cgroup/unified"),
            ]
        );
    }

    #[test]
    fn the_memory_limit_is_the_budget_and_the_headroom() {
        assert_eq!(memory_max(None), None);
        assert_eq!(memory_max(Some(16 << 30)), Some((16 << 30) + (1 << 30)));
        assert_eq!(memory_max(Some(u64::MAX)), Some(u64::MAX));
        // Written to each hierarchy's file: cgroup2 `memory.max`, v1 `memory.limit_in_bytes`.
        let dir = tempfile::tempdir().unwrap();
        let (v2, v1, cpu) = (
            dir.path().join("v2"),
            dir.path().join("v1"),
            dir.path().join("cpu"),
        );
        for d in [&v2, &v1, &cpu] {
            std::fs::create_dir(d).unwrap();
        }
        std::fs::write(v2.join("memory.max"), "max\n").unwrap();
        std::fs::write(v1.join("memory.limit_in_bytes"), "9223372036854771712\n").unwrap();
        let cg = DaemonCgroup {
            dirs: vec![v2.clone(), v1.clone(), cpu.clone()],
        };
        let max = memory_max(Some(64 << 20)).unwrap();
        cg.limit_memory(max).unwrap();
        for f in [v2.join("memory.max"), v1.join("memory.limit_in_bytes")] {
            assert_eq!(
                std::fs::read_to_string(&f).unwrap(),
                max.to_string(),
                "{}",
                f.display()
            );
        }
        assert!(
            !cpu.join("memory.max").exists(),
            "a file made where there was none"
        );
        let none = DaemonCgroup { dirs: vec![cpu] };
        assert!(
            none.limit_memory(max)
                .unwrap_err()
                .contains("no memory controller")
        );
    }

    /// The same on this machine's real hierarchies, in a fresh cgroup of each: the kernel's own
    /// `memory.max` / `memory.limit_in_bytes` reads back the limit. Skipped (with a note) where
    /// no memory hierarchy is mounted or cgroups cannot be made (not root, read-only).
    #[test]
    fn a_real_memory_cgroup_gets_the_budget() {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let name = format!("fluid-test-memory-{}", std::process::id());
        let mut dirs = Vec::new();
        for root in cgroup_roots(&mountinfo, Path::new("/sys/fs/cgroup")) {
            let has_memory = root.join("memory.limit_in_bytes").exists()
                || std::fs::read_to_string(root.join("cgroup.subtree_control"))
                    .is_ok_and(|c| c.split_whitespace().any(|x| x == "memory"));
            if has_memory && std::fs::create_dir(root.join(&name)).is_ok() {
                dirs.push(root.join(&name));
            }
        }
        if dirs.is_empty() {
            eprintln!("skipped: no writable memory cgroup hierarchy under /sys/fs/cgroup");
            return;
        }
        let cg = DaemonCgroup { dirs: dirs.clone() };
        // A whole number of pages, as the kernel rounds the limit down to one.
        let max = memory_max(Some(256 << 20)).unwrap();
        let result = cg.limit_memory(max);
        let read: Vec<String> = dirs
            .iter()
            .flat_map(|d| ["memory.max", "memory.limit_in_bytes"].map(|f| d.join(f)))
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .map(|v| v.trim().to_string())
            .collect();
        for d in &dirs {
            let _ = std::fs::remove_dir(d);
        }
        result.unwrap();
        assert!(!read.is_empty());
        assert!(read.iter().all(|v| *v == max.to_string()), "{read:?}");
    }

    #[test]
    fn refuses_names_that_are_not_one_folder() {
        for bad in ["", "a/b", "..", "."] {
            assert!(
                DaemonCgroup::prepare(bad, Path::new("/sys/fs/cgroup")).is_err(),
                "{bad:?}"
            );
        }
    }
}
