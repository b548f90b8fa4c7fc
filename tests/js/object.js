// A PartyKit server in the older object form: handlers take the room last.
export default {
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
