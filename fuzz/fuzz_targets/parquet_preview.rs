//! A Parquet file as `tributary preview` and the app's preview read it: footer, schema and
//! summary (row groups, column statistics formatted), the first rows formatted as the table
//! shows them, and one step of the column filter.
#![no_main]

use std::sync::{Arc, Once};

use arrow_cast::display::{ArrayFormatter, FormatOptions};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tributary_fuzz::lake::parquet_read::{
    MemorySource, ParquetDataset, ParquetFile, displayable_batch,
};

/// libfuzzer-sys aborts on every panic, through its panic hook. tributary contains the
/// parquet crate's own panics on malformed files (`parquet_read::contain`), as a release
/// build unwinds them: the hook lets those unwind, and still aborts on any other panic, which
/// is a crash to report (and one escaping the containment aborts when it reaches libFuzzer).
fn contain_parquet_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let abort = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_parquet = info
                .location()
                .is_some_and(|l| l.file().contains("/parquet-") || l.file().contains("/arrow-"));
            if !in_parquet {
                abort(info);
            }
        }));
    });
}

fuzz_target!(|data: &[u8]| {
    contain_parquet_panics();
    futures::executor::block_on(async {
        let source = MemorySource {
            uri: "fuzz.parquet".into(),
            bytes: Bytes::copy_from_slice(data),
        };
        let file = match ParquetFile::from_source(source).await {
            Ok(f) => f,
            Err(e) => {
                let _ = e.to_string();
                return;
            }
        };
        if let Ok(summary) = file.summary() {
            let _ = (summary.parquet_columns.len(), summary.row_groups.len());
        }
        let file = Arc::new(file);
        let dataset = ParquetDataset::single(file.clone());
        let _ = dataset.num_rows();
        // The preview's first page.
        if let Ok(batches) = dataset.read_rows(0, 200).await {
            let options = FormatOptions::default();
            for batch in &batches {
                let batch = displayable_batch(batch);
                for column in batch.columns() {
                    if let Ok(formatter) = ArrayFormatter::try_new(column.as_ref(), &options) {
                        for row in 0..batch.num_rows() {
                            let _ = formatter.value(row).to_string();
                        }
                    }
                }
            }
        }
        // One step of the column filter, on the first column of the first row group.
        if let Some(column) = dataset.schema().fields().first() {
            let _ = dataset
                .filter_row_group(0, 0, column.name(), "a")
                .await
                .map(|b| b.len());
        }
    });
});
