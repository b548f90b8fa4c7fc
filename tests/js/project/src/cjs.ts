// CommonJS packages from node_modules: `ms` (module.exports = a function)
// and `cookie` (exports.parse / exports.serialize), imported both ways, and
// the project's own CommonJS files in legacy/.
import type * as Party from "partykit/server";
import ms from "ms";
import { parse } from "cookie";
import * as cookie from "cookie";
import legacy from "./legacy/a.cjs";

export default class Cjs implements Party.Server {
  constructor(readonly room: Party.Room) {}
  onRequest(req: Party.Request): Response {
    const jar = parse(req.headers.get("cookie") ?? "");
    let dynamic: string;
    try {
      legacy.dynamic("ms");
      dynamic = "resolved?!";
    } catch (error) {
      dynamic = (error as Error).message;
    }
    const parts = [ms("2 days"), jar.flavour, cookie.serialize("a", "b c"), legacy.sum, legacy.name, dynamic];
    return new Response(parts.join(" | "));
  }
}
