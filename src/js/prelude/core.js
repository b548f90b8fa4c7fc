// What every JavaScript room sees before its module runs: the handles of
// the PartyKit API (room, Connection), console and timers, written over the
// native functions in `__native` (src/js/api.rs). Evaluated once per room
// context, so it stays small: every object made here is paid by every
// resident room. The rest (fetch classes, URL, encodings, crypto, storage)
// is in chunks (web.js, platform.js, storage.js) evaluated in a context the
// first time one of their globals is touched, so a room that never uses
// them never holds them.
"use strict";
(() => {
  const native = globalThis.__native;
  delete globalThis.__native;
  // The classes src/js/clone.rs recognises, as they were before the module ran.
  const { Date, Map, Set, BigInt, String, Int8Array, Uint8Array, Uint8ClampedArray, Int16Array, Uint16Array,
    Int32Array, Uint32Array, Float32Array, Float64Array, BigInt64Array, BigUint64Array, DataView } = globalThis;

  const bytesOf = (message) => {
    if (typeof message === "string" || message instanceof ArrayBuffer) return message;
    if (ArrayBuffer.isView(message)) {
      return new Uint8Array(message.buffer, message.byteOffset, message.byteLength);
    }
    throw new TypeError("a message is a string, an ArrayBuffer or a typed array");
  };
  // Stacks name the user's own TypeScript lines: each frame's place goes
  // through the module's source map (kept by the server for the project's
  // own modules).
  Error.prepareStackTrace = (error, sites) => {
    const frames = sites.map((site) => {
      const name = site.getFunctionName() ?? "<anonymous>";
      const file = site.getFileName();
      if (file === undefined || file === null || site.isNative?.()) return `    at ${name} (native)`;
      const line = site.getLineNumber();
      const col = site.getColumnNumber();
      const [l, c] = native.original(String(file), line, col) ?? [line, col];
      return `    at ${name} (${file}:${l}:${c})`;
    });
    return frames.join("\n");
  };
  const shared = { bytesOf, fetch: (input, init) => outboundFetch(input, init) };
  const chunks = {};
  const load = (name) => (chunks[name] ??= native.chunk(name)(native, shared));
  // A global that is made on first use, and then is an ordinary property.
  const lazyGlobal = (name, chunk) => {
    const settle = (value) => {
      Object.defineProperty(globalThis, name, { value, writable: true, configurable: true });
      return value;
    };
    Object.defineProperty(globalThis, name, {
      configurable: true,
      get: () => settle(load(chunk)[name]),
      set: settle,
    });
  };
  for (const name of ["Headers", "Request", "Response", "URL", "URLSearchParams", "ReadableStream"]) {
    lazyGlobal(name, "web");
  }
  for (const name of ["TextEncoder", "TextDecoder", "crypto", "AbortController", "AbortSignal", "fetch",
    "atob", "btoa", "structuredClone"]) lazyGlobal(name, "platform");

  class Connection {
    #id;
    #uri;
    constructor(id, uri) {
      this.#id = id;
      this.#uri = uri;
    }
    get id() { return this.#id; }
    get uri() { return this.#uri; }
    get tags() { return native.tags(this.#id); }
    get state() {
      const json = native.getState(this.#id);
      return json === undefined ? null : JSON.parse(json);
    }
    setState(value) {
      if (typeof value === "function") value = value(this.state);
      native.setState(this.#id, JSON.stringify(value ?? null));
      return value;
    }
    send(message) { native.send(this.#id, bytesOf(message)); }
    close(code, reason) { native.close(this.#id, code ?? 1000, reason ?? ""); }
    // The object form's ws.addEventListener("message" | "close" | "error", f).
    addEventListener(type, f) {
      if (!(type in { message: 1, close: 1, error: 1 }) || typeof f !== "function") return;
      let own = listeners.get(this.#id);
      if (own === undefined) {
        own = { message: [], close: [], error: [] };
        listeners.set(this.#id, own);
        native.listening();
      }
      own[type].push(f);
    }
    removeEventListener(type, f) {
      const own = listeners.get(this.#id);
      if (own?.[type]) own[type] = own[type].filter((g) => g !== f);
    }
  }
  // Event listeners by connection id, and their dispatch (src/js/party.rs
  // calls it, once a listener was added, after the handler of each event).
  const listeners = new Map();
  const dispatch = (type, [id, uri], data) => {
    const own = listeners.get(id);
    if (own === undefined) return;
    const target = new Connection(id, uri);
    const event = type === "message" ? { type, data, target }
      : type === "close" ? { type, code: data[0], reason: data[1], wasClean: data[0] !== 1006, target }
      : { type, message: data, error: new Error(data), target };
    try {
      for (const f of [...own[type]]) f.call(target, event);
    } finally {
      if (type === "close") listeners.delete(id);
    }
  };
  const connection = ([id, uri]) => new Connection(id, uri);

  const room = {
    id: native.roomId,
    internalID: `${native.party}/${native.roomId}`,
    name: native.party,
    env: native.env,
    get storage() {
      const { storage } = load("storage");
      Object.defineProperty(room, "storage", { value: storage, enumerable: true });
      return storage;
    },
    broadcast(message, without = []) { native.broadcast(bytesOf(message), [...without]); },
    getConnection(id) {
      const uri = native.connectionUri(String(id));
      return uri === undefined ? undefined : new Connection(String(id), uri);
    },
    getConnections(tag) { return native.connections(tag == null ? undefined : String(tag)).map(connection); },
    get connections() { return new Map(native.connections(undefined).map((c) => [c[0], connection(c)])); },
    // room.context.parties.<party>.get(id).fetch(...): an HTTP request to
    // another room's onRequest, in process; it resolves in a later event
    // of this room, when the answer comes (a party that does not exist
    // answers 404).
    get context() {
      const stub = (party, id) => ({
        id,
        fetch(input = "/", init) {
          const { Request, URL } = load("web");
          const request = input instanceof Request ? input : new Request(new URL(String(input), "http://room/").href, init);
          const url = new URL(request.url, "http://room/");
          const path = (url.pathname === "/" ? "" : url.pathname) + url.search;
          const body = request._body == null ? null : typeof request._body === "string" ? native.encode(request._body) : request._body;
          const ticket = native.roomFetch(party, id, request.method, path, [...request.headers.entries()], body);
          return new Promise((resolve, reject) => roomRequests.set(ticket, { resolve, reject }));
        },
        // A WebSocket to that room, in process, a member there (its
        // onConnect decides); resolves once it is open.
        socket(pathOrInit, init) {
          const ws = openRoomSocket(party, id, pathOrInit, init);
          return new Promise((resolve, reject) => { ws._settle = { resolve, reject }; });
        },
        // PartyKit's older form: the socket at once, still connecting.
        connect() { return openRoomSocket(party, id); },
      });
      const parties = new Proxy({}, {
        get: (_, party) => (typeof party === "string" ? { get: (id) => stub(party, String(id)) } : undefined),
      });
      const context = { parties };
      Object.defineProperty(room, "context", { value: context, enumerable: true });
      return context;
    },
  };
  // Sockets to other rooms, by ticket: what socket() resolves with, a
  // WebSocket as a room sees it. Its events come in events of their own
  // (src/reactor/links.rs), through socketEvent.
  const roomSockets = new Map();
  class RoomSocket {
    static CONNECTING = 0;
    static OPEN = 1;
    static CLOSING = 2;
    static CLOSED = 3;
    #ticket;
    #listeners = { open: [], message: [], close: [], error: [] };
    constructor(ticket, url) {
      this.#ticket = ticket;
      this.url = url;
      this.readyState = 0;
      this.binaryType = "arraybuffer";
      this.protocol = "";
      this.extensions = "";
      this.onopen = this.onmessage = this.onclose = this.onerror = null;
    }
    get CONNECTING() { return 0; }
    get OPEN() { return 1; }
    get CLOSING() { return 2; }
    get CLOSED() { return 3; }
    // A Workers WebSocket from a fetch needs accept(); this one is accepted.
    accept() {}
    send(message) {
      if (this.readyState !== 1) throw new Error(`InvalidStateError: the socket is ${this.readyState === 0 ? "still connecting" : "closed"}`);
      native.roomSocketSend(this.#ticket, bytesOf(message));
    }
    close(code = 1000, reason = "") {
      if (this.readyState >= 2) return;
      this.readyState = 2;
      native.roomSocketClose(this.#ticket, Number(code), String(reason));
    }
    addEventListener(type, f) { if (typeof f === "function") this.#listeners[type]?.push(f); }
    removeEventListener(type, f) {
      const own = this.#listeners[type];
      if (own) this.#listeners[type] = own.filter((g) => g !== f);
    }
    _emit(type, event) {
      const handlers = [...this.#listeners[type]];
      if (typeof this[`on${type}`] === "function") handlers.unshift(this[`on${type}`]);
      for (const f of handlers) {
        try { f.call(this, event); } catch (error) { console.error(`a room socket's ${type} listener threw:`, error); }
      }
    }
  }
  const openRoomSocket = (party, id, pathOrInit, init) => {
    let path = "";
    if (typeof pathOrInit === "string") path = pathOrInit; else init = pathOrInit ?? init;
    if (path !== "" && !path.startsWith("/") && !path.startsWith("?")) path = `/${path}`;
    const headers = [];
    if (init?.headers !== undefined) {
      const { Headers } = load("web");
      for (const pair of new Headers(init.headers).entries()) headers.push(pair);
    }
    const ticket = native.roomSocket(party, id, path, headers);
    const ws = new RoomSocket(ticket, `/parties/${party}/${encodeURIComponent(id)}${path}`);
    roomSockets.set(ticket, ws);
    return ws;
  };
  const socketEvent = (ticket, type, data) => {
    const ws = roomSockets.get(ticket);
    if (ws === undefined) return;
    if (type === "open") {
      ws.readyState = 1;
      ws._settle?.resolve(ws);
      ws._emit("open", { type, target: ws });
    } else if (type === "message") {
      ws._emit("message", { type, data, target: ws });
    } else {
      roomSockets.delete(ticket);
      const [code, reason] = data;
      const opened = ws.readyState !== 0;
      ws.readyState = 3;
      if (!opened) {
        ws._settle?.reject(new Error(`the room socket was refused: ${reason || code}`));
        ws._emit("error", { type: "error", message: reason, target: ws });
      }
      ws._emit("close", { type, code, reason, wasClean: code !== 1006 && code !== 1011, target: ws });
    }
  };
  // Requests to other rooms waiting for their answer, by ticket.
  const roomRequests = new Map();
  const roomResponse = (ticket, status, headers, body) => {
    const waiting = roomRequests.get(ticket);
    if (waiting === undefined) return;
    roomRequests.delete(ticket);
    const { Response } = load("web");
    waiting.resolve(new Response(status === 204 || status === 304 ? null : body, { status, headers }));
  };
  // fetch(): requests to the outside waiting for their outcome, by ticket.
  // Each settles in a later event of this room (src/outbound), or at once
  // when its signal aborts (the request itself runs on, unheard).
  const fetches = new Map();
  const outboundFetch = (input, init = {}) => {
    const { Request } = load("web");
    const request = input instanceof Request ? new Request(input.url, { method: input.method, headers: input.headers,
      body: input._body, signal: input.signal, ...init }) : new Request(String(input), init);
    const signal = request.signal;
    if (signal?.aborted) return Promise.reject(signal.reason);
    let ticket;
    try {
      ticket = native.fetch(request.method, request.url, [...request.headers.entries()], request._body);
    } catch (error) {
      return Promise.reject(error);
    }
    return new Promise((resolve, reject) => {
      fetches.set(ticket, { resolve, reject, url: request.url });
      signal?.addEventListener("abort", () => { if (fetches.delete(ticket)) reject(signal.reason); });
    });
  };
  const fetchOutcome = (ticket, status, headers, body, error) => {
    const waiting = fetches.get(ticket);
    if (waiting === undefined) return;
    fetches.delete(ticket);
    if (error !== undefined) return waiting.reject(new TypeError(`fetch failed: ${error}`));
    const { Response } = load("web");
    const response = new Response(status === 204 || status === 304 ? null : body, { status, headers });
    Object.defineProperty(response, "url", { value: waiting.url, enumerable: true });
    waiting.resolve(response);
  };
  // onRequest still waiting at the end of its event: its answer goes out
  // when it settles.
  const answerLater = (promise, token) => {
    promise.then((value) => {
      const [status, headers, body] = load("web").response(value);
      native.respondLater(token, status, headers, body);
    }).catch((error) => native.respondLater(token, 500, [], String(error?.message ?? error)));
  };

  const format = (args) => args.map((a) => {
    if (typeof a === "string") return a;
    if (a instanceof Error) return a.stack ? `${a}\n${a.stack}` : String(a);
    try { return JSON.stringify(a) ?? String(a); } catch { return String(a); }
  }).join(" ");
  const console = {};
  for (const level of ["log", "info", "debug", "warn", "error"]) {
    console[level] = (...args) => native.log(level, format(args));
  }

  // Timers: room-local, on the room's one timer (src/js/api.rs), which is
  // set to the earliest; cancelled when the room is evicted or dropped.
  const timers = new Map();
  let nextTimer = 1;
  const armTimer = () => {
    let at = Infinity;
    for (const t of timers.values()) if (t.at < at) at = t.at;
    if (at === Infinity) native.cancelTimer(); else native.setTimer(at);
  };
  const schedule = (f, ms, args, repeat) => {
    if (typeof f !== "function") throw new TypeError("a timer's callback is a function");
    const delay = Math.max(0, Number(ms) || 0);
    const id = nextTimer++;
    timers.set(id, { f, args, at: Date.now() + delay, every: repeat ? Math.max(1, delay) : 0 });
    armTimer();
    return id;
  };
  const clearTimer = (id) => { if (timers.delete(id)) armTimer(); };
  const runTimers = () => {
    const now = Date.now();
    const due = [...timers].filter(([, t]) => t.at <= now).sort((a, b) => a[1].at - b[1].at || a[0] - b[0]);
    try {
      for (const [id, t] of due) {
        if (!timers.has(id)) continue; // cleared by an earlier callback
        if (t.every) t.at = now + t.every; else timers.delete(id);
        t.f(...t.args);
      }
    } finally {
      armTimer();
    }
  };

  Object.assign(globalThis, {
    console,
    queueMicrotask: (f) => { Promise.resolve().then(f); },
    setTimeout: (f, ms, ...args) => schedule(f, ms, args, false),
    setInterval: (f, ms, ...args) => schedule(f, ms, args, true),
    clearTimeout: clearTimer,
    clearInterval: clearTimer,
  });
  let classes;
  // The runtime's own view, for src/js/party.rs, lobby.rs and clone.rs.
  globalThis.__dormouse = {
    room,
    runTimers,
    roomResponse,
    socketEvent,
    fetchOutcome,
    answerLater,
    dispatch,
    connection,
    get classes() {
      return classes ??= {
        Date, Map, Set, BigInt, String, entries: (iterable) => [...iterable],
        Int8Array, Uint8Array, Uint8ClampedArray, Int16Array, Uint16Array, Int32Array, Uint32Array,
        Float32Array, Float64Array, BigInt64Array, BigUint64Array, DataView,
        Connection, room, connectionOf: (id) => room.getConnection(id) ?? null,
      };
    },
    get request() { return load("web").request; },
    get response() { return load("web").response; },
    get hookResult() { return load("web").hookResult; },
    // The server's `options.hibernate` (static, or on an instance made
    // with a room whose natives are out of reach), read at start-up.
    hibernateOption(server) {
      let options = server?.options;
      if (options === undefined && typeof server === "function") {
        try { options = new server(room).options; } catch { options = undefined; }
      }
      const hibernate = options?.hibernate;
      return typeof hibernate === "boolean" ? hibernate : undefined;
    },
    // The static hooks' arguments (src/js/lobby.rs).
    lobby: (id) => ({ id, env: native.env, parties: {} }),
    executionContext: { waitUntil() {}, passThroughOnException() {} },
  };
})();
