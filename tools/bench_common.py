"""tools/bench_common.py -- what tools/bench-boot, bench-vmm and bench-net share.

The three VMMs every benchmark runs side by side, and how each is started for one
guest boot: QEMU microvm (its command line), Firecracker and Ember (the same JSON
config file, `--no-api --config-file`; both also take `--api-sock`). Firecracker is
the peer in ../shared/peers/firecracker (or $EMBER_FIRECRACKER_BIN); where it is
absent the benchmarks run without it and say so. Also: the host load average and
how a figure taken under load is labelled, and Ember/peer ratios.

Python 3 stdlib only. Imported by the tools (they put tools/ on sys.path).
"""

import json
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
QEMU, FIRECRACKER, EMBER = "QEMU microvm", "Firecracker", "Ember"
ORDER = (QEMU, FIRECRACKER, EMBER)
PEERS = (QEMU, FIRECRACKER)  # what Ember is compared with
# Above this 1-minute load average (2-core host) a run is "under load": its figures
# are not headlines (docs say so).
LOAD_LIMIT = 1.5

# Kernel command lines. Ember and Firecracker both emulate the i8042 reset line
# (reboot=k); QEMU microvm has no i8042, so its guest reboots by triple fault.
KVM_CMDLINE = "console=ttyS0 reboot=k panic=1"
QEMU_CMDLINE = "console=ttyS0 reboot=t panic=-1"
QEMU_MACHINE = ["-M", "microvm,x-option-roms=off,pit=off,pic=off,rtc=on,acpi=off"]


class Skip(Exception):
    """This VMM cannot run here; the message says why."""


def ember_bin():
    return os.environ.get("EMBER_BIN") or str(REPO / "target/release/ember")


def firecracker_bin():
    return (os.environ.get("EMBER_FIRECRACKER_BIN")
            or str((REPO / ".." / "shared" / "peers" / "firecracker").resolve()))


def first_line_of(argv):
    """First stdout line of `argv` (a --version call), or raises Skip."""
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30,
                           stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise Skip(f"`{' '.join(argv)}` failed: {e}") from None
    if r.returncode != 0 or not r.stdout.strip():
        raise Skip(f"`{' '.join(argv)}` exited {r.returncode}: "
                   f"{(r.stderr or r.stdout).strip()[:200]}")
    return r.stdout.strip().splitlines()[0].strip()


def ember_version():
    return first_line_of([ember_bin(), "--version"])


def firecracker_version():
    exe = firecracker_bin()
    if not Path(exe).is_file():
        raise Skip(f"{exe} is absent: no Firecracker column")
    return first_line_of([exe, "--version"])


def qemu_version():
    return first_line_of(["qemu-system-x86_64", "--version"])


VERSIONS = {QEMU: qemu_version, FIRECRACKER: firecracker_version, EMBER: ember_version}


def available(prog, names=ORDER):
    """(names that can run, {name: version}, {name: why skipped}); prints a notice
    for every VMM that is skipped."""
    ok, versions, skipped = [], {}, {}
    for name in names:
        try:
            versions[name] = VERSIONS[name]()
            ok.append(name)
        except Skip as e:
            skipped[name] = str(e)
            print(f"{prog}: NOTICE: {name} skipped: {e}", flush=True)
    return ok, versions, skipped


def rotated(names, i):
    """Round i's order: the VMMs take turns at going first."""
    k = i % len(names) if names else 0
    return list(names[k:]) + list(names[:k])


def lab_env(env):
    """Host side: the variables the harness needs inside the lab."""
    env.setdefault("EMBER_BIN", ember_bin())
    if Path(firecracker_bin()).is_file():
        env.setdefault("EMBER_FIRECRACKER_BIN", firecracker_bin())
    return env


# --------------------------------------------------------------------------
# Starting a VMM for one boot


def vm_config(art, cmdline, vcpus, mem_mib, drives=(), nets=()):
    """The config file both Ember and Firecracker read (Firecracker needs "drives")."""
    config = {
        "boot-source": {"kernel_image_path": art["vmlinux"],
                        "initrd_path": art["initramfs"], "boot_args": cmdline},
        "drives": list(drives),
        "machine-config": {"vcpu_count": vcpus, "mem_size_mib": mem_mib},
    }
    if nets:
        config["network-interfaces"] = list(nets)
    return config


def config_file_argv(name, workdir, config):
    """argv that boots `config` with Ember or Firecracker, without an API socket."""
    exe = {EMBER: ember_bin, FIRECRACKER: firecracker_bin}[name]()
    path = Path(workdir) / f"{name.lower()}.json"
    path.write_text(json.dumps(config, indent=2))
    return [exe, "--no-api", "--config-file", str(path)]


def api_sock_argv(name, sock):
    """argv of Ember or Firecracker waiting for its API on `sock`."""
    exe = {EMBER: ember_bin, FIRECRACKER: firecracker_bin}[name]()
    return [exe, "--api-sock", str(sock)]


def qemu_argv(art, cmdline, vcpus, mem_mib, extra=()):
    return [
        "qemu-system-x86_64", *QEMU_MACHINE,
        "-enable-kvm", "-cpu", "host",
        "-smp", str(vcpus), "-m", f"{mem_mib}M",
        "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
        "-serial", "stdio",
        "-kernel", art["vmlinux"], "-initrd", art["initramfs"],
        "-append", cmdline, *extra,
    ]


# --------------------------------------------------------------------------
# Reports


def load1():
    return os.getloadavg()[0]


def load_lines(start, end):
    """Markdown: the load average at start and end, and the under-load warning."""
    lines = [f"- Host load average (1 min): {start:.2f} at start, {end:.2f} at end, on "
             f"{os.cpu_count()} CPUs"]
    if start > LOAD_LIMIT:
        lines += ["", f"> **Taken under load** (load average {start:.1f} at the start, above "
                  f"{LOAD_LIMIT}: other engineers' builds and lab runs shared the host). "
                  "These figures are not headline figures; the ratios between VMMs of the "
                  "same run are still indicative."]
    return lines


def ratio(a, b):
    """a / b to 2 decimals (2 significant digits below 0.1), '-' without data."""
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}" if a / b >= 0.095 else f"{a / b:.2g}"


def ratios(medians, what="Ratio of medians"):
    """'Ratio of medians, Ember / QEMU microvm: 0.48; Ember / Firecracker: 1.05' (only
    the peers that have a median)."""
    parts = [f"Ember / {p}: {ratio(medians.get(EMBER), medians.get(p))}"
             for p in PEERS if medians.get(p) is not None]
    if medians.get(EMBER) is None or not parts:
        return f"{what}: - (no Ember or peer figures)"
    return f"{what}, " + "; ".join(parts)


# Hand-written notes below this line in an output file are kept when a tool rewrites it.
NOTES_MARK = "<!-- Generated above by the benchmark tool; notes below are kept on rewrite. -->"


def write_report(path, text):
    """Writes a generated report (which ends with NOTES_MARK), keeping the hand-written
    notes that followed the mark in the existing file."""
    path = Path(path)
    notes = ""
    try:
        old = path.read_text()
        if NOTES_MARK in old:
            notes = old.split(NOTES_MARK, 1)[1].lstrip("\n")
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.rstrip("\n") + "\n" + ("\n" + notes if notes else ""))


def git_tree(repo=REPO):
    """Short commit of the tree, and whether crates/ differ from it."""
    try:
        rev = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "diff", "--quiet", "HEAD", "--",
                                "crates"]).returncode != 0
        return rev + (" + uncommitted changes in crates/" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "?"
