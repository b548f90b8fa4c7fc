//! The `yjs` scenario's messages: editors of Yjs documents sending small
//! text inserts as y-protocols sync updates, made with `yrs` as a client
//! library would make them, to any y-protocols server (dormouse's `yjs`
//! kind, y-websocket's server) or to Hocuspocus (the same messages, each
//! prefixed with the document's name, after an auth message).
//!
//! Each editor types into a text of its own in the shared document (`t<n>`,
//! as if each wrote their own paragraph), so its updates depend only on its
//! own earlier ones, every server can integrate them without the editor
//! applying anyone else's, and integrating one costs what a typed character
//! costs. (Had they all appended to one text without seeing each other's
//! inserts, each insert would be concurrent with every other at the end of
//! the text, and Yjs's conflict resolution would scan them all: a cost that
//! grows with the document and measures that, not the server.) The inserted
//! string is a stamped text message (`fanout::text_message`); servers may
//! re-encode an update before relaying it (y-websocket's and Hocuspocus's
//! do), but a string's content stays as it was, so a receiver finds the
//! stamp inside whatever update carries it.

use yrs::encoding::write::Write;
use yrs::sync::awareness::{AwarenessUpdate, AwarenessUpdateEntry};
use yrs::updates::encoder::Encode;
use yrs::{Doc, Text, TextRef, Transact};

/// How a server frames y-protocols messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Protocol {
    /// Plain y-protocols, one message per frame (dormouse, y-websocket).
    YProtocols,
    /// Hocuspocus: each message prefixed with the document name; an auth
    /// message first.
    Hocuspocus,
}

const MSG_SYNC: u8 = 0;
const MSG_AWARENESS: u8 = 1;
const MSG_AUTH: u8 = 2;
const MSG_SYNC_REPLY: u8 = 4;
const SYNC_STEP_1: u8 = 0;
const SYNC_STEP_2: u8 = 1;
const SYNC_UPDATE: u8 = 2;

/// One editor's copy of the document.
pub struct Editor {
    doc: Doc,
    text: TextRef,
}

impl Editor {
    /// An editor whose client id is derived from its connection number.
    pub fn new(global: usize) -> Editor {
        let doc = Doc::with_client_id(global as u64 + 1);
        let text = doc.get_or_insert_text(format!("t{global}").as_str());
        Editor { doc, text }
    }

    /// The sync update message that appends `insert` (ASCII) to the text.
    pub fn update(&self, protocol: Protocol, doc_name: &str, insert: &[u8], out: &mut Vec<u8>) {
        let insert = std::str::from_utf8(insert).expect("the stamped message is ASCII");
        let mut txn = self.doc.transact_mut();
        let end = self.text.len(&txn);
        self.text.insert(&mut txn, end, insert);
        let update = txn.encode_update_v1();
        out.clear();
        prefix(protocol, doc_name, out);
        out.write_var(MSG_SYNC);
        out.write_var(SYNC_UPDATE);
        out.write_buf(&update);
    }

    /// An awareness message: this editor's cursor at `clock` (its state's
    /// version), as a provider sends when the cursor moves.
    pub fn awareness(&self, protocol: Protocol, doc_name: &str, clock: u32, out: &mut Vec<u8>) {
        let json = format!(
            r##"{{"user":{{"name":"editor-{}","color":"#30bced"}},"cursor":{{"index":{clock}}}}}"##,
            self.doc.client_id()
        );
        let entry = AwarenessUpdateEntry { clock, json: json.into() };
        let update = AwarenessUpdate { clients: [(self.doc.client_id(), entry)].into_iter().collect() };
        out.clear();
        prefix(protocol, doc_name, out);
        out.write_var(MSG_AWARENESS);
        out.write_buf(update.encode_v1());
    }

    /// The text so far (for tests).
    #[cfg(test)]
    pub fn text(&self) -> String {
        yrs::GetString::get_string(&self.text, &self.doc.transact())
    }
}

fn prefix(protocol: Protocol, doc_name: &str, out: &mut Vec<u8>) {
    if protocol == Protocol::Hocuspocus {
        out.write_string(doc_name);
    }
}

/// Whether `message` is a sync step 2 (Hocuspocus calls its answer to a
/// step 1 a sync reply, type 4).
pub fn is_sync_step_2(protocol: Protocol, message: &[u8]) -> bool {
    let mut cursor = yrs::encoding::read::Cursor::new(message);
    if protocol == Protocol::Hocuspocus && yrs::encoding::read::Read::read_string(&mut cursor).is_err() {
        return false;
    }
    let rest = &message[cursor.next..];
    matches!(rest, [MSG_SYNC | MSG_SYNC_REPLY, SYNC_STEP_2, ..])
}

/// What a client sends first: Hocuspocus's auth message, then a sync step 1
/// with an empty state vector (the document is new to it).
pub fn hello(protocol: Protocol, doc_name: &str) -> Vec<Vec<u8>> {
    let mut messages = Vec::new();
    if protocol == Protocol::Hocuspocus {
        let mut auth = Vec::new();
        prefix(protocol, doc_name, &mut auth);
        auth.write_var(MSG_AUTH);
        auth.write_var(0u8); // a token
        auth.write_string("");
        messages.push(auth);
    }
    let mut step1 = Vec::new();
    prefix(protocol, doc_name, &mut step1);
    step1.write_var(MSG_SYNC);
    step1.write_var(SYNC_STEP_1);
    step1.write_buf([0u8]); // an empty state vector
    messages.push(step1);
    messages
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::updates::decoder::Decode;
    use yrs::GetString;

    #[test]
    fn an_editors_updates_apply_in_order_to_a_server_doc() {
        let editor = Editor::new(7);
        let server = Doc::new();
        let mut out = Vec::new();
        for word in ["one;", "two;"] {
            editor.update(Protocol::YProtocols, "d", word.as_bytes(), &mut out);
            assert_eq!(&out[..2], &[MSG_SYNC, SYNC_UPDATE]);
            let mut cursor = yrs::encoding::read::Cursor::new(&out[2..]);
            let update = yrs::encoding::read::Read::read_buf(&mut cursor).unwrap().to_vec();
            server.transact_mut().apply_update(yrs::Update::decode_v1(&update).unwrap()).unwrap();
        }
        assert_eq!(server.get_or_insert_text("t7").get_string(&server.transact()), "one;two;");
        assert_eq!(editor.text(), "one;two;");
        editor.update(Protocol::Hocuspocus, "doc", b"x", &mut out);
        assert_eq!(&out[..4], &[3, b'd', b'o', b'c'], "the document's name comes first");
        assert!(!is_sync_step_2(Protocol::Hocuspocus, &out));
        assert!(is_sync_step_2(Protocol::Hocuspocus, &[3, b'd', b'o', b'c', 4, 1, 0]));
        assert!(is_sync_step_2(Protocol::YProtocols, &[0, 1, 2, 0, 0]));
    }
}
