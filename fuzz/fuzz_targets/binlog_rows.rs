//! Binlog row images as CDC reads them: a table map made from the input and checked as the
//! engine checks one (`row_image::column`), the rows of a rows event decoded against it
//! (`row_image::decode_rows`), and every image built into Arrow (`RowBuilder`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tributary_fuzz::binlog_case;
use tributary_fuzz::source::mysql::row_image;
use tributary_fuzz::source::mysql::types::RowBuilder;

fuzz_target!(|data: &[u8]| {
    let case = match binlog_case(data) {
        Ok(case) => case,
        Err(message) => {
            let _ = message;
            return;
        }
    };
    let rows = match row_image::decode_rows(case.rows, &case.columns, case.before, case.after) {
        Ok(rows) => rows,
        Err(message) => {
            let _ = message;
            return;
        }
    };
    let schema = RowBuilder::schema_for(&case.names, &case.decoders);
    let mut builder = RowBuilder::new(schema, case.decoders.clone());
    for (before, after) in rows {
        for image in [before, after].into_iter().flatten() {
            if let Err((column, message)) = builder.append_row(&image) {
                let _ = (column, message);
            }
        }
        if builder.len() >= 64 {
            builder.finish();
        }
    }
    builder.finish();
});
