//! OTLP/HTTP bodies: content type, gzip with a size cap, protobuf or JSON,
//! and the matching encoding of responses and error statuses.

use std::borrow::Cow;
use std::io::Read;

use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// The two OTLP/HTTP encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    /// From a `Content-Type` header (parameters such as charset ignored).
    pub fn from_content_type(header: Option<&str>) -> Result<Self, DecodeError> {
        let value = header.unwrap_or("");
        let media = value.split(';').next().unwrap_or("").trim();
        if media.eq_ignore_ascii_case("application/x-protobuf")
            || media.eq_ignore_ascii_case("application/protobuf")
        {
            Ok(Encoding::Protobuf)
        } else if media.eq_ignore_ascii_case("application/json") {
            Ok(Encoding::Json)
        } else {
            Err(DecodeError::MediaType(value.to_string()))
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unsupported content type {0:?}: send application/x-protobuf or application/json")]
    MediaType(String),
    #[error("unsupported content encoding {0:?}: send gzip or identity")]
    ContentEncoding(String),
    #[error("request body is larger than the limit of {limit} bytes (after decompression)")]
    TooLarge { limit: usize },
    #[error(
        "request body would take about {} MiB to decode, more than server.max_decoding_bytes ({} MiB): send fewer items in a request",
        weight >> 20,
        limit >> 20
    )]
    TooHeavy { weight: usize, limit: usize },
    #[error("gzip body could not be decompressed: {0}")]
    Gzip(std::io::Error),
    #[error("invalid protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("invalid protobuf: failed to decode the message: {0}")]
    Walk(#[from] super::walk::WalkError),
    #[error("invalid OTLP JSON: {0}")]
    Json(#[from] serde_path_to_error::Error<serde_json::Error>),
    #[error("invalid OTLP JSON: the body is not UTF-8 (bad byte at offset {at})")]
    NotUtf8 { at: usize },
}

/// Undoes `Content-Encoding`, refusing to inflate past `limit` bytes (an
/// identity body is borrowed as it is).
pub fn decompress<'a>(
    body: &'a [u8],
    content_encoding: Option<&str>,
    limit: usize,
) -> Result<Cow<'a, [u8]>, DecodeError> {
    let encoding = content_encoding.unwrap_or("identity").trim();
    if encoding.is_empty() || encoding.eq_ignore_ascii_case("identity") {
        if body.len() > limit {
            return Err(DecodeError::TooLarge { limit });
        }
        return Ok(Cow::Borrowed(body));
    }
    if !encoding.eq_ignore_ascii_case("gzip") {
        return Err(DecodeError::ContentEncoding(encoding.to_string()));
    }
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
    flate2::read::MultiGzDecoder::new(body)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(DecodeError::Gzip)?;
    if out.len() > limit {
        return Err(DecodeError::TooLarge { limit });
    }
    Ok(Cow::Owned(out))
}

/// Decodes an OTLP message in either encoding.
pub fn decode<M: prost::Message + DeserializeOwned + Default>(
    bytes: &[u8],
    encoding: Encoding,
) -> Result<M, DecodeError> {
    Ok(match encoding {
        Encoding::Protobuf => M::decode(bytes)?,
        Encoding::Json => from_json(bytes)?,
    })
}

/// Decodes OTLP/JSON, naming the field where decoding failed.
pub fn from_json<'a, M: Deserialize<'a>>(
    bytes: &'a [u8],
) -> Result<M, serde_path_to_error::Error<serde_json::Error>> {
    // Tracking the path slows decoding: do it only again after a failure.
    match serde_json::from_slice(bytes) {
        Ok(m) => Ok(m),
        Err(_) => {
            serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(bytes))
        }
    }
}

/// Reads an OTLP/JSON trace export into the borrowed model: sonic-rs's
/// SIMD parser (about twice serde_json's speed), and on any failure
/// serde_json's `from_json`, so the error names the field as before and
/// says what serde_json would say. A body that is not UTF-8 is refused
/// wherever the bad bytes are (JSON is UTF-8, RFC 8259 8.1): neither parser
/// looks inside what it skips.
pub fn read_json<'a, M: Deserialize<'a>>(bytes: &'a [u8]) -> Result<M, DecodeError> {
    if let Err(e) = std::str::from_utf8(bytes) {
        return Err(DecodeError::NotUtf8 {
            at: e.valid_up_to(),
        });
    }
    match sonic_rs::from_slice(bytes) {
        Ok(m) => Ok(m),
        Err(_) => Ok(from_json(bytes)?),
    }
}

