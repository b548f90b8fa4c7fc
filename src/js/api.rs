//! The native side of the JS room API: the functions the prelude
//! (`prelude/core.js` and its chunks) builds `room`, `Connection`, `Request`
//! and `console` on.
//!
//! They act on the `Room` of the event being handled, which is lent to them
//! for the length of the call (`ROOM`, a scoped thread-local): JS runs only
//! inside a room's callbacks, so every native call finds its room. Effects
//! (send, broadcast, close) go through the same `Room` methods Rust parties
//! use, so the reactor, fan-out and durability do not know JS exists.

use super::clone;
use crate::party::{Connection, Message, Room};
use crate::storage::{ListOptions, Savepoint, StorageError};
use rquickjs::{ArrayBuffer, Ctx, Exception, Function, Object, TypedArray, Value};
use std::cell::RefCell;

scoped_tls::scoped_thread_local! {
    /// The room whose event is running.
    pub(super) static ROOM: Room
}

thread_local! {
    /// A connection got its first event listener during the running call.
    static LISTENING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// The savepoints of the running event's open `storage.transaction`s,
    /// outermost first.
    static TRANSACTIONS: RefCell<Vec<Savepoint>> = const { RefCell::new(Vec::new()) };
}

/// Whether the running call added the room's first event listener of a
/// connection (then events are dispatched to listeners too); resets it.
pub(super) fn take_listening() -> bool {
    LISTENING.replace(false)
}

/// Rolls back the transactions the event left open (their callback never
/// settled): only a transaction that completed commits. Says whether there
/// were any.
pub(super) fn abandon_transactions(room: &Room) -> bool {
    let open = TRANSACTIONS.with_borrow_mut(std::mem::take);
    let abandoned = !open.is_empty();
    if let Some(outermost) = open.into_iter().next() {
        room.roll_back(outermost);
    }
    abandoned
}

fn storage_error<'js>(ctx: &Ctx<'js>, error: StorageError) -> rquickjs::Error {
    Exception::throw_range(ctx, &error.to_string())
}

/// A message as JS gave it: a string, or bytes.
enum Outgoing {
    Text(String),
    Binary(Vec<u8>),
}

impl Outgoing {
    fn as_message(&self) -> Message<'_> {
        match self {
            Outgoing::Text(text) => Message::Text(text),
            Outgoing::Binary(bytes) => Message::Binary(bytes),
        }
    }
}

/// Copies the bytes of an `ArrayBuffer` or `Uint8Array`.
pub(super) fn bytes_of(value: &Value<'_>) -> Option<Vec<u8>> {
    if let Some(buffer) = ArrayBuffer::from_value(value.clone()) {
        // SAFETY: the slice is copied at once and no JS runs while it is
        // borrowed, so the engine cannot detach or resize the buffer under it.
        #[allow(unsafe_code)]
        return unsafe { buffer.as_bytes() }.map(<[u8]>::to_vec);
    }
    let view = TypedArray::<u8>::from_value(value.clone()).ok()?;
    // SAFETY: as above.
    #[allow(unsafe_code)]
    unsafe { view.as_bytes() }.map(<[u8]>::to_vec)
}

/// A body as the prelude hands it over: text, bytes, or nothing.
pub(super) fn body_of(value: &Value<'_>) -> rquickjs::Result<Option<Vec<u8>>> {
    match value.as_string() {
        Some(text) => Ok(Some(text.to_string()?.into_bytes())),
        None => Ok(bytes_of(value)),
    }
}

/// Request headers from the prelude's `[[name, value]...]` (other shapes
/// are left out).
fn headers_of(pairs: Vec<Vec<String>>) -> Vec<crate::http::Header> {
    pairs
        .into_iter()
        .filter_map(|pair| <[String; 2]>::try_from(pair).ok())
        .map(|[name, value]| crate::http::Header { name, value: value.into_bytes() })
        .collect()
}

/// A response from the prelude's `[status, [[name, value]...], body]`.
pub(super) fn response_of(status: u16, headers: Vec<Vec<String>>, body: Vec<u8>) -> crate::http::Response {
    let mut response = crate::http::Response::new(status).with_body(body);
    for pair in headers {
        if let Ok([name, value]) = <[String; 2]>::try_from(pair) {
            response = response.with_header(name, value);
        }
    }
    response
}

