//! A custom party written against dormouse's public API: a counter over HTTP
//! and a chat over WebSocket, in the same room.
//!
//! ```text
//! cargo run --release --example counter_chat
//! curl -X POST localhost:1999/parties/counter/r1 -d 5     # -> 5
//! curl localhost:1999/parties/counter/r1                  # -> {"room":"r1","count":5,"online":0}
//! websocat ws://localhost:1999/parties/counter/r1?_pk=ann # type lines to chat
//! ```

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
    tracing_subscriber::fmt().init();
    let server = Server::new(Config::embedded_default()).party::<CounterChat>("counter").start().unwrap_or_else(|e| {
        eprintln!("counter_chat: {e}");
        std::process::exit(1);
    });
    println!("listening on {}", server.local_addr());
    server.wait();
}
