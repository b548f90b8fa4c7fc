// The unmodified Yjs clients (yjs, y-protocols, y-websocket's
// WebsocketProvider, y-partykit's YPartyKitProvider) against a dormouse
// `yjs` party. Usage: node yjs.mjs <scenario> <host:port> <party> <room> [args]
// Prints `ok: ...` lines, and exits 0 on success, 1 with a reason otherwise.
// Waits are for conditions (checked on every event, with a deadline), never
// for a time.
import * as Y from "yjs";
import { WebsocketProvider } from "y-websocket";
import YPartyKitProvider from "y-partykit/provider";
import WebSocket from "ws";

const [scenario, host, party, room, ...args] = process.argv.slice(2);
if (!scenario || !host || !party || !room) {
  console.error("usage: node yjs.mjs <scenario> <host:port> <party> <room> [args]");
  process.exit(2);
}
const fail = (reason) => {
  console.error(`${scenario} failed: ${reason}`);
  process.exit(1);
};
setTimeout(() => fail("did not finish within 30 s"), 30000).unref();

// Every listener of every provider and doc pokes this, so a wait re-checks
// its condition whenever something happened.
let poke = () => {};
const changed = () => poke();

// Resolves once `check()` is true, re-checking on every event (and every
// 20 ms for what has no event, such as metrics); fails after 10 s.
const until = async (what, check) => {
  const deadline = Date.now() + 10000;
  while (!(await check())) {
    if (Date.now() > deadline) fail(`timed out waiting for ${what}`);
    await new Promise((resolve) => {
      poke = resolve;
      setTimeout(resolve, 20);
    });
  }
};

// A provider of either library on a fresh doc.
const provider = (kind, options = {}) => {
  const doc = new Y.Doc();
  const common = { WebSocketPolyfill: WebSocket, disableBc: true, maxBackoffTime: 200 };
  const p =
    kind === "y-partykit"
      ? new YPartyKitProvider(host, room, doc, { party, ...common, ...options })
      : new WebsocketProvider(`ws://${host}/parties/${party}`, room, doc, { ...common, ...options });
  const closes = [];
  p.on("connection-close", (event) => {
    if (event) closes.push({ code: event.code, reason: String(event.reason) });
    changed();
  });
  p.on("sync", changed);
  doc.on("update", changed);
  p.awareness.on("change", changed);
  const text = doc.getText("t");
  return { p, doc, text, closes, synced: () => until(`${kind} to sync`, () => p.synced) };
};

const metric = async (name) => {
  const body = await (await fetch(`http://${host}/metrics`)).text();
  return body
    .split("\n")
    .filter((line) => line.startsWith(`${name}{`))
    .reduce((sum, line) => sum + Number(line.split(" ").pop()), 0);
};

// One provider of each library, synced, both with a's first edit.
const pair = async (initial) => {
  const a = provider("y-websocket");
  const b = provider("y-partykit");
  await a.synced();
  await b.synced();
  a.text.insert(0, initial);
  await until("b to see the edit", () => b.text.toString() === initial);
  return [a, b];
};

// Resolves once more rooms than `after` were evicted and none is resident.
const hibernated = async (after = 0) => {
  await until("the room to hibernate", async () => (await metric("dormouse_rooms_evicted_total")) > after);
  await until("no room resident", async () => (await metric("dormouse_rooms_resident")) === 0);
};

const getDoc = async () => {
  const response = await fetch(`http://${host}/parties/${party}/${room}`);
  if (response.status !== 200) fail(`GET answered ${response.status}`);
  if (response.headers.get("content-type") !== "application/octet-stream") fail("GET is not octet-stream");
  const doc = new Y.Doc();
  Y.applyUpdate(doc, new Uint8Array(await response.arrayBuffer()));
  return doc.getText("t").toString();
};

// Cuts a provider's socket without a goodbye: no close frame, and none of
// the null awareness a provider sends when it disconnects itself, so what
// the others see of it going is the server's doing. It does not reconnect.
const vanish = ({ p }) => {
  p.shouldConnect = false;
  p.ws.terminate();
};

const done = (...providers) => {
  for (const { p } of providers) p.destroy();
  process.exit(0);
};

