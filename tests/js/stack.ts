// A stack in a TypeScript module whose types move the lines of the
// compiled JavaScript: onRequest answers the stack of an error thrown at
// line 17 of this file.
import type * as Party from "partykit/server";

interface Shape {
  a: number;
  b: string;
}

type Alias = Shape | null;

export default class Stack implements Party.Server {
  constructor(readonly room: Party.Room) {}
  onRequest(): Response {
    try {
      explode(null);
    } catch (error) {
      return new Response((error as Error).stack);
    }
    return new Response("no throw?");
  }
}

function explode(shape: Alias): never {
  throw new Error(`no shape: ${shape}`);
}
