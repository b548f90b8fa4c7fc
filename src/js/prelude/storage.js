// Lazily loaded prelude chunk: room.storage, made on the first use of
// room.storage (see web.js for how chunks are loaded).
(function (native) {
  "use strict";
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

  return { storage };
})
