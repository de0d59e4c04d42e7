//! JSON bodies read strictly, so that the gateway checks the same value the upstream acts on.

use serde_json::Value;

/// A JSON value read strictly: an object with the same member twice is refused, since
/// parsers disagree on which one counts (the gateway would check one value and the upstream
/// could act on the other); so are names that differ only in case, which case-insensitive
/// readers (Go's `encoding/json`, ASP.NET's defaults) take for the same member.
pub(super) fn strict_json(body: &[u8]) -> Result<Value, serde_json::Error> {
    use serde::de::{Deserialize, Deserializer, Error, MapAccess, SeqAccess, Visitor};
    struct Strict(Value);
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Strict;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON value")
        }
        fn visit_bool<E>(self, v: bool) -> Result<Strict, E> {
            Ok(Strict(Value::Bool(v)))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Strict, E> {
            Ok(Strict(Value::from(v)))
        }
        fn visit_u64<E>(self, v: u64) -> Result<Strict, E> {
            Ok(Strict(Value::from(v)))
        }
        fn visit_f64<E>(self, v: f64) -> Result<Strict, E> {
            Ok(Strict(Value::from(v)))
        }
        fn visit_str<E>(self, v: &str) -> Result<Strict, E> {
            Ok(Strict(Value::String(v.to_string())))
        }
        fn visit_string<E>(self, v: String) -> Result<Strict, E> {
            Ok(Strict(Value::String(v)))
        }
        fn visit_unit<E>(self) -> Result<Strict, E> {
            Ok(Strict(Value::Null))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
            let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
            while let Some(Strict(v)) = seq.next_element()? {
                items.push(v);
            }
            Ok(Strict(Value::Array(items)))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
            let mut members = serde_json::Map::new();
            // The case-folded names seen: the first few on the stack, more in a set.
            let mut few = [0u64; 16];
            let mut n = 0;
            let mut many: Option<std::collections::HashSet<u64>> = None;
            while let Some(key) = map.next_key::<String>()? {
                let Strict(v) = map.next_value()?;
                let h = fold_hash(&key);
                let clash = match &mut many {
                    Some(set) => !set.insert(h),
                    None if few[..n].contains(&h) => true,
                    None if n < few.len() => {
                        few[n] = h;
                        n += 1;
                        false
                    }
                    None => {
                        let mut set: std::collections::HashSet<u64> = few.iter().copied().collect();
                        set.insert(h);
                        many = Some(set);
                        false
                    }
                };
                if clash && members.keys().any(|k| folded(k) == folded(&key)) {
                    return Err(A::Error::custom(format_args!(
                        "member \"{key}\" appears twice (names that differ only in case count as the same)"
                    )));
                }
                members.insert(key, v);
            }
            Ok(Strict(Value::Object(members)))
        }
    }
    impl<'de> Deserialize<'de> for Strict {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Strict, D::Error> {
            d.deserialize_any(V)
        }
    }
    serde_json::from_slice::<Strict>(body).map(|s| s.0)
}

/// A name as case-insensitive readers compare it (Unicode case folding: `ſ` is `s`, the Kelvin
/// sign is `k`).
fn folded(name: &str) -> String {
    if name.is_ascii() {
        name.to_ascii_lowercase()
    } else {
        name.chars()
            .flat_map(char::to_uppercase)
            .flat_map(char::to_lowercase)
            .collect()
    }
}

/// A hash of [`folded`]`(name)`, without building it: a rotate and xor per character, mixed
/// once at the end (a clash is confirmed by comparing the folded names, so it need only be
/// cheap and spread).
fn fold_hash(name: &str) -> u64 {
    let mut h: u64 = 0x243f_6a88_85a3_08d3;
    if name.is_ascii() {
        for b in name.bytes() {
            h = h.rotate_left(7) ^ u64::from(b.to_ascii_lowercase());
        }
    } else {
        for c in name
            .chars()
            .flat_map(char::to_uppercase)
            .flat_map(char::to_lowercase)
        {
            h = h.rotate_left(7) ^ u64::from(u32::from(c));
        }
    }
    h.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}
