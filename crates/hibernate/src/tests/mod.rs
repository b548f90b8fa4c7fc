//! Tests of the whole store: room storage against a `BTreeMap` model, and
//! snapshots, alarms, map growth and group commit against plain expectations.

mod model;
mod store;

use crossbeam_channel::Sender;

use crate::{Done, StoreError};

/// A completion callback that reports `(tag, outcome)` on `sender`.
fn report(sender: &Sender<(u64, Result<(), StoreError>)>, tag: u64) -> Done {
    let sender = sender.clone();
    Box::new(move |result| sender.send((tag, result)).expect("the test keeps the receiver"))
}
