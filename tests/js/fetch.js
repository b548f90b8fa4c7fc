// fetch() to the outside, for tests/js.rs: "get URL" answers the status,
// ok, a header and the text; "post URL" sends a Request with a body;
// "json URL" and "bytes URL" read the body those ways; "abort URL" gives
// up after 100 ms (AbortSignal.timeout); errors are answered as
// "<name>: <message>". GET ?url=U answers what U answered, the HTTP
// response waiting for it.
export default class Fetching {
  constructor(room) {
    this.room = room;
  }

  async onMessage(message, sender) {
    const [kind, url] = message.split(" ");
    try {
      if (kind === "get") {
        const r = await fetch(url, { headers: { "x-room": this.room.id } });
        sender.send(`${r.status} ${r.ok} ${r.headers.get("x-upstream")} ${await r.text()}`);
      } else if (kind === "post") {
        const r = await fetch(new Request(url, { method: "POST", body: "from js", headers: { "x-room": "js" } }));
        sender.send(`${r.status} ${r.url === url} ${await r.text()}`);
      } else if (kind === "json") {
        const r = await fetch(url);
        sender.send(`n=${(await r.json()).n}`);
      } else if (kind === "bytes") {
        const r = await fetch(url);
        sender.send(`bytes=${(await r.arrayBuffer()).byteLength}`);
      } else if (kind === "abort") {
        await fetch(url, { signal: AbortSignal.timeout(100) });
        sender.send("not aborted");
      }
    } catch (e) {
      sender.send(`${e.name}: ${e.message}`);
    }
  }

  async onRequest(req) {
    const target = new URL(req.url).searchParams.get("url");
    const r = await fetch(target);
    return new Response(`proxied ${await r.text()}`, { status: r.status });
  }
}
