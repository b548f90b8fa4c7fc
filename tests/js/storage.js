// room.storage and the alarm from a PartyKit class server, for tests/js.rs.
// HTTP, by path after the room: "put-all" stores one value of every kind,
// "get-all" reads it back and describes it; "put-fn" tries to store a
// function; "list?..." lists with the query's options; "many" exercises
// the array forms; "txn-*" the transactions; "alarm?in=MS" sets the alarm,
// which then tells every connection "alarm <count>".
const describe = (v, seen = new Set()) => {
  if (v === undefined) return "undefined";
  if (v === null || typeof v === "boolean" || typeof v === "number") return String(v);
  if (typeof v === "string") return JSON.stringify(v);
  if (typeof v === "bigint") return `${v}n`;
  if (seen.has(v)) return "<cycle>";
  seen.add(v);
  const d = (x) => describe(x, seen);
  if (v instanceof Date) return `Date(${v.toISOString()})`;
  if (v instanceof Map) return `Map{${[...v].map(([k, x]) => `${d(k)}=>${d(x)}`).join(",")}}`;
  if (v instanceof Set) return `Set{${[...v].map(d).join(",")}}`;
  if (v instanceof ArrayBuffer) return `ArrayBuffer[${[...new Uint8Array(v)]}]`;
  if (v instanceof DataView) return `DataView[${[...new Uint8Array(v.buffer)]}]`;
  if (ArrayBuffer.isView(v)) return `${v.constructor.name}[${[...v]}]`;
  if (Array.isArray(v)) return `[${v.map(d).join(",")}]`;
  return `{${Object.entries(v).map(([k, x]) => `${k}:${d(x)}`).join(",")}}`;
};

const everything = () => {
  const shared = { shared: true };
  const value = {
    undef: undefined, nul: null, yes: true, no: false, int: 42, neg: -7, float: 1.5, nan: NaN,
    big: 12345678901234567890123n, text: "héllo ✓", empty: "",
    date: new Date(Date.UTC(2026, 11, 1, 12, 0, 0)),
    map: new Map([["a", 1], [2, "two"]]), set: new Set([1, "x"]),
    buffer: new Uint8Array([1, 2, 255]).buffer, bytes: new Uint8Array([9, 8]),
    floats: new Float64Array([0.25]), view: new DataView(new Uint8Array([7]).buffer),
    nested: [[1, [2, { deep: [3] }]], shared, shared],
  };
  value.self = value;
  return value;
};

export default class StorageRoom {
  constructor(room) {
    this.room = room;
    this.alarms = 0;
  }

  async onRequest(req) {
    const url = new URL(req.url);
    const what = url.pathname.split("/").pop();
    const s = this.room.storage;
    const q = (name) => url.searchParams.get(name);
    switch (what) {
      case "put-all":
        await s.put("everything", everything());
        return new Response("stored");
      case "get-all": {
        const v = await s.get("everything");
        if (v === undefined) return new Response("nothing", { status: 404 });
        const sharing = v.self === v && v.nested[1] === v.nested[2];
        return new Response(`${describe(v)} sharing:${sharing}`);
      }
      case "put-fn":
        try {
          await s.put("fn", { f() {} });
          return new Response("stored a function?!", { status: 500 });
        } catch (e) {
          return new Response(`${e.name}: ${e.message}`, { status: 400 });
        }
      case "put":
        await s.put(q("key"), await req.text());
        return new Response("ok");
      case "get":
        return new Response(String(await s.get(q("key"))));
      case "list": {
        const options = {};
        for (const k of ["prefix", "start", "end"]) if (q(k) !== null) options[k] = q(k);
        if (q("limit") !== null) options.limit = Number(q("limit"));
        if (q("reverse") !== null) options.reverse = true;
        const listed = await s.list(options);
        return new Response([...listed].map(([k, v]) => `${k}=${v}`).join(","));
      }
      case "many": {
        await s.put({ m1: "one", m2: "two", m3: "three" });
        const got = await s.get(["m1", "m3", "missing"]);
        const deleted = await s.delete(["m1", "missing"]);
        const one = await s.delete("m2");
        const after = await s.get(["m1", "m2", "m3"]);
        return new Response(`${describe(got)} deleted:${deleted},${one} after:${describe(after)}`);
      }
      case "delete-all":
        await s.deleteAll();
        return new Response(String((await s.list()).size));
      case "txn-throw":
        await s.put("t", "before");
        try {
          await s.transaction(async (txn) => {
            await txn.put("t", "inside");
            await txn.put("t2", "inside");
            if ((await txn.get("t")) !== "inside") throw new Error("a transaction reads its own writes");
            throw new Error("abort");
          });
        } catch (e) {
          if (e.message !== "abort") throw e;
        }
        return new Response(`${await s.get("t")},${await s.get("t2")}`);
      case "txn-rollback":
        await s.transaction(async (txn) => {
          await txn.put("r", "rolled back");
          txn.rollback();
        });
        return new Response(String(await s.get("r")));
      case "txn-commit": {
        const n = await s.transaction(async (txn) => {
          await txn.put("c", "committed");
          return 7;
        });
        return new Response(`${n},${await s.get("c")}`);
      }
      case "alarm":
        await s.setAlarm(new Date(Date.now() + Number(q("in"))));
        return new Response(String((await s.getAlarm()) > Date.now() - 1000));
      case "no-alarm":
        await s.setAlarm(Date.now() + 60000);
        await s.deleteAlarm();
        return new Response(String(await s.getAlarm()));
      default:
        return new Response("no such command", { status: 404 });
    }
  }

  async onAlarm() {
    this.alarms++;
    this.room.broadcast(`alarm ${this.alarms} ${await this.room.storage.getAlarm()}`);
  }
}
