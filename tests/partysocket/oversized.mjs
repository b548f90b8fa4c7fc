// Node's `ws` client sends one message over the server's max_message_bytes
// in one write, as client libraries do, and reports the close it gets.
// Usage: node oversized.mjs <host:port> <path> <bytes>
// Prints `close <code> <reason>`; exits 1 on an error event or a timeout.
import WebSocket from "ws";

const [host, path, bytes] = process.argv.slice(2);
setTimeout(() => {
  console.error("no close within 10 s");
  process.exit(1);
}, 10000).unref();
// Uncompressed, so the server has the whole oversized frame to read away.
const ws = new WebSocket(`ws://${host}${path}`, { perMessageDeflate: false });
ws.on("open", () => ws.send(Buffer.alloc(Number(bytes), 7)));
ws.on("error", (e) => {
  console.error(`error ${e.message}`);
  process.exit(1);
});
ws.on("close", (code, reason) => console.log(`close ${code} ${reason}`));
