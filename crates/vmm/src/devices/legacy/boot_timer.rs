//! Firecracker's boot timer: a guest write of 123 to its register marks "init reached", and
//! the VMM logs the time since the process started. Guest images that run
//! `devmem 0xc0000000 8 123` measure their boot the same way under Ember.

use crate::devices::BusDevice;
use std::time::Instant;

/// The value guests write to mark the end of their boot.
const BOOT_COMPLETE_MAGIC: u8 = 123;

pub struct BootTimer {
    process_start: Instant,
}

impl BootTimer {
    pub fn new(process_start: Instant) -> Self {
        BootTimer { process_start }
    }
}

/// Formats the log line the way Firecracker does, so existing log scrapers keep working.
fn boot_time_line(elapsed: std::time::Duration) -> String {
    let micros = elapsed.as_micros();
    format!("Guest-boot-time = {micros:>6} us {} ms", micros / 1000)
}

impl BusDevice for BootTimer {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == 0 && data.first() == Some(&BOOT_COMPLETE_MAGIC) {
            log::info!("{}", boot_time_line(self.process_start.elapsed()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn line_matches_firecracker_format() {
        assert_eq!(
            boot_time_line(Duration::from_micros(12_345)),
            "Guest-boot-time =  12345 us 12 ms"
        );
    }
}
