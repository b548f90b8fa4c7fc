//! A room of a JavaScript party: its own QuickJS context (globals never leak
//! between rooms), the module evaluated in it, and the server object the
//! module exports, in either of PartyKit's forms:
//!
//! - the class form, `export default class { constructor(room) ... }`, whose
//!   handlers are `onConnect(conn, ctx)`, `onMessage(message, sender)`, ...;
//! - the object form, `export default { onConnect(ws, room, ctx) ... }`,
//!   whose handlers also take the room: second in `onConnect`, last in the
//!   others.
//!
//! Every call runs with the room lent to the native API (`api::ROOM`) and
//! under the per-event CPU budget; promises a handler starts are driven as
//! far as they go in the event (one waiting for another room's answer or a
//! timer resumes in the event that brings it; an `onRequest` that waits so
//! answers when it settles). A handler that throws is logged with its stack and
//! costs only that event. One that exhausts the budget, the core's JS heap
//! or the stack panics, so the room fails as a panicking Rust room does:
//! its sockets close with 1011, its requests get 500, the core serves on.

use super::{api, clone, engine, Script};
use crate::http::Response;
use crate::party::{ConnectCtx, Connection, Message, Party, Request, Room};
use crate::room::FailRoom;
use rquickjs::convert::List;
use rquickjs::function::Args;
use rquickjs::{ArrayBuffer, CatchResultExt, CaughtError, Context, Ctx, Function, Object, Persistent};
use rquickjs::{Promise, Value};
use std::sync::Arc;

/// The prelude every room context evaluates before its module (its lazy
/// chunks are in `api`), a module of its own.
const PRELUDE: &str = include_str!("prelude/core.js");
const PRELUDE_NAME: &str = "dormouse:prelude";

/// The prelude's bytecode, compiled once per process: a context loads it
/// instead of parsing the prelude.
fn prelude_bytecode() -> &'static [u8] {
    static BYTECODE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BYTECODE.get_or_init(|| {
        let rt = rquickjs::Runtime::new().expect("QuickJS allocates a runtime");
        let ctx = Context::full(&rt).expect("QuickJS allocates a context");
        ctx.with(|ctx| {
            let module = rquickjs::Module::declare(ctx.clone(), PRELUDE_NAME, PRELUDE).expect("the prelude compiles");
            module
                .write(rquickjs::WriteOptions { strip_source: true, ..Default::default() })
                .expect("the prelude's bytecode is written")
        })
    })
}

pub(crate) struct JsParty {
    /// Always there but while the party drops, which frees it first.
    live: Option<Live>,
    script: Arc<Script>,
    /// The party and room, for the log of a snapshot that fails.
    party: Box<str>,
    room: Box<str>,
    /// A connection has event listeners (`ws.addEventListener`): events
    /// are dispatched to them too.
    listening: std::cell::Cell<bool>,
}

/// A room's context and the references into it.
struct Live {
    // Fields drop in order: the references into the context before it.
    /// The class instance, or the exported object (the object form).
    server: Persistent<Object<'static>>,
    /// The object form passes the room to every handler.
    room_arg: Option<Persistent<Object<'static>>>,
    ctx: Context,
}

impl Drop for JsParty {
    fn drop(&mut self) {
        let live = self.live.take().expect("a party is live until it drops");
        let rt = live.ctx.runtime().clone();
        // Freed before the collection `context_dropped` may run, so that it
        // collects this context too.
        drop(live);
        engine::context_dropped(&rt);
    }
}

/// How a call into JS ended, when it did not return.
enum Failure {
    /// The handler threw: logged, the room carries on.
    Threw(String),
    /// A bound was exceeded: the room fails.
    Fatal(String),
}

/// Whether a caught exception is a bound being hit rather than the code's
/// own error.
pub(super) fn fatal_exception(text: &str) -> bool {
    text.starts_with("InternalError: out of memory") || text.starts_with("RangeError: Maximum call stack size exceeded")
}

/// `Name: message`, then the stack, of what JS threw.
pub(super) fn describe(error: CaughtError<'_>) -> String {
    match error {
        CaughtError::Exception(e) => {
            let name: String = e.get("name").unwrap_or_else(|_| "Error".to_owned());
            let head = format!("{name}: {}", e.message().unwrap_or_default());
            match e.stack() {
                // Its places are the source's (the prelude's `Error.prepareStackTrace`).
                Some(stack) if !stack.trim().is_empty() => format!("{head}\n{}", stack.trim_end()),
                _ => head,
            }
        }
        // QuickJS throws `null` when even its out-of-memory error cannot be
        // allocated.
        CaughtError::Value(value) if value.is_null() => "null was thrown (is the core's JavaScript heap full?)".into(),
        other => other.to_string(),
    }
}

