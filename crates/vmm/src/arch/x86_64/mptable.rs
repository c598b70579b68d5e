//! The Intel MultiProcessor Specification table: how the guest learns its CPUs, IOAPIC
//! and interrupt routing without ACPI.
//!
//! Written with plain little-endian byte pushes rather than `#[repr(C, packed)]` structs:
//! the format is a flat list of fixed-size records, and this needs no `unsafe`.

use super::layout::{APIC_START, EBDA_START, IOAPIC_START, IRQ_MAX};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

const MPC_SPEC: u8 = 4;
const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const CPU_FLAG_ENABLED: u8 = 1;
const CPU_FLAG_BOOT: u8 = 2;
/// Family 6 signature; FPU and APIC feature flags.
const CPU_SIGNATURE: u32 = 0x600;
const CPU_FEATURES: u32 = 0x201;
const MP_IRQ_INT: u8 = 0;
const MP_IRQ_NMI: u8 = 1;
const MP_IRQ_EXTINT: u8 = 3;
const CONFIG_HEADER_LEN: usize = 44;

#[derive(Debug, thiserror::Error)]
pub enum MptableError {
    #[error("{0} vCPUs do not fit in an MP table (at most 254)")]
    TooManyCpus(u8),
    #[error("cannot write the MP table at {EBDA_START:#x}: {0}")]
    Write(vm_memory::GuestMemoryError),
}

/// Writes the MP floating pointer and configuration table for `num_cpus` CPUs into the EBDA.
pub fn setup_mptable<M: GuestMemoryBackend>(mem: &M, num_cpus: u8) -> Result<(), MptableError> {
    if num_cpus == u8::MAX {
        return Err(MptableError::TooManyCpus(num_cpus));
    }
    let config_addr = EBDA_START + 16;
    let config = config_table(num_cpus);
    mem.write_slice(
        &floating_pointer(config_addr as u32),
        GuestAddress(EBDA_START),
    )
    .map_err(MptableError::Write)?;
    mem.write_slice(&config, GuestAddress(config_addr))
        .map_err(MptableError::Write)
}

fn checksum(bytes: &[u8]) -> u8 {
    let sum = bytes.iter().fold(0u8, |acc, b| acc.wrapping_add(*b));
    0u8.wrapping_sub(sum)
}

fn floating_pointer(config_addr: u32) -> [u8; 16] {
    let mut fp = [0u8; 16];
    fp[0..4].copy_from_slice(b"_MP_");
    fp[4..8].copy_from_slice(&config_addr.to_le_bytes());
    fp[8] = 1; // length in 16-byte units
    fp[9] = MPC_SPEC;
    fp[10] = checksum(&fp);
    fp
}

fn config_table(num_cpus: u8) -> Vec<u8> {
    let ioapic_id = num_cpus + 1;
    let mut entries = Vec::new();
    let mut count: u16 = 0;
    for cpu in 0..num_cpus {
        let flags = CPU_FLAG_ENABLED | if cpu == 0 { CPU_FLAG_BOOT } else { 0 };
        entries.extend_from_slice(&[0, cpu, APIC_VERSION, flags]);
        entries.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        entries.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        entries.extend_from_slice(&[0; 8]);
        count += 1;
    }
    entries.extend_from_slice(&[1, 0]);
    entries.extend_from_slice(b"ISA   ");
    entries.extend_from_slice(&[2, ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&(IOAPIC_START as u32).to_le_bytes());
    count += 2;
    for irq in 0..=IRQ_MAX as u8 {
        // Interrupt type, flags "conforms to bus", ISA bus 0 line `irq` -> IOAPIC pin `irq`.
        entries.extend_from_slice(&[3, MP_IRQ_INT, 0, 0, 0, irq, ioapic_id, irq]);
        count += 1;
    }
    // LINT0 is ExtINT (the PIC), LINT1 is NMI, on every local APIC.
    entries.extend_from_slice(&[4, MP_IRQ_EXTINT, 0, 0, 0, 0, 0xff, 0]);
    entries.extend_from_slice(&[4, MP_IRQ_NMI, 0, 0, 0, 0, 0xff, 1]);
    count += 2;
    let mut table = config_header((CONFIG_HEADER_LEN + entries.len()) as u16, count);
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);
    table
}

fn config_header(length: u16, entry_count: u16) -> Vec<u8> {
    let mut header = Vec::with_capacity(CONFIG_HEADER_LEN);
    header.extend_from_slice(b"PCMP");
    header.extend_from_slice(&length.to_le_bytes());
    header.extend_from_slice(&[MPC_SPEC, 0]);
    header.extend_from_slice(b"EMBER   ");
    header.extend_from_slice(b"MICROVM     ");
    header.extend_from_slice(&[0; 4]); // OEM table pointer
    header.extend_from_slice(&[0; 2]); // OEM table size
    header.extend_from_slice(&entry_count.to_le_bytes());
    header.extend_from_slice(&(APIC_START as u32).to_le_bytes());
    header.extend_from_slice(&[0; 4]);
    header
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vstate::memory::GuestMemory;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |acc, b| acc.wrapping_add(*b))
    }

    #[test]
    fn table_has_valid_checksums_and_all_cpus() {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        setup_mptable(&mem, 32).unwrap();
        let mut fp = [0u8; 16];
        mem.read_slice(&mut fp, GuestAddress(EBDA_START)).unwrap();
        assert_eq!(&fp[0..4], b"_MP_");
        assert_eq!(sum(&fp), 0);
        let table_addr = u32::from_le_bytes(fp[4..8].try_into().unwrap()) as u64;
        let mut header = [0u8; CONFIG_HEADER_LEN];
        mem.read_slice(&mut header, GuestAddress(table_addr))
            .unwrap();
        assert_eq!(&header[0..4], b"PCMP");
        let len = u16::from_le_bytes([header[4], header[5]]) as usize;
        let mut table = vec![0u8; len];
        mem.read_slice(&mut table, GuestAddress(table_addr))
            .unwrap();
        assert_eq!(sum(&table), 0);
        let cpus = table[CONFIG_HEADER_LEN..]
            .chunks(20)
            .take_while(|e| e[0] == 0)
            .count();
        assert_eq!(cpus, 32);
        assert!(
            table_addr + len as u64 <= 0xa0000,
            "MP table must stay inside the EBDA"
        );
    }

    #[test]
    fn refuses_cpu_counts_the_format_cannot_hold() {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        assert!(matches!(
            setup_mptable(&mem, 255),
            Err(MptableError::TooManyCpus(255))
        ));
    }
}
