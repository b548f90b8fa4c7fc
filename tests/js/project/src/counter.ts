import type * as Party from "partykit/server";

// A second party of the project: counts POSTs in room storage.
export default class Counter implements Party.Server {
  constructor(readonly room: Party.Room) {}

  async onRequest(req: Party.Request): Promise<Response> {
    let count = (await this.room.storage.get<number>("count")) ?? 0;
    if (req.method === "POST") await this.room.storage.put("count", ++count);
    return new Response(`${this.room.name}/${this.room.id} ${count} ${this.room.env.LIMITS}`);
  }
}