impl JsParty {
    /// Creates the room's context, evaluates the prelude and the module and
    /// makes the server object. A failure panics, which fails the room.
    /// `fields`: a snapshot of the server's fields (from [`Party::snapshot`])
    /// to set on it after its constructor ran.
    pub(crate) fn create(script: Arc<Script>, room: &Room, fields: Option<&[u8]>) -> JsParty {
        let rt = engine::runtime(&script.limits);
        // Dropped rooms' garbage may be what fills the heap: collect, retry.
        let ctx = Context::full(&rt).or_else(|_| {
            rt.run_gc();
            Context::full(&rt)
        });
        let Ok(ctx) = ctx else {
            tracing::error!(party = room.party(), room = room.id(), "the core's JavaScript heap is full");
            std::panic::panic_any(FailRoom("the core's JavaScript heap is full".into()));
        };
        engine::context_made();
        let made = engine::MODULES.set(&script.bundle, || {
            api::ROOM.set(room, || {
                engine::with_budget(script.limits.event_budget, || {
                    ctx.with(|ctx| {
                        Self::instantiate(&ctx, &script, room, fields)
                            .map(|(server, room_arg)| {
                                (Persistent::save(&ctx, server), room_arg.map(|r| Persistent::save(&ctx, r)))
                            })
                            .map_err(describe)
                    })
                })
            })
        });
        if let (Ok((server, room_arg)), false) = made {
            let (party, id) = (room.party().into(), room.id().into());
            let listening = std::cell::Cell::new(api::take_listening());
            return JsParty { live: Some(Live { server, room_arg, ctx }), script, party, room: id, listening };
        }
        drop(ctx);
        engine::context_dropped(&rt);
        match made {
            (Ok(_), false) => unreachable!("a room that started returned above"),
            (Err(error), interrupted) => {
                let error = if interrupted { format!("past its CPU budget: {error}") } else { error };
                tracing::error!(party = room.party(), room = room.id(), "the module did not start: {error}");
                let first = error.lines().next().unwrap_or_default().to_owned();
                std::panic::panic_any(FailRoom(format!("the module did not start: {first}")));
            }
            (Ok(_), true) => {
                std::panic::panic_any(FailRoom("the module ran past its CPU budget while starting".into()))
            }
        }
    }

