//! Serde helpers for a document's nested objects. A derived struct also reads a JSON
//! array, by position (`"consents": [true]` would be `email: true`), which no writer
//! means and the published schemas do not allow: a field naming one of these helpers
//! reads only `{…}`.

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A `T` read only from a JSON object.
struct Only<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Only<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(V(PhantomData)).map(Only)
    }
}

/// For a `T` (with `#[serde(default)]` when it may be absent): an object.
pub fn object<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Only::<T>::deserialize(d)?.0)
}

/// For `Option<T>` (with `#[serde(default)]`): absent or `null`, or an object.
pub fn optional<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Only<T>>::deserialize(d)?.map(|o| o.0))
}

/// For `Vec<T>`: an array of objects.
pub fn list<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct V<T>(PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an array of JSON objects")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
            while let Some(Only(item)) = seq.next_element::<Only<T>>()? {
                out.push(item);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(V(PhantomData))
}

/// For `Option<Vec<T>>` (with `#[serde(default)]`): absent or `null`, or an array of
/// objects.
pub fn optional_list<'de, D, T>(d: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Listed<T>(Vec<T>);
    impl<'de, T: Deserialize<'de>> Deserialize<'de> for Listed<T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            list(d).map(Listed)
        }
    }
    Ok(Option::<Listed<T>>::deserialize(d)?.map(|l| l.0))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        #[serde(default)]
        a: Option<bool>,
        #[serde(default)]
        b: Option<i64>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Outer {
        #[serde(default, deserialize_with = "super::optional")]
        one: Option<Inner>,
        #[serde(default, deserialize_with = "super::list")]
        many: Vec<Inner>,
        #[serde(default, deserialize_with = "super::optional_list")]
        maybe: Option<Vec<Inner>>,
    }

    fn read(text: &str) -> Result<Outer, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn objects_are_read_as_derived() {
        let o = read(r#"{"one": {"a": true}, "many": [{"b": 2}, {}], "maybe": [{"a": false}]}"#)
            .expect("objects read");
        assert_eq!(
            o.one,
            Some(Inner {
                a: Some(true),
                b: None
            })
        );
        assert_eq!(
            o.many,
            vec![
                Inner {
                    a: None,
                    b: Some(2)
                },
                Inner::default()
            ]
        );
        assert_eq!(
            o.maybe,
            Some(vec![Inner {
                a: Some(false),
                b: None
            }])
        );
        let o = read(r#"{"one": null, "maybe": null}"#).expect("nulls read");
        assert_eq!((o.one, o.many, o.maybe), (None, vec![], None));
        let o = read("{}").expect("absent fields read");
        assert_eq!((o.one, o.maybe), (None, None));
    }

    #[test]
    fn arrays_in_place_of_objects_are_refused() {
        for text in [
            r#"{"one": [null, null]}"#,
            r#"{"one": [true, 1]}"#,
            r#"{"many": [[true]]}"#,
            r#"{"maybe": [[null]]}"#,
            r#"{"many": {"a": true}}"#,
            r#"{"one": {"c": 1}}"#,
        ] {
            assert!(read(text).is_err(), "{text} was read");
        }
        let error = read(r#"{"one": [true]}"#).expect_err("refused");
        assert!(error.contains("a JSON object"), "{error}");
    }
}
