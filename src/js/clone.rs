//! The encoding of JavaScript values in room storage (and in the snapshot
//! of a hibernating room's fields): structured-clone-like, binary and
//! versioned, not JSON text of the value.
//!
//! A stored value is one version byte (`1`) and one encoded value:
//!
//! | tag  | value        | then                                                   |
//! |------|--------------|--------------------------------------------------------|
//! | 0x00 | `undefined`  |                                                        |
//! | 0x01 | `null`       |                                                        |
//! | 0x02 | `false`      |                                                        |
//! | 0x03 | `true`       |                                                        |
//! | 0x04 | int          | i32, little-endian                                     |
//! | 0x05 | number       | f64, little-endian                                     |
//! | 0x06 | string       | varint byte length, UTF-8                              |
//! | 0x07 | bigint       | varint length, its decimal digits (ASCII, `-` first)   |
//! | 0x08 | `Date`       | f64 milliseconds since the epoch                       |
//! | 0x09 | array        | varint length, that many values (holes as `undefined`) |
//! | 0x0a | object       | varint count, that many (string key, value) pairs      |
//! | 0x0b | `Map`        | varint count, that many (key value, value) pairs       |
//! | 0x0c | `Set`        | varint count, that many values                         |
//! | 0x0d | `ArrayBuffer`| varint length, the bytes                               |
//! | 0x0e | view         | kind byte (see `VIEWS`), varint length, the bytes      |
//! | 0x0f | reference    | varint index of an object met before                   |
//! | 0x10 | `Connection` | its id (varint length, UTF-8): the open one of that id |
//! | 0x11 | `room`       | the room the value is read in                          |
//!
//! Strings and object keys are varint length + UTF-8 without a tag. Objects
//! (arrays, plain objects, maps, sets, dates, buffers and views) are
//! numbered in the order they are first met; meeting one again writes a
//! reference, so shared and cyclic structures come back as they were. A
//! plain object keeps its own enumerable string-keyed properties (a class
//! instance comes back as a plain object, as with `structuredClone`).
//! A room's `Connection` handles and its `room` object are stored by
//! reference (a connection by id; it reads back as `null` once that
//! connection has closed), so a hibernating room's `this.room` and maps of
//! connections come back as they were. Functions, symbols, promises and
//! other host objects cannot be stored: encoding them throws
//! `DataCloneError`.

use rquickjs::function::This;
use rquickjs::{Array, ArrayBuffer, Ctx, Exception, Function, Object, Type, Value};
use std::collections::HashMap;

/// The version byte every encoded value starts with.
const VERSION: u8 = 1;

/// How deep values may nest; deeper ones are refused, not a stack overflow.
const MAX_DEPTH: usize = 256;

/// Typed array and `DataView` constructors, by the kind byte that stands
/// for them (their index here). Only appended to: the index is on disk.
const VIEWS: [&str; 12] = [
    "Int8Array",
    "Uint8Array",
    "Uint8ClampedArray",
    "Int16Array",
    "Uint16Array",
    "Int32Array",
    "Uint32Array",
    "Float32Array",
    "Float64Array",
    "BigInt64Array",
    "BigUint64Array",
    "DataView",
];

mod tag {
    pub const UNDEFINED: u8 = 0x00;
    pub const NULL: u8 = 0x01;
    pub const FALSE: u8 = 0x02;
    pub const TRUE: u8 = 0x03;
    pub const INT: u8 = 0x04;
    pub const FLOAT: u8 = 0x05;
    pub const STRING: u8 = 0x06;
    pub const BIGINT: u8 = 0x07;
    pub const DATE: u8 = 0x08;
    pub const ARRAY: u8 = 0x09;
    pub const OBJECT: u8 = 0x0a;
    pub const MAP: u8 = 0x0b;
    pub const SET: u8 = 0x0c;
    pub const BUFFER: u8 = 0x0d;
    pub const VIEW: u8 = 0x0e;
    pub const REFERENCE: u8 = 0x0f;
    pub const CONNECTION: u8 = 0x10;
    pub const ROOM: u8 = 0x11;
}

