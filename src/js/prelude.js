// What every JavaScript room sees before its module runs: the handles of
// the PartyKit API (room, connection) and the few web platform classes its
// handlers use (Headers, Request, Response, console), written over the
// native functions in `__native` (src/js/api.rs). Evaluated once per room
// context, so it stays small: every byte here is paid per resident room.
"use strict";
(() => {
  const native = globalThis.__native;
  delete globalThis.__native;

  const bytesOf = (message) => {
    if (typeof message === "string" || message instanceof ArrayBuffer) return message;
    if (ArrayBuffer.isView(message)) {
      return new Uint8Array(message.buffer, message.byteOffset, message.byteLength);
    }
    throw new TypeError("a message is a string, an ArrayBuffer or a typed array");
  };

  class Headers {
    #map = new Map();
    constructor(init) {
      if (init == null) return;
      const entries = init instanceof Headers ? init.entries()
        : Array.isArray(init) ? init : Object.entries(init);
      for (const [name, value] of entries) this.append(name, value);
    }
    append(name, value) {
      const key = String(name).toLowerCase();
      const old = this.#map.get(key);
      this.#map.set(key, old === undefined ? String(value) : `${old}, ${value}`);
    }
    set(name, value) { this.#map.set(String(name).toLowerCase(), String(value)); }
    get(name) { return this.#map.get(String(name).toLowerCase()) ?? null; }
    has(name) { return this.#map.has(String(name).toLowerCase()); }
    delete(name) { this.#map.delete(String(name).toLowerCase()); }
    forEach(f, self) { for (const [k, v] of this.#map) f.call(self, v, k, this); }
    entries() { return this.#map.entries(); }
    keys() { return this.#map.keys(); }
    values() { return this.#map.values(); }
    [Symbol.iterator]() { return this.#map.entries(); }
  }

  // A body: null, a string or bytes (ArrayBuffer or Uint8Array).
  const readable = (Base) => class extends Base {
    async text() { return this._body == null ? "" : typeof this._body === "string" ? this._body : native.utf8(this._body); }
    async json() { return JSON.parse(await this.text()); }
    async arrayBuffer() {
      if (this._body == null) return new ArrayBuffer(0);
      if (typeof this._body === "string") return native.encode(this._body);
      const b = this._body instanceof ArrayBuffer ? new Uint8Array(this._body) : this._body;
      return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength);
    }
  };

  class Request extends readable(Object) {
    constructor(url, init = {}) {
      super();
      this.url = String(url);
      this.method = (init.method ?? "GET").toUpperCase();
      this.headers = new Headers(init.headers);
      this._body = init.body == null ? null : bytesOf(init.body);
    }
  }

  class Response extends readable(Object) {
    constructor(body = null, init = {}) {
      super();
      this.status = init.status ?? 200;
      this.statusText = init.statusText ?? "";
      this.headers = new Headers(init.headers);
      this._body = body == null ? null : bytesOf(body);
      if (typeof body === "string" && !this.headers.has("content-type")) {
        this.headers.set("content-type", "text/plain;charset=UTF-8");
      }
    }
    get ok() { return this.status >= 200 && this.status < 300; }
    static json(data, init = {}) {
      const headers = new Headers(init.headers);
      if (!headers.has("content-type")) headers.set("content-type", "application/json");
      return new Response(JSON.stringify(data), { ...init, headers });
    }
  }

  // application/x-www-form-urlencoded, as URLSearchParams reads and writes it.
  const decodeForm = (s) => decodeURIComponent(s.replace(/\+/g, " "));
  const encodeForm = (s) => encodeURIComponent(s).replace(/%20/g, "+");
  class URLSearchParams {
    #list = [];
    #url;
    constructor(init = "", url) {
      this.#url = url;
      if (typeof init === "string") {
        for (const pair of init.replace(/^\?/, "").split("&")) {
          if (pair === "") continue;
          const at = pair.indexOf("=");
          this.#list.push(at < 0 ? [decodeForm(pair), ""] : [decodeForm(pair.slice(0, at)), decodeForm(pair.slice(at + 1))]);
        }
      } else {
        const entries = Array.isArray(init) || init instanceof URLSearchParams ? init : Object.entries(init);
        for (const [k, v] of entries) this.#list.push([String(k), String(v)]);
      }
    }
    #changed() { if (this.#url) this.#url.search = this.toString(); }
    get(name) { return this.#list.find(([k]) => k === name)?.[1] ?? null; }
    getAll(name) { return this.#list.filter(([k]) => k === name).map(([, v]) => v); }
    has(name) { return this.#list.some(([k]) => k === name); }
    append(name, value) { this.#list.push([String(name), String(value)]); this.#changed(); }
    set(name, value) {
      const at = this.#list.findIndex(([k]) => k === name);
      this.#list = this.#list.filter(([k], i) => k !== name || i === at);
      if (at < 0) this.#list.push([String(name), String(value)]); else this.#list[at][1] = String(value);
      this.#changed();
    }
    delete(name) { this.#list = this.#list.filter(([k]) => k !== name); this.#changed(); }
    forEach(f, self) { for (const [k, v] of this.#list) f.call(self, v, k, this); }
    entries() { return this.#list.map((e) => [...e])[Symbol.iterator](); }
    keys() { return this.#list.map(([k]) => k)[Symbol.iterator](); }
    values() { return this.#list.map(([, v]) => v)[Symbol.iterator](); }
    [Symbol.iterator]() { return this.entries(); }
    get size() { return this.#list.length; }
    toString() { return this.#list.map(([k, v]) => `${encodeForm(k)}=${encodeForm(v)}`).join("&"); }
  }

  // Absolute URLs with a scheme and an authority (http, https, ws, wss),
  // which is what rooms see; relative ones against such a base.
  const URL_PARTS = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\/([^/?#]*)([^?#]*)(\?[^#]*)?(#.*)?$/;
  class URL {
    #search = "";
    #params;
    constructor(url, base) {
      let text = String(url);
      if (base !== undefined && !URL_PARTS.test(text)) {
        const b = new URL(base);
        text = text.startsWith("/") ? `${b.origin}${text}`
          : `${b.origin}${b.pathname.replace(/[^/]*$/, "")}${text}`;
      }
      const m = URL_PARTS.exec(text);
      if (!m) throw new TypeError(`Invalid URL: ${url}`);
      this.protocol = `${m[1].toLowerCase()}:`;
      const auth = m[2];
      const at = auth.lastIndexOf("@");
      this.host = (at < 0 ? auth : auth.slice(at + 1)).toLowerCase();
      const colon = this.host.lastIndexOf(":");
      this.hostname = colon > this.host.lastIndexOf("]") && colon >= 0 ? this.host.slice(0, colon) : this.host;
      this.port = colon > this.host.lastIndexOf("]") && colon >= 0 ? this.host.slice(colon + 1) : "";
      this.pathname = m[3] || "/";
      this.#search = m[4] && m[4] !== "?" ? m[4] : "";
      this.hash = m[5] && m[5] !== "#" ? m[5] : "";
      this.#params = new URLSearchParams(this.#search, this);
    }
    get search() { return this.#search; }
    set search(value) {
      const s = String(value);
      this.#search = s === "" || s === "?" ? "" : s.startsWith("?") ? s : `?${s}`;
    }
    get searchParams() { return this.#params; }
    get origin() { return `${this.protocol}//${this.host}`; }
    get href() { return `${this.origin}${this.pathname}${this.#search}${this.hash}`; }
    toString() { return this.href; }
    toJSON() { return this.href; }
  }

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

  // room.storage: every call settles at once (reads come from the core's
  // LMDB and the event's own writes), yet returns a promise as PartyKit's do.
  const keyList = (keys) => (Array.isArray(keys) ? keys : [keys]).map(String);
  const storageOf = (rollback) => ({
    async get(keys) {
      if (!Array.isArray(keys)) return native.storageGet([String(keys)])[0];
      const names = keyList(keys);
      const values = native.storageGet(names);
      const found = new Map();
      names.forEach((k, i) => { if (values[i] !== undefined) found.set(k, values[i]); });
      return found;
    },
    async put(keys, value) {
      if (typeof keys === "object" && keys !== null) {
        const entries = Object.entries(keys);
        native.storagePut(entries.map(([k]) => k), entries.map(([, v]) => v));
      } else {
        native.storagePut([String(keys)], [value]);
      }
    },
    async delete(keys) {
      const deleted = native.storageDelete(keyList(keys));
      return Array.isArray(keys) ? deleted : deleted > 0;
    },
    async list(options = {}) { return new Map(native.storageList(options)); },
    async deleteAll() { native.storageDeleteAll(); },
    async getAlarm() { return native.getAlarm() ?? null; },
    async setAlarm(time) { native.setAlarm(time instanceof Date ? time.getTime() : Number(time)); },
    async deleteAlarm() { native.deleteAlarm(); },
    async sync() {},
    ...rollback,
  });
  const storage = storageOf({
    // The callback's writes commit with the event's other writes if it
    // completes; they are undone if it throws or calls txn.rollback().
    async transaction(callback) {
      const depth = native.transactionBegin();
      let rolledBack = false;
      const txn = storageOf({ rollback() { rolledBack = true; } });
      try {
        const result = await callback(txn);
        native.transactionEnd(depth, !rolledBack);
        return result;
      } catch (error) {
        native.transactionEnd(depth, false);
        throw error;
      }
    },
  });

  const room = {
    id: native.roomId,
    internalID: `${native.party}/${native.roomId}`,
    name: native.party,
    env: native.env,
    storage,
    broadcast(message, without = []) { native.broadcast(bytesOf(message), [...without]); },
    getConnection(id) {
      const uri = native.connectionUri(String(id));
      return uri === undefined ? undefined : new Connection(String(id), uri);
    },
    getConnections(tag) { return native.connections(tag == null ? undefined : String(tag)).map(connection); },
    get connections() { return new Map(native.connections(undefined).map((c) => [c[0], connection(c)])); },
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

  class TextEncoder {
    get encoding() { return "utf-8"; }
    encode(text = "") { return new Uint8Array(native.encode(String(text))); }
  }
  class TextDecoder {
    get encoding() { return "utf-8"; }
    decode(bytes) { return bytes == null ? "" : native.utf8(bytesOf(bytes)); }
  }
  const hex = (b) => b.toString(16).padStart(2, "0");
  const crypto = {
    getRandomValues(view) {
      if (!ArrayBuffer.isView(view) || view instanceof Float32Array || view instanceof Float64Array) {
        throw new TypeError("getRandomValues takes an integer typed array");
      }
      new Uint8Array(view.buffer, view.byteOffset, view.byteLength).set(new Uint8Array(native.random(view.byteLength)));
      return view;
    },
    randomUUID() {
      const b = new Uint8Array(native.random(16));
      b[6] = (b[6] & 0x0f) | 0x40;
      b[8] = (b[8] & 0x3f) | 0x80;
      const h = [...b].map(hex).join("");
      return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
    },
  };
  class AbortSignal {
    #listeners = [];
    aborted = false;
    reason = undefined;
    addEventListener(type, f) { if (type === "abort") this.#listeners.push(f); }
    removeEventListener(type, f) { this.#listeners = this.#listeners.filter((g) => g !== f); }
    throwIfAborted() { if (this.aborted) throw this.reason; }
    _abort(reason) {
      if (this.aborted) return;
      this.aborted = true;
      if (reason === undefined) {
        reason = new Error("This operation was aborted");
        reason.name = "AbortError";
      }
      this.reason = reason;
      for (const f of this.#listeners) f.call(this, { type: "abort", target: this });
      this.onabort?.({ type: "abort", target: this });
    }
    static abort(reason) { const c = new AbortController(); c.abort(reason); return c.signal; }
  }
  class AbortController {
    signal = new AbortSignal();
    abort(reason) { this.signal._abort(reason); }
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

  const fetch = async () => {
    throw new TypeError("fetch() is not available in dormouse rooms yet: outbound HTTP is a planned feature");
  };

  Object.assign(globalThis, {
    Headers, Request, Response, URL, URLSearchParams, console, TextEncoder, TextDecoder, crypto,
    AbortController, AbortSignal, fetch,
    atob: (text) => native.atob(String(text)),
    btoa: (text) => native.btoa(String(text)),
    structuredClone: (value) => native.structuredClone(value),
    queueMicrotask: (f) => { Promise.resolve().then(f); },
    setTimeout: (f, ms, ...args) => schedule(f, ms, args, false),
    setInterval: (f, ms, ...args) => schedule(f, ms, args, true),
    clearTimeout: clearTimer,
    clearInterval: clearTimer,
  });
  // The runtime's own view, for src/js/party.rs.
  globalThis.__dormouse = {
    room,
    runTimers,
    dispatch,
    // The classes src/js/clone.rs recognises, as they were before the module ran.
    classes: {
      Date, Map, Set, BigInt, String, entries: (iterable) => [...iterable],
      Int8Array, Uint8Array, Uint8ClampedArray, Int16Array, Uint16Array, Int32Array, Uint32Array,
      Float32Array, Float64Array, BigInt64Array, BigUint64Array, DataView,
      Connection, room, connectionOf: (id) => room.getConnection(id) ?? null,
    },
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
    connection,
    request: (method, url, headers, body) => new Request(url, { method, headers, body }),
    // [status, [[name, value]...], body] for the server to send.
    response(value) {
      if (!(value instanceof Response)) throw new TypeError("onRequest must return a Response");
      const body = value._body instanceof ArrayBuffer ? new Uint8Array(value._body) : value._body;
      return [value.status, [...value.headers.entries()], body ?? ""];
    },
    // The static hooks' arguments (src/js/lobby.rs) and what they returned.
    lobby: (id) => ({ id, env: native.env, parties: {} }),
    executionContext: { waitUntil() {}, passThroughOnException() {} },
    hookResult(value) {
      if (value instanceof Response) return ["response", ...globalThis.__dormouse.response(value)];
      if (value instanceof Request) return ["request", 0, [...value.headers.entries()], value._body ?? null];
      return ["none", 0, [], null];
    },
  };
})();
