//! Where the cgroup hierarchies are mounted, and which cgroup this process is in: read from
//! /proc/self/mountinfo and /proc/self/cgroup, which the kernel writes.

use std::fs;
use std::path::{Path, PathBuf};

/// A mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// Its mount point.
    pub mount: PathBuf,
    /// v1: the controllers bound to it (`cpu`, `cpuacct`, ...); empty for v2.
    pub controllers: Vec<String>,
}

/// The cgroup v1 hierarchies and the cgroup v2 one, as listed in a mountinfo text.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Mounts {
    pub v1: Vec<Hierarchy>,
    pub v2: Option<PathBuf>,
}

impl Mounts {
    /// The mounts of this process.
    pub fn of_this_process() -> std::io::Result<Mounts> {
        Ok(Mounts::parse(&fs::read_to_string("/proc/self/mountinfo")?))
    }

    /// Parses `/proc/<pid>/mountinfo`: `ID PARENT DEV ROOT MOUNTPOINT OPTS [TAGS] - FSTYPE
    /// SOURCE SUPEROPTS`. The first mount of a hierarchy wins (later ones are bind mounts).
    pub fn parse(mountinfo: &str) -> Mounts {
        let mut mounts = Mounts::default();
        for line in mountinfo.lines() {
            let Some((head, tail)) = line.split_once(" - ") else {
                continue;
            };
            let (Some(mount), mut tail) = (head.split(' ').nth(4), tail.split(' ')) else {
                continue;
            };
            let (fstype, superopts) = (tail.next(), tail.nth(1).unwrap_or_default());
            let mount = PathBuf::from(unescape(mount));
            match fstype {
                Some("cgroup2") if mounts.v2.is_none() => mounts.v2 = Some(mount),
                Some("cgroup") => {
                    let controllers: Vec<String> = superopts
                        .split(',')
                        .filter(|o| is_v1_controller(o))
                        .map(str::to_string)
                        .collect();
                    if !mounts.v1.iter().any(|h| h.controllers == controllers) {
                        mounts.v1.push(Hierarchy { mount, controllers });
                    }
                }
                _ => {}
            }
        }
        mounts
    }

    /// The v1 hierarchy `controller` is bound to.
    pub fn v1_for(&self, controller: &str) -> Option<&Hierarchy> {
        self.v1
            .iter()
            .find(|h| h.controllers.iter().any(|c| c == controller))
    }
}

/// Mount options of a v1 cgroup mount that are not controller names.
fn is_v1_controller(option: &str) -> bool {
    !matches!(
        option,
        "rw" | "ro" | "noprefix" | "clone_children" | "xattr" | "cpuset_v2_mode"
    ) && !option.contains('=')
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|o| o.iter().all(u8::is_ascii_digit));
        match (bytes[i], octal) {
            (b'\\', Some(o)) => {
                out.push(o.iter().fold(0u8, |n, d| n.wrapping_mul(8) + (d - b'0')));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup this process is in, relative to the root of the hierarchy that holds
/// `controller` (v1), or of the v2 hierarchy (`controller` = None).
pub fn own_cgroup(controller: Option<&str>) -> Option<PathBuf> {
    let text = fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let matches = match controller {
            None => id == "0" && controllers.is_empty(),
            Some(c) => controllers.split(',').any(|x| x == c),
        };
        matches.then(|| Path::new(path.trim_start_matches('/')).to_path_buf())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
50 23 0:32 / /mnt/my\\040memory rw - cgroup cgroup rw,memory
";

    #[test]
    fn finds_v1_controllers_and_the_v2_mount() {
        let m = Mounts::parse(HYBRID);
        assert_eq!(m.v2, Some(PathBuf::from("/sys/fs/cgroup/unified")));
        let cpu = m.v1_for("cpuacct").unwrap();
        assert_eq!(cpu.mount, PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(cpu.controllers, ["cpu", "cpuacct"]);
        assert_eq!(
            m.v1_for("memory").unwrap().mount,
            PathBuf::from("/sys/fs/cgroup/memory")
        );
        assert!(m.v1_for("systemd").is_none() && m.v1_for("hugetlb").is_none());
        assert_eq!(m.v1.len(), 3);
    }

    #[test]
    fn unescapes_mount_points() {
        assert_eq!(unescape("/mnt/my\\040dir\\134x"), "/mnt/my dir\\x");
        assert_eq!(unescape("/plain\\0"), "/plain\\0");
    }
}