fn outgoing<'js>(ctx: &Ctx<'js>, value: &Value<'js>) -> rquickjs::Result<Outgoing> {
    if let Some(text) = value.as_string() {
        return Ok(Outgoing::Text(text.to_string()?));
    }
    bytes_of(value)
        .map(Outgoing::Binary)
        .ok_or_else(|| Exception::throw_type(ctx, "a message is a string, an ArrayBuffer or a typed array"))
}

/// Runs `f` on the room of the running event.
fn in_room<'js, R>(ctx: &Ctx<'js>, f: impl FnOnce(&Room) -> rquickjs::Result<R>) -> rquickjs::Result<R> {
    if !ROOM.is_set() {
        return Err(Exception::throw_internal(ctx, "the room is only reachable while one of its handlers runs"));
    }
    ROOM.with(f)
}

/// Runs `f` on the connection with `id`; a connection that has left is an
/// error, as sending on a closed WebSocket is.
fn on_connection<'js, R>(
    ctx: &Ctx<'js>,
    id: &str,
    f: impl FnOnce(Connection<'_>) -> rquickjs::Result<R>,
) -> rquickjs::Result<R> {
    in_room(ctx, |room| match room.connection(id) {
        Some(conn) => f(conn),
        None => Err(Exception::throw_message(ctx, &format!("connection {id:?} is not open"))),
    })
}

/// `globalThis.__native`, which the prelude takes and hides.
pub(super) fn install<'js>(
    ctx: &Ctx<'js>,
    party: &str,
    room_id: &str,
    env: &[(String, String)],
) -> rquickjs::Result<()> {
    let native = Object::new(ctx.clone())?;
    native.set("party", party)?;
    native.set("roomId", room_id)?;
    let vars = Object::new(ctx.clone())?;
    for (name, value) in env {
        vars.set(name.as_str(), value.as_str())?;
    }
    native.set("env", vars)?;
    native.set(
        "send",
        Function::new(ctx.clone(), |ctx: Ctx<'js>, id: String, message: Value<'js>| {
            let message = outgoing(&ctx, &message)?;
            on_connection(&ctx, &id, |conn| {
                conn.send(message.as_message());
                Ok(())
            })
        })?,
    )?;
    native.set(
        "close",
        Function::new(ctx.clone(), |ctx: Ctx<'js>, id: String, code: u16, reason: String| {
            on_connection(&ctx, &id, |conn| {
                conn.close(code, &reason);
                Ok(())
            })
        })?,
    )?;
    native.set(
        "broadcast",
        Function::new(ctx.clone(), |ctx: Ctx<'js>, message: Value<'js>, without: Vec<String>| {
            let message = outgoing(&ctx, &message)?;
            let without: Vec<&str> = without.iter().map(String::as_str).collect();
            in_room(&ctx, |room| {
                room.broadcast(message.as_message(), &without);
                Ok(())
            })
        })?,
    )?;
    native.set(
        "tags",
        Function::new(ctx.clone(), |ctx: Ctx<'js>, id: String| {
            on_connection(&ctx, &id, |conn| Ok(conn.tags().map(str::to_owned).collect::<Vec<_>>()))
        })?,
    )?;
    native.set(
        "getState",
        Function::new(ctx.clone(), |ctx: Ctx<'js>, id: String| {
            on_connection(&ctx, &id, |conn| Ok(conn.state().map(|s| String::from_utf8_lossy(&s).into_owned())))
        })?,
    )?;
    native.set(
        "setState",
        Function::new(ctx.clone(), |ctx: Ctx<'js>, id: String, json: String| {
            on_connection(&ctx, &id, |conn| {
                conn.set_state(json.as_bytes()).map_err(|e| Exception::throw_range(&ctx, &e.to_string()))
            })
        })?,
    )?;
    native.set(
        "connectionUri",
        Function::new(ctx.clone(), |ctx: Ctx<'js>, id: String| {
            in_room(&ctx, |room| Ok(room.connection(&id).map(|c| c.uri().to_owned())))
        })?,
    )?;
    native.set(
        "connections",
        Function::new(ctx.clone(), |ctx: Ctx<'js>, tag: Option<String>| {
            in_room(&ctx, |room| {
                let pair = |c: Connection<'_>| vec![c.id().to_owned(), c.uri().to_owned()];
                Ok(match tag {
                    Some(tag) => room.connections_tagged(&tag).map(pair).collect::<Vec<_>>(),
                    None => room.connections().map(pair).collect(),
                })
            })
        })?,
    )?;
    native.set(
        "log",
        // Outside a room's event (the static hooks) the log names the party only.
        Function::new(ctx.clone(), {
            let party = party.to_owned();
            move |level: String, text: String| {
                let room = if ROOM.is_set() { ROOM.with(|room| room.id().to_owned()) } else { String::new() };
                let party = party.as_str();
                match level.as_str() {
                    "error" => tracing::error!(party, room, "{text}"),
                    "warn" => tracing::warn!(party, room, "{text}"),
                    "debug" => tracing::debug!(party, room, "{text}"),
                    _ => tracing::info!(party, room, "{text}"),
                }
            }
        })?,
    )?;
    native.set("listening", Function::new(ctx.clone(), || LISTENING.set(true))?)?;
    native.set(
        "original",
        Function::new(ctx.clone(), |file: String, line: u32, col: u32| {
            let found = super::engine::MODULES.is_set().then(|| {
                super::engine::MODULES.with(|bundle| bundle.original(&file, line, col).map(|(l, c)| vec![l, c]))
            });
            found.flatten()
        })?,
    )?;
    native.set(
        "chunk",
        Function::new(ctx.clone(), |ctx: Ctx<'js>, name: String| {
            let source = match name.as_str() {
                "web" => include_str!("prelude/web.js"),
                "platform" => include_str!("prelude/platform.js"),
                "storage" => include_str!("prelude/storage.js"),
                _ => return Err(Exception::throw_internal(&ctx, &format!("no prelude chunk {name:?}"))),
            };
            ctx.eval::<Function, _>(source)
        })?,
    )?;
    native.set(
        "utf8",
        Function::new(ctx.clone(), |ctx: Ctx<'js>, bytes: Value<'js>| {
            let bytes = bytes_of(&bytes).ok_or_else(|| Exception::throw_type(&ctx, "expected bytes"))?;
            Ok::<_, rquickjs::Error>(String::from_utf8_lossy(&bytes).into_owned())
        })?,
    )?;
    native.set(
        "encode",
        Function::new(ctx.clone(), |ctx: Ctx<'js>, text: String| ArrayBuffer::new(ctx, text.into_bytes()))?,
    )?;
    install_platform(ctx, &native)?;
    install_storage(ctx, &native)?;
    ctx.globals().set("__native", native)?;
    Ok(())
}

