// The wake bench's party: 64 KiB of fields (512 entries of about 128 B),
// made on the first start and kept across hibernation after that.
import type * as Party from "partykit/server";

type Entry = { id: number; user: string; text: string };

export default class Fields implements Party.Server {
  readonly options = { hibernate: true };
  entries: Entry[] | undefined;
  constructor(readonly room: Party.Room) {}
  onStart() {
    this.entries ??= Array.from({ length: 512 }, (_, id) => ({
      id,
      user: `user-${id % 97}`,
      text: `message number ${(id * 7919) % 10007} with some words ${"x".repeat(72)}`,
    }));
  }
  onMessage(message: string, sender: Party.Connection) {
    sender.send(`${this.entries!.length} ${message}`);
  }
}
