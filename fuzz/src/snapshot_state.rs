//! `snapshot_state`: bytes as a snapshot state file (`PUT /snapshot/load` reads one a client
//! names). Decoding never panics, whatever the bytes; and the same bytes are tried again as
//! the payload behind a valid header, so the fuzzer reaches the JSON decoder past the
//! checksum. A state that decodes encodes to a file that decodes to the same state.

use vmm::snapshot::{decode_state, encode_state, frame_payload, VmSnapshot};

pub fn run(data: &[u8]) {
    check(data);
    check(&frame_payload(data));
}

fn check(bytes: &[u8]) {
    let Ok(state) = decode_state::<VmSnapshot>(bytes, "fuzz.snap") else {
        return;
    };
    let again = encode_state(&state).expect("a decoded state encodes");
    let decoded = decode_state::<VmSnapshot>(&again, "again.snap").expect("and decodes");
    assert_eq!(decoded, state, "a state changed through encode and decode");
}
