//! Compiles Ember's own seccomp filters (resources/seccomp/x86_64.json) to BPF at build
//! time, so that a start pays nothing for them; `--seccomp-filter FILE` still compiles its
//! JSON at run time. A unit test compiles the JSON again and compares, so the two can never
//! drift apart.

use seccompiler::{compile_from_json, TargetArch};
use std::fmt::Write as _;
use std::path::PathBuf;

const FILTERS: &str = "../../resources/seccomp/x86_64.json";

fn main() {
    println!("cargo:rerun-if-changed={FILTERS}");
    let json = std::fs::read(FILTERS).expect("read resources/seccomp/x86_64.json");
    let programs = compile_from_json(&json[..], TargetArch::x86_64)
        .expect("resources/seccomp/x86_64.json must compile");
    let mut names: Vec<&String> = programs.keys().collect();
    names.sort();
    let mut out = String::from("/// One BPF instruction: (code, jt, jf, k).\n");
    out.push_str("pub type Insn = (u16, u8, u8, u32);\n");
    out.push_str("/// (thread kind, instructions) for every built-in filter.\n");
    out.push_str("pub const PRECOMPILED: &[(&str, &[Insn])] = &[\n");
    for name in names {
        let _ = write!(out, "    ({name:?}, &[");
        for insn in &programs[name] {
            let _ = write!(
                out,
                "({}, {}, {}, {}),",
                insn.code, insn.jt, insn.jf, insn.k
            );
        }
        out.push_str("]),\n");
    }
    out.push_str("];\n");
    let dest = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("seccomp_filters.rs");
    std::fs::write(dest, out).expect("write the compiled filters");
}
