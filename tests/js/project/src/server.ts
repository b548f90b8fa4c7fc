// A PartyKit server as PartyKit projects write them: TypeScript, the
// `partykit/server` types, relative imports without extensions, JSON, and
// npm packages (nanoid, zod) bundled by dormouse from node_modules.
import type * as Party from "partykit/server";
import { nanoid } from "nanoid";
import { z } from "zod";
import { shout, Mood, type Greeting } from "./util";
import settings from "./settings.json";

const Command = z.object({ say: z.string().min(1), times: z.number().int().positive().max(3) });
type Command = z.infer<typeof Command>;

export default class Server implements Party.Server {
  readonly options = { hibernate: false };
  private said: string[] = [];

  constructor(readonly room: Party.Room) {}

  onConnect(conn: Party.Connection, ctx: Party.ConnectionContext): void {
    const greeting: Greeting = { to: conn.id, mood: Mood.Happy };
    conn.send(`${settings.greeting} ${greeting.to} (${Mood[greeting.mood]}) id-length ${nanoid().length}`);
  }

  onMessage(message: string | ArrayBuffer, sender: Party.Connection): void {
    let command: Command;
    try {
      command = Command.parse(JSON.parse(message as string));
    } catch (error) {
      sender.send(`invalid: ${(error as z.ZodError).issues?.[0]?.path.join(".") ?? "json"}`);
      return;
    }
    const text = shout(command.say).repeat(command.times);
    this.said.push(text);
    this.room.broadcast(text);
  }

  async onRequest(req: Party.Request): Promise<Response> {
    return Response.json({ said: this.said, env: this.room.env.WHO ?? null });
  }
}
