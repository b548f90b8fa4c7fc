//! A room's document in memory: a yrs `Doc`, or, after a load, the merged
//! state as storage holds it until something needs the `Doc`.
//!
//! Building a `Doc` from a large state is yrs decoding every item (and
//! counting each string's UTF-16 length) and integrating it: about 40 ms
//! for 10 MB. Most loads are for a reader joining, which needs the server's
//! state vector (its step 1) and the items it lacks (step 2): for a
//! newcomer that is the whole merged state, which storage holds encoded. So
//! the log stores each merged state's snapshot (its delete set and state
//! vector) beside it, and a document loaded with no updates since serves
//! these without a `Doc`:
//!
//! - its step 1: the snapshot's state vector;
//! - step 2 to an empty state vector (a newcomer): the stored state;
//! - step 2 to a state vector that has every item the document has (a
//!   client that was away while nothing was added; deletions move no
//!   clock): no items and the whole delete set;
//! - an HTTP GET: the stored state.
//!
//! Anything else (an update, the step 1 of a client that lacks some items)
//! builds the `Doc` first and drops the bytes. A load with a tail (after a
//! crash), or of a state stored before snapshots were, builds it at once.

use super::log::Stored;
use yrs::encoding::write::Write;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::{Encode, Encoder, EncoderV1};
use yrs::{Doc, ReadTxn, Snapshot, StateVector, Transact, Update};

pub(super) enum Document {
    Live(Doc),
    /// The merged state, not decoded, and its snapshot.
    Stored {
        state: Vec<u8>,
        snapshot: Snapshot,
    },
}

impl Document {
    /// The document storage holds (see [`super::log::Log::load`]).
    pub fn load(stored: Stored) -> Result<Document, String> {
        if stored.tail.is_empty() {
            if let Some(snapshot) = &stored.snapshot {
                let snapshot =
                    Snapshot::decode_v1(snapshot).map_err(|e| format!("the stored snapshot does not decode: {e}"))?;
                return Ok(Document::Stored { state: stored.state, snapshot });
            }
        }
        let doc = Doc::new();
        let mut txn = doc.transact_mut();
        if !stored.state.is_empty() {
            let update =
                Update::decode_v1(&stored.state).map_err(|e| format!("the stored document does not decode: {e}"))?;
            txn.apply_update(update).map_err(|e| format!("the stored document does not apply: {e}"))?;
        }
        for (n, update) in stored.tail.iter().enumerate() {
            let decoded = Update::decode_v1(update).map_err(|e| format!("stored update {n} does not decode: {e}"))?;
            txn.apply_update(decoded).map_err(|e| format!("stored update {n} does not apply: {e}"))?;
        }
        drop(txn);
        Ok(Document::Live(doc))
    }

    /// The `Doc`, built from the stored state if it was not yet.
    pub fn doc(&mut self) -> Result<&Doc, String> {
        if let Document::Stored { state, .. } = self {
            let state = std::mem::take(state);
            *self = Document::load(Stored { state, snapshot: None, tail: Vec::new() })?;
        }
        match self {
            Document::Live(doc) => Ok(doc),
            Document::Stored { .. } => unreachable!("built above"),
        }
    }

    /// The `Doc`, if it is built.
    pub fn live(&self) -> Option<&Doc> {
        match self {
            Document::Live(doc) => Some(doc),
            Document::Stored { .. } => None,
        }
    }

    /// The document's state vector, v1-encoded (the server's step 1).
    pub fn state_vector(&self) -> Vec<u8> {
        match self {
            Document::Live(doc) => doc.transact().state_vector().encode_v1(),
            Document::Stored { snapshot, .. } => snapshot.state_map.encode_v1(),
        }
    }

    /// The update a client with `remote` lacks (step 2), v1-encoded.
    pub fn diff(&mut self, remote: &StateVector) -> Result<Vec<u8>, String> {
        if let Document::Stored { state, snapshot } = self {
            if remote.is_empty() {
                return Ok(state.clone());
            }
            if snapshot.state_map.iter().all(|(client, &clock)| remote.get(client) >= clock) {
                // An update of no items (a count of zero clients) and the
                // delete set, as yrs writes both.
                let mut encoder = EncoderV1::new();
                encoder.write_var(0u32);
                snapshot.delete_set.encode(&mut encoder);
                return Ok(encoder.to_vec());
            }
        }
        Ok(self.doc()?.transact().encode_state_as_update_v1(remote))
    }

    /// Whether `update` is known already to a document not built: every
    /// item in it is below the stored state vector and every deletion in
    /// the stored delete set. A client that reconnects sends such a step 2
    /// (its whole delete set comes with any update Yjs encodes); applying
    /// it would build the `Doc` and store and relay nothing new. A built
    /// `Doc` answers `false`: it applies what it is given.
    pub fn knows(&self, update: &Update) -> bool {
        let Document::Stored { snapshot, .. } = self else { return false };
        let inserted = update.insertions(true);
        let items_known = inserted
            .iter()
            .all(|(client, ranges)| ranges.iter().all(|range| range.end <= snapshot.state_map.get(client)));
        let unknown_deletes = update.delete_set().diff(&snapshot.delete_set);
        items_known && unknown_deletes.iter().all(|(_, ranges)| ranges.is_empty())
    }

