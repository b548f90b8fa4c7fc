//! A custom party written against dormouse's public API: a counter over HTTP
//! and a chat over WebSocket, in the same room.
//!
//! ```text
//! cargo run --release --example counter_chat [-- --listen 127.0.0.1:2000]
//! curl -X POST localhost:1999/parties/counter/r1 -d 5     # -> 5
//! curl localhost:1999/parties/counter/r1                  # -> {"room":"r1","count":5,"online":0}
//! cargo run --release -- connect 'ws://localhost:1999/parties/counter/r1?_pk=ann'   # type lines to chat
//! ```
//!
//! SIGTERM or Ctrl-C stops it gracefully (sockets closed with 1001, the
//! store flushed), as the `dormouse` binary does.

use dormouse::{Config, ConnectCtx, Connection, Message, Party, Request, Response, Room, Server};

/// One room: a number anyone can add to over HTTP, and a chat whose
/// messages go to everyone, prefixed with the sender's id.
pub struct CounterChat {
    count: i64,
}

impl Party for CounterChat {
    fn new(_room: &Room) -> Self {
        CounterChat { count: 0 }
    }

    fn on_connect(&mut self, conn: &Connection<'_>, room: &Room, _ctx: &mut ConnectCtx<'_>) -> Result<(), String> {
        conn.send(format!("welcome {}, count is {}", conn.id(), self.count).as_str());
        room.broadcast(format!("{} joined", conn.id()).as_str(), &[conn.id()]);
        Ok(())
    }

    fn on_message(&mut self, message: Message<'_>, sender: &Connection<'_>, room: &Room) {
        match message {
            Message::Text(text) => room.broadcast(format!("{}: {text}", sender.id()).as_str(), &[]),
            Message::Binary(_) => sender.close(1003, "this chat takes text only"),
        }
    }

    fn on_close(&mut self, conn: &Connection<'_>, _code: u16, _reason: &str, room: &Room) {
        room.broadcast(format!("{} left", conn.id()).as_str(), &[conn.id()]);
    }

    fn on_request(&mut self, request: &Request, room: &Room) -> Response {
        match request.method() {
            "GET" => Response::json(
                200,
                format!(r#"{{"room":{:?},"count":{},"online":{}}}"#, room.id(), self.count, room.connection_count()),
            ),
            "POST" => match std::str::from_utf8(&request.body).ok().and_then(|s| s.trim().parse::<i64>().ok()) {
                Some(n) => {
                    self.count = self.count.saturating_add(n);
                    room.broadcast(format!("count is {}", self.count).as_str(), &[]);
                    Response::text(200, self.count.to_string())
                }
                None => Response::text(400, "the body must be an integer"),
            },
            _ => Response::text(405, "GET or POST"),
        }
    }
}

#[allow(dead_code)]
fn main() {
    serve(std::env::args().skip(1));
}

/// The example's `main` with its arguments (`--listen ADDR`): serves until
/// SIGTERM or SIGINT, then exits.
pub fn serve(mut args: impl Iterator<Item = String>) -> ! {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let mut config = Config::embedded_default();
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next().map(|addr| addr.parse())) {
            ("--listen", Some(Ok(addr))) => config.listen = addr,
            _ => {
                eprintln!("usage: counter_chat [--listen ADDR]");
                std::process::exit(2);
            }
        }
    }
    let server = Server::new(config).party::<CounterChat>("counter").start().unwrap_or_else(|e| {
        eprintln!("counter_chat: {e}");
        std::process::exit(1);
    });
    // Signals are handled before the address is announced, so whoever
    // starts this and reads the address may stop it at once.
    if let Err(e) = server.stop_on_signals() {
        eprintln!("counter_chat: cannot handle signals: {e}");
        std::process::exit(1);
    }
    println!("listening on {}", server.local_addr());
    server.wait();
    std::process::exit(0);
}