/// What the prelude's web platform globals need from the host: random
/// bytes (`crypto`), base64 (`atob`/`btoa`) and the value codec
/// (`structuredClone`).
fn install_platform<'js>(ctx: &Ctx<'js>, native: &Object<'js>) -> rquickjs::Result<()> {
    use base64::Engine as _;
    native.set(
        "random",
        Function::new(ctx.clone(), |ctx: Ctx<'js>, n: usize| {
            if n > 65536 {
                return Err(Exception::throw_range(&ctx, "getRandomValues fills at most 65536 bytes"));
            }
            let mut bytes = vec![0u8; n];
            rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
            ArrayBuffer::new(ctx, bytes)
        })?,
    )?;
    native.set(
        "btoa",
        Function::new(ctx.clone(), |ctx: Ctx<'js>, text: String| {
            let bytes = text.chars().map(|c| u8::try_from(u32::from(c))).collect::<Result<Vec<u8>, _>>();
            let bytes = bytes.map_err(|_| Exception::throw_message(&ctx, "btoa: a character is outside Latin-1"))?;
            Ok::<_, rquickjs::Error>(base64::engine::general_purpose::STANDARD.encode(bytes))
        })?,
    )?;
    native.set(
        "atob",
        Function::new(ctx.clone(), |ctx: Ctx<'js>, text: String| {
            let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
            let engine = base64::engine::GeneralPurpose::new(
                &base64::alphabet::STANDARD,
                base64::engine::GeneralPurposeConfig::new()
                    .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
            );
            let bytes = engine.decode(compact).map_err(|_| Exception::throw_message(&ctx, "atob: not valid base64"))?;
            Ok::<_, rquickjs::Error>(bytes.into_iter().map(char::from).collect::<String>())
        })?,
    )?;
    native.set(
        "structuredClone",
        Function::new(ctx.clone(), |ctx: Ctx<'js>, value: Value<'js>| {
            let bytes = clone::encode(&ctx, &value)?;
            clone::decode(&ctx, &bytes)
        })?,
    )?;
    Ok(())
}

