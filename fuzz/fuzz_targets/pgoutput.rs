//! pgoutput messages as CDC reads them: each decoded (`pgoutput::decode`), relations kept,
//! and the text values of inserted, updated and deleted rows built into Arrow batches of the
//! relation's column kinds (`TextBatchBuilder`), as the change stream writes them.
#![no_main]

use std::collections::HashMap;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tributary_fuzz::source::postgres::copy_binary::TextBatchBuilder;
use tributary_fuzz::source::postgres::pgoutput::{self, Message, OldTuple, Tuple, Value};
use tributary_fuzz::{frames, pg_kind, pg_schema};

fuzz_target!(|data: &[u8]| {
    let mut relations: HashMap<u32, TextBatchBuilder> = HashMap::new();
    for frame in frames(data) {
        let message = match pgoutput::decode(&Bytes::copy_from_slice(frame)) {
            Ok(m) => m,
            Err(e) => {
                let _ = e.to_string();
                continue;
            }
        };
        let (relation, tuples): (u32, Vec<Tuple>) = match message {
            Message::Relation(r) => {
                let kinds: Vec<_> = r
                    .columns
                    .iter()
                    .map(|c| pg_kind(c.type_oid, c.typmod))
                    .collect();
                let builder = TextBatchBuilder::new(pg_schema(&kinds, true), &kinds);
                relations.insert(r.id, builder);
                continue;
            }
            Message::Insert { relation, new } => (relation, vec![new]),
            Message::Update { relation, old, new } => (
                relation,
                match old {
                    Some(OldTuple::Full(old)) => vec![old, new],
                    _ => vec![new],
                },
            ),
            Message::Delete {
                relation,
                old: OldTuple::Full(old),
            } => (relation, vec![old]),
            _ => continue,
        };
        let Some(builder) = relations.get_mut(&relation) else {
            continue;
        };
        for tuple in tuples {
            // As the CDC loop does: NULL is None, text must be UTF-8, others are refused.
            let texts: Option<Vec<Option<&str>>> = tuple
                .iter()
                .map(|v| match v {
                    Value::Null => Some(None),
                    Value::Text(b) => std::str::from_utf8(b).ok().map(Some),
                    _ => None,
                })
                .collect();
            if let Some(texts) = texts
                && let Err(e) = builder.append_row(texts)
            {
                let _ = (e.column, e.position(), e.message);
            }
            if builder.len() >= 64 {
                builder.finish();
            }
        }
    }
    for builder in relations.values_mut() {
        builder.finish();
    }
});
