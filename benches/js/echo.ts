// The per-event bench's party: answers every message to its sender.
import type * as Party from "partykit/server";

export default class Echo implements Party.Server {
  constructor(readonly room: Party.Room) {}
  onMessage(message: string, sender: Party.Connection) {
    sender.send(message);
  }
}
