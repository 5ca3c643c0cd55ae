//! A JSON value whose objects keep the order they were built in, for the dashboard.
//!
//! `serde_json::Value` sorts object keys (the crate is built without `preserve_order`, and
//! turning that on would change every other JSON the daemon writes). A dashboard reads best,
//! and diffs least, in the order Grafana's own exports use: type and title first, layout
//! last. Never parses; only builds and prints.

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

/// A JSON value; objects are ordered lists of pairs.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer, printed without a fraction (`1`, not `1.0`).
    Int(i64),
    /// A number with a fraction, printed shortest (`0.7`).
    Num(f64),
    /// A string.
    Str(String),
    /// An array.
    Arr(Vec<Json>),
    /// An object, keys in the order given.
    Obj(Vec<(&'static str, Json)>),
}

impl Json {
    /// Appends `key` to an object (a panel's `id` and `gridPos` are known only once it is
    /// placed); anything else is left as it is.
    pub fn push(&mut self, key: &'static str, value: Json) {
        if let Json::Obj(pairs) = self {
            pairs.push((key, value));
        }
    }

    /// The value under `key`, if this is an object that has it.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Json> {
        match self {
            Json::Obj(pairs) => pairs.iter_mut().find(|(k, _)| *k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Pretty-printed with two-space indents and a final newline, every character outside
    /// ASCII written as a `\u` escape: the file then survives any tool's idea of its encoding,
    /// and reads as the Python generator before it wrote it (`json.dumps`'s default).
    pub fn to_pretty(&self) -> String {
        // Serializing our own tree into a String cannot fail: no map has a non-string key
        // and no I/O is involved.
        let text = serde_json::to_string_pretty(self).unwrap_or_default();
        let mut out = String::with_capacity(text.len() + 1);
        for c in text.chars() {
            if c.is_ascii() {
                out.push(c);
            } else {
                // serde_json escapes nothing above U+001F, so any non-ASCII character is
                // inside a string, where an escape means the same character.
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{u:04x}"));
                }
            }
        }
        out.push('\n');
        out
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Null => s.serialize_unit(),
            Json::Bool(b) => s.serialize_bool(*b),
            Json::Int(i) => s.serialize_i64(*i),
            Json::Num(n) => s.serialize_f64(*n),
            Json::Str(t) => s.serialize_str(t),
            Json::Arr(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Json::Obj(pairs) => {
                let mut map = s.serialize_map(Some(pairs.len()))?;
                for (k, v) in pairs {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl From<&str> for Json {
    fn from(s: &str) -> Json {
        Json::Str(s.to_string())
    }
}

impl From<String> for Json {
    fn from(s: String) -> Json {
        Json::Str(s)
    }
}

impl From<bool> for Json {
    fn from(b: bool) -> Json {
        Json::Bool(b)
    }
}

impl From<i64> for Json {
    fn from(i: i64) -> Json {
        Json::Int(i)
    }
}

impl From<f64> for Json {
    fn from(n: f64) -> Json {
        Json::Num(n)
    }
}

impl From<Vec<Json>> for Json {
    fn from(items: Vec<Json>) -> Json {
        Json::Arr(items)
    }
}

impl<T: Into<Json>> From<Option<T>> for Json {
    fn from(v: Option<T>) -> Json {
        v.map_or(Json::Null, Into::into)
    }
}

/// An ordered object: `obj! { "type" => "gauge", "min" => 0 }`; values go through `Json::from`
/// (the caller has [`Json`] in scope).
macro_rules! obj {
    ($($k:literal => $v:expr),* $(,)?) => {
        Json::Obj(vec![$(($k, Json::from($v))),*])
    };
}

/// An array: `arr![a, b]`; items go through `Json::from` (the caller has [`Json`] in scope).
macro_rules! arr {
    ($($v:expr),* $(,)?) => {
        Json::Arr(vec![$(Json::from($v)),*])
    };
}

pub(super) use {arr, obj};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_keep_their_order_and_numbers_their_kind() {
        let v = obj! {"z" => 1i64, "a" => 0.7, "m" => arr!["x", Json::Null, true], "e" => obj!{}};
        assert_eq!(
            v.to_pretty(),
            "{\n  \"z\": 1,\n  \"a\": 0.7,\n  \"m\": [\n    \"x\",\n    null,\n    true\n  ],\n  \"e\": {}\n}\n"
        );
    }

    #[test]
    fn characters_outside_ascii_are_escaped_as_python_does() {
        let v = obj! {"t" => "limit − usage 😀 \"q\"\n"};
        assert_eq!(
            v.to_pretty(),
            "{\n  \"t\": \"limit \\u2212 usage \\ud83d\\ude00 \\\"q\\\"\\n\"\n}\n"
        );
    }
}