/// The constructors the codec recognises, read from the context's globals
/// as the prelude saved them (before the module could replace them).
struct Classes<'js> {
    date: Object<'js>,
    map: Object<'js>,
    set: Object<'js>,
    views: Vec<Object<'js>>,
    /// `(iterable) => [...iterable]`, to read a Map's or Set's entries.
    entries: Function<'js>,
    /// `BigInt`, to make one from its digits.
    bigint: Function<'js>,
    /// `String`, to write a bigint's digits.
    string: Function<'js>,
    /// The prelude's `Connection` class.
    connection: Object<'js>,
    /// The context's `room`.
    room: Value<'js>,
    /// `(id) => room.getConnection(id) ?? null`.
    connection_of: Function<'js>,
}

impl<'js> Classes<'js> {
    fn of(ctx: &Ctx<'js>) -> rquickjs::Result<Classes<'js>> {
        let runtime: Object = ctx.globals().get("__dormouse")?;
        let saved: Object = runtime.get("classes")?;
        let views = VIEWS.iter().map(|name| saved.get(*name)).collect::<rquickjs::Result<_>>()?;
        Ok(Classes {
            date: saved.get("Date")?,
            map: saved.get("Map")?,
            set: saved.get("Set")?,
            views,
            entries: saved.get("entries")?,
            bigint: saved.get("BigInt")?,
            string: saved.get("String")?,
            connection: saved.get("Connection")?,
            room: saved.get("room")?,
            connection_of: saved.get("connectionOf")?,
        })
    }
}

/// Throws `DataCloneError` with `message`.
fn clone_error<'js>(ctx: &Ctx<'js>, message: &str) -> rquickjs::Error {
    match Exception::from_message(ctx.clone(), message).and_then(|e| {
        e.as_object().set("name", "DataCloneError")?;
        Ok(e)
    }) {
        Ok(e) => ctx.throw(e.into_value()),
        Err(error) => error,
    }
}

fn varint(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn bytes(out: &mut Vec<u8>, data: &[u8]) {
    varint(out, data.len());
    out.extend_from_slice(data);
}

/// Encodes `value` (with the version byte).
pub(super) fn encode<'js>(ctx: &Ctx<'js>, value: &Value<'js>) -> rquickjs::Result<Vec<u8>> {
    let classes = Classes::of(ctx)?;
    let mut encoder = Encoder { ctx, classes, seen: HashMap::new(), alive: Vec::new(), out: vec![VERSION] };
    encoder.value(value, 0)?;
    Ok(encoder.out)
}

struct Encoder<'a, 'js> {
    ctx: &'a Ctx<'js>,
    classes: Classes<'js>,
    /// Objects met so far, by address, to their numbers.
    seen: HashMap<usize, usize>,
    /// The objects met, held so that none is freed (and its address
    /// reused) while the value is encoded: a getter may make and drop
    /// objects.
    alive: Vec<Object<'js>>,
    out: Vec<u8>,
}

/// An object's address, its identity while it is alive.
fn address(object: &Object<'_>) -> usize {
    // SAFETY: only the pointer bits of a value known to be an object are
    // read; nothing is dereferenced.
    #[allow(unsafe_code)]
    unsafe {
        rquickjs::qjs::JS_VALUE_GET_PTR(object.as_raw()) as usize
    }
}

