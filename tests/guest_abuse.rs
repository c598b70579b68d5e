//! A hostile guest: it pokes the virtio-mmio registers of its disk with garbage, sets up
//! queues outside its RAM, submits descriptor loops and chains of garbage, resets the
//! device under its own driver and floods the serial port. Ember must survive all of it,
//! keep serving the guest, end cleanly when the guest reboots, and leave the disk image
//! untouched (nothing the guest did completed a write).
//!
//! The guest uses busybox `devmem` on /dev/mem (the guest kernel has no STRICT_DEVMEM) and
//! keeps 1 MiB of its RAM out of the kernel's hands with `memmap=` to hold its own rings.

use ember_integration_tests::ember::{
    drive, run_ember_config, vm_config, EmberRun, EMBER_BOOT_ARGS,
};
use ember_integration_tests::{ember_cmd_arg, guest_artifacts, require_kvm, TempDir};
use serde_json::Value;

/// The first virtio-mmio window (the only drive: no root drive, initramfs root).
const DEVICE: &str = "0xd0000000";
/// Guest-physical scratch memory the kernel does not use (reserved with `memmap=`).
const SCRATCH: u64 = 0x600_0000;

/// Shell helpers for register access (kept terse: the script travels base64-encoded on a
/// kernel command line of at most 2047 bytes).
fn register_helpers() -> String {
    format!("B={DEVICE}\na(){{ printf 0x%x $(($1));}}\nreg(){{ devmem $(a B+$1) 32 $2;}}\n")
}

/// Plus a from-scratch driver setup that puts one queue's rings in the scratch area, a
/// descriptor writer and a submit that notifies and waits.
fn queue_helpers() -> String {
    format!(
        "{}P={SCRATCH}\n\
         m32(){{ devmem $(a P+$1) 32 $2;}}\n\
         m16(){{ devmem $(a P+$1) 16 $2;}}\n\
         desc(){{ o=$(($1*16));m32 $o $2;m32 $((o+4)) $3;m32 $((o+8)) $4;m32 $((o+12)) $(($5|($6<<16)));}}\n\
         setup_queue(){{ for r in '0x70 0' '0x70 1' '0x70 3' '0x24 1' '0x20 1' '0x24 0' '0x20 0' '0x70 11' '0x30 0' '0x38 256';do reg $r;done;\
         reg 0x80 $1;reg 0x84 $2;reg 0x90 $((P+4096));reg 0xa0 $((P+8192));reg 0x44 1;reg 0x70 15;}}\n\
         used_idx(){{ echo $(($(m16 0x2002)));}}\n\
         submit(){{ v=$(($(m16 0x1002)));m16 $((0x1004+2*(v%256))) $1;m16 0x1002 $((v+1));reg 0x50 0;sleep 0.3;}}\n\
         m32 0x1000 0;m32 0x2000 0;m32 0x3000 0\n",
        register_helpers()
    )
}

fn run_abuse(
    dir: &TempDir,
    helpers: String,
    script: &str,
) -> (EmberRun, Vec<u8>, std::path::PathBuf) {
    let guest = guest_artifacts();
    let image = dir.path().join("victim.img");
    let content: Vec<u8> = (0..(2u32 << 20)).map(|i| (i % 253) as u8).collect();
    std::fs::write(&image, &content).unwrap();
    let full = format!("{helpers}{script}\necho abuse-done");
    let args = format!(
        "{EMBER_BOOT_ARGS} memmap=1M$0x6000000 {}",
        ember_cmd_arg(&full)
    );
    let mut config = vm_config(&guest.vmlinux, Some(&guest.initramfs), &args, 1, 256);
    config["drives"] = Value::Array(vec![drive("victim", &image, false, false)]);
    (run_ember_config(&config, dir), content, image)
}

/// Ember outlived the abuse: the guest finished its script and rebooted, Ember exited 0
/// without a panic, and the image is as the host wrote it.
fn assert_survived(run: &EmberRun, content: &[u8], image: &std::path::Path) {
    assert!(
        !run.text.contains("panicked"),
        "ember panicked:\n{}",
        run.text
    );
    assert!(
        run.text.contains("abuse-done"),
        "the guest did not get through its script:\n{}",
        run.text
    );
    assert!(
        run.output.status.success(),
        "ember exited with {}:\n{}",
        run.output.status,
        run.text
    );
    assert!(
        std::fs::read(image).unwrap() == content,
        "the disk image changed"
    );
}

