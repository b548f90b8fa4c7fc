// The protocol of tests/partysocket/e2e.mjs in JavaScript: greets with
// hello:<id>, closes on "drop" with 1012, echoes anything else as echo:<text>.
export default class E2e {
  constructor(room) {
    this.room = room;
  }
  onConnect(conn) {
    conn.send(`hello:${conn.id}`);
  }
  onMessage(message, sender) {
    if (message === "drop") sender.close(1012, "drop requested");
    else sender.send(`echo:${message}`);
  }
}
