//! Turns captures from real servers into fuzz inputs (see `fuzz/capture-corpus`):
//!
//! - `corpus copy OUT COLUMN-CODES… < copy.bin`: a binary COPY stream (`COPY … TO STDOUT
//!   (FORMAT binary)`) with the columns' kind codes (hex bytes, `07,0b,03` for a decimal);
//! - `corpus pgoutput OUTDIR < changes.txt`: `lsn|xid|hex` lines of
//!   `pg_logical_slot_peek_binary_changes`, one input per transaction and one in all;
//! - `corpus binlog OUTDIR DATABASE [FROM] < binlog-file`: one input per rows event of the
//!   database's tables after position FROM, with its table map.

use std::collections::HashMap;
use std::io::Read;

use mysql_common::binlog::EventStreamReader;
use mysql_common::binlog::consts::BinlogVersion;
use mysql_common::binlog::events::{EventData, OptionalMetaExtractor, OptionalMetadataField};
use tributary_fuzz::{
    BinlogColumn, charset_code, encode_binlog_header, encode_copy_header, encode_frames,
};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut stdin = Vec::new();
    std::io::stdin().read_to_end(&mut stdin).expect("stdin");
    match args.first().map(String::as_str) {
        Some("copy") => {
            let columns: Vec<Vec<u8>> = args[2..]
                .iter()
                .map(|c| {
                    c.split(',')
                        .map(|b| u8::from_str_radix(b, 16).expect("hex code"))
                        .collect()
                })
                .collect();
            let refs: Vec<&[u8]> = columns.iter().map(Vec::as_slice).collect();
            let chunk: u8 = std::env::var("CHUNK")
                .ok()
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let mut out = encode_copy_header(&refs, false, chunk);
            out.extend_from_slice(&stdin);
            std::fs::write(&args[1], out).expect("write");
        }
        Some("pgoutput") => {
            let dir = &args[1];
            let text = String::from_utf8(stdin).expect("utf-8");
            let mut by_xid: Vec<(String, Vec<Vec<u8>>)> = Vec::new();
            let mut all = Vec::new();
            for line in text.lines().filter(|l| !l.is_empty()) {
                let mut parts = line.split('|');
                let (_, xid, hex) = (
                    parts.next(),
                    parts.next().expect("xid"),
                    parts.next().expect("hex"),
                );
                let bytes: Vec<u8> = (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
                    .collect();
                all.push(bytes.clone());
                match by_xid.last_mut() {
                    Some((x, messages)) if x == xid => messages.push(bytes),
                    _ => by_xid.push((xid.to_string(), vec![bytes])),
                }
            }
            for (i, (xid, messages)) in by_xid.iter().enumerate() {
                let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
                std::fs::write(format!("{dir}/tx-{i:02}-xid{xid}"), encode_frames(&refs))
                    .expect("write");
            }
            let refs: Vec<&[u8]> = all.iter().map(Vec::as_slice).collect();
            std::fs::write(format!("{dir}/all"), encode_frames(&refs)).expect("write");
        }
        Some("binlog") => {
            let (dir, database) = (&args[1], &args[2]);
            let from: u32 = args.get(3).map_or(0, |p| p.parse().expect("a position"));
            let mut input = stdin.get(4..).expect("binlog magic");
            let mut reader = EventStreamReader::new(BinlogVersion::Version4);
            let mut maps: HashMap<u64, (String, Vec<u8>)> = HashMap::new();
            let mut n = 0;
            while let Some(event) = reader.read(&mut input).expect("event") {
                if event.header().log_pos() <= from {
                    continue;
                }
                match event.read_data().expect("event data") {
                    Some(EventData::TableMapEvent(tme))
                        if tme.database_name() == database.as_str() =>
                    {
                        let meta =
                            OptionalMetaExtractor::new(tme.iter_optional_meta()).expect("meta");
                        let mut labels = Vec::new();
                        for field in tme.iter_optional_meta() {
                            match field.expect("field") {
                                OptionalMetadataField::EnumStrValue(v) => labels.extend(
                                    v.iter_values()
                                        .map(|l| l.expect("labels").values().len() as u8),
                                ),
                                OptionalMetadataField::SetStrValue(v) => labels.extend(
                                    v.iter_values()
                                        .map(|l| l.expect("labels").values().len() as u8),
                                ),
                                _ => {}
                            }
                        }
                        let mut labels = labels.into_iter();
                        let (mut signed, mut charsets, mut enum_charsets) = (
                            meta.iter_signedness(),
                            meta.iter_charset(),
                            meta.iter_enum_and_set_charset(),
                        );
                        let mut columns = Vec::new();
                        let metas: Vec<Vec<u8>> = (0..tme.columns_count() as usize)
                            .map(|i| tme.get_column_metadata(i).unwrap_or(&[]).to_vec())
                            .collect();
                        for (i, meta) in metas.iter().enumerate() {
                            let t = tme.get_column_type(i).expect("type").expect("type");
                            let unsigned = t.is_numeric_type() && signed.next().unwrap_or(false);
                            let collation = if t.is_character_type() {
                                charsets.next().transpose().expect("charset")
                            } else if t.is_enum_or_set_type() {
                                enum_charsets.next().transpose().expect("charset")
                            } else {
                                None
                            };
                            columns.push(BinlogColumn {
                                column_type: t as u8,
                                unsigned,
                                charset: collation.map_or(7, charset_code),
                                meta,
                                labels: if t.is_enum_or_set_type() {
                                    labels.next().unwrap_or(0)
                                } else {
                                    0
                                },
                            });
                        }
                        let header = encode_binlog_header(&columns, false, false);
                        maps.insert(tme.table_id(), (tme.table_name().into_owned(), header));
                    }
                    Some(EventData::RowsEvent(rows)) => {
                        let Some((table, header)) = maps.get(&rows.table_id()) else {
                            continue;
                        };
                        let mut input = header.clone();
                        // The images byte is the header's last.
                        let images = input.last_mut().expect("images byte");
                        *images = rows.columns_before_image().is_some() as u8
                            | (rows.columns_after_image().is_some() as u8) << 1;
                        input.extend_from_slice(rows.rows_data());
                        std::fs::write(format!("{dir}/{table}-{n:02}"), input).expect("write");
                        n += 1;
                    }
                    _ => {}
                }
            }
        }
        _ => panic!("usage: corpus copy|pgoutput|binlog …"),
    }
}
