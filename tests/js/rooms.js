// A PartyKit server in the class form, for tests/js.rs. Commands (text):
// "who" -> sorted ids; "all:M" -> M to everyone else; "tag:T:M" -> M to the
// connections tagged T; "state:V" -> sets the connection state to V and
// answers what it reads back; "count" -> this room's message count (kept in
// a field); "env" -> room.env.GREETING; "async" -> answers after an await;
// "throw" -> throws; "loop" -> never returns; "hog" -> allocates without end;
// "deep" -> recurses without end; "bye" -> closes the sender with 4000.
// Binary messages are echoed as binary. HTTP: GET -> JSON of the count and
// the connections, POST -> adds the body's number to the count.
export default class Rooms {
  constructor(room) {
    this.room = room;
    this.count = 0;
  }

  onStart() {
    this.started = true;
  }

  getConnectionTags(conn, ctx) {
    return new URL(ctx.request.url).searchParams.getAll("tag");
  }

  onConnect(conn, ctx) {
    if (conn.id.startsWith("refuse")) throw new Error(`refused ${conn.id}`);
    conn.send(`welcome ${conn.id} to ${this.room.id} (started: ${this.started})`);
  }

  async onMessage(message, sender) {
    if (typeof message !== "string") {
      sender.send(message);
      return;
    }
    this.count++;
    const [command, ...rest] = message.split(":");
    switch (command) {
      case "who":
        sender.send([...this.room.getConnections()].map((c) => c.id).sort().join(","));
        break;
      case "all":
        this.room.broadcast(rest.join(":"), [sender.id]);
        break;
      case "tag":
        for (const conn of this.room.getConnections(rest[0])) conn.send(rest.slice(1).join(":"));
        break;
      case "state":
        sender.setState({ value: rest.join(":") });
        sender.send(`state ${sender.state.value}`);
        break;
      case "tags":
        sender.send(sender.tags.join(","));
        break;
      case "count":
        sender.send(`count ${this.count}`);
        break;
      case "env":
        sender.send(`env ${this.room.env.GREETING}`);
        break;
      case "async":
        await Promise.resolve();
        sender.send("after await");
        break;
      case "throw":
        throw new Error("thrown on purpose");
      case "loop":
        for (;;) {}
      case "hog": {
        const kept = [];
        for (;;) kept.push("x".repeat(1 << 20) + kept.length);
      }
      case "deep": {
        const down = (n) => down(n + 1) + 1;
        down(0);
        break;
      }
      case "bye":
        sender.close(4000, "bye from js");
        break;
      default:
        sender.send(`echo ${message}`);
    }
  }

  onClose(conn) {
    this.room.broadcast(`left ${conn.id}`);
  }

  async onRequest(req) {
    if (req.method === "POST") {
      this.count += Number(await req.text());
      return new Response(String(this.count));
    }
    return Response.json({ room: this.room.id, count: this.count, online: [...this.room.getConnections()].length });
  }
}
