// Hocuspocus with no extensions: documents in memory, no persistence (as
// it runs by default). PORT, HOST from the env.
import { Server } from "@hocuspocus/server";

const port = Number(process.env.PORT || 1235);
const address = process.env.HOST || "127.0.0.1";
const server = new Server({ port, address, quiet: true });
await server.listen();
console.log(`hocuspocus on ${address}:${port}`);
