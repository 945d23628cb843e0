//! The field types of the OTLP/JSON model, each checked as
//! opentelemetry-proto's serde mapping checks it: attribute values (kept
//! where the mapper reads them), strings and bytes no one reads, hex ids,
//! 64-bit integers as numbers or strings, and lists sized or dropped as
//! they are read. The model (`json.rs`) and the stream (`json/stream.rs`)
//! are built from them, so both check alike.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::ingest::span::Val;

/// `key` is required (the reference's `KeyValue` has no `serde(default)`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct KeyValue<'a> {
    #[serde(borrow)]
    pub(super) key: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) value: Option<Any<'a>>,
    #[serde(default)]
    pub(super) key_strindex: i32,
}

impl KeyValue<'_> {
    pub(super) fn pair(&self) -> (&str, Val<'_>) {
        (&self.key, self.value.as_ref().map_or(Val::Other, Any::val))
    }
}

/// `AnyValue`: strings, integers and doubles kept, the rest checked.
#[derive(Debug, Default)]
pub(super) enum Any<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    Double(f64),
    #[default]
    Other,
}

impl Any<'_> {
    pub(super) fn val(&self) -> Val<'_> {
        match self {
            Any::Str(s) => Val::Str(s),
            Any::Int(i) => Val::Int(*i),
            Any::Double(d) => Val::Double(*d),
            Any::Other => Val::Other,
        }
    }
}

/// `ArrayValue` and `KeyValueList`: `values` required.
#[derive(Debug, Deserialize)]
pub(super) struct Values<T> {
    values: T,
}

/// A string no one reads, checked as the reference's `String` would be.
#[derive(Debug, Default)]
pub(super) struct Str;

impl<'de> Deserialize<'de> for Str {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Str;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Str, E> {
                Ok(Str)
            }
        }
        d.deserialize_str(V)
    }
}

/// A list that starts with room for `PRESIZED` items: JSON says nothing
/// of a list's length up front, and growing a span's attributes and a
/// request's spans from empty cost a tenth of the read in reallocations.
pub(super) fn presized<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Vec<T>, D::Error> {
    struct V<T>(PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a sequence")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let first = match seq.next_element::<T>()? {
                Some(first) => first,
                None => return Ok(Vec::new()),
            };
            let mut out = Vec::with_capacity(PRESIZED);
            out.push(first);
            while let Some(item) = seq.next_element::<T>()? {
                out.push(item);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(V(PhantomData))
}

/// Items a non-empty attribute or span list has room for from the start.
pub(super) const PRESIZED: usize = 16;

/// A list of `T`, each checked and dropped.
#[derive(Debug)]
pub(super) struct Each<T>(PhantomData<T>);

impl<T> Default for Each<T> {
    fn default() -> Self {
        Each(PhantomData)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Each<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Each<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a sequence")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Each<T>, A::Error> {
                while seq.next_element::<T>()?.is_some() {}
                Ok(Each(PhantomData))
            }
        }
        d.deserialize_seq(V(PhantomData))
    }
}

/// Each byte's value as a hex digit, `NOT_HEX` for the others.
pub(super) const HEX: [u8; 256] = {
    let mut table = [NOT_HEX; 256];
    let mut c = 0;
    while c < 10 {
        table[b'0' as usize + c] = c as u8;
        c += 1;
    }
    let mut c = 0;
    while c < 6 {
        table[b'a' as usize + c] = 10 + c as u8;
        table[b'A' as usize + c] = 10 + c as u8;
        c += 1;
    }
    table
};
pub(super) const NOT_HEX: u8 = 0xff;

/// Hex digits as the reference's `const_hex::decode` takes them: an even
/// length, an optional `0x`, upper or lower case.
#[inline]
pub(super) fn unhex(s: &str, mut out: impl FnMut(u8)) -> Result<(), String> {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return Err("odd number of digits".to_string());
    }
    let b = match b {
        [b'0', b'x' | b'X', rest @ ..] => rest,
        _ => b,
    };
    for pair in b.chunks_exact(2) {
        let (high, low) = (HEX[pair[0] as usize], HEX[pair[1] as usize]);
        if (high | low) & 0xf0 != 0 {
            let bad = pair
                .iter()
                .find(|c| HEX[**c as usize] == NOT_HEX)
                .copied()
                .unwrap_or(b'?');
            return Err(format!(
                "invalid character {:?}: ids are hex digits",
                bad as char
            ));
        }
        out(high << 4 | low);
    }
    Ok(())
}

/// A trace or span id: up to 16 bytes inline, longer ones (invalid, but
/// their length goes in the message) on the heap.
#[derive(Debug, Default)]
pub(super) struct Id {
    inline: [u8; 16],
    len: usize,
    long: Vec<u8>,
}

impl Id {
    pub(super) fn bytes(&self) -> &[u8] {
        if self.len <= 16 {
            &self.inline[..self.len]
        } else {
            &self.long
        }
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Id;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string representing hex-encoded bytes")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Id, E> {
                let mut id = Id::default();
                unhex(s, |b| {
                    if id.len < 16 {
                        id.inline[id.len] = b;
                    } else {
                        if id.len == 16 {
                            id.long.extend_from_slice(&id.inline);
                        }
                        id.long.push(b);
                    }
                    id.len += 1;
                })
                .map_err(E::custom)?;
                Ok(id)
            }
        }
        d.deserialize_str(V)
    }
}

