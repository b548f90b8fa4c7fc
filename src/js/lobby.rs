//! The static hooks of a JS party, which run on the accepting core before a
//! request reaches its room, without the room's state: `onBeforeConnect`,
//! `onBeforeRequest` (static methods in the class form, methods in the
//! object form) and `onFetch` (for paths that are not rooms, on the party
//! `main`).
//!
//! Each core keeps one context per party for them (its lobby), made on the
//! first hook call: the module evaluated once more, outside any room. Its
//! `room` natives are unreachable (no room is lent), so a hook sees only
//! what PartyKit's `Lobby` has: `id`, `env`, `parties`.

use super::{engine, party, Script};
use crate::http::{RequestHead, Response};
use rquickjs::convert::List;
use rquickjs::function::Args;
use rquickjs::{CatchResultExt, Context, Function, Object, Persistent, Promise, Value};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

/// A static hook.
#[derive(Debug, Clone, Copy)]
pub(super) enum Hook {
    BeforeConnect,
    BeforeRequest,
    Fetch,
}

impl Hook {
    fn name(self) -> &'static str {
        match self {
            Hook::BeforeConnect => "onBeforeConnect",
            Hook::BeforeRequest => "onBeforeRequest",
            Hook::Fetch => "onFetch",
        }
    }
}

/// What a hook decided.
#[derive(Debug)]
pub(super) enum Outcome {
    /// It returned nothing: the request goes on as it came.
    Continue,
    /// It returned a `Request`: these headers are set on the request (and
    /// the body replaced, when it gave one).
    Replace { headers: Vec<(String, String)>, body: Option<Vec<u8>> },
    /// It returned a `Response`: the answer.
    Respond(Response),
    /// It threw this.
    Threw(String),
    /// A bound was hit, or the module did not start: 500 with this reason.
    Failed(String),
}

/// A party's lobby context on this core.
struct Lobby {
    // Fields drop in order: the reference into the context before it.
    /// The default export: the class (its statics) or the handler object.
    server: Persistent<Object<'static>>,
    ctx: Context,
}

thread_local! {
    /// Lobbies by script (its `Arc`'s address: scripts live as long as
    /// the server, and the core threads end with it).
    static LOBBIES: RefCell<HashMap<usize, Lobby>> = RefCell::new(HashMap::new());
}

/// Runs `hook` for a request to room `room_id` (`""` for `onFetch`), with
/// the request's head and body. `None`: the module has no such hook.
pub(super) fn call(
    script: &Arc<Script>,
    party: &str,
    hook: Hook,
    room_id: &str,
    head: &RequestHead,
    body: Option<&[u8]>,
) -> Option<Outcome> {
    let key = Arc::as_ptr(script) as usize;
    let rt = engine::runtime(&script.limits);
    LOBBIES.with_borrow_mut(|lobbies| {
        if let std::collections::hash_map::Entry::Vacant(entry) = lobbies.entry(key) {
            match make(script, party, &rt) {
                Ok(lobby) => entry.insert(lobby),
                Err(reason) => return Some(Outcome::Failed(reason)),
            };
        }
        let lobby = &lobbies[&key];
        let (outcome, interrupted) = engine::MODULES.set(&script.bundle, || {
            engine::with_budget(script.limits.event_budget, || {
                lobby.ctx.with(|ctx| {
                    let run = || -> Result<Option<Outcome>, rquickjs::CaughtError<'_>> {
                        let server = lobby.server.clone().restore(&ctx).catch(&ctx)?;
                        let Some(handler) = server.get::<_, Option<Function>>(hook.name()).catch(&ctx)? else {
                            return Ok(None);
                        };
                        let runtime: Object = ctx.globals().get("__dormouse").catch(&ctx)?;
                        let request = party::request(&ctx, &runtime, head, body).catch(&ctx)?;
                        let make_lobby: Function = runtime.get("lobby").catch(&ctx)?;
                        let lobby_arg: Value = make_lobby.call((room_id,)).catch(&ctx)?;
                        let context: Value = runtime.get("executionContext").catch(&ctx)?;
                        let mut args = Args::new(ctx.clone(), 3);
                        args.this(server).catch(&ctx)?;
                        args.push_args([request, lobby_arg, context]).catch(&ctx)?;
                        let returned: Value = handler.call_arg(args).catch(&ctx)?;
                        let returned = match Promise::from_value(returned.clone()) {
                            Ok(promise) => promise.finish::<Value>().catch(&ctx)?,
                            Err(_) => returned,
                        };
                        while ctx.execute_pending_job() {}
                        let convert: Function = runtime.get("hookResult").catch(&ctx)?;
                        let List((what, status, headers, body)): List<(String, u16, Vec<Vec<String>>, Value)> =
                            convert.call((returned,)).catch(&ctx)?;
                        let body = super::api::body_of(&body).catch(&ctx)?;
                        Ok(Some(match what.as_str() {
                            "response" => {
                                Outcome::Respond(super::api::response_of(status, headers, body.unwrap_or_default()))
                            }
                            "request" => {
                                let headers = headers
                                    .into_iter()
                                    .filter_map(|pair| <[String; 2]>::try_from(pair).ok())
                                    .map(|[name, value]| (name, value))
                                    .collect();
                                Outcome::Replace { headers, body }
                            }
                            _ => Outcome::Continue,
                        }))
                    };
                    run().map_err(party::describe)
                })
            })
        });
        let failed = |reason: String| {
            tracing::error!(party, room = room_id, "{}: {reason}", hook.name());
            Some(Outcome::Failed(format!("{} failed: {}", hook.name(), reason.lines().next().unwrap_or_default())))
        };
        let outcome = match outcome {
            _ if interrupted => {
                failed(format!("ran past its CPU budget of {} ms", script.limits.event_budget.as_millis()))
            }
            Err(text) if party::fatal_exception(&text) => failed(text),
            Err(text) => {
                tracing::warn!(party, room = room_id, "{} threw: {text}", hook.name());
                return Some(Outcome::Threw(text.lines().next().unwrap_or_default().to_owned()));
            }
            Ok(outcome) => return outcome,
        };
        // A bound was hit: the next call starts a fresh lobby.
        lobbies.remove(&key);
        outcome
    })
}

/// A lobby context for `script`: the prelude and module evaluated outside
/// any room.
fn make(script: &Script, party: &str, rt: &rquickjs::Runtime) -> Result<Lobby, String> {
    let ctx = Context::full(rt).map_err(|e| format!("the core's JavaScript heap is full: {e}"))?;
    let made = engine::MODULES.set(&script.bundle, || {
        engine::with_budget(script.limits.event_budget, || {
            ctx.with(|ctx| {
                party::evaluate(&ctx, script, party, "")
                    .and_then(|default| {
                        default.into_object().ok_or_else(|| {
                            rquickjs::CaughtError::Error(rquickjs::Error::new_from_js_message(
                                "module",
                                "server",
                                "the default export is neither a class nor an object of handlers",
                            ))
                        })
                    })
                    .map(|server| Persistent::save(&ctx, server))
                    .map_err(party::describe)
            })
        })
    });
    match made {
        (Ok(server), false) => Ok(Lobby { server, ctx }),
        (Err(error), _) => {
            tracing::error!(party, "the module did not start: {error}");
            Err(format!("the module did not start: {}", error.lines().next().unwrap_or_default()))
        }
        (Ok(_), true) => Err("the module ran past its CPU budget while starting".to_owned()),
    }
}
