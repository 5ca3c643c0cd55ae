//! A JSON value that remembers which keys were given more than once: `serde_json::Value`
//! keeps the last silently, and a field given twice must be rejected as ambiguous (SPEC §4).
//! It only parses; what a duplicate means is the format's to say.

use serde_json::Value;

/// A parsed JSON value and the dotted paths of the keys that were given more than once in it
/// (`serde_json::Value` keeps the last silently).
pub(super) struct Keyed {
    pub(super) value: Value,
    pub(super) duplicates: Vec<String>,
}

impl<'de> serde::Deserialize<'de> for Keyed {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut duplicates = Vec::new();
        let value = serde::de::DeserializeSeed::deserialize(
            KeyedSeed {
                path: String::new(),
                duplicates: &mut duplicates,
            },
            d,
        )?;
        Ok(Keyed { value, duplicates })
    }
}

/// Builds a `Value`, noting duplicate keys by their dotted path below `path`.
struct KeyedSeed<'p> {
    path: String,
    duplicates: &'p mut Vec<String>,
}

impl<'de> serde::de::DeserializeSeed<'de> for KeyedSeed<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for KeyedSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        // Arrays are no part of a dotted path: their contents are kept as they are.
        let mut items = Vec::new();
        while let Some(v) = seq.next_element::<Value>()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut obj = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = if self.path.is_empty() {
                key.clone()
            } else {
                format!("{}.{key}", self.path)
            };
            let value = map.next_value_seed(KeyedSeed {
                path: path.clone(),
                duplicates: &mut *self.duplicates,
            })?;
            if obj.insert(key, value).is_some() {
                self.duplicates.push(path);
            }
        }
        Ok(Value::Object(obj))
    }
}
