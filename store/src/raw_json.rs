//! JSON text straight to BSON bytes, for the export to MongoDB.
//!
//! The event log's JSON columns (an event's payment, a decision's features, a webhook's body) are
//! most of what the export writes. Through the crates' own types each would be parsed into a
//! `serde_json::Value`, turned into a `bson::Document` (an index map: every key hashed and
//! inserted) and then written out as bytes by the driver: the profile of a drain showed those
//! two trees costing more than the reads and the network together. Neither crate goes from text
//! to bytes in one step, so this is that step: a serde visitor over `serde_json`'s parser that
//! appends each value to a `RawDocumentBuf` / `RawArrayBuf` as it is read.
//!
//! Mapping (what the driver's own path gave, so documents and reports do not change): integers
//! are int64 (an unsigned one beyond int64 becomes a double), other numbers doubles, `null`
//! null. BSON keys cannot hold NUL; a NUL in a key (only an outside system's body could have
//! one) becomes U+FFFD rather than failing the batch.

use mongodb::bson::{RawArrayBuf, RawBson, RawDocumentBuf};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;

/// `text` as BSON, or `None` if it is not JSON.
pub fn json_to_bson(text: &str) -> Option<RawBson> {
    serde_json::from_str::<Transcoded>(text).ok().map(|transcoded| transcoded.0)
}

struct Transcoded(RawBson);

impl<'de> Deserialize<'de> for Transcoded {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Transcoded, D::Error> {
        deserializer.deserialize_any(TranscodeVisitor).map(Transcoded)
    }
}

struct TranscodeVisitor;

/// A key as borrowed text when the parser can lend it (no escapes), else owned.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Key<'de>, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, key: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(key)))
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(key.to_owned())))
            }
            fn visit_string<E: de::Error>(self, key: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(key)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

impl<'de> Visitor<'de> for TranscodeVisitor {
    type Value = RawBson;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<RawBson, E> {
        Ok(RawBson::Boolean(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<RawBson, E> {
        Ok(RawBson::Int64(value))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<RawBson, E> {
        Ok(match i64::try_from(value) {
            Ok(value) => RawBson::Int64(value),
            // Beyond int64: what MongoDB's own JSON import does, a double.
            Err(_) => RawBson::Double(value as f64),
        })
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<RawBson, E> {
        Ok(RawBson::Double(value))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<RawBson, E> {
        Ok(RawBson::String(value.to_owned()))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<RawBson, E> {
        Ok(RawBson::String(value))
    }

    fn visit_unit<E: de::Error>(self) -> Result<RawBson, E> {
        Ok(RawBson::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<RawBson, E> {
        Ok(RawBson::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<RawBson, A::Error> {
        let mut array = RawArrayBuf::new();
        while let Some(Transcoded(item)) = items.next_element::<Transcoded>()? {
            array.push(item);
        }
        Ok(RawBson::Array(array))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<RawBson, A::Error> {
        let mut document = RawDocumentBuf::new();
        while let Some(Key(key)) = entries.next_key::<Key<'de>>()? {
            let Transcoded(value) = entries.next_value::<Transcoded>()?;
            if key.contains('\0') {
                document.append(key.replace('\0', "\u{FFFD}"), value);
            } else {
                document.append(key.as_ref(), value);
            }
        }
        Ok(RawBson::Document(document))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::Bson;

    /// What the driver's own path (serde_json's tree, then bson's serializer) gives.
    fn through_the_trees(text: &str) -> Bson {
        let value: serde_json::Value = serde_json::from_str(text).unwrap();
        mongodb::bson::to_bson(&value).unwrap()
    }

    fn transcoded(text: &str) -> Bson {
        let raw = json_to_bson(text).unwrap();
        mongodb::bson::rawdoc! {"v": raw}.to_document().unwrap().remove("v").unwrap()
    }

    #[test]
    fn gives_what_the_driver_path_gives() {
        for text in [
            r#"{"payment":{"id":"p1","amount_centavos":25036,"decision":null,"installments":[{"number":1,"amount_centavos":25036}]}}"#,
            r#"{"log_amount":5.526886174507311,"night":0.0,"neg":-7,"esc\"aped":"a\nb\u00e7","t":true,"f":false}"#,
            r#"[1, "two", [3.5, null], {}]"#,
            r#""just text""#,
            r#"12"#,
        ] {
            assert_eq!(transcoded(text), through_the_trees(text), "{text}");
        }
    }

    #[test]
    fn keeps_key_order_and_big_numbers() {
        let Bson::Document(document) = transcoded(r#"{"z":1,"a":2,"m":18446744073709551615}"#) else {
            panic!("not a document");
        };
        assert_eq!(document.keys().collect::<Vec<_>>(), ["z", "a", "m"]);
        assert_eq!(document.get("m"), Some(&Bson::Double(18446744073709551615.0)));
    }

    #[test]
    fn a_nul_in_a_key_does_not_fail_the_batch_and_text_that_is_not_json_is_none() {
        let Bson::Document(document) = transcoded(r#"{"a\u0000b":1}"#) else { panic!("not a document") };
        assert_eq!(document.get("a\u{FFFD}b"), Some(&Bson::Int64(1)));
        assert!(json_to_bson("{not json").is_none());
        assert!(json_to_bson("").is_none());
    }
}
