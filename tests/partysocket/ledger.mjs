// A partysocket client of a durable counter room in a cluster (the `tally`
// party of tests/cluster.rs): sends `inc:w1` ... `inc:w<total>` one at a
// time, each until acknowledged (`ack:<id>:<n>`), resending after a
// reconnect (the room notes ids, so a resent one that was applied is not
// counted twice). On each (re)connect the room says `n=<n>`: every
// acknowledged increment must be in it. Prints `ack <i> <n>` per ack,
// `greeted <n>` per greeting, `done <n>` at the end; exits 1 with a reason
// on any inconsistency.
// Usage: node ledger.mjs <host:port> <room> <total>
import { PartySocket } from "partysocket";
import WebSocket from "ws";
import { inbox } from "./inbox.mjs";

const [host, room, totalArg] = process.argv.slice(2);
const total = Number(totalArg);
if (!host || !room || !total) {
  console.error("usage: node ledger.mjs <host:port> <room> <total>");
  process.exit(2);
}
const fail = (reason) => {
  console.error(`ledger failed: ${reason}`);
  process.exit(1);
};
setTimeout(() => fail("did not finish within 60 s"), 60000).unref();

const socket = new PartySocket({
  host,
  party: "tally",
  room,
  id: "ledger",
  WebSocket,
  minReconnectionDelay: 100,
  maxReconnectionDelay: 500,
});

const next = inbox(socket);
// How much the room holds must cover what it acknowledged (`acked`).
const greeted = (text, acked) => {
  const n = Number(text.slice(2));
  console.log(`greeted ${n}`);
  if (n < acked) fail(`the room says n=${n} after acknowledging ${acked}`);
  if (n > acked + 1) fail(`the room says n=${n} with ${acked} acknowledged and one in flight`);
};

const first = await next();
if (!first.startsWith("n=")) fail(`expected the greeting, got ${first}`);
greeted(first, 0);
for (let i = 1; i <= total; i++) {
  const id = `w${i}`;
  socket.send(`inc:${id}`);
  for (;;) {
    const message = await next();
    if (message.startsWith("n=")) {
      // Reconnected: was the increment in flight applied? Ask again.
      greeted(message, i - 1);
      socket.send(`inc:${id}`);
      continue;
    }
    const [kind, acked, n] = message.split(":");
    if (kind !== "ack") fail(`unexpected ${message}`);
    // A late ack of an increment sent before (resent since): skip it.
    if (acked !== id) continue;
    if (Number(n) !== i) fail(`${id} acknowledged with n=${n}: increments lost or counted twice`);
    console.log(`ack ${i} ${n}`);
    break;
  }
}
console.log(`done ${total}`);
socket.close();
process.exit(0);