#[test]
fn garbage_in_every_register_at_every_width() {
    require_kvm();
    let dir = TempDir::new("abuse-registers");
    let script = r#"echo magic=$(devmem $B 32)
for off in $(seq 0 4 508); do
  for v in 0xffffffff 0 $((off * 2654435761 % 4294967296)); do reg $off $v; done
done
for off in $(seq 0 1 511); do devmem $(printf 0x%x $((B + off))) 8 0xa5; devmem $(printf 0x%x $((B + off))) 16 0x5a5a; done
for off in $(seq 0 8 504); do devmem $(printf 0x%x $((B + off))) 64 0xffffffffffffffff; done
echo magic-after=$(devmem $B 32)"#;
    let (run, content, image) = run_abuse(&dir, register_helpers(), script);
    assert!(run.text.contains("magic=0x74726976"), "{}", run.text);
    assert!(
        run.text.contains("magic-after=0x74726976"),
        "the device stopped answering:\n{}",
        run.text
    );
    assert_survived(&run, &content, &image);
}

#[test]
fn queue_outside_ram_gets_needs_reset() {
    require_kvm();
    let dir = TempDir::new("abuse-queue-addr");
    let script = r#"setup_queue 0xfffff000 0xffff
echo needs-reset=$(( ($(reg 0x70) & 0x40) != 0 ))"#;
    let (run, content, image) = run_abuse(&dir, queue_helpers(), script);
    assert!(run.text.contains("needs-reset=1"), "{}", run.text);
    assert_survived(&run, &content, &image);
}

#[test]
fn descriptor_loops_huge_chains_and_wild_addresses_are_answered() {
    require_kvm();
    let dir = TempDir::new("abuse-chains");
    // A self-loop; a 256-descriptor chain outside RAM looping back; a header outside RAM;
    // a write whose data lies outside RAM.
    let script = r#"setup_queue $P 0
desc 0 $((P+12288)) 0 16 1 0
submit 0
echo used-after-loop=$(used_idx)
for i in $(seq 1 255);do desc $i 0 0xffff0000 512 1 $(((i+1)%256));done
submit 1
echo used-after-chain=$(used_idx)
desc 0 0xfffff000 255 16 1 1
desc 1 $((P+12288)) 0 512 1 2
desc 2 0xfffffff0 255 1 2 0
submit 0
desc 0 $((P+12288)) 0 16 1 1
desc 1 0 0x7fff0000 512 1 2
desc 2 $((P+12800)) 0 1 2 0
m32 0x3000 1
submit 0
echo used-after-wild=$(used_idx)"#;
    let (run, content, image) = run_abuse(&dir, queue_helpers(), script);
    for expected in [
        "used-after-loop=1",
        "used-after-chain=2",
        "used-after-wild=4",
    ] {
        assert!(
            run.text.contains(expected),
            "missing {expected}:\n{}",
            run.text
        );
    }
    assert_survived(&run, &content, &image);
}

#[test]
fn reset_under_the_driver_and_a_serial_flood() {
    require_kvm();
    let dir = TempDir::new("abuse-reset-flood");
    let script = r#"dd if=/dev/vda of=/dev/null bs=64k count=16 2>/dev/null && echo read-before-ok
reg 0x70 0
echo status-after-reset=$(( $(reg 0x70) ))
head -c 200000 /dev/zero | tr '\000' 'x' > /dev/console
echo
echo flood-done"#;
    let (run, content, image) = run_abuse(&dir, queue_helpers(), script);
    assert!(run.text.contains("read-before-ok"), "{}", run.text);
    assert!(run.text.contains("status-after-reset=0"), "{}", run.text);
    assert!(
        run.text.contains("flood-done"),
        "{}",
        run.text.chars().rev().take(2000).collect::<String>()
    );
    assert_survived(&run, &content, &image);
}
