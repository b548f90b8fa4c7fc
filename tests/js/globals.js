// The web platform globals of a JS room, for tests/js.rs: onRequest tries
// each and answers one line per global.
export default class Globals {
  async onRequest() {
    const lines = [];
    const bytes = new TextEncoder().encode("héllo ✓");
    lines.push(`text: ${new TextDecoder().decode(bytes)} ${bytes.length}`);
    const latin = String.fromCharCode(...new TextEncoder().encode("héllo"));
    let refused = false;
    try { btoa("✓"); } catch { refused = true; }
    lines.push(`base64: ${btoa(latin)} ${btoa(atob(" aMOpbGxv "))} ${refused}`);
    const uuid = crypto.randomUUID();
    lines.push(`uuid: ${/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/.test(uuid)} ${uuid !== crypto.randomUUID()}`);
    const a = crypto.getRandomValues(new Uint32Array(8));
    lines.push(`random: ${a.some((x) => x !== 0)}`);
    const original = { when: new Date(3), m: new Map([[1, [2]]]) };
    const copy = structuredClone(original);
    lines.push(`clone: ${copy.when.getTime() === 3} ${copy.m.get(1)[0] === 2} ${copy.m === original.m}`);
    let ran = "not yet";
    queueMicrotask(() => { ran = "ran"; });
    await null;
    lines.push(`microtask: ${ran}`);
    const controller = new AbortController();
    let fired = "";
    controller.signal.addEventListener("abort", () => { fired = "fired"; });
    controller.abort();
    lines.push(`abort: ${controller.signal.aborted} ${controller.signal.reason.name} ${fired}`);
    try {
      await fetch("http://example.com/");
      lines.push("fetch: resolved?!");
    } catch (e) {
      lines.push(`fetch: ${e.name}`);
    }
    // A request body read as a stream, chunk by chunk.
    const posted = new Request("http://x/", { method: "POST", body: "streamed body" });
    let streamed = "";
    for await (const chunk of posted.body) streamed += new TextDecoder().decode(chunk);
    const reader = new Request("http://x/", { method: "POST", body: "ab" }).body.getReader();
    const first = await reader.read();
    const second = await reader.read();
    lines.push(`stream: ${streamed} ${first.value.length} ${second.done} ${new Request("http://x/").body}`);
    return new Response(lines.join("\n"));
  }
}
