//! JavaScript parties (PartyKit's server API on QuickJS-NG) through real
//! sockets: the class and object forms, connections, tags, state, HTTP, a
//! thrown exception, and the bounds (CPU, heap, stack) that fail only the
//! room that crosses them. The modules are in `tests/js/`.

mod common;

backend_tests!(
    the_class_form_serves_websockets_and_http_with_its_fields,
    the_object_form_passes_the_room_to_every_handler,
    an_exception_costs_only_its_event_and_one_in_on_connect_closes_1011,
    a_room_past_its_cpu_budget_heap_or_stack_fails_alone,
    js_rooms_that_come_and_go_are_dropped_and_collected,
    storage_keeps_every_kind_of_value_across_a_restart,
    storage_lists_deletes_and_runs_transactions,
    an_alarm_set_from_js_runs_on_alarm,
    a_typescript_project_importing_npm_packages_runs,
    the_web_platform_globals_work,
    a_partykit_json_project_serves_its_parties_vars_and_static_files,
    the_static_hooks_authorize_answer_or_pass_headers_on,
    a_hibernating_room_wakes_with_its_fields,
    timers_fire_repeat_and_are_cleared,
    a_stack_names_the_lines_of_the_typescript_source,
    the_partykit_chat_example_runs,
    commonjs_packages_are_bundled,
    rooms_call_other_rooms_through_context_parties,
    fetch_reaches_the_outside_from_messages_and_requests,
);

use common::*;

