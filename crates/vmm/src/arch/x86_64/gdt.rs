//! GDT entries and the `kvm_segment`s that mirror them.

use kvm_bindings::kvm_segment;

/// Builds a GDT descriptor from flags (access byte in bits 0..8, flags in 12..16), base, limit.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << (56 - 24))
        | ((flags as u64 & 0x0000_f0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << (48 - 16))
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

fn base(entry: u64) -> u64 {
    ((entry & 0xff00_0000_0000_0000) >> 32)
        | ((entry & 0x0000_00ff_0000_0000) >> 16)
        | ((entry & 0x0000_0000_ffff_0000) >> 16)
}

fn limit(entry: u64) -> u32 {
    let raw = (((entry & 0x000f_0000_0000_0000) >> 32) | (entry & 0x0000_0000_0000_ffff)) as u32;
    // With the granularity bit the limit counts 4 KiB pages.
    if (entry >> 55) & 1 == 1 {
        (raw << 12) | 0xfff
    } else {
        raw
    }
}

/// The segment register state matching GDT `entry` at index `table_index`.
pub fn kvm_segment_from_gdt(entry: u64, table_index: u8) -> kvm_segment {
    let bit = |n: u32| ((entry >> n) & 1) as u8;
    kvm_segment {
        base: base(entry),
        limit: limit(entry),
        selector: u16::from(table_index) * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present: bit(47),
        dpl: ((entry >> 45) & 0x3) as u8,
        db: bit(54),
        s: bit(44),
        l: bit(53),
        g: bit(55),
        avl: bit(52),
        padding: 0,
        unusable: u8::from(bit(47) == 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_64bit_code_segment() {
        let entry = gdt_entry(0xa09b, 0, 0xfffff);
        let seg = kvm_segment_from_gdt(entry, 1);
        assert_eq!((seg.selector, seg.type_, seg.l, seg.db), (8, 0xb, 1, 0));
        assert_eq!(
            (seg.present, seg.s, seg.g, seg.limit),
            (1, 1, 1, 0xffff_ffff)
        );
        assert_eq!(seg.base, 0);
    }

    #[test]
    fn base_and_limit_round_trip() {
        let entry = gdt_entry(0x008b, 0x1234_5678, 0xabcde);
        let seg = kvm_segment_from_gdt(entry, 3);
        assert_eq!(seg.base, 0x1234_5678);
        assert_eq!(seg.limit, 0xabcde);
        assert_eq!(seg.g, 0);
        assert_eq!(seg.unusable, 0);
    }
}
