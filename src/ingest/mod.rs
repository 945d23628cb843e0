//! The way in, pure: OTLP request bytes decoded (`decode`), attributed to
//! releases (`identity`), endpoints and error kinds named (`facts`),
//! histograms converted (`buckets`, `delta`) and mapped to per-release
//! samples (`otlp`, the mapper). Trace exports are read by one of three
//! readers: `walk` maps protobuf straight from its bytes, `json::stream`
//! maps OTLP/JSON span by span as it is read, and the `json` model of the
//! fields read takes any other JSON body. Each hands the mapper a
//! `span::SpanView` and `span::Val` attributes; `Mapper::trace_bytes`,
//! here, picks the reader. The receivers that call these live in `server`.

pub mod buckets;
pub mod decode;
pub mod delta;
pub mod facts;
pub mod identity;
pub mod json;
pub mod otlp;
pub mod span;
pub mod walk;

use decode::{DecodeError, Encoding};
use otlp::Mapper;

use crate::model::Batch;

impl Mapper {
    /// A trace export straight from its bytes, handed to `then` as a batch:
    /// protobuf walked in place (`walk`), JSON mapped span by span as it is
    /// read (`json::stream`), or through a model of only the fields read
    /// when the body is not laid out as exporters write it. The same batch as decoding then `traces`, at a fraction
    /// of the cost.
    pub fn trace_bytes<R>(
        &self,
        bytes: &[u8],
        encoding: Encoding,
        then: impl FnOnce(Batch<'_>) -> R,
    ) -> Result<R, DecodeError> {
        match encoding {
            Encoding::Protobuf => Ok(then(walk::traces(self, bytes)?)),
            Encoding::Json => {
                if let Some(batch) = json::stream::traces(self, bytes) {
                    return Ok(then(batch));
                }
                let req: json::Request = decode::read_json(bytes)?;
                Ok(then(json::traces(self, &req)))
            }
        }
    }
}