impl<'js> Encoder<'_, 'js> {
    fn value(&mut self, value: &Value<'js>, depth: usize) -> rquickjs::Result<()> {
        if depth > MAX_DEPTH {
            return Err(clone_error(self.ctx, &format!("the value nests deeper than {MAX_DEPTH} levels")));
        }
        match value.type_of() {
            Type::Undefined | Type::Uninitialized => self.out.push(tag::UNDEFINED),
            Type::Null => self.out.push(tag::NULL),
            Type::Bool => self.out.push(if value.as_bool() == Some(true) { tag::TRUE } else { tag::FALSE }),
            Type::Int => {
                self.out.push(tag::INT);
                self.out.extend_from_slice(&value.as_int().unwrap_or_default().to_le_bytes());
            }
            Type::Float => {
                self.out.push(tag::FLOAT);
                self.out.extend_from_slice(&value.as_float().unwrap_or_default().to_le_bytes());
            }
            Type::String => {
                self.out.push(tag::STRING);
                let text: String = value.get()?;
                bytes(&mut self.out, text.as_bytes());
            }
            Type::BigInt => {
                self.out.push(tag::BIGINT);
                let digits: String = self.classes.string.call((value.clone(),))?;
                bytes(&mut self.out, digits.as_bytes());
            }
            Type::Array | Type::Object => self.object(value.as_object().expect("an object"), depth)?,
            other => {
                return Err(clone_error(self.ctx, &format!("a {} cannot be stored", other.as_str())));
            }
        }
        Ok(())
    }

    fn object(&mut self, object: &Object<'js>, depth: usize) -> rquickjs::Result<()> {
        if let Some(&index) = self.seen.get(&address(object)) {
            self.out.push(tag::REFERENCE);
            varint(&mut self.out, index);
            return Ok(());
        }
        if *object.as_value() == self.classes.room {
            self.out.push(tag::ROOM);
            return Ok(());
        }
        if object.is_instance_of(&self.classes.connection) {
            let id: String = object.get("id")?;
            self.out.push(tag::CONNECTION);
            bytes(&mut self.out, id.as_bytes());
            return Ok(());
        }
        self.seen.insert(address(object), self.alive.len());
        self.alive.push(object.clone());
        if let Some(array) = object.as_array() {
            self.out.push(tag::ARRAY);
            varint(&mut self.out, array.len());
            for item in array.iter::<Value>() {
                self.value(&item?, depth + 1)?;
            }
        } else if let Some(buffer) = ArrayBuffer::from_object(object.clone()) {
            self.out.push(tag::BUFFER);
            bytes(&mut self.out, &super::api::bytes_of(buffer.as_value()).unwrap_or_default());
        } else if object.is_instance_of(&self.classes.date) {
            let time: Function = object.get("getTime")?;
            let ms: f64 = time.call((This(object.clone()),))?;
            self.out.push(tag::DATE);
            self.out.extend_from_slice(&ms.to_le_bytes());
        } else if object.is_instance_of(&self.classes.map) {
            let entries: Array = self.classes.entries.call((object.clone(),))?;
            self.out.push(tag::MAP);
            varint(&mut self.out, entries.len());
            for pair in entries.iter::<Array>() {
                let pair = pair?;
                self.value(&pair.get(0)?, depth + 1)?;
                self.value(&pair.get(1)?, depth + 1)?;
            }
        } else if object.is_instance_of(&self.classes.set) {
            let values: Array = self.classes.entries.call((object.clone(),))?;
            self.out.push(tag::SET);
            varint(&mut self.out, values.len());
            for item in values.iter::<Value>() {
                self.value(&item?, depth + 1)?;
            }
        } else if let Some(kind) = self.classes.views.iter().position(|class| object.is_instance_of(class)) {
            let buffer: ArrayBuffer = object.get("buffer")?;
            let (offset, length): (usize, usize) = (object.get("byteOffset")?, object.get("byteLength")?);
            let all = super::api::bytes_of(buffer.as_value()).unwrap_or_default();
            let part = all.get(offset..offset + length).unwrap_or_default();
            self.out.push(tag::VIEW);
            self.out.push(kind as u8);
            bytes(&mut self.out, part);
        } else if object.is_function() || object.as_promise().is_some() {
            return Err(clone_error(self.ctx, "a function or a promise cannot be stored"));
        } else {
            let keys: Vec<String> = object
                .own_keys(rquickjs::object::Filter::new().string().enum_only())
                .collect::<rquickjs::Result<_>>()?;
            self.out.push(tag::OBJECT);
            varint(&mut self.out, keys.len());
            for key in keys {
                bytes(&mut self.out, key.as_bytes());
                let value: Value = object.get(key.as_str())?;
                self.value(&value, depth + 1)?;
            }
        }
        Ok(())
    }
}

/// Encodes the own enumerable fields of a room's server object, leaving
/// out those holding functions (methods bound in the constructor, which
/// makes them again on restore).
pub(super) fn encode_fields<'js>(ctx: &Ctx<'js>, server: &Object<'js>) -> rquickjs::Result<Vec<u8>> {
    let fields = Object::new(ctx.clone())?;
    for key in server.own_keys::<String>(rquickjs::object::Filter::new().string().enum_only()) {
        let key = key?;
        let value: Value = server.get(key.as_str())?;
        if !value.is_function() {
            fields.set(key, value)?;
        }
    }
    encode(ctx, &fields.into_value())
}

