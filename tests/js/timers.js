// setTimeout / setInterval / clearTimeout in a room, for tests/js.rs.
// "once" fires after 20 ms with its arguments; "cancel" clears a timer and
// lets a later one fire; "interval" ticks three times and stops itself;
// "throw" has a timer throw and a later one still fire.
export default class Timers {
  constructor(room) {
    this.room = room;
  }

  onMessage(message, sender) {
    switch (message) {
      case "once":
        setTimeout((a, b) => sender.send(`fired ${a}${b}`), 20, "x", "y");
        break;
      case "cancel": {
        const first = setTimeout(() => sender.send("the cleared timer fired"), 5);
        setTimeout(() => sender.send("the later timer fired"), 30);
        clearTimeout(first);
        break;
      }
      case "interval": {
        let ticks = 0;
        const id = setInterval(() => {
          ticks++;
          sender.send(`tick ${ticks}`);
          if (ticks === 3) {
            clearInterval(id);
            setTimeout(() => sender.send("stopped"), 30);
          }
        }, 5);
        break;
      }
      case "throw":
        setTimeout(() => { throw new Error("boom"); }, 1);
        setTimeout(() => sender.send("still here"), 20);
        break;
    }
  }
}
