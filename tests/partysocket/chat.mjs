// The unmodified partysocket client against examples/partykit-chat (a
// PartyKit TypeScript project dormouse runs with --partykit).
// Usage: node chat.mjs <host:port> <room>
// Two clients (no `party` option: the project's main party): a moderator
// (`?role=moderator`) and a member; the member's message reaches both, its
// "/mods" note only the moderator, and a newcomer gets the history. Exits 0
// on success, 1 with a one-line reason otherwise.
import { PartySocket } from "partysocket";
import WebSocket from "ws";
import { inbox } from "./inbox.mjs";

const [host, room] = process.argv.slice(2);
if (!host || !room) {
  console.error("usage: node chat.mjs <host:port> <room>");
  process.exit(2);
}
const fail = (reason) => {
  console.error(`chat failed: ${reason}`);
  process.exit(1);
};
setTimeout(() => fail("did not finish within 15 s"), 15000).unref();

// A client whose messages are parsed and queued in arrival order.
const client = (id, query) => {
  const socket = new PartySocket({ host, room, id, query, WebSocket });
  const nextMessage = inbox(socket, (data) => JSON.parse(String(data)));
  const next = async (what) => {
    const timer = setTimeout(() => fail(`${id} timed out waiting for ${what}`), 5000);
    const message = await nextMessage();
    clearTimeout(timer);
    return message;
  };
  return { socket, next };
};

const mod = client("mod", { role: "moderator" });
const first = await mod.next("the history");
if (first.type !== "history") fail(`expected the history, got ${JSON.stringify(first)}`);
const member = client("member");
await member.next("the history");
member.socket.send("hello from partysocket");
for (const [name, c] of [["mod", mod], ["member", member]]) {
  const got = await c.next("the message");
  if (got.type !== "message" || got.from !== "member" || got.text !== "hello from partysocket") {
    fail(`${name} got ${JSON.stringify(got)}`);
  }
}
console.log("ok: a message reaches everyone");
member.socket.send("/mods psst");
const note = await mod.next("the moderators' note");
if (note.type !== "mods" || note.text !== "psst") fail(`mod got ${JSON.stringify(note)}`);
console.log("ok: a tagged note reaches the moderator");
const late = client("late");
const history = await late.next("the history");
if (!history.messages?.some((m) => m.text === "hello from partysocket")) fail(`history was ${JSON.stringify(history)}`);
console.log("ok: a newcomer gets the history");
for (const c of [mod, member, late]) c.socket.close();
console.log("chat passed");
