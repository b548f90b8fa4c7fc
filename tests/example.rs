//! The `counter_chat` example party, run as written, through real sockets.

mod common;

backend_tests!(counter_chat_counts_over_http_and_chats_over_websocket,);

#[path = "../examples/counter_chat.rs"]
mod example;

use common::*;

fn counter_chat_counts_over_http_and_chats_over_websocket() {
    let server = dormouse::Server::new(config("")).party::<example::CounterChat>("counter").start().unwrap();
    let addr = server.local_addr();
    let mut ann = Client::connect(addr, "/parties/counter/r1?_pk=ann");
    assert_eq!(ann.recv_text(), "welcome ann, count is 0");
    assert_eq!(http(addr, "POST", "/parties/counter/r1", "", "5").text(), "5");
    assert_eq!(ann.recv_text(), "count is 5");
    let mut bob = Client::connect(addr, "/parties/counter/r1?_pk=bob");
    assert_eq!(bob.recv_text(), "welcome bob, count is 5");
    assert_eq!(ann.recv_text(), "bob joined");
    bob.send_text("hi ann");
    assert_eq!(ann.recv_text(), "bob: hi ann");
    assert_eq!(bob.recv_text(), "bob: hi ann");
    let state = http(addr, "GET", "/parties/counter/r1", "", "");
    assert_eq!(state.text(), r#"{"room":"r1","count":5,"online":2}"#);
    assert_eq!(state.header("content-type"), Some("application/json"));
    bob.send_frame(true, 8, &1000u16.to_be_bytes(), true);
    assert_eq!(ann.recv_text(), "bob left");
}
