//! The QuickJS-NG runtime of one core thread, and the bounds every JS call
//! runs under.
//!
//! Rooms never leave their owner core, so each core thread has one runtime
//! (made on its first JS room) and nothing JS crosses threads. The runtime
//! holds the core's heap limit (all its JS rooms together) and the stack
//! limit; each call into a room gets the per-event CPU budget through the
//! interrupt handler. This handler is the one place below the reactor that
//! reads the clock: a handler stuck in a loop cannot be stopped otherwise.

use rquickjs::Runtime;
use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

/// The bounds of JS code, from `[limits]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct JsLimits {
    pub heap_bytes_per_core: usize,
    pub event_budget: Duration,
    pub stack_bytes: usize,
}

thread_local! {
    static RUNTIME: RefCell<Option<Runtime>> = const { RefCell::new(None) };
    /// When the running call's budget ends; none between calls.
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
    /// The interrupt handler stopped the running call.
    static INTERRUPTED: Cell<bool> = const { Cell::new(false) };
}

/// This thread's runtime, made with `limits` on first use.
pub(crate) fn runtime(limits: &JsLimits) -> Runtime {
    RUNTIME.with_borrow_mut(|runtime| {
        runtime
            .get_or_insert_with(|| {
                let rt = Runtime::new().expect("QuickJS allocates its runtime");
                rt.set_memory_limit(limits.heap_bytes_per_core);
                rt.set_max_stack_size(limits.stack_bytes);
                rt.set_interrupt_handler(Some(Box::new(|| {
                    let over = DEADLINE.get().is_some_and(|deadline| Instant::now() >= deadline);
                    if over {
                        INTERRUPTED.set(true);
                    }
                    over
                })));
                rt
            })
            .clone()
    })
}

/// Runs `call` with `budget` of CPU time; returns its result and whether the
/// budget ran out (the call was then stopped by an uncatchable error).
pub(crate) fn with_budget<R>(budget: Duration, call: impl FnOnce() -> R) -> (R, bool) {
    let outer = DEADLINE.replace(Some(Instant::now() + budget));
    INTERRUPTED.set(false);
    let result = call();
    DEADLINE.set(outer);
    (result, INTERRUPTED.replace(false))
}
