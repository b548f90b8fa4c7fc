// A PartyKit server in the older object form: handlers take the room last.
// onBeforeConnect refuses connections whose id starts with "blocked".
export default {
  onBeforeConnect(req, lobby) {
    const id = new URL(req.url).searchParams.get("_pk") ?? "";
    if (id.startsWith("blocked")) return new Response(`not in ${lobby.id}`, { status: 403 });
  },
  onConnect(ws, room) {
    ws.send(`hello ${ws.id} in ${room.id}`);
    // The older listener style: "listen" is answered by the listener.
    ws.addEventListener("message", (event) => {
      if (event.data === "listen") ws.send(`listener heard ${event.target.id}`);
    });
    ws.addEventListener("close", (event) => room.broadcast(`${event.target.id} closed ${event.code}`));
  },
  onMessage(message, ws, room) {
    room.broadcast(`${ws.id}: ${message}`);
  },
  onRequest(req, room) {
    return new Response(`object form in ${room.id}`, { status: 201, headers: { "x-form": "object" } });
  },
};
