// The static hooks of the class form, for tests/js.rs. onBeforeConnect:
// ?token=bad throws (401), ?token=teapot answers 418, ?token=loop never
// returns, any other token
// passes on as the x-user header. onBeforeRequest: no authorization header
// answers 403; otherwise x-checked (the lobby's id) is added. onFetch
// answers paths that are not rooms.
export default class Hooks {
  constructor(room) {
    this.room = room;
  }

  static async onBeforeConnect(req, lobby) {
    const token = new URL(req.url).searchParams.get("token");
    if (token === "bad") throw new Error("bad token");
    if (token === "loop") for (;;);
    if (token === "teapot") return new Response("short and stout", { status: 418, headers: { "x-tea": "yes" } });
    await null;
    req.headers.set("x-user", `user-${token}-in-${lobby.id}`);
    return req;
  }

  static onBeforeRequest(req, lobby) {
    if (!req.headers.has("authorization")) return new Response("no auth", { status: 403 });
    return new Request(req.url, { method: req.method, headers: { "x-checked": lobby.id } });
  }

  static onFetch(req, lobby) {
    console.log("onFetch", req.url);
    return new Response(`fetched ${new URL(req.url).pathname} ${lobby.env.FOO}`, { status: 202 });
  }

  onConnect(conn, ctx) {
    conn.send(`${ctx.request.headers.get("x-user")}`);
  }

  onRequest(req) {
    return new Response(`checked ${req.headers.get("x-checked")} ${req.headers.get("authorization")}`);
  }
}
