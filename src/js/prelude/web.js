// Lazily loaded prelude chunk (src/js/prelude/core.js loads it on first
// use of one of its globals): the fetch API classes and URL. Evaluated in a
// room's context as a function of the hidden natives and the core's shared
// helpers; returns what it defines.
(function (native, shared) {
  "use strict";
  const { bytesOf } = shared;
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
  // A body as a stream: the whole body (dormouse has it complete before the
  // handler runs) as one chunk. Enough for code that reads `req.body` with a
  // reader or `for await`.
  class ReadableStream {
    #chunks;
    locked = false;
    constructor(source) {
      this.#chunks = [];
      source?.start?.({ enqueue: (chunk) => this.#chunks.push(chunk), close() {}, error() {} });
    }
    getReader() {
      if (this.locked) throw new TypeError("the stream is locked to a reader");
      this.locked = true;
      const chunks = this.#chunks;
      return {
        read: async () => (chunks.length ? { value: chunks.shift(), done: false } : { value: undefined, done: true }),
        releaseLock: () => { this.locked = false; },
        cancel: async () => { chunks.length = 0; },
        closed: Promise.resolve(),
      };
    }
    async *[Symbol.asyncIterator]() {
      const reader = this.getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        yield value;
      }
    }
  }
  const streamOf = (body) => {
    if (body == null) return null;
    const bytes = typeof body === "string" ? new Uint8Array(native.encode(body))
      : body instanceof ArrayBuffer ? new Uint8Array(body) : body;
    return new ReadableStream({ start: (controller) => controller.enqueue(bytes) });
  };

  const readable = (Base) => class extends Base {
    #stream;
    get body() { return (this.#stream ??= streamOf(this._body)); }
    get bodyUsed() { return false; }
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
      this.signal = init.signal ?? null;
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

  return {
    Headers, Request, Response, URL, URLSearchParams, ReadableStream,
    // The runtime's conversions, for src/js/party.rs and src/js/lobby.rs.
    request: (method, url, headers, body) => new Request(url, { method, headers, body }),
    // [status, [[name, value]...], body] for the server to send.
    response(value) {
      if (!(value instanceof Response)) throw new TypeError("onRequest must return a Response");
      const body = value._body instanceof ArrayBuffer ? new Uint8Array(value._body) : value._body;
      return [value.status, [...value.headers.entries()], body ?? ""];
    },
    // What a static hook returned: a Response, a Request, or nothing.
    hookResult(value) {
      if (value instanceof Response) {
        const body = value._body instanceof ArrayBuffer ? new Uint8Array(value._body) : value._body;
        return ["response", value.status, [...value.headers.entries()], body ?? ""];
      }
      if (value instanceof Request) return ["request", 0, [...value.headers.entries()], value._body ?? null];
      return ["none", 0, [], null];
    },
  };
})
