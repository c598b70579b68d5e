//! The monitor's cgroup: `<hierarchy>/<parent-cgroup>/<id>`, with the `--cgroup` values
//! written before the jailer moves itself in (so the monitor starts limited), in cgroup v1
//! (one such folder per hierarchy a file needs) or v2.

mod mounts;
mod plan;

use crate::args::CgroupSetting;
use crate::undo::Undo;
use mounts::{own_cgroup, Mounts};
use plan::{plan_v1, plan_v2, read_words};
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot read /proc/self/mountinfo: {0}")]
    Mountinfo(io::Error),
    #[error("--parent-cgroup {0} must be a relative path without '..'")]
    Parent(PathBuf),
    #[error("--cgroup {0}: no cgroup v1 hierarchy has the {1} controller")]
    NoV1Controller(String, String),
    #[error("--cgroup-version 2: no cgroup2 file system is mounted")]
    NoV2,
    #[error("--cgroup {file}: the {controller} controller is not available in cgroup v2 at {mount} (available: {available})")]
    NoV2Controller {
        file: String,
        controller: String,
        mount: PathBuf,
        available: String,
    },
    #[error("--cgroup {0}: there is no such file in cgroup v{1}")]
    NoFile(String, u8),
    #[error("--cgroup {0}: the jailer itself moves the monitor into its cgroup")]
    Membership(String),
    #[error("cannot create cgroup {0}: {1}")]
    Create(PathBuf, io::Error),
    #[error("cannot enable the {1} controller in {0}: {2}")]
    Enable(PathBuf, String, io::Error),
    #[error("--cgroup {1}={2}: the kernel refused it in {0}: {3}")]
    Write(PathBuf, String, String, io::Error),
    #[error("cannot move the jailer into cgroup {0}: {1}")]
    Join(PathBuf, io::Error),
}

/// One cgroup to make (or join) and fill.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Group {
    /// The hierarchy's mount point.
    pub(super) hierarchy: PathBuf,
    /// `<parent>/<id>`, relative to `hierarchy`.
    pub(super) path: PathBuf,
    /// v1: a controller of the hierarchy, to find this process's current cgroup there.
    pub(super) controller: Option<String>,
    pub(super) settings: Vec<CgroupSetting>,
    /// v2: controllers to enable in every ancestor's `cgroup.subtree_control`.
    pub(super) enable: Vec<String>,
}

/// The checked cgroup work: which folders, which values.
#[derive(Debug, PartialEq, Eq)]
pub struct CgroupPlan {
    version: u8,
    groups: Vec<Group>,
}

impl CgroupPlan {
    /// Checks the settings against the mounted hierarchies without changing anything.
    pub fn new(
        version: u8,
        settings: &[CgroupSetting],
        parent: &Path,
        id: &str,
    ) -> Result<CgroupPlan, CgroupError> {
        if parent.is_absolute()
            || parent
                .components()
                .any(|c| !matches!(c, Component::Normal(_)))
        {
            return Err(CgroupError::Parent(parent.to_path_buf()));
        }
        for s in settings {
            if matches!(s.file.as_str(), "cgroup.procs" | "cgroup.threads") {
                return Err(CgroupError::Membership(s.file.clone()));
            }
        }
        let mounts = Mounts::of_this_process().map_err(CgroupError::Mountinfo)?;
        let groups = if version == 1 {
            plan_v1(&mounts, settings, &parent.join(id))?
        } else {
            plan_v2(&mounts, settings, parent, id)?
        };
        Ok(CgroupPlan { version, groups })
    }

    /// Creates the cgroups, writes the values and moves this process in; `undo` learns how
    /// to take each step back.
    pub fn apply(&self, undo: &mut Undo) -> Result<(), CgroupError> {
        for g in &self.groups {
            if !g.settings.is_empty() {
                make_dirs(&g.hierarchy, &g.path, self.version, undo)?;
            }
            enable_controllers(&g.hierarchy, &g.path, &g.enable, undo)?;
            for s in &g.settings {
                let dir = g.hierarchy.join(&g.path);
                fs::write(dir.join(&s.file), &s.value)
                    .map_err(|e| CgroupError::Write(dir, s.file.clone(), s.value.clone(), e))?;
            }
            join(g, self.version, undo)?;
        }
        Ok(())
    }
}