/// Decodes what [`encode`] made; bytes that are not such a value are an
/// error naming what is wrong.
pub(super) fn decode<'js>(ctx: &Ctx<'js>, data: &[u8]) -> rquickjs::Result<Value<'js>> {
    let bad = |what: &str| Exception::throw_type(ctx, &format!("a stored value cannot be read: {what}"));
    match data.first() {
        Some(&VERSION) => {}
        Some(v) => return Err(bad(&format!("encoding version {v}, this server reads version {VERSION}"))),
        None => return Err(bad("it is empty")),
    }
    let mut decoder = Decoder { ctx, classes: Classes::of(ctx)?, data, at: 1, objects: Vec::new() };
    let value = decoder.value(0).map_err(|e| match e {
        DecodeError::Js(e) => e,
        DecodeError::Bad(what) => bad(what),
    })?;
    if decoder.at != data.len() {
        return Err(bad("bytes after the value"));
    }
    Ok(value)
}

enum DecodeError {
    Js(rquickjs::Error),
    Bad(&'static str),
}

impl From<rquickjs::Error> for DecodeError {
    fn from(e: rquickjs::Error) -> Self {
        DecodeError::Js(e)
    }
}

struct Decoder<'a, 'js> {
    ctx: &'a Ctx<'js>,
    classes: Classes<'js>,
    data: &'a [u8],
    at: usize,
    objects: Vec<Value<'js>>,
}

type Decoded<T> = Result<T, DecodeError>;

impl<'js> Decoder<'_, 'js> {
    fn byte(&mut self) -> Decoded<u8> {
        let byte = *self.data.get(self.at).ok_or(DecodeError::Bad("it ends early"))?;
        self.at += 1;
        Ok(byte)
    }

    fn take(&mut self, n: usize) -> Decoded<&[u8]> {
        let end =
            self.at.checked_add(n).filter(|&end| end <= self.data.len()).ok_or(DecodeError::Bad("it ends early"))?;
        let part = &self.data[self.at..end];
        self.at = end;
        Ok(part)
    }

    fn varint(&mut self) -> Decoded<usize> {
        let mut n = 0usize;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            n |= usize::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(DecodeError::Bad("a length is too long"))
    }

    /// A count of items that each take at least one byte: never more than
    /// the bytes left, so a corrupt count cannot make a huge allocation.
    fn count(&mut self) -> Decoded<usize> {
        let n = self.varint()?;
        if n > self.data.len() - self.at {
            return Err(DecodeError::Bad("a count is larger than the value"));
        }
        Ok(n)
    }

    fn text(&mut self) -> Decoded<&str> {
        let n = self.varint()?;
        std::str::from_utf8(self.take(n)?).map_err(|_| DecodeError::Bad("a string is not UTF-8"))
    }

