//! Checking `--cgroup` settings against the mounted hierarchies, without changing anything:
//! which cgroup folders to make, and what goes in each.

use super::mounts::Mounts;
use super::{CgroupError, Group};
use crate::args::CgroupSetting;
use std::fs;
use std::path::{Path, PathBuf};

pub(super) fn plan_v1(
    mounts: &Mounts,
    settings: &[CgroupSetting],
    path: &Path,
) -> Result<Vec<Group>, CgroupError> {
    let mut groups: Vec<Group> = Vec::new();
    for s in settings {
        let controller = s.controller();
        let h = mounts
            .v1_for(controller)
            .ok_or_else(|| CgroupError::NoV1Controller(s.file.clone(), controller.into()))?;
        // Every cgroup of a v1 hierarchy has the same files: look in the nearest one.
        if !nearest_existing(&h.mount, path).join(&s.file).is_file() {
            return Err(CgroupError::NoFile(s.file.clone(), 1));
        }
        match groups.iter_mut().find(|g| g.hierarchy == h.mount) {
            Some(g) => g.settings.push(s.clone()),
            None => groups.push(Group {
                hierarchy: h.mount.clone(),
                path: path.to_path_buf(),
                controller: Some(controller.to_string()),
                settings: vec![s.clone()],
                enable: Vec::new(),
            }),
        }
    }
    Ok(groups)
}

pub(super) fn plan_v2(
    mounts: &Mounts,
    settings: &[CgroupSetting],
    parent: &Path,
    id: &str,
) -> Result<Vec<Group>, CgroupError> {
    let root = mounts.v2.clone().ok_or(CgroupError::NoV2)?;
    if settings.is_empty() {
        // Without values, an existing parent cgroup is joined as it is (and a missing one
        // is no error): the operator prepared it.
        let exists = !parent.as_os_str().is_empty() && root.join(parent).is_dir();
        return Ok(exists
            .then(|| v2_group(&root, parent.to_path_buf(), Vec::new(), Vec::new()))
            .into_iter()
            .collect());
    }
    let available = read_words(&root.join("cgroup.controllers"));
    let mut enable: Vec<String> = Vec::new();
    for s in settings {
        let controller = s.controller().to_string();
        check_v2_file(&root, parent, s, &available)?;
        if available.contains(&controller) && !enable.contains(&controller) {
            enable.push(controller);
        }
    }
    Ok(vec![v2_group(
        &root,
        parent.join(id),
        settings.to_vec(),
        enable,
    )])
}

fn v2_group(
    root: &Path,
    path: PathBuf,
    settings: Vec<CgroupSetting>,
    enable: Vec<String>,
) -> Group {
    Group {
        hierarchy: root.to_path_buf(),
        path,
        controller: None,
        settings,
        enable,
    }
}

/// A v2 file is checked where it can be seen: in the nearest existing cgroup on the way to
/// the new one or in a child of the root that has its controller; a controller's files only
/// appear in cgroups whose parent enabled it, so one that no cgroup shows yet is checked
/// by the kernel when the value is written (and the jailer then undoes everything).
fn check_v2_file(
    root: &Path,
    parent: &Path,
    s: &CgroupSetting,
    available: &[String],
) -> Result<(), CgroupError> {
    let controller = s.controller();
    if nearest_existing(root, parent).join(&s.file).is_file() {
        return Ok(());
    }
    if controller != "cgroup" && !available.iter().any(|c| c == controller) {
        return Err(CgroupError::NoV2Controller {
            file: s.file.clone(),
            controller: controller.to_string(),
            mount: root.to_path_buf(),
            available: available.join(" "),
        });
    }
    let children = fs::read_dir(root).into_iter().flatten().flatten();
    let mut seen = std::iter::once(nearest_existing(root, parent))
        .chain(children.map(|e| e.path()))
        .filter(|d| d.is_dir() && d != root)
        .filter(|d| {
            read_words(&d.join("cgroup.controllers"))
                .iter()
                .any(|c| c == controller)
        });
    match seen.next() {
        Some(dir) if !dir.join(&s.file).is_file() => Err(CgroupError::NoFile(s.file.clone(), 2)),
        _ => Ok(()),
    }
}

/// The deepest existing folder on the way from `root` to `root/path`.
pub(super) fn nearest_existing(root: &Path, path: &Path) -> PathBuf {
    path.ancestors()
        .map(|p| root.join(p))
        .find(|p| p.is_dir())
        .unwrap_or_else(|| root.to_path_buf())
}

pub(super) fn read_words(file: &Path) -> Vec<String> {
    let text = fs::read_to_string(file).unwrap_or_default();
    text.split_whitespace().map(str::to_string).collect()
}