fn make_dirs(root: &Path, path: &Path, version: u8, undo: &mut Undo) -> Result<(), CgroupError> {
    let mut dir = root.to_path_buf();
    for part in path.components() {
        let parent = dir.clone();
        dir.push(part);
        match fs::create_dir(&dir) {
            Ok(()) => undo.created_dir(&dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(CgroupError::Create(dir, e)),
        }
        if version == 1 {
            inherit_cpuset(&parent, &dir)?;
        }
    }
    Ok(())
}

/// A new v1 cpuset cgroup starts with no CPUs and no memory nodes: nothing could run in it
/// and no child could be given any. It gets its parent's, as v2 does by itself.
fn inherit_cpuset(parent: &Path, dir: &Path) -> Result<(), CgroupError> {
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let Ok(value) = fs::read_to_string(parent.join(file)) else {
            continue; // not the cpuset hierarchy
        };
        fs::write(dir.join(file), value.trim()).map_err(|e| {
            CgroupError::Write(dir.to_path_buf(), file.into(), value.trim().into(), e)
        })?;
    }
    Ok(())
}

/// v2: a controller's files exist in a cgroup only when every ancestor enabled it for its
/// children (`+memory` in `cgroup.subtree_control`), from the root down.
fn enable_controllers(
    root: &Path,
    path: &Path,
    controllers: &[String],
    undo: &mut Undo,
) -> Result<(), CgroupError> {
    let ancestors: Vec<&Path> = path.ancestors().skip(1).collect();
    for rel in ancestors.into_iter().rev() {
        let file = root.join(rel).join("cgroup.subtree_control");
        let enabled = read_words(&file);
        for c in controllers.iter().filter(|c| !enabled.contains(c)) {
            fs::write(&file, format!("+{c}"))
                .map_err(|e| CgroupError::Enable(root.join(rel), c.clone(), e))?;
            let (file, c) = (file.clone(), c.clone());
            undo.push(format!("disable {c} in {}", file.display()), move || {
                fs::write(&file, format!("-{c}"))
            });
        }
    }
    Ok(())
}

/// Moves this process into the group; undoing moves it back to where it was, so the new
/// cgroup can be removed.
fn join(g: &Group, version: u8, undo: &mut Undo) -> Result<(), CgroupError> {
    let procs = g.hierarchy.join(&g.path).join("cgroup.procs");
    let origin = own_cgroup(if version == 1 {
        g.controller.as_deref()
    } else {
        None
    })
    .map(|p| g.hierarchy.join(p).join("cgroup.procs"));
    fs::write(&procs, std::process::id().to_string())
        .map_err(|e| CgroupError::Join(procs.clone(), e))?;
    if let Some(origin) = origin {
        undo.push(format!("move back to {}", origin.display()), move || {
            fs::write(&origin, std::process::id().to_string())
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_must_stay_inside_the_hierarchy() {
        for bad in ["/abs", "a/../../b", "./x"] {
            let err = CgroupPlan::new(1, &[], Path::new(bad), "id").unwrap_err();
            assert!(matches!(err, CgroupError::Parent(_)), "{bad}: {err}");
        }
    }

    #[test]
    fn the_jailer_owns_membership() {
        let s: CgroupSetting = "cgroup.procs=1".parse().unwrap();
        let err = CgroupPlan::new(2, &[s], Path::new("ember"), "id").unwrap_err();
        assert!(matches!(err, CgroupError::Membership(_)));
    }

    #[test]
    fn nearest_existing_walks_up() {
        let root = std::env::temp_dir();
        assert_eq!(
            plan::nearest_existing(&root, Path::new("no/such/dir")),
            root
        );
    }
}
