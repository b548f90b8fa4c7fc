// The relay the benchmark drives: every message goes to everyone else in the
// room, as dormouse's built-in `relay` party does. This is the default party,
// `main`, so it answers at /parties/main/:room (and /party/:room).
import type * as Party from "partykit/server";

export default class Relay implements Party.Server {
  constructor(readonly room: Party.Room) {}

  onMessage(message: string | ArrayBuffer, sender: Party.Connection) {
    this.room.broadcast(message, [sender.id]);
  }
}
