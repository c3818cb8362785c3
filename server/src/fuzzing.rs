//! Harness functions for the fuzz targets in `fuzz/` and for the property tests that run the
//! same functions in `cargo test`: each takes arbitrary input, hostile or not, and must return
//! (an error is a fine answer), never panic, hang or exhaust memory. One per decoder or parser a
//! client or a damaged disk can feed: log frames and records, outbox records, weft's statement
//! preparation, DAG-CBOR invocations and receipts, logged receipt runs, workflow documents, and
//! the PostgreSQL protocol's start-up and query messages.

use crate::prepared;
use datafusion::sql::sqlparser::ast;

/// A log file's bytes: its frames read as `open` reads them, each whole payload decoded as a
/// WAL record and as an outbox record.
pub fn log_file(bytes: &[u8]) {
    let (payloads, _) = weft_core::wal::read_frames(bytes);
    for payload in payloads {
        log_record(&payload);
    }
}

/// One frame's payload, decoded as a WAL record and as an outbox record.
pub fn log_record(payload: &[u8]) {
    let _ = bincode::deserialize::<weft_core::wal::Record>(payload);
    let _ = bincode::deserialize::<weft_effects::OutboxRecord>(payload);
}

/// A client's statement text: split, prepared, its parameters bound to hostile values, and the
/// bound statement printed and parsed back.
pub fn statement_text(text: &str) {
    for piece in weft_core::functions::split_statements(text) {
        // weft's own statements, and what they become.
        match weft_sql::statement::parse_weft_statement(&piece) {
            Some(Ok(weft_sql::statement::WeftStatement::CreateFunction(spec))) => {
                let _ = weft_core::functions::function_statement(spec);
            }
            Some(Ok(statement)) => {
                let _ = weft_core::connections::effect_statement(statement);
            }
            _ => {}
        }
        let Ok(prepared) = prepared::prepare(&piece) else {
            continue;
        };
        let count = prepared.parameter_count().min(64);
        let values: Vec<ast::Expr> = (0..count)
            .map(|index| ast::Expr::value(ast::Value::SingleQuotedString(format!("'); DROP TABLE t; -- {index}"))))
            .collect();
        if let prepared::Prepared::Sql(bound) = prepared.bind(&values) {
            let _ = weft_sql::parse(&bound.to_string());
        }
    }
}

/// DAG-CBOR bytes read as an invocation, a receipt, a logged receipt batch and logged runs.
pub fn receipt_bytes(bytes: &[u8]) {
    if let Ok(ipld) = weft_ipvm::invocation::decode(bytes) {
        let _ = weft_ipvm::invocation::Invocation::from_ipld(&ipld);
        let _ = weft_ipvm::invocation::Receipt::from_ipld(&ipld);
    }
    let _ = weft_ipvm::receipts::LoggedBatch::decode(bytes);
    let _ = weft_ipvm::receipts::LoggedRuns::decode(bytes);
}

/// A client's workflow document (DAG-JSON), parsed and named as `SUBMIT WORKFLOW` would.
pub fn workflow_text(text: &str) {
    if let Ok(workflow) = weft_ipvm::workflow::parse_workflow(text) {
        for task in &workflow.tasks {
            let _ = task.awaits();
        }
    }
}

