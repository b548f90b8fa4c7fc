// Room-to-room requests (room.context.parties), for tests/js.rs; serves
// the parties `lobby` and `game`. A game room counts what is POSTed to it.
// The lobby: "join:G" over a socket adds 5 to game G and answers what G
// said; GET /total?games=a,b answers the sum of those games' counts (its
// response waits for theirs); GET /cycle asks a game, which asks the lobby
// back; GET /nowhere asks a party that does not exist.
export default class Parties {
  constructor(room) {
    this.room = room;
    this.count = 0;
  }

  game(id) {
    return this.room.context.parties.game.get(id);
  }

  async onMessage(message, sender) {
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
      case "plain":
        return new Response("plain");
      default:
        return new Response("no such command", { status: 404 });
    }
  }
}
