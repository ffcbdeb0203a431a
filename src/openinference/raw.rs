//! Tensors as raw bytes, as the protocol sends them outside JSON (REST's binary-data extension,
//! gRPC's `raw_input_contents` / `raw_output_contents`): fixed-size elements little-endian and
//! row-major, BOOL one byte each, BYTES elements each preceded by its length as a 4-byte
//! little-endian integer.

use bytes::{Buf, Bytes};

use super::{Datatype, TensorData};
use crate::error::ServeError;
use crate::tensor::TensorValues;

/// Decodes `bytes` as elements of `datatype`. Every element decoded is backed by bytes already
/// received, so no declared count can make this allocate more than the body's size allows.
pub fn decode(datatype: Datatype, mut bytes: Bytes, input: &str) -> Result<TensorData, ServeError> {
    let bad = |message: String| ServeError::BadRequest(format!("input {input:?}: {message}"));
    let size = element_size(datatype);
    if datatype != Datatype::Bytes && !bytes.len().is_multiple_of(size) {
        return Err(bad(format!(
            "{} bytes of raw data are not a whole number of {} elements",
            bytes.len(),
            datatype.name()
        )));
    }
    macro_rules! each {
        ($variant:ident, $t:ty) => {
            TensorValues::$variant(
                bytes
                    .chunks_exact(size)
                    .map(|chunk| {
                        let mut element = [0u8; std::mem::size_of::<$t>()];
                        element.copy_from_slice(chunk);
                        <$t>::from_le_bytes(element)
                    })
                    .collect(),
            )
        };
    }
    let values = match datatype {
        Datatype::Bool => TensorValues::Bool(bytes.iter().map(|&byte| byte != 0).collect()),
        Datatype::Uint8 => TensorValues::U8(bytes.to_vec()),
        Datatype::Int8 => each!(I8, i8),
        Datatype::Int32 => each!(I32, i32),
        Datatype::Int64 => each!(I64, i64),
        Datatype::Fp16 => each!(F16, half::f16),
        Datatype::Fp32 => each!(F32, f32),
        Datatype::Fp64 => each!(F64, f64),
        Datatype::Bytes => {
            let mut items = Vec::new();
            while bytes.has_remaining() {
                if bytes.remaining() < 4 {
                    return Err(bad("a BYTES element is cut off in its length".into()));
                }
                let length = bytes.get_u32_le() as usize;
                if length > bytes.remaining() {
                    return Err(bad(format!(
                        "a BYTES element declares {length} bytes, {} are left",
                        bytes.remaining()
                    )));
                }
                items.push(bytes.split_to(length));
            }
            return Ok(TensorData::Bytes(items));
        }
    };
    Ok(TensorData::Values(values))
}

/// Encodes a tensor's elements as raw bytes.
pub fn encode(data: &TensorData) -> Vec<u8> {
    fn each<T: Copy, const N: usize>(values: &[T], to_bytes: fn(T) -> [u8; N]) -> Vec<u8> {
        values.iter().flat_map(|&value| to_bytes(value)).collect()
    }
    fn prefixed<'a>(items: impl Iterator<Item = std::borrow::Cow<'a, [u8]>>) -> Vec<u8> {
        let mut out = Vec::new();
        for item in items {
            let length = u32::try_from(item.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&length.to_le_bytes());
            out.extend_from_slice(&item);
        }
        out
    }
    match data {
        TensorData::Values(values) => match values {
            TensorValues::Bool(values) => values.iter().map(|&value| u8::from(value)).collect(),
            TensorValues::U8(values) => values.clone(),
            TensorValues::I8(values) => each(values, i8::to_le_bytes),
            TensorValues::I32(values) => each(values, i32::to_le_bytes),
            TensorValues::I64(values) => each(values, i64::to_le_bytes),
            TensorValues::F16(values) => each(values, half::f16::to_le_bytes),
            TensorValues::F32(values) => each(values, f32::to_le_bytes),
            TensorValues::F64(values) => each(values, f64::to_le_bytes),
        },
        TensorData::Bytes(items) => prefixed(items.iter().map(|item| item.as_ref().into())),
        TensorData::Answers(items) => prefixed(items.iter().map(answer_bytes)),
    }
}

/// A handler answer as one BYTES element: a string's UTF-8, any other value's JSON text.
pub fn answer_bytes(answer: &serde_json::Value) -> std::borrow::Cow<'_, [u8]> {
    match answer {
        serde_json::Value::String(text) => text.as_bytes().into(),
        other => other.to_string().into_bytes().into(),
    }
}

/// Bytes per element (BYTES: its length prefix).
fn element_size(datatype: Datatype) -> usize {
    match datatype {
        Datatype::Bool | Datatype::Uint8 | Datatype::Int8 => 1,
        Datatype::Fp16 => 2,
        Datatype::Int32 | Datatype::Fp32 | Datatype::Bytes => 4,
        Datatype::Int64 | Datatype::Fp64 => 8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_datatype_round_trips() {
        let cases = [
            TensorData::Values(TensorValues::F32(vec![1.5, -2.0])),
            TensorData::Values(TensorValues::F16(vec![half::f16::from_f32(0.5)])),
            TensorData::Values(TensorValues::I64(vec![i64::MIN, 7])),
            TensorData::Values(TensorValues::Bool(vec![true, false])),
            TensorData::Bytes(vec![Bytes::from_static(b"ab"), Bytes::new()]),
        ];
        for (data, datatype) in cases.into_iter().zip([
            Datatype::Fp32,
            Datatype::Fp16,
            Datatype::Int64,
            Datatype::Bool,
            Datatype::Bytes,
        ]) {
            let bytes = Bytes::from(encode(&data));
            assert_eq!(decode(datatype, bytes, "x").expect("decodes"), data);
        }
    }

    #[test]
    fn cut_off_data_is_a_bad_request() {
        for (datatype, bytes) in [
            (Datatype::Fp32, &b"\x00\x00\x80"[..]),
            (Datatype::Bytes, b"\x05\x00\x00\x00ab"),
            (Datatype::Bytes, b"\x01\x00"),
        ] {
            let error = decode(datatype, Bytes::copy_from_slice(bytes), "x").expect_err("refused");
            assert_eq!(error.status(), 400);
        }
    }
}
