// y-websocket's own server (@y/websocket-server, the server that shipped
// as y-websocket's bin/server.js): one Y.Doc per path, in memory (no
// persistence configured, as it runs by default). PORT, HOST from the env.
import http from "node:http";
import { WebSocketServer } from "ws";
import { setupWSConnection } from "@y/websocket-server/utils";

const port = Number(process.env.PORT || 1234);
const host = process.env.HOST || "127.0.0.1";
const wss = new WebSocketServer({ noServer: true });
wss.on("connection", setupWSConnection);
const server = http.createServer((_req, res) => res.end("okay"));
server.on("upgrade", (req, socket, head) => wss.handleUpgrade(req, socket, head, (ws) => wss.emit("connection", ws, req)));
server.listen(port, host, () => console.log(`y-websocket server on ${host}:${port}`));