/// Hex bytes no one reads, checked.
#[derive(Debug, Default)]
pub(super) struct Hex;

impl<'de> Deserialize<'de> for Hex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Hex;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string representing hex-encoded bytes")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Hex, E> {
                unhex(s, |_| {}).map_err(E::custom)?;
                Ok(Hex)
            }
        }
        d.deserialize_str(V)
    }
}

/// A u64 as a number or a decimal string (the reference's
/// `deserialize_string_to_u64`).
pub(super) fn u64_any<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = u64;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a u64 integer or a string containing a u64 integer")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v)
                .map_err(|_| E::custom(format!("i64 value {v} is out of range for u64")))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
            v.parse::<u64>().map_err(E::custom)
        }
    }
    d.deserialize_any(V)
}

/// An `intValue`: a number in i64's range or a decimal string.
pub(super) struct IntOrStr(i64);

impl<'de> Deserialize<'de> for IntOrStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = IntOrStr;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an integer or a string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<IntOrStr, E> {
                Ok(IntOrStr(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<IntOrStr, E> {
                i64::try_from(v)
                    .map(IntOrStr)
                    .map_err(|_| E::custom("data did not match any variant of untagged enum"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IntOrStr, E> {
                v.parse::<i64>().map(IntOrStr).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// Any JSON value, parsed in full and dropped: what the reference's
/// flattened `AnyValue` does with a key it does not know (it buffers the
/// value, so depth and string checks apply, unlike `IgnoredAny`).
pub(super) struct Strict;

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Strict;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Strict, E> {
                Ok(Strict)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Strict, E> {
                Ok(Strict)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Strict, E> {
                Ok(Strict)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Strict, E> {
                Ok(Strict)
            }
            fn visit_str<E>(self, _: &str) -> Result<Strict, E> {
                Ok(Strict)
            }
            fn visit_unit<E>(self) -> Result<Strict, E> {
                Ok(Strict)
            }
            fn visit_none<E>(self) -> Result<Strict, E> {
                Ok(Strict)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Strict, D::Error> {
                Strict::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
                while seq.next_element::<Strict>()?.is_some() {}
                Ok(Strict)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
                while map.next_entry::<Strict, Strict>()?.is_some() {}
                Ok(Strict)
            }
        }
        d.deserialize_any(V)
    }
}

/// The keys of an `AnyValue` object.
pub(super) enum AnyKey {
    String,
    Bool,
    Int,
    Double,
    Array,
    Kvlist,
    Bytes,
    Unknown,
}

impl<'de> Deserialize<'de> for AnyKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = AnyKey;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E>(self, k: &str) -> Result<AnyKey, E> {
                Ok(match k {
                    "stringValue" => AnyKey::String,
                    "boolValue" => AnyKey::Bool,
                    "intValue" => AnyKey::Int,
                    "doubleValue" => AnyKey::Double,
                    "arrayValue" => AnyKey::Array,
                    "kvlistValue" => AnyKey::Kvlist,
                    "bytesValue" => AnyKey::Bytes,
                    _ => AnyKey::Unknown,
                })
            }
        }
        d.deserialize_identifier(V)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Any<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Any<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object for AnyValue")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Any<'a>, A::Error> {
                // As the reference: each known key with a non-null value
                // replaces the value so far.
                let mut value = Any::Other;
                while let Some(key) = map.next_key::<AnyKey>()? {
                    match key {
                        AnyKey::String => {
                            if let Some(s) = map.next_value::<Option<Borrowed<'a>>>()? {
                                value = Any::Str(s.0);
                            }
                        }
                        AnyKey::Bool => {
                            if map.next_value::<Option<bool>>()?.is_some() {
                                value = Any::Other;
                            }
                        }
                        AnyKey::Int => {
                            if let Some(i) = map.next_value::<Option<IntOrStr>>()? {
                                value = Any::Int(i.0);
                            }
                        }
                        AnyKey::Double => {
                            if let Some(v) = map.next_value::<Option<f64>>()? {
                                value = Any::Double(v);
                            }
                        }
                        AnyKey::Array => {
                            if map.next_value::<Option<Values<Each<Any<'a>>>>>()?.is_some() {
                                value = Any::Other;
                            }
                        }
                        AnyKey::Kvlist => {
                            if map
                                .next_value::<Option<Values<Each<KeyValue<'a>>>>>()?
                                .is_some()
                            {
                                value = Any::Other;
                            }
                        }
                        AnyKey::Bytes => {
                            if let Some(s) = map.next_value::<Option<Borrowed<'a>>>()? {
                                use base64::Engine;
                                base64::engine::general_purpose::STANDARD
                                    .decode(s.0.as_bytes())
                                    .map_err(de::Error::custom)?;
                                value = Any::Other;
                            }
                        }
                        AnyKey::Unknown => {
                            map.next_value::<Strict>()?;
                        }
                    }
                }
                Ok(value)
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

/// A string borrowed from the body when it has no escapes.
pub(super) struct Borrowed<'a>(pub(super) Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Borrowed<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Borrowed<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Borrowed<'a>, E> {
                Ok(Borrowed(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Borrowed<'a>, E> {
                Ok(Borrowed(Cow::Owned(s.to_string())))
            }
        }
        d.deserialize_str(V(PhantomData))
    }
}