/// Encodes a response message in the request's encoding.
pub fn encode<M: prost::Message + Serialize>(msg: &M, encoding: Encoding) -> Vec<u8> {
    match encoding {
        Encoding::Protobuf => msg.encode_to_vec(),
        // Serializing generated OTLP types into a Vec cannot fail.
        Encoding::Json => serde_json::to_vec(msg).unwrap_or_default(),
    }
}

/// `google.rpc.Status`, the body of OTLP/HTTP error responses.
#[derive(Clone, PartialEq, prost::Message, Serialize)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

/// The most memory one decoded OTLP metrics struct takes: the largest
/// (`ExponentialHistogramDataPoint`, 208 bytes), twice, for the `Vec` it
/// is in, which doubles as it grows.
const STRUCT_BYTES: usize = 2 * 208;
/// Nesting the weight walk reads into; below it, a message's bytes are
/// weighed as if every two were a struct of their own.
const WEIGH_DEPTH: u32 = 16;

/// About the most memory decoding `bytes` into prost's structs (or
/// serde's, from JSON) takes, so that a body can be refused before it
/// costs that: a few bytes of wire can each become a struct of a few
/// hundred bytes (13 MiB of empty histogram points decoded to 2.7 GB).
/// Read only, without allocating, and never less than the bytes.
///
/// Protobuf: every length-delimited field that reads as a message
/// weighs a struct and what it holds; any other (a string, a packed
/// array) 8 bytes a byte, as packed varints become `u64`s; every other
/// field 8 bytes, as in a `Vec`. JSON: a struct an object, and 4 bytes a
/// byte, as "0," becomes a `u64`.
pub fn weight(bytes: &[u8], encoding: Encoding) -> usize {
    let weight = match encoding {
        Encoding::Protobuf => weigh_message(bytes, WEIGH_DEPTH).unwrap_or(bytes.len() * 8),
        Encoding::Json => {
            let objects = bytes.iter().filter(|&&b| b == b'{').count();
            objects * STRUCT_BYTES + bytes.len() * 4
        }
    };
    weight.max(bytes.len())
}

