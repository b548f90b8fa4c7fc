// Room-to-room requests (room.context.parties), for tests/js.rs; serves
// the parties `lobby` and `game`. A game room counts what is POSTed to it.
// The lobby: "join:G" over a socket adds 5 to game G and answers what G
// said; GET /total?games=a,b answers the sum of those games' counts (its
// response waits for theirs); GET /cycle asks a game, which asks the lobby
// back; GET /nowhere asks a party that does not exist. Sockets: GET
// /watch?game=G opens a socket to game G (its onConnect greets it with the
// path it came by; "count?" answers the count; "shout:X" broadcasts X to
// the game's members) and answers what came on it; GET /refused opens one
// to a party that does not exist.
export default class Parties {
  constructor(room) {
    this.room = room;
    this.count = 0;
  }

  game(id) {
    return this.room.context.parties.game.get(id);
  }

  onConnect(conn, ctx) {
    if (this.room.name !== "game") return;
    const url = new URL(ctx.request.url);
    conn.send(`welcome ${url.pathname}${url.search}`);
  }

  async onMessage(message, sender) {
    if (this.room.name === "game") {
      if (message === "count?") sender.send(`count ${this.count}`);
      if (message.startsWith("shout:")) this.room.broadcast(message.slice(6));
      return;
    }
    const [command, id] = message.split(":");
    if (command !== "join") return;
    const answer = await this.game(id).fetch("/add", { method: "POST", body: "5" });
    sender.send(`${answer.status} ${await answer.text()}`);
  }

  async onRequest(req) {
    const url = new URL(req.url);
    const what = url.pathname.split("/").pop();
    if (this.room.name === "game") {
      if (what === "add") this.count += Number(await req.text());
      if (what === "ask-lobby") {
        const lobby = await this.room.context.parties.lobby.get("main").fetch("/plain");
        return new Response(`game saw ${await lobby.text()}`);
      }
      return Response.json({ game: this.room.id, count: this.count });
    }
    switch (what) {
      case "total": {
        const games = url.searchParams.get("games").split(",");
        const answers = await Promise.all(games.map((g) => this.game(g).fetch("/")));
        const counts = await Promise.all(answers.map((a) => a.json()));
        return new Response(String(counts.reduce((sum, c) => sum + c.count, 0)));
      }
      case "cycle": {
        const answer = await this.game("g1").fetch("/ask-lobby");
        return new Response(`lobby got: ${await answer.text()}`);
      }
      case "nowhere": {
        const answer = await this.room.context.parties.nope.get("x").fetch("/");
        return new Response(`${answer.status} ${await answer.text()}`);
      }
      case "watch": {
        const ws = await this.game(url.searchParams.get("game")).socket("/live?via=lobby");
        const heard = [];
        const closed = new Promise((resolve) => ws.addEventListener("close", (e) => resolve(e.code)));
        await new Promise((resolve) => {
          ws.addEventListener("message", (e) => {
            heard.push(e.data);
            if (heard.length === 1) ws.send("count?");
            if (heard.length === 2) ws.send("shout:lobby was here");
            if (heard.length === 3) resolve();
          });
        });
        ws.close(4001, "seen enough");
        return new Response(`${heard.join(" | ")} | closed ${await closed} | state ${ws.readyState}`);
      }
      case "refused": {
        try {
          await this.room.context.parties.nope.get("x").socket();
          return new Response("opened?");
        } catch (error) {
          return new Response(String(error.message));
        }
      }
      case "plain":
        return new Response("plain");
      default:
        return new Response("no such command", { status: 404 });
    }
  }
}