    fn instantiate<'js>(
        ctx: &Ctx<'js>,
        script: &Script,
        room: &Room,
        fields: Option<&[u8]>,
    ) -> Result<(Object<'js>, Option<Object<'js>>), CaughtError<'js>> {
        let (server, room_arg) = Self::construct(ctx, script, room)?;
        if let Some(fields) = fields {
            let restored = clone::decode(ctx, fields).catch(ctx).and_then(|decoded| {
                let decoded = decoded.into_object().unwrap_or_else(|| Object::new(ctx.clone()).expect("an object"));
                for key in decoded.keys::<String>() {
                    let key = key.catch(ctx)?;
                    let value: Value = decoded.get(key.as_str()).catch(ctx)?;
                    server.set(key, value).catch(ctx)?;
                }
                Ok(())
            });
            if let Err(error) = restored {
                let error = describe(error);
                tracing::error!(party = room.party(), room = room.id(), "the room's fields were not restored: {error}");
            }
        }
        Ok((server, room_arg))
    }

    fn construct<'js>(
        ctx: &Ctx<'js>,
        script: &Script,
        room: &Room,
    ) -> Result<(Object<'js>, Option<Object<'js>>), CaughtError<'js>> {
        let default = evaluate(ctx, script, room.party(), room.id())?;
        let runtime: Object = ctx.globals().get("__dormouse").catch(ctx)?;
        let room_js: Object = runtime.get("room").catch(ctx)?;
        if let Some(class) = default.as_constructor().filter(|_| default.is_constructor()) {
            let server: Object = class.construct((room_js,)).catch(ctx)?;
            return Ok((server, None));
        }
        match default.into_object() {
            Some(object) if !object.is_function() => Ok((object, Some(room_js))),
            _ => Err(CaughtError::Error(rquickjs::Error::new_from_js_message(
                "module",
                "server",
                "the default export is neither a class nor an object of handlers",
            ))),
        }
    }

    /// Calls handler `name` with the arguments `args` builds (and, in the
    /// object form, the room at `room_at`), drives the promises it starts, and
    /// converts what it returned (awaited, if a promise) with `convert`.
    /// `Ok(None)` when the server has no such handler.
    fn call<R>(
        &self,
        room: &Room,
        name: &str,
        room_at: usize,
        args: impl for<'js> FnOnce(&Ctx<'js>, &Object<'js>) -> rquickjs::Result<Vec<Value<'js>>>,
        convert: impl for<'js> FnOnce(&Ctx<'js>, &Object<'js>, Value<'js>) -> rquickjs::Result<R>,
    ) -> Result<Option<R>, Failure> {
        let (result, interrupted) = engine::MODULES.set(&self.script.bundle, || {
            api::ROOM.set(room, || {
                engine::with_budget(self.script.limits.event_budget, || {
                    let live = self.live.as_ref().expect("a party is live until it drops");
                    live.ctx.with(|ctx| {
                        let run = || -> Result<Option<R>, CaughtError<'_>> {
                            let runtime: Object = ctx.globals().get("__dormouse").catch(&ctx)?;
                            // "__name" is the runtime's own function `name` (timers).
                            let (this, own) = match name.strip_prefix("__") {
                                Some(own) => (runtime.clone(), Some(own)),
                                None => (live.server.clone().restore(&ctx).catch(&ctx)?, None),
                            };
                            let Some(handler) = this.get::<_, Option<Function>>(own.unwrap_or(name)).catch(&ctx)?
                            else {
                                return Ok(None);
                            };
                            let mut values = args(&ctx, &runtime).catch(&ctx)?;
                            if let (Some(room_arg), None) = (&live.room_arg, own) {
                                let room_arg = room_arg.clone().restore(&ctx).catch(&ctx)?.into_value();
                                values.insert(room_at.min(values.len()), room_arg);
                            }
                            let mut call = Args::new(ctx.clone(), values.len());
                            call.this(this).catch(&ctx)?;
                            call.push_args(values).catch(&ctx)?;
                            let returned: Value = handler.call_arg(call).catch(&ctx)?;
                            let returned = match Promise::from_value(returned.clone()) {
                                Ok(promise) => match promise.finish::<Value>() {
                                    // Still waiting: for another room's answer (it
                                    // resumes in the event that brings it), or for
                                    // nothing that will come.
                                    Err(rquickjs::Error::WouldBlock)
                                        if name == "onRequest"
                                            && (room.awaits_events() || room.timer_ms.get().is_some()) =>
                                    {
                                        // The response is sent when the promise settles.
                                        let token = room.defer_response();
                                        let later: Function = runtime.get("answerLater").catch(&ctx)?;
                                        later.call::<_, ()>((promise, token)).catch(&ctx)?;
                                        while ctx.execute_pending_job() {}
                                        return Ok(None);
                                    }
                                    Err(rquickjs::Error::WouldBlock) => {
                                        if !room.awaits_events() && room.timer_ms.get().is_none() {
                                            tracing::warn!(
                                                party = room.party(),
                                                room = room.id(),
                                                "{name} is still waiting at the end of its event, for nothing that can come"
                                            );
                                        }
                                        Value::new_undefined(ctx.clone())
                                    }
                                    other => other.catch(&ctx)?,
                                },
                                Err(_) => returned,
                            };
                            // Promises the handler started without awaiting them.
                            while ctx.execute_pending_job() {}
                            convert(&ctx, &runtime, returned).catch(&ctx).map(Some)
                        };
                        run().map_err(describe)
                    })
                })
            })
        });
        if api::take_listening() {
            self.listening.set(true);
        }
        if api::abandon_transactions(room) {
            tracing::warn!(
                party = room.party(),
                room = room.id(),
                "{name} ended with a storage transaction unfinished; its writes were undone"
            );
        }
        match result {
            _ if interrupted => Err(Failure::Fatal(format!(
                "{name} ran past its CPU budget of {} ms",
                self.script.limits.event_budget.as_millis()
            ))),
            Err(text) if fatal_exception(&text) => Err(Failure::Fatal(format!("{name}: {text}"))),
            Err(text) => Err(Failure::Threw(text)),
            Ok(value) => Ok(value),
        }
    }

    /// A call whose failure is logged (a throw) or fails the room (a bound).
    fn run<R>(
        &self,
        room: &Room,
        name: &str,
        args: impl for<'js> FnOnce(&Ctx<'js>, &Object<'js>) -> rquickjs::Result<Vec<Value<'js>>>,
        convert: impl for<'js> FnOnce(&Ctx<'js>, &Object<'js>, Value<'js>) -> rquickjs::Result<R>,
    ) -> Result<Option<R>, String> {
        // The object form's room: second in onConnect(ws, room, ctx), last elsewhere.
        let room_at = if name == "onConnect" { 1 } else { usize::MAX };
        match self.call(room, name, room_at, args, convert) {
            Ok(value) => Ok(value),
            Err(Failure::Threw(text)) => {
                tracing::error!(party = room.party(), room = room.id(), "{name} threw: {text}");
                Err(text)
            }
            Err(Failure::Fatal(text)) => {
                tracing::error!(party = room.party(), room = room.id(), "the room failed: {text}");
                std::panic::panic_any(FailRoom(text.lines().next().unwrap_or_default().to_owned()));
            }
        }
    }
}

