//! The QuickJS-NG runtime of one core thread, and the bounds every JS call
//! runs under.
//!
//! Rooms never leave their owner core, so each core thread has one runtime
//! (made on its first JS room) and nothing JS crosses threads. The runtime
//! holds the core's heap limit (all its JS rooms together) and the stack
//! limit; each call into a room gets the per-event CPU budget through the
//! interrupt handler. This handler is the one place below the reactor that
//! reads the clock: a handler stuck in a loop cannot be stopped otherwise.
//! Time the call spends outside its own bytecode (a collection of the
//! core's heap, which grows with the number of resident rooms) is not
//! charged to it.

use super::bundle::Bundle;
use rquickjs::loader::{ImportAttributes, Loader, Resolver};
use rquickjs::{Ctx, Module, Runtime};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The bounds of JS code, from `[limits]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct JsLimits {
    pub heap_bytes_per_core: usize,
    pub event_budget: Duration,
    pub stack_bytes: usize,
}

impl JsLimits {
    /// The `[limits]` of JavaScript rooms.
    pub fn of(limits: &crate::config::Limits) -> JsLimits {
        JsLimits {
            heap_bytes_per_core: limits.js_heap_bytes_per_core,
            event_budget: Duration::from_millis(limits.js_event_budget_ms),
            stack_bytes: limits.js_stack_bytes,
        }
    }
}

thread_local! {
    static RUNTIME: RefCell<Option<Runtime>> = const { RefCell::new(None) };
    /// When the running call's budget ends, and the last interrupt poll;
    /// none between calls.
    static DEADLINE: Cell<Option<(Instant, Instant)>> = const { Cell::new(None) };
    /// The interrupt handler stopped the running call.
    static INTERRUPTED: Cell<bool> = const { Cell::new(false) };
    /// Room contexts alive on this thread, and dropped since the last
    /// collection.
    static CONTEXTS: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

/// Contexts dropped before a collection runs, at the least: a dropped
/// context is freed only by QuickJS's cycle collector (its functions and its
/// global object refer to each other), whose cost grows with the live heap,
/// so it runs once a share of the contexts has been dropped.
const DROPPED_BEFORE_GC: usize = 64;

/// A room context was made.
pub(crate) fn context_made() {
    let (live, dropped) = CONTEXTS.get();
    CONTEXTS.set((live + 1, dropped));
}

/// A room context was dropped; collects the dropped ones once they are a
/// quarter of the live ones (or `DROPPED_BEFORE_GC`), so their memory comes
/// back at an amortised cost, and at once when none is left alive (a
/// collection of an empty heap is cheap, and the last rooms of a crowd
/// that went to sleep are not left holding theirs).
pub(crate) fn context_dropped(rt: &Runtime) {
    let (live, dropped) = CONTEXTS.get();
    let (live, dropped) = (live.saturating_sub(1), dropped + 1);
    if dropped >= DROPPED_BEFORE_GC.max(live / 4) || live == 0 {
        rt.run_gc();
        give_back_freed_memory();
        CONTEXTS.set((live, 0));
    } else {
        CONTEXTS.set((live, dropped));
    }
}

/// This thread's runtime, made with `limits` on first use.
pub(crate) fn runtime(limits: &JsLimits) -> Runtime {
    RUNTIME.with_borrow_mut(|runtime| {
        runtime
            .get_or_insert_with(|| {
                let rt = Runtime::new().expect("QuickJS allocates its runtime");
                rt.set_memory_limit(limits.heap_bytes_per_core);
                rt.set_max_stack_size(limits.stack_bytes);
                rt.set_interrupt_handler(Some(Box::new(interrupt)));
                rt.set_loader(Modules, Modules);
                rt
            })
            .clone()
    })
}

scoped_tls::scoped_thread_local! {
    /// The module graph of the party whose code is running: the one source
    /// of the modules a context imports.
    pub(super) static MODULES: Bundle
}

/// The runtime's module resolver and loader: every import was resolved and
/// compiled at start-up, so both only look in the running party's bundle.
struct Modules;

impl Resolver for Modules {
    fn resolve<'js>(
        &mut self,
        _ctx: &Ctx<'js>,
        base: &str,
        name: &str,
        _attributes: Option<ImportAttributes<'js>>,
    ) -> rquickjs::Result<String> {
        let target = MODULES.is_set().then(|| MODULES.with(|bundle| bundle.link(base, name).map(str::to_owned)));
        target
            .flatten()
            .ok_or_else(|| rquickjs::Error::new_resolving_message(base, name, "not imported by the module at start-up"))
    }
}

impl Loader for Modules {
    fn load<'js>(
        &mut self,
        ctx: &Ctx<'js>,
        name: &str,
        _attributes: Option<ImportAttributes<'js>>,
    ) -> rquickjs::Result<Module<'js>> {
        if !MODULES.is_set() {
            return Err(rquickjs::Error::new_loading(name));
        }
        MODULES.with(|bundle| declare(ctx, bundle, name))
    }
}

thread_local! {
    /// While a party's modules are first compiled (at start-up), the
    /// bytecode of each, by module name.
    static COMPILING: RefCell<Option<HashMap<String, Vec<u8>>>> = const { RefCell::new(None) };
}

/// Declares module `name` of `bundle` in `ctx`: from the bytecode compiled
/// at start-up when there is some (a room's context then skips parsing), else
/// from its JavaScript (and, during the start-up compile, keeps its bytecode).
pub(crate) fn declare<'js>(ctx: &Ctx<'js>, bundle: &Bundle, name: &str) -> rquickjs::Result<Module<'js>> {
    if let Some(bytes) = bundle.bytecode(name) {
        // SAFETY: the bytes are what `Module::write` of this same QuickJS
        // build produced for this module at start-up (`compile`), kept
        // unchanged in the party's bundle since: valid bytecode for it.
        #[allow(unsafe_code)]
        return unsafe { Module::load(ctx.clone(), bytes) };
    }
    let source = bundle.source(name).ok_or_else(|| rquickjs::Error::new_loading(name))?;
    let module = Module::declare(ctx.clone(), name, source)?;
    if COMPILING.with_borrow(Option::is_some) {
        // Without the source text (it is the party's own, on disk): each
        // room's copy of the bytecode is that much smaller. Line numbers stay.
        let bytes = module.write(rquickjs::WriteOptions { strip_source: true, ..Default::default() })?;
        COMPILING.with_borrow_mut(|compiled| compiled.as_mut().map(|c| c.insert(name.to_owned(), bytes)));
    }
    Ok(module)
}

/// Runs `declare_all` (which declares a party's entry module, and with it
/// every module it imports) keeping each module's bytecode; returns them.
pub(crate) fn compile<R>(declare_all: impl FnOnce() -> R) -> (R, HashMap<String, Vec<u8>>) {
    COMPILING.set(Some(HashMap::new()));
    let result = declare_all();
    (result, COMPILING.take().unwrap_or_default())
}

/// A runtime of its own, with the module loader and the bounds, for
/// checking a party's modules at start-up.
pub(crate) fn checking_runtime(limits: &JsLimits) -> rquickjs::Result<Runtime> {
    let rt = Runtime::new()?;
    rt.set_memory_limit(limits.heap_bytes_per_core);
    rt.set_max_stack_size(limits.stack_bytes);
    rt.set_interrupt_handler(Some(Box::new(interrupt)));
    rt.set_loader(Modules, Modules);
    Ok(rt)
}

/// A gap between two interrupt polls longer than this was not the handler's
/// own bytecode (QuickJS polls every few thousand instructions, tens of
/// microseconds apart) but a collection of the whole core's heap, or native
/// work: it does not count against the handler's budget.
const NOT_THE_HANDLERS: Duration = Duration::from_millis(5);

/// QuickJS's interrupt poll: true stops the running call.
fn interrupt() -> bool {
    let Some((deadline, last_poll)) = DEADLINE.get() else { return false };
    let now = Instant::now();
    let gap = now.saturating_duration_since(last_poll);
    let deadline = if gap > NOT_THE_HANDLERS { deadline + gap } else { deadline };
    DEADLINE.set(Some((deadline, now)));
    let over = now >= deadline;
    if over {
        INTERRUPTED.set(true);
    }
    over
}

/// Runs `call` with `budget` of CPU time; returns its result and whether the
/// budget ran out (the call was then stopped by an uncatchable error).
pub(crate) fn with_budget<R>(budget: Duration, call: impl FnOnce() -> R) -> (R, bool) {
    let now = Instant::now();
    let outer = DEADLINE.replace(Some((now + budget, now)));
    INTERRUPTED.set(false);
    let result = call();
    DEADLINE.set(outer);
    (result, INTERRUPTED.replace(false))
}

/// QuickJS allocates with the C library's malloc, which keeps what rooms
/// freed in its arenas: after a collection of dropped rooms, hand the free
/// pages back to the kernel, so a crowd of rooms that came and went does not
/// stay in the server's RSS.
#[allow(unsafe_code)]
fn give_back_freed_memory() {
    // SAFETY: malloc_trim takes a plain integer, touches only the
    // allocator's own free lists, and is safe to call from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}
