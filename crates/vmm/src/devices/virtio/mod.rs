//! Virtio devices: the virtio-mmio transport and the block and net backends.