    fn f64(&mut self) -> Decoded<f64> {
        Ok(f64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    /// Numbers `value` as the next object met, before its contents, so a
    /// reference inside them finds it.
    fn met(&mut self, value: Value<'js>) -> Value<'js> {
        self.objects.push(value.clone());
        value
    }

    fn value(&mut self, depth: usize) -> Decoded<Value<'js>> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::Bad("it nests too deeply"));
        }
        let ctx = self.ctx.clone();
        Ok(match self.byte()? {
            tag::UNDEFINED => Value::new_undefined(ctx),
            tag::NULL => Value::new_null(ctx),
            tag::FALSE => Value::new_bool(ctx, false),
            tag::TRUE => Value::new_bool(ctx, true),
            tag::INT => Value::new_int(ctx, i32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes"))),
            tag::FLOAT => Value::new_float(ctx, self.f64()?),
            tag::STRING => rquickjs::String::from_str(ctx, self.text()?)?.into_value(),
            tag::BIGINT => {
                let digits = self.text()?.to_owned();
                self.classes.bigint.call((digits,))?
            }
            tag::DATE => {
                let ms = self.f64()?;
                let date: Value = self.classes.date.as_constructor().expect("Date").construct((ms,))?;
                self.met(date)
            }
            tag::ARRAY => {
                let n = self.count()?;
                let array = self.met(Array::new(ctx)?.into_value());
                let items = array.as_array().expect("an array").clone();
                for i in 0..n {
                    items.set(i, self.value(depth + 1)?)?;
                }
                array
            }
            tag::OBJECT => {
                let n = self.count()?;
                let object = self.met(Object::new(ctx)?.into_value());
                let fields = object.as_object().expect("an object").clone();
                for _ in 0..n {
                    let key = self.text()?.to_owned();
                    fields.set(key, self.value(depth + 1)?)?;
                }
                object
            }
            tag::MAP => {
                let n = self.count()?;
                let map: Object = self.classes.map.as_constructor().expect("Map").construct(())?;
                self.met(map.clone().into_value());
                let set: Function = map.get("set")?;
                for _ in 0..n {
                    let (key, value) = (self.value(depth + 1)?, self.value(depth + 1)?);
                    set.call::<_, Value>((This(map.clone()), key, value))?;
                }
                map.into_value()
            }
            tag::SET => {
                let n = self.count()?;
                let set_object: Object = self.classes.set.as_constructor().expect("Set").construct(())?;
                self.met(set_object.clone().into_value());
                let add: Function = set_object.get("add")?;
                for _ in 0..n {
                    let item = self.value(depth + 1)?;
                    add.call::<_, Value>((This(set_object.clone()), item))?;
                }
                set_object.into_value()
            }
            tag::BUFFER => {
                let n = self.varint()?;
                let data = self.take(n)?.to_vec();
                let buffer = ArrayBuffer::new(ctx, data)?.into_value();
                self.met(buffer)
            }
            tag::VIEW => {
                let kind = usize::from(self.byte()?);
                let class = self.classes.views.get(kind).ok_or(DecodeError::Bad("an unknown kind of typed array"))?;
                let class = class.as_constructor().expect("a view constructor").clone();
                let n = self.varint()?;
                let data = self.take(n)?.to_vec();
                let buffer = ArrayBuffer::new(ctx, data)?;
                let view: Value = class.construct((buffer,))?;
                self.met(view)
            }
            tag::CONNECTION => {
                let id = self.text()?.to_owned();
                self.classes.connection_of.call((id,))?
            }
            tag::ROOM => self.classes.room.clone(),
            tag::REFERENCE => {
                let index = self.varint()?;
                self.objects.get(index).cloned().ok_or(DecodeError::Bad("a reference to nothing"))?
            }
            _ => return Err(DecodeError::Bad("an unknown tag")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A context with the classes the prelude saves for the codec.
    fn with_codec(test: impl FnOnce(&Ctx<'_>)) {
        let rt = rquickjs::Runtime::new().unwrap();
        let context = rquickjs::Context::full(&rt).unwrap();
        context.with(|ctx| {
            let classes = format!(
                "globalThis.__dormouse = {{ classes: {{ Date, Map, Set, BigInt, String, \
                 entries: (i) => [...i], Connection: class {{}}, room: {{}}, connectionOf: () => null, {} }} }};",
                VIEWS.join(", ")
            );
            ctx.eval::<(), _>(classes).unwrap();
            test(&ctx)
        });
    }

    #[test]
    fn values_come_back_as_they_went_in() {
        with_codec(|ctx| {
            let value: Value = ctx
                .eval(
                    "({ a: [1, 2.5, 'x', null, undefined, true], m: new Map([[1n, new Set(['s'])]]), d: new Date(5) })",
                )
                .unwrap();
            let bytes = encode(ctx, &value).unwrap();
            assert_eq!(bytes[0], VERSION);
            let back = decode(ctx, &bytes).unwrap();
            ctx.globals().set("back", back).unwrap();
            let check: bool = ctx
                .eval(
                    "back.a.length === 6 && back.a[1] === 2.5 && back.a[4] === undefined && \
                     back.m.get(1n).has('s') && back.d.getTime() === 5",
                )
                .unwrap();
            assert!(check);
            // The same bytes again: the encoding is deterministic.
            assert_eq!(encode(ctx, &ctx.globals().get("back").unwrap()).unwrap(), bytes);
        });
    }

    #[test]
    fn functions_and_symbols_are_refused_with_data_clone_error() {
        with_codec(|ctx| {
            for source in ["({ f() {} })", "[Symbol('s')]", "Promise.resolve(1)"] {
                let value: Value = ctx.eval(source).unwrap();
                assert!(encode(ctx, &value).is_err(), "{source}");
                let name: String = ctx.catch().as_object().unwrap().get("name").unwrap();
                assert_eq!(name, "DataCloneError", "{source}");
            }
        });
    }

    proptest! {
        #[test]
        fn any_bytes_decode_to_a_value_or_an_error(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            with_codec(|ctx| {
                let mut data = data.clone();
                if let Some(first) = data.first_mut() {
                    *first = VERSION;
                }
                let _ = decode(ctx, &data);
            });
        }
    }
}