/// Evaluates the prelude and the party's modules in `ctx` (whose
/// `MODULES` must be set) for room `room_id` ("" for the lobby, which
/// serves no room); returns the entry module's default export.
pub(super) fn evaluate<'js>(
    ctx: &Ctx<'js>,
    script: &Script,
    party: &str,
    room_id: &str,
) -> Result<Value<'js>, CaughtError<'js>> {
    api::install(ctx, party, room_id, &script.env).catch(ctx)?;
    // SAFETY: `prelude_bytecode` is what `Module::write` of this same
    // QuickJS build made of the prelude, unchanged since.
    #[allow(unsafe_code)]
    let prelude = unsafe { rquickjs::Module::load(ctx.clone(), prelude_bytecode()) }.catch(ctx)?;
    prelude.eval().catch(ctx)?.1.finish::<()>().catch(ctx)?;
    let module = engine::declare(ctx, &script.bundle, &script.bundle.entry).catch(ctx)?;
    let (module, evaluated) = module.eval().catch(ctx)?;
    evaluated.finish::<()>().catch(ctx)?;
    module.get("default").catch(ctx)
}

impl JsParty {
    /// Hands an event to the connection's listeners (`ws.addEventListener`).
    fn dispatch(
        &self,
        room: &Room,
        kind: &str,
        conn: &Connection<'_>,
        data: impl for<'js> FnOnce(&Ctx<'js>) -> rquickjs::Result<Value<'js>>,
    ) {
        let id_uri = vec![conn.id().to_owned(), conn.uri().to_owned()];
        let kind = kind.to_owned();
        let _ = self.run(
            room,
            "__dispatch",
            |ctx, _| {
                let kind = rquickjs::String::from_str(ctx.clone(), &kind)?.into_value();
                Ok(vec![kind, id_uri.into_js(ctx)?, data(ctx)?])
            },
            ignore,
        );
    }
}

/// The JS `Connection` for `conn`.
fn connection<'js>(runtime: &Object<'js>, conn: &Connection<'_>) -> rquickjs::Result<Value<'js>> {
    let make: Function = runtime.get("connection")?;
    make.call((vec![conn.id().to_owned(), conn.uri().to_owned()],))
}

/// A JS `Request` for an HTTP request or an upgrade's head.
pub(super) fn request<'js>(
    ctx: &Ctx<'js>,
    runtime: &Object<'js>,
    head: &crate::http::RequestHead,
    body: Option<&[u8]>,
) -> rquickjs::Result<Value<'js>> {
    let make: Function = runtime.get("request")?;
    let host = head.header_str("host").unwrap_or("localhost");
    let url = format!("http://{host}{}", head.target);
    let headers: Vec<Vec<String>> =
        head.headers.iter().map(|h| vec![h.name.clone(), String::from_utf8_lossy(&h.value).into_owned()]).collect();
    let body = match body {
        Some(body) if !body.is_empty() => ArrayBuffer::new(ctx.clone(), body.to_vec())?.into_value(),
        _ => Value::new_null(ctx.clone()),
    };
    make.call((head.method.clone(), url, headers, body))
}

fn message_value<'js>(ctx: &Ctx<'js>, message: Message<'_>) -> rquickjs::Result<Value<'js>> {
    match message {
        Message::Text(text) => rquickjs::String::from_str(ctx.clone(), text).map(|s| s.into_value()),
        Message::Binary(bytes) => ArrayBuffer::new(ctx.clone(), bytes.to_vec()).map(|b| b.into_value()),
    }
}

