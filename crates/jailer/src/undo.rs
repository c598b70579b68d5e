//! What the jailer has changed on the host so far, so a failure before the monitor starts
//! takes it all back: no half-made jail, no empty cgroup left behind.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

type Step = Box<dyn FnOnce() -> io::Result<()>>;

/// Steps that reverse the changes made so far, run newest first.
#[derive(Default)]
pub struct Undo {
    steps: Vec<(String, Step)>,
}

impl Undo {
    /// Remembers `step`, described as `what` if it fails.
    pub fn push(&mut self, what: String, step: impl FnOnce() -> io::Result<()> + 'static) {
        self.steps.push((what, Box::new(step)));
    }

    /// Remembers that `dir` was created (and must be empty again by the time it is undone).
    pub fn created_dir(&mut self, dir: &Path) {
        let dir = dir.to_path_buf();
        self.push(format!("remove {}", dir.display()), move || {
            fs::remove_dir(&dir)
        });
    }

    /// Remembers that the file `path` was created.
    pub fn created_file(&mut self, path: &Path) {
        let path: PathBuf = path.to_path_buf();
        self.push(format!("remove {}", path.display()), move || {
            fs::remove_file(&path)
        });
    }

    /// Takes every change back, newest first. A step that fails is reported on stderr and
    /// the rest still run: the operator must hear about what is left.
    pub fn run(self) {
        for (what, step) in self.steps.into_iter().rev() {
            if let Err(e) = step() {
                eprintln!("ember-jailer: while cleaning up, could not {what}: {e}");
            }
        }
    }

    /// Keeps every change: the jail is handed over to the monitor.
    pub fn commit(self) {
        drop(self.steps);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undo_runs_newest_first() {
        let base = std::env::temp_dir().join(format!("ember-jailer-undo-{}", std::process::id()));
        let mut undo = Undo::default();
        fs::create_dir(&base).unwrap();
        undo.created_dir(&base);
        let file = base.join("f");
        fs::write(&file, "x").unwrap();
        undo.created_file(&file);
        undo.run();
        assert!(!base.exists());
    }
}