    /// The whole document as one v1 update.
    pub fn whole(&self) -> Vec<u8> {
        match self {
            Document::Live(doc) => doc.transact().encode_state_as_update_v1(&StateVector::default()),
            Document::Stored { state, .. } => state.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::{GetString, Text};

    /// A stored document of two clients' inserts and a delete, as the log
    /// compacts it: the merged state and its snapshot.
    fn stored(doc: &Doc) -> Stored {
        let txn = doc.transact();
        Stored {
            state: txn.encode_state_as_update_v1(&StateVector::default()),
            snapshot: Some(txn.snapshot().encode_v1()),
            tail: Vec::new(),
        }
    }

    fn text_of(doc: &Doc) -> String {
        doc.get_or_insert_text("t").get_string(&doc.transact())
    }

    fn state_vector(doc: &Doc) -> StateVector {
        doc.transact().state_vector()
    }

    /// A client's copy after applying `update` to it.
    fn apply(client: &Doc, update: &[u8]) {
        client.transact_mut().apply_update(Update::decode_v1(update).expect("a valid update")).expect("it applies");
    }

    #[test]
    fn a_stored_document_answers_as_its_doc_would_without_building_it() {
        let server = Doc::with_client_id(1);
        let text = server.get_or_insert_text("t");
        text.insert(&mut server.transact_mut(), 0, "hello world");
        // A client that synced now, then was away while a word was deleted
        // (no clock moves), and another away while text was added.
        let away = Doc::with_client_id(2);
        apply(&away, &server.transact().encode_state_as_update_v1(&StateVector::default()));
        text.remove_range(&mut server.transact_mut(), 0, 6);
        let behind = Doc::with_client_id(3);
        apply(&behind, &server.transact().encode_state_as_update_v1(&StateVector::default()));
        text.insert(&mut server.transact_mut(), 5, "!");

        let mut document = Document::load(stored(&server)).expect("it loads");
        assert!(document.live().is_none(), "no Doc for a stored state with its snapshot");
        assert_eq!(document.state_vector(), server.transact().state_vector().encode_v1());
        assert_eq!(document.whole(), server.transact().encode_state_as_update_v1(&StateVector::default()));

        let newcomer = Doc::with_client_id(4);
        apply(&newcomer, &document.diff(&StateVector::default()).unwrap());
        assert_eq!(text_of(&newcomer), "world!");
        assert!(document.live().is_none(), "a newcomer is served from the stored state");

        // The away client is one insert behind, so it needs the Doc; the
        // deletion alone is served without.
        let mut only_deleted = Document::load(stored(&server)).unwrap();
        let before = Doc::with_client_id(5);
        apply(&before, &server.transact().encode_state_as_update_v1(&StateVector::default()));
        text.remove_range(&mut server.transact_mut(), 0, 1);
        let mut deleted = Document::load(stored(&server)).unwrap();
        apply(&before, &deleted.diff(&state_vector(&before)).unwrap());
        assert_eq!(text_of(&before), text_of(&server), "the delete set reaches a client with every item");
        assert!(deleted.live().is_none());

        apply(&away, &only_deleted.diff(&state_vector(&away)).unwrap());
        assert_eq!(text_of(&away), "world!");
        assert!(only_deleted.live().is_some(), "a client lacking items is answered from the Doc");
        apply(&behind, &document.diff(&state_vector(&behind)).unwrap());
        assert_eq!(text_of(&behind), "world!");
        assert_eq!(text_of(document.doc().unwrap()), "world!");
    }

    #[test]
    fn a_step_2_that_brings_nothing_new_is_known_without_the_doc() {
        let server = Doc::with_client_id(1);
        let text = server.get_or_insert_text("t");
        text.insert(&mut server.transact_mut(), 0, "hello world");
        text.remove_range(&mut server.transact_mut(), 0, 6);
        let client = Doc::with_client_id(2);
        apply(&client, &server.transact().encode_state_as_update_v1(&StateVector::default()));
        let document = Document::load(stored(&server)).unwrap();
        let server_sv = document.state_vector();
        let server_sv = StateVector::decode_v1(&server_sv).unwrap();
        // What the client's provider answers the server's step 1 with: no
        // items, and its delete set, which the server has.
        let reply = client.transact().encode_state_as_update_v1(&server_sv);
        assert!(document.knows(&Update::decode_v1(&reply).unwrap()));

        // A deletion the server lacks, an item it lacks, and an item past a
        // gap (pending until what it follows arrives) are all new.
        let deleting = Doc::with_client_id(3);
        apply(&deleting, &server.transact().encode_state_as_update_v1(&StateVector::default()));
        deleting.get_or_insert_text("t").remove_range(&mut deleting.transact_mut(), 0, 1);
        let reply = deleting.transact().encode_state_as_update_v1(&server_sv);
        assert!(!document.knows(&Update::decode_v1(&reply).unwrap()));
        let client_text = client.get_or_insert_text("t");
        client_text.insert(&mut client.transact_mut(), 0, "a");
        let before_b = state_vector(&client);
        client_text.insert(&mut client.transact_mut(), 0, "b");
        let added = client.transact().encode_state_as_update_v1(&server_sv);
        assert!(!document.knows(&Update::decode_v1(&added).unwrap()));
        let past_gap = client.transact().encode_state_as_update_v1(&before_b);
        assert!(!document.knows(&Update::decode_v1(&past_gap).unwrap()));
        assert!(!Document::Live(Doc::new()).knows(&Update::new()), "a Doc applies whatever it is given");
    }

    #[test]
    fn a_tail_or_a_missing_snapshot_builds_the_doc_at_once() {
        let server = Doc::with_client_id(1);
        let text = server.get_or_insert_text("t");
        text.insert(&mut server.transact_mut(), 0, "ab");
        let mut with_tail = stored(&server);
        let sv = server.transact().state_vector();
        text.insert(&mut server.transact_mut(), 2, "c");
        with_tail.tail.push(server.transact().encode_state_as_update_v1(&sv));
        let document = Document::load(with_tail).unwrap();
        assert_eq!(text_of(document.live().expect("built")), "abc");
        let without = Stored { snapshot: None, ..stored(&server) };
        assert_eq!(text_of(Document::load(without).unwrap().live().expect("built")), "abc");
    }
}
