// Node's `ws` client with permessage-deflate (on by default in ws) against
// the echo party: the extension is negotiated, compressed messages both ways
// round-trip, and what the server sends is compressed on the wire.
// Usage: node deflate.mjs <host:port> <path>
// Prints one `ok: ...` line per check and `deflate passed`; exits 1 otherwise.
import WebSocket from "ws";

const [host, path] = process.argv.slice(2);
const fail = (reason) => {
  console.error(`deflate failed: ${reason}`);
  process.exit(1);
};
setTimeout(() => fail("did not finish within 10 s"), 10000).unref();

const ws = new WebSocket(`ws://${host}${path}`, { perMessageDeflate: { threshold: 0 } });
ws.on("error", (e) => fail(`error ${e.message}`));
const received = [];
let wake = null;
ws.on("message", (data, isBinary) => {
  received.push({ data: isBinary ? data : data.toString(), isBinary });
  if (wake) wake();
});
const next = () =>
  new Promise((resolve) => {
    if (received.length) return resolve(received.shift());
    wake = () => {
      wake = null;
      resolve(received.shift());
    };
  });

ws.on("open", async () => {
  if (!ws.extensions.includes("permessage-deflate")) fail(`extensions: ${ws.extensions}`);
  console.log(`ok: negotiated ${ws.extensions}`);
  const text = JSON.stringify({ type: "doc", body: "all work and no play ".repeat(5000) });
  const before = ws._socket.bytesRead;
  ws.send(text);
  const echo = await next();
  if (echo.data !== text) fail("the echo differs");
  const wire = ws._socket.bytesRead - before;
  if (wire * 20 > text.length) fail(`${wire} bytes on the wire for ${text.length}`);
  console.log(`ok: ${text.length} B echoed in ${wire} B`);
  for (let i = 0; i < 20; i++) ws.send(`message ${i} `.repeat(i * 10));
  for (let i = 0; i < 20; i++) {
    const m = await next();
    if (m.data !== `message ${i} `.repeat(i * 10)) fail(`message ${i} differs`);
  }
  console.log("ok: 20 messages in order");
  const bytes = Buffer.alloc(70000, 3);
  ws.send(bytes);
  const back = await next();
  if (!back.isBinary || !Buffer.from(back.data).equals(bytes)) fail("binary echo differs");
  console.log("ok: binary");
  ws.close(1000);
  ws.on("close", (code) => {
    console.log(`deflate passed (close ${code})`);
    process.exit(0);
  });
});
