//! JavaScript parties: a PartyKit server module run on QuickJS-NG
//! (`rquickjs`), one runtime per core thread and one context per room.
//!
//! A JS party is one more [`PartyKind`]: the reactor, fan-out, hibernation
//! and storage code does not know JS exists. `engine` holds the per-core
//! runtime and its bounds, `party` a room's context and the calls into it,
//! `api` the native functions the prelude (`prelude/`) builds PartyKit's
//! `room`, `room.storage` and `Connection` on, `clone` the encoding of
//! stored values (and of a hibernating room's fields), `bundle` the
//! start-up build of a party's modules (TypeScript, imports, CommonJS),
//! `lobby` the static hooks, which run outside any room.

mod api;
mod bundle;
mod clone;
mod engine;
mod lobby;
mod party;

pub(crate) use engine::JsLimits;

use crate::http::{RequestHead, Response};
use crate::kind::PartyKind;
use crate::party::{Lobby, Party, Rejection, Request, Room};
use std::path::Path;
use std::sync::Arc;

/// A party's modules, compiled and checked at start-up.
#[derive(Debug)]
pub(crate) struct Script {
    bundle: bundle::Bundle,
    /// `room.env`: the party's `vars`.
    env: Vec<(String, String)>,
    limits: JsLimits,
    /// The server's `options.hibernate`, if it sets one.
    hibernate: Option<bool>,
}

/// A module that cannot run: where and why, as `file:line:col: message`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ScriptError(pub(crate) String);

impl Script {
    /// Compiles `path` (JavaScript or TypeScript) and every module it
    /// imports, and checks each compiles on QuickJS too, so an error stops
    /// start-up instead of failing every room.
    pub(crate) fn load(path: &Path, env: Vec<(String, String)>, limits: JsLimits) -> Result<Script, ScriptError> {
        let mut bundle = bundle::build(path)?;
        let bytecode = check_syntax(&bundle, &limits)?;
        bundle.set_bytecode(bytecode);
        let mut script = Script { bundle, env, limits, hibernate: None };
        script.hibernate = script.first_run()?;
        Ok(script)
    }

    /// Runs the module once (a throw at its top level, or a default export
    /// that is not a server, stops start-up) and reads the server's
    /// `options.hibernate`.
    fn first_run(&self) -> Result<Option<bool>, ScriptError> {
        let name = self.bundle.entry.as_str();
        let fail = |e: String| ScriptError(format!("{name}: {e}"));
        let rt = engine::checking_runtime(&self.limits).map_err(|e| fail(e.to_string()))?;
        let ctx = rquickjs::Context::full(&rt).map_err(|e| fail(e.to_string()))?;
        let (result, interrupted) = engine::MODULES.set(&self.bundle, || {
            engine::with_budget(self.limits.event_budget, || {
                ctx.with(|ctx| {
                    use rquickjs::CatchResultExt;
                    let run = || {
                        let default = party::evaluate(&ctx, self, "", "")?;
                        if !default.is_object() {
                            return Ok(Err("the default export is neither a class nor an object of handlers"));
                        }
                        let runtime: rquickjs::Object = ctx.globals().get("__dormouse").catch(&ctx)?;
                        let probe: rquickjs::Function = runtime.get("hibernateOption").catch(&ctx)?;
                        probe.call::<_, Option<bool>>((default,)).catch(&ctx).map(Ok)
                    };
                    run().map_err(party::describe)
                })
            })
        });
        match result {
            _ if interrupted => Err(fail("the module ran past its CPU budget when first run".to_owned())),
            Ok(Ok(hibernate)) => Ok(hibernate),
            Ok(Err(reason)) => Err(fail(reason.to_owned())),
            Err(error) => {
                Err(fail(format!("the module threw when first run: {}", error.lines().next().unwrap_or_default())))
            }
        }
    }
}

/// Compiles the entry module (and with it every module it imports) in a
/// runtime of its own and reports the first syntax error at its place;
/// returns every module's bytecode.
fn check_syntax(
    bundle: &bundle::Bundle,
    limits: &JsLimits,
) -> Result<std::collections::HashMap<String, Vec<u8>>, ScriptError> {
    let name = bundle.entry.as_str();
    let rt = engine::checking_runtime(limits).map_err(|e| ScriptError(format!("{name}: {e}")))?;
    let ctx = rquickjs::Context::full(&rt).map_err(|e| ScriptError(format!("{name}: {e}")))?;
    let (checked, bytecode) =
        engine::compile(|| engine::MODULES.set(bundle, || ctx.with(|ctx| check_entry(&ctx, bundle, name))));
    checked.map(|()| bytecode)
}