fn ignore<'js>(_: &Ctx<'js>, _: &Object<'js>, _: Value<'js>) -> rquickjs::Result<()> {
    Ok(())
}

impl Party for JsParty {
    fn new(_room: &Room) -> Self {
        unreachable!("a JS room is made by its JsKind, which holds its script")
    }

    /// The server object's own fields (functions left out), for a
    /// hibernating room. A field that cannot be stored is logged and the
    /// snapshot left empty: the room then wakes fresh, as on PartyKit.
    fn snapshot(&self) -> Option<Vec<u8>> {
        let live = self.live.as_ref()?;
        let (encoded, interrupted) = engine::MODULES.set(&self.script.bundle, || {
            engine::with_budget(self.script.limits.event_budget, || {
                live.ctx.with(|ctx| {
                    let server = live.server.clone().restore(&ctx).catch(&ctx).map_err(describe)?;
                    clone::encode_fields(&ctx, &server).catch(&ctx).map_err(describe)
                })
            })
        });
        let (party, room) = (&*self.party, &*self.room);
        match encoded {
            Ok(bytes) if !interrupted => return Some(bytes),
            Ok(_) => {
                tracing::error!(party, room, "the room's fields took past the CPU budget to store; it will wake fresh")
            }
            Err(error) => {
                tracing::error!(party, room, "the room's fields cannot be stored; it will wake fresh: {error}")
            }
        }
        Some(Vec::new())
    }

    fn on_start(&mut self, room: &Room) {
        let _ = self.run(room, "onStart", |_, _| Ok(Vec::new()), ignore);
    }

    fn connection_tags(&mut self, conn: &Connection<'_>, ctx: &ConnectCtx<'_>) -> Vec<String> {
        let head = ctx.request().clone();
        let tags = self.run(
            conn.room,
            "getConnectionTags",
            |ctx, runtime| Ok(vec![connection(runtime, conn)?, connect_ctx(ctx, runtime, &head)?]),
            |ctx, _, value| match value.is_undefined() || value.is_null() {
                true => Ok(Vec::new()),
                false => Vec::<String>::from_js(ctx, value),
            },
        );
        tags.ok().flatten().unwrap_or_default()
    }

    fn on_connect(&mut self, conn: &Connection<'_>, room: &Room, ctx: &mut ConnectCtx<'_>) -> Result<(), String> {
        let head = ctx.request().clone();
        self.run(
            room,
            "onConnect",
            |ctx, runtime| Ok(vec![connection(runtime, conn)?, connect_ctx(ctx, runtime, &head)?]),
            ignore,
        )
        .map(|_| ())
        .map_err(|text| text.lines().next().unwrap_or("onConnect threw").to_owned())
    }

    fn on_message(&mut self, message: Message<'_>, sender: &Connection<'_>, room: &Room) {
        let _ = self.run(
            room,
            "onMessage",
            |ctx, runtime| Ok(vec![message_value(ctx, message)?, connection(runtime, sender)?]),
            ignore,
        );
        if self.listening.get() {
            self.dispatch(room, "message", sender, |ctx| message_value(ctx, message));
        }
    }

    fn on_close(&mut self, conn: &Connection<'_>, code: u16, reason: &str, room: &Room) {
        let _ = self.run(room, "onClose", |_, runtime| Ok(vec![connection(runtime, conn)?]), ignore);
        if self.listening.get() {
            let reason = reason.to_owned();
            self.dispatch(room, "close", conn, |ctx| {
                let pair = rquickjs::Array::new(ctx.clone())?;
                pair.set(0, code)?;
                pair.set(1, reason)?;
                Ok(pair.into_value())
            });
        }
    }

    fn on_error(&mut self, conn: &Connection<'_>, error: &str, room: &Room) {
        let error = error.to_owned();
        let _ = self.run(
            room,
            "onError",
            |ctx, runtime| {
                let error = rquickjs::Exception::from_message(ctx.clone(), &error)?.into_value();
                Ok(vec![connection(runtime, conn)?, error])
            },
            ignore,
        );
        if self.listening.get() {
            self.dispatch(room, "error", conn, |ctx| {
                rquickjs::String::from_str(ctx.clone(), &error).map(|s| s.into_value())
            });
        }
    }

