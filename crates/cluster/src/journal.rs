//! Each room's journal: the durable record of its state in a cluster, one
//! JetStream subject per room (`dm.j.<room key>`) in the stream
//! `DM_JOURNAL`. What an entry says is the server's business; here they are
//! bytes with a stream sequence.
//!
//! Appends are fenced: each names the sequence of the room's last entry it
//! knows (`Nats-Expected-Last-Subject-Sequence`), so an owner that lost its
//! lease cannot append after the node that took the room over has appended
//! (its first entry, when it takes the room, is that fence). Loading reads
//! the room's entries in order up to the last one there was when it began.
//! Compacting drops a room's entries before a sequence (a purge of its
//! subject), once a later entry holds all they said.

use bytes::Bytes;
use futures_util::StreamExt;
use std::time::Duration;

/// The stream of the rooms' journals.
pub const JOURNAL_STREAM: &str = "DM_JOURNAL";

/// The subject of room `key`'s journal (`key` from [`crate::room_key`]).
pub fn journal_subject(key: &str) -> String {
    format!("dm.j.{key}")
}

/// What became of an append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// It is the room's entry at this stream sequence.
    At(u64),
    /// The room's last entry is not the one named: another node appended
    /// since (it took the room over). This node must stop running it.
    Fenced,
    /// NATS did not take it (timeout, connection, too large, ...).
    Failed(String),
}

/// A room's entries, in order: (stream sequence, payload).
pub type Entries = Vec<(u64, Bytes)>;

/// How long loading a room's journal may take in all.
const LOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// The journal stream, made if absent (file storage, `replicas`, no
/// limits: what bounds a room's journal is its compaction).
pub(crate) async fn stream(
    jetstream: &async_nats::jetstream::Context,
    replicas: usize,
) -> Result<async_nats::jetstream::stream::Stream, String> {
    use async_nats::jetstream::stream::{Config, StorageType};
    let config = Config {
        name: JOURNAL_STREAM.into(),
        subjects: vec!["dm.j.>".into()],
        storage: StorageType::File,
        allow_direct: true,
        num_replicas: replicas,
        ..Default::default()
    };
    jetstream.get_or_create_stream(&config).await.map_err(|e| e.to_string())
}

pub(crate) async fn append(
    jetstream: &async_nats::jetstream::Context,
    key: &str,
    expect: u64,
    payload: Bytes,
) -> Appended {
    use async_nats::jetstream::context::PublishErrorKind;
    let publish =
        async_nats::jetstream::message::PublishMessage::build().payload(payload).expected_last_subject_sequence(expect);
    let ack = match jetstream.send_publish(journal_subject(key), publish).await {
        Ok(ack) => ack.await,
        Err(e) => Err(e),
    };
    match ack {
        Ok(ack) => Appended::At(ack.sequence),
        Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Appended::Fenced,
        Err(e) => Appended::Failed(e.to_string()),
    }
}

pub(crate) async fn load(stream: &async_nats::jetstream::stream::Stream, key: &str) -> Result<Entries, String> {
    match tokio::time::timeout(LOAD_TIMEOUT, read(stream, key)).await {
        Ok(result) => result,
        Err(_) => Err(format!("reading the room's journal took over {LOAD_TIMEOUT:?}")),
    }
}

async fn read(stream: &async_nats::jetstream::stream::Stream, key: &str) -> Result<Entries, String> {
    use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
    use async_nats::jetstream::stream::LastRawMessageErrorKind;
    let subject = journal_subject(key);
    let last = match stream.get_last_raw_message_by_subject(&subject).await {
        Ok(message) => message.sequence,
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(Vec::new()),
        Err(e) => return Err(e.to_string()),
    };
    let config = OrderedConfig { filter_subject: subject, deliver_policy: DeliverPolicy::All, ..Default::default() };
    let consumer = stream.create_consumer(config).await.map_err(|e| e.to_string())?;
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    let mut entries = Vec::new();
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| e.to_string())?;
        let sequence = message.info().map_err(|e| e.to_string())?.stream_sequence;
        entries.push((sequence, message.payload.clone()));
        if sequence >= last {
            return Ok(entries);
        }
    }
    Err("the journal's consumer ended early".into())
}

/// Drops room `key`'s entries before sequence `before`.
pub(crate) async fn compact(
    stream: &async_nats::jetstream::stream::Stream,
    key: &str,
    before: u64,
) -> Result<u64, String> {
    let purged = stream.purge().filter(journal_subject(key)).sequence(before).await.map_err(|e| e.to_string())?;
    Ok(purged.purged)
}