fn check_entry(ctx: &rquickjs::Ctx<'_>, bundle: &bundle::Bundle, name: &str) -> Result<(), ScriptError> {
    use rquickjs::CatchResultExt;
    match engine::declare(ctx, bundle, name).catch(ctx) {
        Ok(_) => Ok(()),
        Err(rquickjs::CaughtError::Exception(e)) => {
            let place = e
                .stack()
                .and_then(|stack| stack.lines().find_map(|l| l.trim().strip_prefix("at ").map(str::to_owned)))
                .map(|place| place.trim_start_matches("<anonymous> (").trim_end_matches(')').to_owned())
                .unwrap_or_else(|| name.to_owned());
            let what = party::describe(rquickjs::CaughtError::Exception(e));
            Err(ScriptError(format!("{place}: {}", what.lines().next().unwrap_or_default())))
        }
        Err(other) => Err(ScriptError(format!("{name}: {other}"))),
    }
}

/// The party kind of a JS module.
pub(crate) struct JsKind {
    script: Arc<Script>,
}

impl JsKind {
    pub(crate) fn new(script: Script) -> JsKind {
        JsKind { script: Arc::new(script) }
    }
}

impl PartyKind for JsKind {
    /// The server's own `options.hibernate`, unless the config gives one.
    fn configure(&self, options: &mut crate::config::PartyConfig) {
        if options.hibernate_option.is_none() && !options.hibernate {
            options.hibernate = self.script.hibernate.unwrap_or(false);
        }
    }

    fn create(&self, room: &Room) -> Box<dyn Party> {
        Box::new(party::JsParty::create(self.script.clone(), room, None))
    }

    /// The constructor runs, then the snapshot's fields are set on the
    /// server, then `onStart` (PartyKit runs it on every wake). An empty
    /// snapshot (its fields could not be stored) wakes the room fresh.
    fn restore(&self, room: &Room, snapshot: &[u8]) -> Result<Box<dyn Party>, String> {
        let fields = (!snapshot.is_empty()).then_some(snapshot);
        let mut party = party::JsParty::create(self.script.clone(), room, fields);
        party.on_start(room);
        Ok(Box::new(party))
    }

    fn before_connect(&self, request: &mut RequestHead, lobby: &Lobby<'_>) -> Result<(), Rejection> {
        let outcome = lobby::call(&self.script, lobby.party, lobby::Hook::BeforeConnect, lobby.room, request, None);
        settle(outcome, request, None)
    }

    fn before_request(&self, request: &mut Request, lobby: &Lobby<'_>) -> Result<(), Rejection> {
        let outcome = lobby::call(
            &self.script,
            lobby.party,
            lobby::Hook::BeforeRequest,
            lobby.room,
            &request.head,
            Some(&request.body),
        );
        settle(outcome, &mut request.head, Some(&mut request.body))
    }
}

impl JsKind {
    /// The party's `onFetch`, for a request to a path that is not a room;
    /// `None` when the module has none.
    pub(crate) fn fetch(&self, party: &str, request: &Request) -> Option<Response> {
        let outcome = lobby::call(&self.script, party, lobby::Hook::Fetch, "", &request.head, Some(&request.body))?;
        Some(match outcome {
            lobby::Outcome::Respond(response) => response,
            lobby::Outcome::Threw(text) | lobby::Outcome::Failed(text) => Response::text(500, text),
            lobby::Outcome::Continue | lobby::Outcome::Replace { .. } => {
                Response::text(500, "onFetch must return a Response")
            }
        })
    }
}

/// Applies what a pre-connect or pre-request hook decided: a `Request`
/// sets its headers (and body) on the request; a `Response` answers; a
/// throw answers 401 with the message.
fn settle(
    outcome: Option<lobby::Outcome>,
    head: &mut RequestHead,
    body: Option<&mut bytes::Bytes>,
) -> Result<(), Rejection> {
    match outcome {
        None | Some(lobby::Outcome::Continue) => Ok(()),
        Some(lobby::Outcome::Replace { headers, body: new_body }) => {
            for (name, value) in headers {
                head.headers.retain(|h| !h.name.eq_ignore_ascii_case(&name));
                head.headers.push(crate::http::Header { name, value: value.into_bytes() });
            }
            if let (Some(body), Some(new_body)) = (body, new_body) {
                *body = new_body.into();
            }
            Ok(())
        }
        Some(lobby::Outcome::Respond(response)) => Err(Rejection::Response(response)),
        Some(lobby::Outcome::Threw(text)) => Err(Rejection::Unauthorized(text)),
        Some(lobby::Outcome::Failed(text)) => Err(Rejection::Response(Response::text(500, text))),
    }
}