    fn on_request(&mut self, request: &Request, room: &Room) -> Response {
        let outcome = self.run(
            room,
            "onRequest",
            |ctx, runtime| Ok(vec![self::request(ctx, runtime, &request.head, Some(&request.body))?]),
            |ctx, runtime, value| {
                let wire: Function = runtime.get("response")?;
                let List((status, headers, body)): List<(u16, Vec<Vec<String>>, Value)> = wire.call((value,))?;
                let body = api::body_of(&body)?
                    .ok_or_else(|| rquickjs::Exception::throw_type(ctx, "a body is text or bytes"))?;
                Ok(api::response_of(status, headers, body))
            },
        );
        match outcome {
            Ok(Some(response)) => response,
            // No handler (or one that answers later: then this is not sent).
            Ok(None) => Response::text(404, "Not found"),
            Err(text) => Response::text(500, text.lines().next().unwrap_or("onRequest threw").to_owned()),
        }
    }

    /// Another room's answer to `room.context.parties.<p>.get(id).fetch()`.
    fn on_room_response(&mut self, id: u32, response: Response, room: &Room) {
        let _ = self.run(
            room,
            "__roomResponse",
            |ctx, _| {
                let headers: Vec<Vec<String>> =
                    response.headers.iter().map(|(name, value)| vec![name.clone(), value.clone()]).collect();
                let body = ArrayBuffer::new(ctx.clone(), response.body.to_vec())?.into_value();
                Ok(vec![id.into_js(ctx)?, response.status.into_js(ctx)?, headers.into_js(ctx)?, body])
            },
            ignore,
        );
    }

    /// An event of a socket from `room.context.parties.<p>.get(id).socket()`.
    fn on_room_socket(&mut self, socket: u32, event: crate::party::RoomSocketEvent<'_>, room: &Room) {
        use crate::party::RoomSocketEvent;
        let _ = self.run(
            room,
            "__socketEvent",
            |ctx, _| {
                let (kind, data) = match event {
                    RoomSocketEvent::Open => ("open", Value::new_undefined(ctx.clone())),
                    RoomSocketEvent::Message(message) => ("message", message_value(ctx, message)?),
                    RoomSocketEvent::Close { code, reason } => {
                        let pair = rquickjs::Array::new(ctx.clone())?;
                        pair.set(0, code)?;
                        pair.set(1, reason)?;
                        ("close", pair.into_value())
                    }
                };
                Ok(vec![socket.into_js(ctx)?, kind.into_js(ctx)?, data])
            },
            ignore,
        );
    }

    /// The outcome of a `fetch()` to the outside.
    fn on_fetch_response(&mut self, id: u32, outcome: Result<Response, crate::outbound::FetchError>, room: &Room) {
        let _ = self.run(
            room,
            "__fetchOutcome",
            |ctx, _| match &outcome {
                Ok(response) => {
                    let headers: Vec<Vec<String>> =
                        response.headers.iter().map(|(name, value)| vec![name.clone(), value.clone()]).collect();
                    let body = ArrayBuffer::new(ctx.clone(), response.body.to_vec())?.into_value();
                    Ok(vec![id.into_js(ctx)?, response.status.into_js(ctx)?, headers.into_js(ctx)?, body])
                }
                Err(error) => {
                    let undefined = Value::new_undefined(ctx.clone());
                    Ok(vec![
                        id.into_js(ctx)?,
                        0.into_js(ctx)?,
                        undefined.clone(),
                        undefined,
                        error.0.clone().into_js(ctx)?,
                    ])
                }
            },
            ignore,
        );
    }

    /// `setTimeout` and `setInterval` callbacks that are due.
    fn on_timer(&mut self, room: &Room) {
        let _ = self.run(room, "__runTimers", |_, _| Ok(Vec::new()), ignore);
    }

    fn on_alarm(&mut self, room: &Room) -> Result<(), String> {
        self.run(room, "onAlarm", |_, _| Ok(Vec::new()), ignore).map(|_| ())
    }
}

/// The `ctx` of `onConnect` and `getConnectionTags`: `{ request }`.
fn connect_ctx<'js>(
    ctx: &Ctx<'js>,
    runtime: &Object<'js>,
    head: &crate::http::RequestHead,
) -> rquickjs::Result<Value<'js>> {
    let object = Object::new(ctx.clone())?;
    object.set("request", request(ctx, runtime, head, None)?)?;
    Ok(object.into_value())
}

use rquickjs::{FromJs as _, IntoJs as _};