/// Bytes a client sends over the PostgreSQL protocol: decoded as start-up messages, then as
/// messages of an established session, as the server reads them.
pub fn pg_messages(bytes: &[u8]) {
    use pgwire::messages::{DecodeContext, PgWireFrontendMessage, ProtocolVersion};
    for established in [false, true] {
        let mut context = DecodeContext::new(ProtocolVersion::PROTOCOL3_0);
        if established {
            context.awaiting_frontend_ssl = false;
            context.awaiting_frontend_startup = false;
        }
        let mut buffer = bytes::BytesMut::from(bytes);
        // Each decoded message consumes bytes; a bounded loop besides, in case one does not.
        for _ in 0..bytes.len() + 1 {
            // pgwire's decoder panics on some malformed frames (a length field under 4, a body
            // that promises more than it holds). The server contains such a panic to the
            // client's own connection, releasing its session (tests/serve.rs,
            // `a_malformed_message_ends_only_its_own_connection_and_releases_the_writer`), so
            // here it ends the "connection" too.
            let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                PgWireFrontendMessage::decode(&mut buffer, &context)
            }));
            let Ok(decoded) = decoded else { break };
            match decoded {
                Ok(Some(pgwire::messages::PgWireFrontendMessage::SslNegotiation(_))) => {
                    context.awaiting_frontend_ssl = false;
                }
                Ok(Some(_)) => context.awaiting_frontend_startup = false,
                Ok(None) | Err(_) => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

        #[test]
        fn log_files_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            log_file(&bytes);
            log_record(&bytes);
            // A real log's header followed by arbitrary frames.
            let mut with_magic = b"WEFTLOG2".to_vec();
            with_magic.extend_from_slice(&bytes);
            log_file(&with_magic);
        }

        #[test]
        fn statements_never_panic(text in ".{0,200}") {
            statement_text(&text);
        }

        #[test]
        fn sql_like_statements_never_panic(
            words in proptest::collection::vec(
                prop_oneof![
                    Just("SELECT"), Just("INSERT INTO t VALUES"), Just("$1"), Just("$2"), Just("("), Just(")"),
                    Just("'"), Just("''"), Just(","), Just(";"), Just("pg_catalog.pg_class"), Just("FROM"),
                    Just("OPERATOR(pg_catalog.~)"), Just("::regclass"), Just("COLLATE pg_catalog.default"),
                    Just("CREATE FUNCTION"), Just("CREATE SINK"), Just("SUBSCRIBE"), Just("WITH"), Just("--"),
                    Just("x"), Just("1"), Just("pg_get_expr("), Just("\""), Just("BEGIN"), Just("DEALLOCATE ALL"),
                ],
                0..24,
            )
        ) {
            statement_text(&words.join(" "));
        }

        #[test]
        fn receipts_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            receipt_bytes(&bytes);
        }

        #[test]
        fn workflows_never_panic(text in ".{0,300}") {
            workflow_text(&text);
        }

        #[test]
        fn workflow_like_documents_never_panic(
            words in proptest::collection::vec(
                prop_oneof![
                    Just("{"), Just("}"), Just("["), Just("]"), Just(","), Just(":"), Just("\"tasks\""),
                    Just("\"run\""), Just("\"input\""), Just("\"args\""), Just("\"await/ok\""), Just("\"/\""),
                    Just("\"bafyrmihmxmsbt4n3g6dzmj7rho34mzfbaoqqbsfcq7etsogslqftbyj7du\""), Just("\"bytes\""),
                    Just("18446744073709552000"), Just("-1"), Just("1.5"), Just("null"), Just("\"meta\""),
                    Just("\"fuel\""), Just("\"rsc\""), Just("\"op\""), Just("\"x\""),
                ],
                0..40,
            )
        ) {
            workflow_text(&words.join(""));
        }

        #[test]
        fn pg_messages_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            pg_messages(&bytes);
        }
    }

    #[test]
    fn real_inputs_pass_through_the_harnesses() {
        let record = weft_core::wal::Record::Drop { id: 7 };
        let frame = weft_core::wal::encode_frame(&record).unwrap();
        let mut log = b"WEFTLOG2".to_vec();
        log.extend_from_slice(&frame);
        let (payloads, ending) = weft_core::wal::read_frames(&log);
        assert_eq!((payloads.len(), ending), (1, "clean"));
        log_file(&log);
        statement_text("SELECT $1 || $2 FROM pg_catalog.pg_class WHERE relname OPERATOR(pg_catalog.~) '^t$'");
        // A startup message: length, protocol 3.0, user=weft.
        let mut startup = vec![0, 0, 0, 0, 0, 3, 0, 0];
        startup.extend_from_slice(b"user\0weft\0\0");
        let length = (startup.len() as u32).to_be_bytes();
        startup[..4].copy_from_slice(&length);
        pg_messages(&startup);
    }
}