fn module(name: &str) -> String {
    format!("{}/tests/js/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A server with the `rooms` and `object` modules, and `extra` TOML after
/// them; `cores` overrides the two cores of the test config.
fn js_server(extra: &str, cores: Option<usize>) -> dormouse::ServerHandle {
    let toml = format!(
        "{extra}[parties.rooms]\nmain = '{}'\nvars = {{ GREETING = \"hi from env\" }}\n\
         [parties.object]\nmain = '{}'\n",
        module("rooms.js"),
        module("object.js")
    );
    let mut config = config(&toml);
    config.cores = cores.or(config.cores);
    dormouse::Server::new(config).start().expect("the JS parties start")
}

fn the_class_form_serves_websockets_and_http_with_its_fields() {
    let server = js_server("", None);
    let addr = server.local_addr();
    let mut ann = Client::connect(addr, "/parties/rooms/r1?_pk=ann&tag=red");
    assert_eq!(ann.recv_text(), "welcome ann to r1 (started: true)");
    let mut bob = Client::connect(addr, "/parties/rooms/r1?_pk=bob&tag=blue&tag=red");
    assert_eq!(bob.recv_text(), "welcome bob to r1 (started: true)");
    ann.send_text("who");
    assert_eq!(ann.recv_text(), "ann,bob");
    ann.send_text("all:hello bob");
    assert_eq!(bob.recv_text(), "hello bob");
    bob.send_text("tags");
    assert_eq!(bob.recv_text(), "bob,blue,red");
    bob.send_text("tag:red:to the reds");
    assert_eq!(ann.recv_text(), "to the reds");
    assert_eq!(bob.recv_text(), "to the reds");
    ann.send_text("state:kept");
    assert_eq!(ann.recv_text(), "state kept");
    ann.send_text("env");
    assert_eq!(ann.recv_text(), "env hi from env");
    ann.send_text("async");
    assert_eq!(ann.recv_text(), "after await");
    ann.send_frame(true, 2, &[1, 2, 3], true);
    assert_eq!(ann.recv().payload, [1, 2, 3]);
    // The room's fields are shared by sockets and HTTP.
    ann.send_text("count");
    let count = ann.recv_text();
    assert_eq!(count, "count 8");
    assert_eq!(http(addr, "POST", "/parties/rooms/r1", "", "10").text(), "18");
    let state = http(addr, "GET", "/parties/rooms/r1", "", "");
    assert_eq!(state.header("content-type"), Some("application/json"));
    assert_eq!(state.text(), r#"{"room":"r1","count":18,"online":2}"#);
    // Another room has its own instance (and its own globals).
    let mut cat = Client::connect(addr, "/parties/rooms/r2?_pk=cat");
    assert_eq!(cat.recv_text(), "welcome cat to r2 (started: true)");
    cat.send_text("count");
    assert_eq!(cat.recv_text(), "count 1");
    // A room can close a connection; the others hear it leave.
    bob.send_text("bye");
    assert_eq!(bob.expect_close(), (4000, "bye from js".to_owned()));
    assert_eq!(ann.recv_text(), "left bob");
}

fn the_object_form_passes_the_room_to_every_handler() {
    let server = js_server("", None);
    let addr = server.local_addr();
    let mut ann = Client::connect(addr, "/parties/object/lobby?_pk=ann");
    assert_eq!(ann.recv_text(), "hello ann in lobby");
    ann.send_text("hi all");
    assert_eq!(ann.recv_text(), "ann: hi all");
    let response = http(addr, "GET", "/parties/object/lobby", "", "");
    assert_eq!((response.status, response.text().as_str()), (201, "object form in lobby"));
    assert_eq!(response.header("x-form"), Some("object"));
    // ws.addEventListener: the listeners hear messages and the close.
    ann.send_text("listen");
    assert_eq!(ann.recv_text(), "ann: listen");
    assert_eq!(ann.recv_text(), "listener heard ann");
    let mut bob = Client::connect(addr, "/parties/object/lobby?_pk=bob");
    assert_eq!(bob.recv_text(), "hello bob in lobby");
    bob.send_frame(true, 8, &[0x0f, 0xa0], true);
    bob.expect_close();
    assert_eq!(ann.recv_text(), "bob closed 4000");
}

fn an_exception_costs_only_its_event_and_one_in_on_connect_closes_1011() {
    let server = js_server("", None);
    let addr = server.local_addr();
    let mut ann = Client::connect(addr, "/parties/rooms/e?_pk=ann");
    ann.recv_text();
    ann.send_text("throw");
    ann.send_text("count");
    assert_eq!(ann.recv_text(), "count 2", "the room carries on, its fields intact");
    let mut refused = Client::connect(addr, "/parties/rooms/e?_pk=refuse-me");
    assert_eq!(refused.expect_close(), (1011, "Error: refused refuse-me".to_owned()));
    ann.send_text("who");
    assert_eq!(ann.recv_text(), "ann");
}

fn a_room_past_its_cpu_budget_heap_or_stack_fails_alone() {
    // One core, so the failing room and its neighbour share the core and
    // its JS runtime.
    let limits = "[limits]\njs_event_budget_ms = 50\njs_heap_bytes_per_core = 33554432\n";
    let server = js_server(limits, Some(1));
    let addr = server.local_addr();
    let mut neighbour = Client::connect(addr, "/parties/rooms/calm?_pk=n");
    neighbour.recv_text();
    for (command, reason) in [
        ("loop", "room failed: onMessage ran past its CPU budget of 50 ms"),
        ("hog", "room failed: onMessage: InternalError: out of memory"),
        ("deep", "room failed: onMessage: RangeError: Maximum call stack size exceeded"),
    ] {
        let mut victim = Client::connect(addr, &format!("/parties/rooms/{command}?_pk=v"));
        victim.recv_text();
        victim.send_text(command);
        assert_eq!(victim.expect_close(), (1011, reason.to_owned()));
        neighbour.send_text("count");
        let count = neighbour.recv_text();
        assert!(count.starts_with("count "), "the neighbour still answers after {reason}: {count}");
        // The failed room starts afresh on its next event.
        let mut again = Client::connect(addr, &format!("/parties/rooms/{command}?_pk=w"));
        assert_eq!(again.recv_text(), format!("welcome w to {command} (started: true)"));
    }
    assert_eq!(http(addr, "GET", "/parties/rooms/calm", "", "").status, 200);
}

/// A server with the `storage` module, keeping its data in `dir`.
fn storage_server(dir: &std::path::Path) -> dormouse::ServerHandle {
    let mut config = config(&format!("[parties.storage]\nmain = '{}'\n", module("storage.js")));
    config.data_dir = dir.to_owned();
    dormouse::Server::new(config).start().expect("the JS party starts")
}

fn storage_keeps_every_kind_of_value_across_a_restart() {
    let dir = fresh_data_dir();
    let expected = concat!(
        r#"{undef:undefined,nul:null,yes:true,no:false,int:42,neg:-7,float:1.5,nan:NaN,"#,
        r#"big:12345678901234567890123n,text:"héllo ✓",empty:"",date:Date(2026-12-01T12:00:00.000Z),"#,
        r#"map:Map{"a"=>1,2=>"two"},set:Set{1,"x"},buffer:ArrayBuffer[1,2,255],bytes:Uint8Array[9,8],"#,
        r#"floats:Float64Array[0.25],view:DataView[7],nested:[[1,[2,{deep:[3]}]],{shared:true},<cycle>],"#,
        r#"self:<cycle>} sharing:true"#
    );
    let server = storage_server(&dir);
    let addr = server.local_addr();
    assert_eq!(http(addr, "POST", "/parties/storage/s/put-all", "", "").text(), "stored");
    // Read back in the next event (from the event's writes or LMDB).
    assert_eq!(http(addr, "GET", "/parties/storage/s/get-all", "", "").text(), expected);
    let refused = http(addr, "POST", "/parties/storage/s/put-fn", "", "");
    assert_eq!(refused.status, 400);
    assert!(refused.text().starts_with("DataCloneError: "), "{}", refused.text());
    server.shutdown();
    // A new process's room reads it from disk.
    let server = storage_server(&dir);
    let addr = server.local_addr();
    assert_eq!(http(addr, "GET", "/parties/storage/s/get-all", "", "").text(), expected);
}

fn storage_lists_deletes_and_runs_transactions() {
    let server = storage_server(&fresh_data_dir());
    let addr = server.local_addr();
    let call = |what: &str, body: &str| http(addr, "POST", &format!("/parties/storage/l/{what}"), "", body).text();
    for key in ["b", "a", "c", "ab", "d"] {
        assert_eq!(call(&format!("put?key={key}"), &format!("v{key}")), "ok");
    }
    assert_eq!(call("get?key=ab", ""), "vab");
    assert_eq!(call("get?key=zz", ""), "undefined");
    assert_eq!(call("list", ""), "a=va,ab=vab,b=vb,c=vc,d=vd");
    assert_eq!(call("list?prefix=a", ""), "a=va,ab=vab");
    assert_eq!(call("list?start=ab&end=d", ""), "ab=vab,b=vb,c=vc");
    assert_eq!(call("list?reverse&limit=2", ""), "d=vd,c=vc");
    assert_eq!(call("many", ""), r#"Map{"m1"=>"one","m3"=>"three"} deleted:1,true after:Map{"m3"=>"three"}"#);
    assert_eq!(call("txn-throw", ""), "before,undefined", "a transaction that throws is undone");
    assert_eq!(call("txn-rollback", ""), "undefined", "rollback() undoes it");
    assert_eq!(call("txn-commit", ""), "7,committed");
    assert_eq!(call("no-alarm", ""), "null");
    assert_eq!(call("delete-all", ""), "0");
    assert_eq!(call("list", ""), "");
}

fn an_alarm_set_from_js_runs_on_alarm() {
    let server = storage_server(&fresh_data_dir());
    let addr = server.local_addr();
    let mut ann = Client::connect(addr, "/parties/storage/alarmed?_pk=ann");
    assert_eq!(http(addr, "POST", "/parties/storage/alarmed/alarm?in=30", "", "").text(), "true");
    // The alarm is cleared before onAlarm runs.
    assert_eq!(ann.recv_text(), "alarm 1 null");
}

/// `tests/js/project`, its npm packages installed from its lockfile.
fn project() -> std::path::PathBuf {
    npm_installed("tests/js/project", &["nanoid", "zod", "ms", "cookie"])
}

fn a_typescript_project_importing_npm_packages_runs() {
    let main = project().join("src/server.ts");
    let toml = format!("[parties.main]\nmain = '{}'\nvars = {{ WHO = \"tests\" }}\n", main.display());
    let server = dormouse::Server::new(config(&toml)).start().expect("the TypeScript party starts");
    let addr = server.local_addr();
    let mut ann = Client::connect(addr, "/party/ts?_pk=ann");
    // settings.json, the enum of util.ts, nanoid's 21 characters.
    assert_eq!(ann.recv_text(), "hello ann (Happy) id-length 21");
    ann.send_text(r#"{"say":"hi","times":2}"#);
    assert_eq!(ann.recv_text(), "HI!HI!");
    // zod refuses a bad command.
    ann.send_text(r#"{"say":"hi","times":7}"#);
    assert_eq!(ann.recv_text(), "invalid: times");
    assert_eq!(http(addr, "GET", "/party/ts", "", "").text(), r#"{"said":["HI!HI!"],"env":"tests"}"#);
}

fn a_partykit_json_project_serves_its_parties_vars_and_static_files() {
    // Options for the project's `counter` party come from the TOML.
    let mut config = config("[parties.counter]\ndurability = \"strict\"\n");
    config.partykit = Some(project().join("partykit.json"));
    let server = dormouse::Server::new(config).start().expect("the project starts");
    let addr = server.local_addr();
    let mut ann = Client::connect(addr, "/parties/main/p?_pk=ann");
    assert_eq!(ann.recv_text(), "hello ann (Happy) id-length 21");
    assert_eq!(http(addr, "GET", "/party/p", "", "").text(), r#"{"said":[],"env":"partykit.json"}"#);
    assert_eq!(http(addr, "POST", "/parties/counter/c", "", "").text(), r#"counter/c 1 {"max":3}"#);
    assert_eq!(http(addr, "POST", "/parties/counter/c", "", "").text(), r#"counter/c 2 {"max":3}"#);
    // The serve folder, for paths that are not rooms.
    let index = http(addr, "GET", "/", "", "");
    assert_eq!((index.status, index.header("content-type")), (200, Some("text/html; charset=utf-8")));
    assert!(index.text().contains("static index"));
    let script = http(addr, "GET", "/assets/app.js", "", "");
    assert_eq!(script.header("content-type"), Some("text/javascript; charset=utf-8"));
    assert_eq!(http(addr, "GET", "/assets/style.css", "", "").header("content-type"), Some("text/css; charset=utf-8"));
    assert_eq!(http(addr, "GET", "/assets/missing.js", "", "").status, 404);
    assert_eq!(http(addr, "POST", "/", "", "").status, 404);
}

#[test]
fn a_broken_partykit_json_stops_the_binary_with_exit_2() {
    for (file, expected) in [("broken.json", "party \"Bad Name\""), ("missing.json", "cannot read it")] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_dormouse"))
            .args(["serve", "--listen", "127.0.0.1:0", "--partykit"])
            .arg(project().join(file))
            .arg("--data-dir")
            .arg(fresh_data_dir())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(file) && stderr.contains(expected), "{stderr}");
    }
}

fn the_static_hooks_authorize_answer_or_pass_headers_on() {
    let toml = format!(
        "[parties.main]\nmain = '{}'\nvars = {{ FOO = \"bar\" }}\n[parties.object]\nmain = '{}'\n",
        module("hooks.js"),
        module("object.js")
    );
    let server = dormouse::Server::new(config(&toml)).start().expect("the JS parties start");
    let addr = server.local_addr();
    // onBeforeConnect: a Request passes its headers on to onConnect.
    let mut ann = Client::connect(addr, "/party/h?_pk=ann&token=t1");
    assert_eq!(ann.recv_text(), "user-t1-in-h");
    // A throw is 401 with the message; a Response is the answer.
    let refused = http(addr, "GET", "/party/h?token=bad", UPGRADE_HEADERS, "");
    assert_eq!((refused.status, refused.text().as_str()), (401, "Error: bad token"));
    let teapot = http(addr, "GET", "/party/h?token=teapot", UPGRADE_HEADERS, "");
    assert_eq!((teapot.status, teapot.text().as_str()), (418, "short and stout"));
    assert_eq!(teapot.header("x-tea"), Some("yes"));
    // One past its CPU budget is a 500; the next call gets a fresh lobby.
    let stuck = http(addr, "GET", "/party/h?token=loop", UPGRADE_HEADERS, "");
    assert_eq!(
        (stuck.status, stuck.text().as_str()),
        (500, "onBeforeConnect failed: ran past its CPU budget of 100 ms")
    );
    let mut bob = Client::connect(addr, "/party/h?_pk=bob&token=t2");
    assert_eq!(bob.recv_text(), "user-t2-in-h");
    // onBeforeRequest.
    assert_eq!(http(addr, "GET", "/party/h", "", "").status, 403);
    let checked = http(addr, "GET", "/party/h", "authorization: Bearer x\r\n", "");
    assert_eq!(checked.text(), "checked h Bearer x");
    // onFetch answers the paths that are not rooms.
    let fetched = http(addr, "GET", "/some/page", "", "");
    assert_eq!((fetched.status, fetched.text().as_str()), (202, "fetched /some/page bar"));
    // The object form's onBeforeConnect.
    let blocked = http(addr, "GET", "/parties/object/o?_pk=blocked-1", UPGRADE_HEADERS, "");
    assert_eq!((blocked.status, blocked.text().as_str()), (403, "not in o"));
    let mut fine = Client::connect(addr, "/parties/object/o?_pk=fine");
    assert_eq!(fine.recv_text(), "hello fine in o");
}

fn a_hibernating_room_wakes_with_its_fields() {
    // `hibernate` comes from the class's options; the TOML sets only the idle
    // time: long enough that a loaded machine does not evict the room
    // between a message and the next (20 ms did, before the first message).
    let toml = format!("[parties.sleepy]\nmain = '{}'\nidle_evict_ms = 300\n", module("hibernating.ts"));
    let server = dormouse::Server::new(config(&toml)).start().expect("the JS party starts");
    let addr = server.local_addr();
    let mut ann = Client::connect(addr, "/parties/sleepy/s?_pk=ann");
    ann.send_text("add:one");
    let first =
        r#"{"messages":["one"],"seen":["ann=ann"],"since":"2026-01-01T00:00:00.000Z","starts":1,"room":"s","adds":1}"#;
    assert_eq!(ann.recv_text(), first);
    wait_for_counter(&server, "rooms_evicted", 1);
    assert_eq!(server.rooms_resident(), 0, "the room's context is gone from memory");
    // The next message wakes it: constructor, fields, onStart again.
    ann.send_text("add:two");
    let woken = r#"{"messages":["one","two"],"seen":["ann=ann"],"since":"2026-01-01T00:00:00.000Z","starts":2,"room":"s","adds":2}"#;
    assert_eq!(ann.recv_text(), woken);
    assert_eq!(server.counter("rooms_woken"), 1);
    // A field that cannot be kept: the room wakes fresh (and says why in the log).
    ann.send_text("poison");
    ann.recv_text();
    // Evicted after the poison (the idle time may also have evicted it
    // before, under load, so the eviction count does not tell): the room
    // answered, so it was resident, and is not once evicted.
    let deadline = std::time::Instant::now() + GUARD;
    while server.rooms_resident() != 0 {
        assert!(std::time::Instant::now() < deadline, "the poisoned room was not evicted");
        std::thread::yield_now();
    }
    ann.send_text("get");
    let fresh = r#"{"messages":[],"seen":[],"since":"2026-01-01T00:00:00.000Z","starts":1,"room":"s","adds":2}"#;
    assert_eq!(ann.recv_text(), fresh);
}

fn timers_fire_repeat_and_are_cleared() {
    let toml = format!("[parties.timers]\nmain = '{}'\n", module("timers.js"));
    let server = dormouse::Server::new(config(&toml)).start().expect("the JS party starts");
    let mut ann = Client::connect(server.local_addr(), "/parties/timers/t?_pk=ann");
    ann.send_text("once");
    assert_eq!(ann.recv_text(), "fired xy");
    ann.send_text("cancel");
    assert_eq!(ann.recv_text(), "the later timer fired");
    ann.send_text("interval");
    for tick in 1..=3 {
        assert_eq!(ann.recv_text(), format!("tick {tick}"));
    }
    assert_eq!(ann.recv_text(), "stopped", "no tick after clearInterval");
    ann.send_text("throw");
    assert_eq!(ann.recv_text(), "still here", "a timer that throws costs only itself");
}

fn a_stack_names_the_lines_of_the_typescript_source() {
    let toml = format!("[parties.stack]\nmain = '{}'\n", module("stack.ts"));
    let server = dormouse::Server::new(config(&toml)).start().expect("the JS party starts");
    let stack = http(server.local_addr(), "GET", "/parties/stack/s", "", "").text();
    let lines: Vec<&str> = stack.lines().collect();
    assert!(lines[0].starts_with("    at explode (stack.ts:26:"), "{stack}");
    assert!(lines[1].starts_with("    at onRequest (stack.ts:17:"), "{stack}");
}

fn rooms_call_other_rooms_through_context_parties() {
    let main = module("parties.js");
    let toml = format!("[parties.lobby]\nmain = '{main}'\n[parties.game]\nmain = '{main}'\n");
    let server = dormouse::Server::new(config(&toml)).start().expect("the JS parties start");
    let addr = server.local_addr();
    // From a socket's message: the answer resumes the handler in a later event.
    let mut ann = Client::connect(addr, "/parties/lobby/main?_pk=ann");
    ann.send_text("join:g1");
    assert_eq!(ann.recv_text(), r#"200 {"game":"g1","count":5}"#);
    ann.send_text("join:g2");
    assert_eq!(ann.recv_text(), r#"200 {"game":"g2","count":5}"#);
    ann.send_text("join:g2");
    assert_eq!(ann.recv_text(), r#"200 {"game":"g2","count":10}"#);
    // From onRequest: the HTTP response waits for the other rooms' answers.
    assert_eq!(http(addr, "GET", "/parties/lobby/main/total?games=g1,g2", "", "").text(), "15");
    // A cycle (lobby -> game -> lobby) does not deadlock.
    assert_eq!(http(addr, "GET", "/parties/lobby/main/cycle", "", "").text(), "lobby got: game saw plain");
    assert_eq!(http(addr, "GET", "/parties/lobby/main/nowhere", "", "").text(), r#"404 no party "nope""#);
    // A socket to another room is a member there: greeted by its onConnect,
    // answered by its onMessage, reached by its broadcasts (as a client of
    // that room is); its close is heard on both sides.
    let mut bob = Client::connect(addr, "/parties/game/g1?_pk=bob");
    assert_eq!(bob.recv_text(), "welcome /parties/game/g1?_pk=bob");
    assert_eq!(
        http(addr, "GET", "/parties/lobby/main/watch?game=g1", "", "").text(),
        "welcome /parties/game/g1/live?via=lobby | count 5 | lobby was here | closed 4001 | state 3"
    );
    assert_eq!(bob.recv_text(), "lobby was here");
    assert_eq!(
        http(addr, "GET", "/parties/lobby/main/refused", "", "").text(),
        r#"the room socket was refused: no party "nope""#
    );
}

fn commonjs_packages_are_bundled() {
    let main = project().join("src/cjs.ts");
    let server = dormouse::Server::new(config(&format!("[parties.cjs]\nmain = '{}'\n", main.display())))
        .start()
        .expect("the party with CommonJS imports starts");
    let response = http(server.local_addr(), "GET", "/parties/cjs/c", "cookie: flavour=oat; x=1\r\n", "");
    let expected = [
        "172800000",
        "oat",
        "a=b%20c",
        "5",
        "legacy",
        r#"require("ms") in legacy/a.cjs: only require() calls with a string literal are bundled"#,
    ];
    assert_eq!(response.text(), expected.join(" | "));
}

/// `examples/partykit-chat`, as the README runs it, with a short idle time
/// so its rooms hibernate during the test, keeping its data in `dir`.
fn chat_example(dir: &std::path::Path) -> dormouse::ServerHandle {
    let mut config = config("[parties.main]\nidle_evict_ms = 20\n");
    config.partykit =
        Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/partykit-chat/partykit.json"));
    config.data_dir = dir.to_owned();
    dormouse::Server::new(config).start().expect("the example starts")
}

fn the_partykit_chat_example_runs() {
    let dir = fresh_data_dir();
    let server = chat_example(&dir);
    let addr = server.local_addr();
    let mut ann = Client::connect(addr, "/party/lobby?_pk=ann&role=moderator");
    assert_eq!(ann.recv_text(), r#"{"type":"history","messages":[]}"#);
    let mut bob = Client::connect(addr, "/party/lobby?_pk=bob");
    bob.recv_text();
    bob.send_text("hi all");
    for client in [&mut ann, &mut bob] {
        let text = client.recv_text();
        assert!(text.starts_with(r#"{"type":"message","from":"bob","text":"hi all","at":"#), "{text}");
    }
    // To the moderators only.
    bob.send_text("/mods psst");
    assert_eq!(ann.recv_text(), r#"{"type":"mods","from":"bob","text":"psst"}"#);
    // Hibernated, woken with its history in memory.
    wait_for_counter(&server, "rooms_evicted", 1);
    let mut cat = Client::connect(addr, "/party/lobby?_pk=cat");
    assert!(cat.recv_text().contains(r#""text":"hi all""#));
    assert!(server.counter("rooms_woken") >= 1);
    // Export and import over HTTP.
    let imported = http(addr, "POST", "/party/lobby", "", r#"[{"from":"old","text":"from partykit","at":1}]"#);
    assert_eq!(imported.text(), r#"{"imported":1,"total":2}"#);
    assert!(http(addr, "GET", "/party/lobby", "", "").text().contains("from partykit"));
    // The page is served, and a restart keeps the history (room storage).
    assert!(http(addr, "GET", "/", "", "").text().contains("partykit-chat"));
    drop((ann, bob, cat));
    server.shutdown();
    let server = chat_example(&dir);
    let exported = http(server.local_addr(), "GET", "/party/lobby", "", "").text();
    assert!(exported.contains("hi all") && exported.contains("from partykit"), "{exported}");
}

/// The headers of a WebSocket upgrade, for `http`.
const UPGRADE_HEADERS: &str = "upgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-version: 13\r\n\
                               sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

fn the_web_platform_globals_work() {
    let toml = format!("[parties.globals]\nmain = '{}'\n", module("globals.js"));
    let server = dormouse::Server::new(config(&toml)).start().expect("the JS party starts");
    let response = http(server.local_addr(), "GET", "/parties/globals/g", "", "");
    assert_eq!(response.status, 200, "{}", response.text());
    let expected = [
        "text: héllo ✓ 10",
        "base64: aMOpbGxv aMOpbGxv true",
        "uuid: true true",
        "random: true",
        "clone: true true false",
        "microtask: ran",
        "abort: true AbortError fired",
        "fetch: TypeError",
        "stream: streamed body 2 true null",
    ];
    assert_eq!(response.text(), expected.join("\n"));
}

fn js_rooms_that_come_and_go_are_dropped_and_collected() {
    // Past 64 dropped contexts the core collects them (QuickJS frees a
    // context only in a collection): rooms keep being made and dropped, and
    // every one starts.
    let toml = format!("[parties.object]\nmain = '{}'\nidle_drop_ms = 20\n", module("object.js"));
    let server = dormouse::Server::new(config(&toml)).start().unwrap();
    let addr = server.local_addr();
    let mut stream = connect_tcp(addr);
    let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
    for round in 0..3 {
        for i in 0..100 {
            let request = format!("GET /parties/object/r{round}-{i} HTTP/1.1\r\nhost: t\r\n\r\n");
            std::io::Write::write_all(&mut stream, request.as_bytes()).unwrap();
            assert_eq!(read_response(&mut reader).status, 201);
        }
    }
    assert_eq!(server.counter("rooms_created"), 300);
    let deadline = std::time::Instant::now() + GUARD;
    while server.counter("rooms_dropped") < 300 {
        assert!(std::time::Instant::now() < deadline, "{} rooms dropped", server.counter("rooms_dropped"));
        std::thread::yield_now();
    }
}

#[test]
fn an_import_that_does_not_resolve_or_bad_typescript_stops_start_up_with_its_place() {
    let start = |main: &std::path::Path| {
        let toml = format!("[parties.bad]\nmain = '{}'\n", main.display());
        dormouse::Server::new(config(&toml)).start().err().expect("a broken project stops start-up").to_string()
    };
    let text = start(&project().join("src/broken-import.ts"));
    assert!(text.starts_with("broken-import.ts:1:25: cannot resolve \"./no-such-file\""), "{text}");
    let dir = fresh_data_dir();
    std::fs::write(dir.join("bad.ts"), "export default class {\n  x: number = ;\n}\n").unwrap();
    let text = start(&dir.join("bad.ts"));
    assert!(text.starts_with("bad.ts:2:15: SyntaxError: "), "{text}");
    std::fs::write(dir.join("node.ts"), "import fs from \"node:fs\";\nexport default { fs };\n").unwrap();
    let text = start(&dir.join("node.ts"));
    assert!(text.contains("node.ts:1:16: cannot resolve \"node:fs\": Node.js's built-in modules"), "{text}");
}

#[test]
fn a_module_with_a_syntax_error_stops_start_up_with_its_place() {
    let toml = format!("[parties.bad]\nmain = '{}'\n", module("bad.js"));
    let error = dormouse::Server::new(config(&toml)).start().err().expect("a broken module stops start-up");
    let text = error.to_string();
    assert!(text.contains("bad.js:3:") && text.contains("SyntaxError"), "{text}");
    // The binary: exit 2 with the same message.
    let path = std::env::temp_dir().join(format!("dormouse-bad-js-{}.toml", std::process::id()));
    std::fs::write(&path, format!("listen = \"127.0.0.1:0\"\n{toml}")).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_dormouse"))
        .args(["serve", "--config"])
        .arg(&path)
        .arg("--data-dir")
        .arg(fresh_data_dir())
        .output()
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("bad.js:3:"), "{stderr}");
}

fn fetch_reaches_the_outside_from_messages_and_requests() {
    let up = common::upstream::upstream();
    let toml = format!("fetch_allow = [\"127.0.0.1\"]\n[parties.fetching]\nmain = '{}'\n", module("fetch.js"));
    let server = dormouse::Server::new(config(&toml)).start().expect("the JS party starts");
    let addr = server.local_addr();
    let base = format!("http://{}", up.addr);
    let mut client = Client::connect(addr, "/parties/fetching/r1");
    client.send_text(&format!("get {base}/hello"));
    assert_eq!(client.recv_text(), "200 true yes hello");
    client.send_text(&format!("get {base}/echo"));
    assert_eq!(client.recv_text(), "201 true null GET r1 ", "the room's header went out");
    client.send_text(&format!("post {base}/echo"));
    assert_eq!(client.recv_text(), "201 true POST js from js");
    client.send_text(&format!("json {base}/json"));
    assert_eq!(client.recv_text(), "n=1");
    client.send_text(&format!("bytes {base}/big"));
    assert_eq!(client.recv_text(), "bytes=5000");
    client.send_text(&format!("abort {base}/hold"));
    assert_eq!(client.recv_text(), "TimeoutError: The operation timed out");
    // Loopback without fetch_allow, and a bad URL: a TypeError, as a
    // browser's failed fetch is.
    let refused = dormouse::Server::new(config(&format!("[parties.fetching]\nmain = '{}'\n", module("fetch.js"))))
        .start()
        .unwrap();
    let mut other = Client::connect(refused.local_addr(), "/parties/fetching/r");
    other.send_text(&format!("get {base}/hello"));
    let answer = other.recv_text();
    assert!(answer.starts_with("TypeError: fetch failed: ") && answer.contains("private or local"), "{answer}");
    other.send_text("get nowhere");
    assert!(other.recv_text().starts_with("TypeError: "));
    // onRequest awaiting a fetch: its response waits for the upstream's.
    let proxied = http(addr, "GET", &format!("/parties/fetching/r2?url={base}/hello"), "", "");
    assert_eq!((proxied.status, proxied.text()), (200, "proxied hello".to_owned()));
    drop(up.release);
}