switch (scenario) {
  // Two providers, one of each library, edit at once and converge.
  case "converge": {
    const a = provider("y-websocket");
    const b = provider("y-partykit");
    await a.synced();
    await b.synced();
    a.text.insert(0, "from-a;");
    b.text.insert(0, "from-b;");
    const both = (t) => t.includes("from-a;") && t.includes("from-b;");
    await until("both edits on both sides", () => both(a.text.toString()) && both(b.text.toString()));
    if (a.text.toString() !== b.text.toString()) fail(`diverged: ${a.text} vs ${b.text}`);
    console.log(`ok: converged on ${a.text.toString().length} characters`);
    done(a, b);
  }
  // Writes `args[0]` and waits until the server has it (a GET shows it).
  case "write": {
    const a = provider(args[1] ?? "y-websocket");
    await a.synced();
    a.text.insert(a.text.length, args[0]);
    await until("the server to have the edit", async () => (await getDoc()).includes(args[0]));
    console.log("ok: written");
    done(a);
  }
  // Joins alone and prints the document once synced.
  case "join": {
    const a = provider(args[0] ?? "y-partykit");
    await a.synced();
    console.log(`text ${a.text.toString()}`);
    done(a);
  }
  // A newcomer sees an existing member's awareness; it goes when its owner closes.
  case "awareness": {
    const a = provider("y-websocket");
    await a.synced();
    a.p.awareness.setLocalStateField("user", { name: "alice" });
    const b = provider("y-partykit");
    await b.synced();
    const alice = () => b.p.awareness.getStates().get(a.doc.clientID)?.user?.name === "alice";
    await until("the newcomer to see alice", alice);
    console.log("ok: a newcomer sees an existing member's awareness");
    vanish(a);
    await until("alice to go when her socket closes", () => !b.p.awareness.getStates().has(a.doc.clientID));
    console.log("ok: awareness goes with its owner's socket");
    done(b);
  }
  // Awareness traffic while the room hibernates leaves it hibernated.
  case "asleep": {
    const [a, b] = await pair("awake");
    await hibernated();
    const woken = await metric("dormouse_rooms_woken_total");
    for (let i = 0; i < 20; i++) a.p.awareness.setLocalStateField("cursor", { at: i });
    const cursor = () => b.p.awareness.getStates().get(a.doc.clientID)?.cursor?.at === 19;
    await until("b to see a's last cursor", cursor);
    await until("the server to count the asleep messages", async () => (await metric("dormouse_messages_asleep_total")) >= 20);
    if ((await metric("dormouse_rooms_woken_total")) !== woken) fail("awareness woke the room");
    if ((await metric("dormouse_rooms_resident")) !== 0) fail("awareness made the room resident");
    console.log("ok: awareness relayed while the room hibernates");
    vanish(a);
    await until("a's awareness to go", () => !b.p.awareness.getStates().has(a.doc.clientID));
    if ((await metric("dormouse_rooms_woken_total")) !== woken) fail("a close woke the room");
    console.log("ok: a close is handled while the room hibernates");
    b.text.insert(5, "!");
    await until("the edit to reach the server", async () => (await getDoc()) === "awake!");
    if ((await metric("dormouse_rooms_woken_total")) !== woken + 1) fail("an edit did not wake the room");
    console.log("ok: an edit wakes it");
    done(b);
  }
  // A writer inserts items, a watcher prints each item it received, until killed.
  case "stream": {
    const writer = provider("y-websocket", { maxBackoffTime: 100000 });
    const watcher = provider("y-partykit", { maxBackoffTime: 100000 });
    await writer.synced();
    await watcher.synced();
    let printed = 0;
    watcher.doc.on("update", () => {
      const items = watcher.text.toString().split(";").filter(Boolean);
      for (; printed < items.length; printed++) console.log(`seen ${items[printed]}`);
    });
    for (let i = 0; ; i++) {
      writer.text.insert(writer.text.length, `item-${i};`);
      // Paced by the watcher, so the server is killed mid-stream.
      await until("the watcher to keep up", () => printed >= i - 5 || writer.closes.length > 0);
      if (writer.closes.length > 0) break;
    }
    console.log("closed");
    done(writer, watcher);
  }
  // A member that went away gets, on its return to the hibernated room,
  // what changed meanwhile: a deletion only (no clock moved), then an
  // insert; and a newcomer gets it all.
  case "away": {
    const [a, b] = await pair("hello world");
    const away = async (change, expected) => {
      b.p.disconnect();
      await until("b to be away", () => !b.p.wsconnected);
      const evicted = await metric("dormouse_rooms_evicted_total");
      change();
      await until("the server to have the change", async () => (await getDoc()) === expected);
      await hibernated(evicted);
      b.p.connect();
      await until(`b to come back to ${expected}`, () => b.p.synced && b.text.toString() === expected);
    };
    await away(() => a.text.delete(0, 6), "world");
    console.log("ok: a deletion made while away arrives");
    await away(() => a.text.insert(5, "!"), "world!");
    console.log("ok: an insert made while away arrives");
    const c = provider("y-websocket");
    await c.synced();
    if (c.text.toString() !== "world!") fail(`a newcomer got ${c.text}`);
    // b's own disconnects close its socket normally; nothing else closed one.
    const closedByServer = [...a.closes, ...b.closes].filter(({ code }) => code !== 1000 && code !== 1005);
    if (closedByServer.length > 0) fail(`a member was closed: ${JSON.stringify(closedByServer)}`);
    console.log("ok: a newcomer gets it all");
    done(a, b, c);
  }
  // y-partykit's provider sends a message over 1 MB in chunks between text markers.
  case "chunked": {
    const a = provider("y-partykit");
    const b = provider("y-websocket");
    await a.synced();
    await b.synced();
    const big = "y".repeat(Number(args[0]));
    a.text.insert(0, big);
    await until("b to get the chunked edit", () => b.text.length === big.length);
    if ((await getDoc()) !== big) fail("the server does not have the chunked edit");
    if (a.closes.length > 0) fail(`a was closed: ${JSON.stringify(a.closes)}`);
    console.log("ok: a chunked message is joined");
    done(a, b);
  }
  // An update past the document limit closes only its sender (1009).
  case "oversized": {
    const a = provider("y-websocket");
    const b = provider("y-partykit");
    await a.synced();
    await b.synced();
    b.text.insert(0, "small;");
    await until("a to see b", () => a.text.toString() === "small;");
    a.text.insert(0, "x".repeat(Number(args[0])));
    await until("a to be closed", () => a.closes.length > 0);
    const { code, reason } = a.closes[0];
    console.log(`close ${code} ${reason}`);
    a.p.destroy();
    if (b.closes.length > 0) fail("b was closed too");
    if ((await getDoc()) !== "small;") fail("the server took the oversized update");
    b.text.insert(6, "still;");
    const c = provider("y-websocket");
    await until("a newcomer to see b's later edit", () => c.text.toString() === "small;still;");
    console.log("ok: the others go on");
    done(b, c);
  }
  // A read-only connection's edits are not applied; it still syncs.
  // args: the writer's query pairs before `--`, the viewer's after.
  case "readonly": {
    const query = (pairs) => Object.fromEntries(pairs.map((pair) => pair.split("=")));
    const split = args.indexOf("--");
    const writer = provider("y-websocket", { params: query(args.slice(0, split)) });
    await writer.synced();
    writer.text.insert(0, "shared;");
    const viewer = provider("y-partykit", { params: query(args.slice(split + 1)) });
    await viewer.synced();
    await until("the viewer to get the document", () => viewer.text.toString() === "shared;");
    viewer.text.insert(0, "viewer;");
    writer.text.insert(7, "after;");
    await until("the viewer to see the later edit", () => viewer.text.toString().includes("after;"));
    if ((await getDoc()) !== "shared;after;") fail(`the server has ${await getDoc()}`);
    if (writer.text.toString() !== "shared;after;") fail(`the writer has ${writer.text}`);
    console.log("ok: a read-only connection syncs and changes nothing");
    done(writer, viewer);
  }
  // POST an update from a backend; a provider gets it; GET has the provider's edit too.
  case "http": {
    const backend = new Y.Doc();
    backend.getText("t").insert(0, "from-backend;");
    const posted = await fetch(`http://${host}/parties/${party}/${room}`, {
      method: "POST",
      body: Y.encodeStateAsUpdate(backend),
    });
    if (posted.status !== 200) fail(`POST answered ${posted.status} ${await posted.text()}`);
    const a = provider("y-websocket");
    await until("the provider to get the posted edit", () => a.text.toString() === "from-backend;");
    const b = provider("y-partykit");
    await b.synced();
    const other = new Y.Doc();
    other.getText("t").insert(0, "later;");
    const update = Y.encodeStateAsUpdate(other);
    if ((await fetch(`http://${host}/parties/${party}/${room}`, { method: "POST", body: update })).status !== 200)
      fail("the second POST failed");
    await until("members to get a POST", () => a.text.toString().includes("later;") && b.text.toString().includes("later;"));
    a.text.insert(a.text.length, "from-provider;");
    await until("GET to show the provider's edit", async () => (await getDoc()).includes("from-provider;"));
    const bad = await fetch(`http://${host}/parties/${party}/${room}`, { method: "POST", body: new Uint8Array([1, 2, 3]) });
    console.log(`bad post ${bad.status}`);
    console.log("ok: HTTP round trip");
    done(a, b);
  }
  default:
    fail(`unknown scenario ${scenario}`);
}
