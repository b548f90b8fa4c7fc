// A minimal relay on Node `ws`, the peer dormouse is benchmarked against:
// every message goes to everyone else in the same room, the room being the
// last path segment of /parties/main/:room (query ignored), as in dormouse's
// built-in `relay` party. Usage: [DEFLATE=1] node server.js [port] (default
// 1999; loopback only).
"use strict";
const http = require("node:http");
const { WebSocketServer, WebSocket } = require("ws");

const port = Number(process.argv[2] || 1999);
const rooms = new Map(); // room name -> Set of sockets

const server = http.createServer((req, res) => {
  res.writeHead(404).end();
});
// DEFLATE=1: permessage-deflate as dormouse offers it (no context takeover
// either way, text of 256 bytes or more compressed); ws compresses each send.
const perMessageDeflate =
  process.env.DEFLATE === "1"
    ? { serverNoContextTakeover: true, clientNoContextTakeover: true, threshold: 256 }
    : false;
const wss = new WebSocketServer({ noServer: true, perMessageDeflate });

server.on("upgrade", (req, socket, head) => {
  const match = /^\/parties\/main\/([^/?]+)/.exec(req.url);
  if (!match) {
    socket.end("HTTP/1.1 404 Not Found\r\n\r\n");
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => {
    const name = match[1];
    let room = rooms.get(name);
    if (!room) rooms.set(name, (room = new Set()));
    room.add(ws);
    ws.on("message", (data, isBinary) => {
      for (const peer of room) {
        if (peer !== ws && peer.readyState === WebSocket.OPEN) peer.send(data, { binary: isBinary });
      }
    });
    ws.on("close", () => {
      room.delete(ws);
      if (room.size === 0) rooms.delete(name);
    });
  });
});

server.listen(port, "127.0.0.1", () => console.error(`node ws relay on 127.0.0.1:${port}`));
process.on("SIGTERM", () => process.exit(0));