/// `room.storage` and the alarm: keys are strings (stored as UTF-8), values
/// are encoded by `clone`.
fn install_storage<'js>(ctx: &Ctx<'js>, native: &Object<'js>) -> rquickjs::Result<()> {
    native.set(
        "storageGet",
        Function::new(ctx.clone(), |ctx: Ctx<'js>, keys: Vec<String>| {
            in_room(&ctx, |room| {
                let keys: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
                let found = room.storage().get_many(&keys).map_err(|e| storage_error(&ctx, e))?;
                found
                    .into_iter()
                    .map(|value| match value {
                        Some(bytes) => clone::decode(&ctx, &bytes),
                        None => Ok(Value::new_undefined(ctx.clone())),
                    })
                    .collect::<rquickjs::Result<Vec<_>>>()
            })
        })?,
    )?;
    native.set(
        "storagePut",
        Function::new(ctx.clone(), |ctx: Ctx<'js>, keys: Vec<String>, values: Vec<Value<'js>>| {
            let encoded = values.iter().map(|v| clone::encode(&ctx, v)).collect::<rquickjs::Result<Vec<_>>>()?;
            in_room(&ctx, |room| {
                let entries: Vec<(&[u8], &[u8])> =
                    keys.iter().zip(&encoded).map(|(k, v)| (k.as_bytes(), v.as_slice())).collect();
                room.storage().put_many(&entries).map_err(|e| storage_error(&ctx, e))
            })
        })?,
    )?;
    native.set(
        "storageDelete",
        Function::new(ctx.clone(), |ctx: Ctx<'js>, keys: Vec<String>| {
            in_room(&ctx, |room| {
                let keys: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
                room.storage().delete_many(&keys).map_err(|e| storage_error(&ctx, e))
            })
        })?,
    )?;
    native.set(
        "storageList",
        Function::new(ctx.clone(), |ctx: Ctx<'js>, options: Object<'js>| {
            let text = |name: &str| -> rquickjs::Result<Option<Vec<u8>>> {
                Ok(options.get::<_, Option<String>>(name)?.map(String::into_bytes))
            };
            let list = ListOptions {
                prefix: text("prefix")?,
                start: text("start")?,
                end: text("end")?,
                reverse: options.get::<_, Option<bool>>("reverse")?.unwrap_or(false),
                limit: options.get::<_, Option<f64>>("limit")?.map(|n| n.max(0.0) as usize),
            };
            in_room(&ctx, |room| {
                let entries = room.storage().list(&list).map_err(|e| storage_error(&ctx, e))?;
                entries
                    .into_iter()
                    .map(|(key, value)| {
                        let key = rquickjs::String::from_str(ctx.clone(), &String::from_utf8_lossy(&key))?;
                        Ok(vec![key.into_value(), clone::decode(&ctx, &value)?])
                    })
                    .collect::<rquickjs::Result<Vec<_>>>()
            })
        })?,
    )?;
    native.set(
        "storageDeleteAll",
        Function::new(ctx.clone(), |ctx: Ctx<'js>| {
            in_room(&ctx, |room| room.storage().delete_all().map_err(|e| storage_error(&ctx, e)))
        })?,
    )?;
    native.set(
        "getAlarm",
        Function::new(ctx.clone(), |ctx: Ctx<'js>| in_room(&ctx, |room| Ok(room.alarm().map(|ms| ms as f64))))?,
    )?;
    native.set(
        "setAlarm",
        Function::new(ctx.clone(), |ctx: Ctx<'js>, at_ms: f64| {
            if !at_ms.is_finite() {
                return Err(Exception::throw_type(&ctx, "setAlarm takes a Date or a number of milliseconds"));
            }
            in_room(&ctx, |room| {
                room.set_alarm(at_ms.max(0.0) as u64);
                Ok(())
            })
        })?,
    )?;
    native.set(
        "deleteAlarm",
        Function::new(ctx.clone(), |ctx: Ctx<'js>| {
            in_room(&ctx, |room| {
                room.delete_alarm();
                Ok(())
            })
        })?,
    )?;
    // room.context.parties: requests to other rooms, and late answers.
    native.set(
        "roomFetch",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>,
             party: String,
             target: String,
             method: String,
             path: String,
             headers: Vec<Vec<String>>,
             body: Value<'js>| {
                let body = bytes_of(&body).unwrap_or_default();
                let encoded = percent_encoding::utf8_percent_encode(&target, percent_encoding::NON_ALPHANUMERIC);
                let head = crate::http::RequestHead {
                    method,
                    target: format!("/parties/{party}/{encoded}{path}"),
                    minor_version: 1,
                    headers: headers_of(headers),
                };
                let request = crate::party::Request { head, body: body.into() };
                in_room(&ctx, |room| {
                    room.request_room(&party, &target, request).ok_or_else(|| {
                        let max = crate::party::MAX_ROOM_REQUESTS;
                        Exception::throw_range(&ctx, &format!("{max} requests to other rooms are already waiting"))
                    })
                })
            },
        )?,
    )?;
    // room.context.parties.<party>.get(id).socket(): a connection to
    // another room, a member there; its events come as __socketEvent.
    native.set(
        "roomSocket",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>, party: String, target: String, path: String, headers: Vec<Vec<String>>| {
                let headers = headers_of(headers);
                in_room(&ctx, |room| {
                    room.connect_room_with(&party, &target, &path, headers).ok_or_else(|| {
                        let max = crate::party::MAX_ROOM_SOCKETS;
                        Exception::throw_range(&ctx, &format!("{max} sockets to other rooms are already open"))
                    })
                })
            },
        )?,
    )?;
    native.set(
        "roomSocketSend",
        Function::new(ctx.clone(), |ctx: Ctx<'js>, socket: u32, message: Value<'js>| {
            let message = outgoing(&ctx, &message)?;
            in_room(&ctx, |room| Ok(room.socket_send(socket, message.as_message())))
        })?,
    )?;
    native.set(
        "roomSocketClose",
        Function::new(ctx.clone(), |ctx: Ctx<'js>, socket: u32, code: u16, reason: String| {
            in_room(&ctx, |room| {
                room.socket_close(socket, code, &reason);
                Ok(())
            })
        })?,
    )?;
    // fetch(): a request to the outside, on the server's fetch threads.
    native.set(
        "fetch",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>, method: String, url: String, headers: Vec<Vec<String>>, body: Value<'js>| {
                let headers = headers
                    .into_iter()
                    .filter_map(|pair| <[String; 2]>::try_from(pair).ok().map(|[name, value]| (name, value)))
                    .collect();
                let body = body_of(&body)?.unwrap_or_default();
                let request =
                    crate::outbound::FetchRequest { method, url, headers, body: body.into(), timeout_ms: None };
                in_room(&ctx, |room| {
                    room.fetch(request).ok_or_else(|| {
                        let max = room.max_fetches;
                        Exception::throw_range(&ctx, &format!("{max} fetch() requests are already in flight"))
                    })
                })
            },
        )?,
    )?;
    native.set(
        "respondLater",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>, token: u32, status: u16, headers: Vec<Vec<String>>, body: Value<'js>| {
                let response = response_of(status, headers, body_of(&body)?.unwrap_or_default());
                in_room(&ctx, |room| {
                    room.respond_later(token, response);
                    Ok(())
                })
            },
        )?,
    )?;
    // The room's timer, under setTimeout/setInterval. Outside a room (the
    // lobby, the first run at start-up) timers never run.
    native.set(
        "setTimer",
        Function::new(ctx.clone(), |at_ms: f64| {
            if ROOM.is_set() && at_ms.is_finite() {
                ROOM.with(|room| room.set_timer(at_ms.max(0.0) as u64));
            }
        })?,
    )?;
    native.set(
        "cancelTimer",
        Function::new(ctx.clone(), || {
            if ROOM.is_set() {
                ROOM.with(Room::cancel_timer);
            }
        })?,
    )?;
    native.set(
        "transactionBegin",
        Function::new(ctx.clone(), |ctx: Ctx<'js>| {
            in_room(&ctx, |room| {
                let savepoint = room.savepoint();
                Ok(TRANSACTIONS.with_borrow_mut(|open| {
                    open.push(savepoint);
                    open.len() - 1
                }))
            })
        })?,
    )?;
    native.set(
        "transactionEnd",
        Function::new(ctx.clone(), |ctx: Ctx<'js>, depth: usize, commit: bool| {
            in_room(&ctx, |room| {
                let savepoint = TRANSACTIONS.with_borrow_mut(|open| {
                    let mut inner = open.split_off(depth.min(open.len()));
                    (!inner.is_empty()).then(|| inner.swap_remove(0))
                });
                if let (Some(savepoint), false) = (savepoint, commit) {
                    room.roll_back(savepoint);
                }
                Ok(())
            })
        })?,
    )?;
    Ok(())
}
