//! Drives all four RFC 3261 transaction machines, the UAS 2xx retransmitter
//! and the timer queue with an event sequence decoded from the input,
//! checking their invariants (see `palisade_transaction::fuzz_drive`).
//!
//! The fuzz crate must depend on `palisade-transaction` with the `fuzzing`
//! feature: `palisade-transaction = { path = "../crates/transaction", features = ["fuzzing"] }`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    palisade_transaction::fuzz_drive(data);
});