/// The weight of `b`'s fields, or None if it does not read as a message.
fn weigh_message(mut b: &[u8], depth: u32) -> Option<usize> {
    use prost::encoding::decode_varint;
    let mut weight = 0usize;
    while !b.is_empty() {
        let key = decode_varint(&mut b).ok()?;
        if key >> 3 == 0 {
            return None;
        }
        let skip = match key & 7 {
            0 => {
                decode_varint(&mut b).ok()?;
                0
            }
            1 => 8,
            5 => 4,
            2 => {
                let len = usize::try_from(decode_varint(&mut b).ok()?).ok()?;
                let payload = b.get(..len)?;
                weight += match depth.checked_sub(1) {
                    None => STRUCT_BYTES * (len / 2 + 1),
                    Some(d) => match weigh_message(payload, d) {
                        Some(inner) => STRUCT_BYTES + inner,
                        None => len * 8,
                    },
                };
                len
            }
            _ => return None,
        };
        b = b.get(skip..)?;
        weight += 8;
    }
    Some(weight)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use std::io::Write;

    /// sonic-rs skips unknown keys without looking at their bytes; a body
    /// that is not UTF-8 there is refused all the same, as serde_json does.
    #[test]
    fn json_that_is_not_utf8_where_nothing_reads_it_is_refused() {
        let body = b"{\"resourceSpans\":[{\"resource\":{\"attributes\":[]},\"x\xff\":1}]}";
        let read: Result<crate::ingest::json::Request<'_>, _> = read_json(body);
        let err = read.expect_err("invalid UTF-8 is refused");
        assert!(
            err.to_string().contains("unicode") || err.to_string().contains("UTF-8"),
            "{err}"
        );
        // The same body with the byte fixed is read.
        let fixed = b"{\"resourceSpans\":[{\"resource\":{\"attributes\":[]},\"xy\":1}]}";
        let read: Result<crate::ingest::json::Request<'_>, _> = read_json(fixed);
        assert!(read.is_ok(), "{:?}", read.err());
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn content_types_are_recognised() {
        assert_eq!(
            Encoding::from_content_type(Some("application/x-protobuf")).unwrap(),
            Encoding::Protobuf
        );
        assert_eq!(
            Encoding::from_content_type(Some("application/json; charset=utf-8")).unwrap(),
            Encoding::Json
        );
        assert!(matches!(
            Encoding::from_content_type(Some("text/plain")),
            Err(DecodeError::MediaType(_))
        ));
        assert!(matches!(
            Encoding::from_content_type(None),
            Err(DecodeError::MediaType(_))
        ));
    }

    #[test]
    fn gzip_round_trips_under_the_limit() {
        let body = gzip(b"hello world");
        assert_eq!(
            &*decompress(&body, Some("gzip"), 100).unwrap(),
            b"hello world"
        );
        assert_eq!(&*decompress(b"plain", None, 100).unwrap(), b"plain");
    }

    #[test]
    fn gzip_bombs_stop_at_the_limit() {
        let bomb = gzip(&vec![0u8; 10 << 20]);
        assert!(bomb.len() < 20_000);
        assert!(matches!(
            decompress(&bomb, Some("gzip"), 1 << 20),
            Err(DecodeError::TooLarge { .. })
        ));
        assert!(matches!(
            decompress(&[0u8; 2000], None, 1000),
            Err(DecodeError::TooLarge { .. })
        ));
    }

    #[test]
    fn bad_bodies_say_what_is_wrong() {
        assert!(matches!(
            decompress(b"not gzip", Some("gzip"), 100),
            Err(DecodeError::Gzip(_))
        ));
        assert!(matches!(
            decompress(b"x", Some("br"), 100),
            Err(DecodeError::ContentEncoding(_))
        ));
        let e = decode::<ExportTraceServiceRequest>(&[0xff, 0xff, 0xff], Encoding::Protobuf)
            .unwrap_err();
        assert!(e.to_string().starts_with("invalid protobuf"), "{e}");
        let e = decode::<ExportTraceServiceRequest>(b"{\"resourceSpans\": [", Encoding::Json)
            .unwrap_err();
        assert!(e.to_string().starts_with("invalid OTLP JSON"), "{e}");
    }

    #[test]
    fn weight_covers_what_decoding_takes_and_empty_points_weigh_most() {
        use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
        use opentelemetry_proto::tonic::metrics::v1::{
            metric::Data, Histogram, HistogramDataPoint, Metric, ResourceMetrics, ScopeMetrics,
        };
        let request = |points: Vec<HistogramDataPoint>| ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        name: "http.server.request.duration".into(),
                        data: Some(Data::Histogram(Histogram {
                            data_points: points,
                            aggregation_temporality: 2,
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        use opentelemetry_proto::tonic::metrics::v1::ExponentialHistogramDataPoint;
        let largest = std::mem::size_of::<ExponentialHistogramDataPoint>();
        assert!(2 * largest <= STRUCT_BYTES, "{largest}");
        let size = std::mem::size_of::<HistogramDataPoint>();
        // Empty points: two bytes on the wire, a struct decoded.
        let empty = prost::Message::encode_to_vec(&request(vec![Default::default(); 10_000]));
        let decoded = 10_000 * size;
        let w = weight(&empty, Encoding::Protobuf);
        assert!(
            w >= decoded && w > 100 * empty.len(),
            "{w} for {} bytes",
            empty.len()
        );
        // Points with buckets: weighed as decoded, not as empty ones.
        let point = HistogramDataPoint {
            count: 8,
            bucket_counts: vec![0, 8],
            explicit_bounds: vec![0.1],
            time_unix_nano: 1,
            ..Default::default()
        };
        let full = prost::Message::encode_to_vec(&request(vec![point; 10_000]));
        let decoded = 10_000 * (size + 16 + 8);
        let w = weight(&full, Encoding::Protobuf);
        assert!(w >= decoded && w < 10 * decoded, "{w} for {decoded}");
        // JSON: an object a struct.
        let json = serde_json::to_vec(&request(vec![Default::default(); 1_000])).unwrap();
        assert!(weight(&json, Encoding::Json) >= 1_000 * STRUCT_BYTES);
        // Bytes that are not a message weigh 8 a byte.
        assert_eq!(weight(&[0, 0, 0], Encoding::Protobuf), 24);
    }
}
