// A PartyKit server in the older object form: handlers take the room last.
// onBeforeConnect refuses connections whose id starts with "blocked".
export default {
  onBeforeConnect(req, lobby) {
    const id = new URL(req.url).searchParams.get("_pk") ?? "";
    if (id.startsWith("blocked")) return new Response(`not in ${lobby.id}`, { status: 403 });
  },
  onConnect(ws, room) {
    ws.send(`hello ${ws.id} in ${room.id}`);
  },
  onMessage(message, ws, room) {
    room.broadcast(`${ws.id}: ${message}`);
  },
  onRequest(req, room) {
    return new Response(`object form in ${room.id}`, { status: 201, headers: { "x-form": "object" } });
  },
};
