//! Binary COPY as the full load reads it: a stream for columns of arbitrary (valid) kinds,
//! fed in chunks to `CopyBinaryDecoder`, batches built, then the end of the stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tributary_fuzz::source::postgres::copy_binary::CopyBinaryDecoder;
use tributary_fuzz::{copy_case, pg_schema};

fuzz_target!(|data: &[u8]| {
    let case = copy_case(data);
    let mut decoder = CopyBinaryDecoder::new(pg_schema(&case.kinds, case.nullable), &case.kinds);
    let mut rows = 0;
    let chunk = if case.chunk == 0 {
        case.stream.len().max(1)
    } else {
        case.chunk
    };
    for piece in case.stream.chunks(chunk) {
        if let Err(e) = decoder.feed(piece, &mut |batch| rows += batch.num_rows()) {
            let _ = (e.column, e.position(), e.message);
            return;
        }
    }
    match decoder.finish() {
        Ok(batch) => rows += batch.map_or(0, |b| b.num_rows()),
        Err(e) => {
            let _ = (e.position(), e.message);
        }
    }
    let _ = rows;
});
