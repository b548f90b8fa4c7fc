// A socket's messages, in arrival order: `next()` resolves with the next
// one (at once if it came already). Shared by the client scripts here.
export function inbox(socket, decode = (data) => String(data)) {
  const queue = [];
  let waiter = null;
  socket.addEventListener("message", (event) => {
    queue.push(decode(event.data));
    if (waiter) {
      const resolve = waiter;
      waiter = null;
      resolve();
    }
  });
  return async () => {
    while (queue.length === 0) await new Promise((resolve) => (waiter = resolve));
    return queue.shift();
  };
}
