// End-to-end: the unmodified partysocket client against a dormouse server.
// Usage: node e2e.mjs <host:port> <party> <room>
// The server's party greets with `hello:<id>`, closes on `drop` (1012), and
// answers any other text `m` with `echo:m`. Exits 0 on success, 1 with a
// one-line reason otherwise.
import { PartySocket } from "partysocket";
import WebSocket from "ws";
import { inbox } from "./inbox.mjs";

const [host, party, room] = process.argv.slice(2);
if (!host || !party || !room) {
  console.error("usage: node e2e.mjs <host:port> <party> <room>");
  process.exit(2);
}

const fail = (reason) => {
  console.error(`e2e failed: ${reason}`);
  process.exit(1);
};
setTimeout(() => fail("did not finish within 15 s"), 15000).unref();

const socket = new PartySocket({
  host,
  party,
  room,
  WebSocket,
  minReconnectionDelay: 100,
  maxReconnectionDelay: 500,
});

// Every message, in arrival order; `next` waits for the next one.
const nextMessage = inbox(socket);
const next = async (what) => {
  const timer = setTimeout(() => fail(`timed out waiting for ${what}`), 5000);
  const message = await nextMessage();
  clearTimeout(timer);
  return message;
};
const expect = async (want) => {
  const got = await next(want);
  if (got !== want) fail(`expected ${JSON.stringify(want)}, got ${JSON.stringify(got)}`);
  console.log(`ok: ${want}`);
};

const closed = new Promise((resolve) => socket.addEventListener("close", (event) => resolve(event)));

await expect(`hello:${socket.id}`);
socket.send("one");
await expect("echo:one");

socket.send("drop");
const close = await closed;
if (close.code !== 1012) fail(`expected close 1012, got ${close.code}`);
console.log(`ok: closed by server with ${close.code} "${close.reason}"`);
// Sent while disconnected: partysocket queues it and flushes on reopen.
socket.send("queued");

await expect(`hello:${socket.id}`);
console.log(`ok: reconnected with the same id ${socket.id}`);
socket.send("two");
await expect("echo:queued");
await expect("echo:two");

socket.close();
console.log("e2e passed");
process.exit(0);
