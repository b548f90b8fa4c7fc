// A PartyKit chat server, written as for PartyKit and run unmodified by
// dormouse (`dormouse serve --partykit examples/partykit-chat/partykit.json`).
//
// - Each room keeps its last MAX_HISTORY messages in a field (kept across
//   hibernation by dormouse) and in room storage (kept across restarts).
// - Connections opened with `?role=moderator` are tagged `moderators`; a
//   message starting with "/mods " goes to them only.
// - GET on the room exports its history as JSON; POST of such a JSON array
//   imports it (the way to bring rooms over from another server).
import type * as Party from "partykit/server";

type ChatMessage = { from: string; text: string; at: number };

export default class Chat implements Party.Server {
  readonly options = { hibernate: true };
  messages: ChatMessage[] | undefined;

  constructor(readonly room: Party.Room) {}

  // Runs on every start and wake; after a wake `messages` is already back.
  async onStart() {
    this.messages ??= (await this.room.storage.get<ChatMessage[]>("messages")) ?? [];
  }

  getConnectionTags(conn: Party.Connection, ctx: Party.ConnectionContext): string[] {
    const role = new URL(ctx.request.url).searchParams.get("role");
    return role === "moderator" ? ["moderators"] : [];
  }

  onConnect(conn: Party.Connection) {
    conn.send(JSON.stringify({ type: "history", messages: this.messages }));
  }

  async onMessage(message: string | ArrayBuffer, sender: Party.Connection) {
    if (typeof message !== "string") return;
    if (message.startsWith("/mods ")) {
      const note = JSON.stringify({ type: "mods", from: sender.id, text: message.slice(6) });
      for (const mod of this.room.getConnections("moderators")) mod.send(note);
      return;
    }
    const entry: ChatMessage = { from: sender.id, text: message, at: Date.now() };
    await this.remember([entry]);
    this.room.broadcast(JSON.stringify({ type: "message", ...entry }));
  }

  async onRequest(req: Party.Request): Promise<Response> {
    if (req.method === "POST") {
      const imported = (await req.json()) as ChatMessage[];
      if (!Array.isArray(imported)) return new Response("expected a JSON array of messages", { status: 400 });
      await this.remember(imported);
      return Response.json({ imported: imported.length, total: this.messages!.length });
    }
    return Response.json(this.messages);
  }

  private async remember(entries: ChatMessage[]) {
    const max = Number(this.room.env.MAX_HISTORY ?? 50);
    this.messages = [...this.messages!, ...entries].slice(-max);
    await this.room.storage.put("messages", this.messages);
  }
}
