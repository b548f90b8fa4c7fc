//! Maps a request target to a party and room, the PartyKit way.
//!
//! `/parties/:party/:room[/*path]` reaches room `room` of party `party`, and
//! `/party/:room[/*path]` is the alias for the party `main`. A room id is the
//! percent-decoded path segment (it must decode to UTF-8), so `/parties/main/a%20b`
//! and a client that sends the space some other legal way reach the same room.

use std::borrow::Cow;

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Route<'a> {
    /// A room route: the party name, the raw (still encoded) room segment and
    /// the rest of the path after the room, with its leading '/', or "".
    Room { party: &'a str, room_raw: &'a str, rest: &'a str },
    /// Any other path: the server's fetch handler, if one is registered.
    Other,
}

pub(crate) fn route(path: &str) -> Route<'_> {
    if let Some(after) = path.strip_prefix("/parties/") {
        let (party, tail) = after.split_once('/').unwrap_or((after, ""));
        if party.is_empty() {
            return Route::Other;
        }
        let (room_raw, rest) = split_room(tail);
        if room_raw.is_empty() {
            return Route::Other;
        }
        return Route::Room { party, room_raw, rest };
    }
    if let Some(tail) = path.strip_prefix("/party/") {
        let (room_raw, rest) = split_room(tail);
        if room_raw.is_empty() {
            return Route::Other;
        }
        return Route::Room { party: "main", room_raw, rest };
    }
    Route::Other
}

fn split_room(tail: &str) -> (&str, &str) {
    match tail.find('/') {
        Some(i) => (&tail[..i], &tail[i..]),
        None => (tail, ""),
    }
}

/// Decodes a room segment into the room id, refusing ids that are not UTF-8,
/// empty, or longer than `max_bytes`.
pub(crate) fn decode_room(raw: &str, max_bytes: usize) -> Result<String, &'static str> {
    let id = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| "room id is not valid UTF-8 once percent-decoded")?;
    if id.is_empty() {
        return Err("room id is empty");
    }
    if id.len() > max_bytes {
        return Err("room id is too long");
    }
    Ok(id.into_owned())
}

/// The first value of query parameter `name`, form-decoded.
pub(crate) fn query_param<'a>(query: &'a str, name: &str) -> Option<Cow<'a, str>> {
    form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("/parties/main/lobby"), Route::Room { party: "main", room_raw: "lobby", rest: "" });
        assert_eq!(
            route("/parties/chat/r1/sub/path"),
            Route::Room { party: "chat", room_raw: "r1", rest: "/sub/path" }
        );
        assert_eq!(route("/party/lobby/x"), Route::Room { party: "main", room_raw: "lobby", rest: "/x" });
        assert_eq!(route("/parties/main"), Route::Other);
        assert_eq!(route("/parties/main/"), Route::Other);
        assert_eq!(route("/parties//room"), Route::Other);
        assert_eq!(route("/"), Route::Other);
        assert_eq!(route("/partyx/a"), Route::Other);
    }

    #[test]
    fn room_ids_are_percent_decoded_and_bounded() {
        assert_eq!(decode_room("a%20b", 10).unwrap(), "a b");
        assert_eq!(decode_room("caf%C3%A9", 10).unwrap(), "café");
        assert!(decode_room("%FF", 10).is_err());
        assert!(decode_room("abcdefghijk", 10).is_err());
    }

    #[test]
    fn query_params() {
        assert_eq!(query_param("_pk=abc&x=1", "_pk").as_deref(), Some("abc"));
        assert_eq!(query_param("x=1&_pk=a%2Fb", "_pk").as_deref(), Some("a/b"));
        assert_eq!(query_param("x=1", "_pk"), None);
    }
}
