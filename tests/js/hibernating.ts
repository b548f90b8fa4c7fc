// A hibernating PartyKit server, for tests/js.rs: its options ask for
// hibernation, and its fields (messages, a Map of connections, a Date, the
// room) are kept across evictions. Commands: "add:X" appends X; "get"
// answers the fields as JSON; "poison" stores a field that cannot be kept,
// so the next wake is fresh.
import type * as Party from "partykit/server";

export default class Hibernating implements Party.Server {
  readonly options = { hibernate: true };
  messages: string[] = [];
  seen = new Map<string, Party.Connection>();
  since = new Date(Date.UTC(2026, 0, 1));
  starts = 0;
  poison?: { f: () => void };
  // A method bound in the constructor: made again on every wake, not kept.
  reply = (conn: Party.Connection, text: string) => conn.send(text);

  constructor(readonly room: Party.Room) {}

  onStart() {
    this.starts++;
  }

  onConnect(conn: Party.Connection) {
    this.seen.set(conn.id, conn);
  }

  onMessage(message: string, sender: Party.Connection) {
    const [command, arg] = message.split(":");
    if (command === "add") {
      this.messages.push(arg);
      // Connection state is the reactor's: it stays while the room sleeps.
      sender.setState({ adds: ((sender.state as { adds?: number } | null)?.adds ?? 0) + 1 });
    }
    if (command === "poison") this.poison = { f() {} };
    this.reply(
      sender,
      JSON.stringify({
        messages: this.messages,
        seen: [...this.seen].map(([id, conn]) => `${id}=${conn?.id ?? "gone"}`),
        since: this.since instanceof Date ? this.since.toISOString() : "not a date",
        starts: this.starts,
        room: this.room.id,
        adds: (sender.state as { adds?: number } | null)?.adds ?? 0,
      }),
    );
  }
}
