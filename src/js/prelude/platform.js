// Lazily loaded prelude chunk: the encoding, crypto and abort globals
// (see web.js for how chunks are loaded).
(function (native, shared) {
  "use strict";
  const { bytesOf } = shared;
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
  AbortSignal.timeout = (ms) => {
    const controller = new AbortController();
    setTimeout(() => {
      const reason = new Error("The operation timed out");
      reason.name = "TimeoutError";
      controller.abort(reason);
    }, ms);
    return controller.signal;
  };
  // In core.js, beside the rest of the room's pending work.
  const fetch = (input, init) => shared.fetch(input, init);
  return {
    TextEncoder, TextDecoder, crypto, AbortController, AbortSignal, fetch,
    atob: (text) => native.atob(String(text)),
    btoa: (text) => native.btoa(String(text)),
    structuredClone: (value) => native.structuredClone(value),
  };
})
