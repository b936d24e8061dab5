//! What a ClickHouse error means, decided in one place for every stage.
//!
//! The consumer must tell an outage (retry, commit nothing) from data that the
//! server refuses (isolate the message, dead-letter it); the query API must
//! tell a caller's limit from an unavailable server. Both read the same
//! classes. The default is [`ErrorClass::Unavailable`]: an error is only ever
//! blamed on the data when its code can only arise while the server reads
//! row values, i.e. after it has resolved the table and checked the rights.
//! The table with the reasons is in `docs/architecture.md`.

/// The class of a ClickHouse error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The rows themselves were refused (parse, type, size, value checks):
    /// it may belong to one message, which the consumer proves by isolating it.
    Data,
    /// A read limit the caller set (`max_rows_to_read`, `max_bytes_to_read`).
    ScanLimit,
    /// A time limit the caller set (`max_execution_time`).
    Timeout,
    /// Anything else: the network, the server (starting, shutting down,
    /// overloaded, out of memory or disk), a table (missing, detached,
    /// read-only, too many parts), rights (authentication, access, quota),
    /// and every code not known to be about the data.
    Unavailable,
}

/// Server codes raised while reading row values, so the data is at fault
/// (names as in ClickHouse's `ErrorCodes.cpp`). Codes that can also come from
/// a cut connection (33 CANNOT_READ_ALL_DATA) are deliberately not here.
pub const DATA_CODES: &[(u32, &str)] = &[
    (6, "CANNOT_PARSE_TEXT"),
    (27, "CANNOT_PARSE_INPUT_ASSERTION_FAILED"),
    (38, "CANNOT_PARSE_DATE"),
    (41, "CANNOT_PARSE_DATETIME"),
    (53, "TYPE_MISMATCH"),
    (69, "ARGUMENT_OUT_OF_BOUND"),
    (70, "CANNOT_CONVERT_TYPE"),
    (72, "CANNOT_PARSE_NUMBER"),
    (117, "INCORRECT_DATA"),
    (128, "TOO_LARGE_ARRAY_SIZE"),
    (131, "TOO_LARGE_STRING_SIZE"),
    (190, "SIZES_OF_ARRAYS_DOESNT_MATCH"),
    (395, "FUNCTION_THROW_IF_VALUE_IS_NON_ZERO"),
    (469, "VIOLATED_CONSTRAINT"),
];

/// TOO_MANY_ROWS (158) and TOO_MANY_BYTES (307): `max_rows_to_read` / `max_bytes_to_read`.
const SCAN_LIMIT_CODES: &[u32] = &[158, 307];
/// TIMEOUT_EXCEEDED.
const TIMEOUT_CODE: u32 = 159;

/// Classifies an error by its transport kind or the server's `Code: N`.
pub fn classify(error: &clickhouse::error::Error) -> ErrorClass {
    use clickhouse::error::Error as E;
    match error {
        E::BadResponse(text) => match server_code(text) {
            Some(code) => classify_code(code),
            // No code: a proxy or a half-started server answered.
            None => ErrorClass::Unavailable,
        },
        // Our own rows could not be encoded: deterministic for the message
        // that carries them (serde's messages, strings, sequences).
        E::Custom(_) | E::SequenceMustHaveLength | E::InvalidUtf8Encoding(_) => ErrorClass::Data,
        E::TimedOut => ErrorClass::Timeout,
        _ => ErrorClass::Unavailable,
    }
}

/// The class of a server code.
pub fn classify_code(code: u32) -> ErrorClass {
    if DATA_CODES.iter().any(|(c, _)| *c == code) {
        ErrorClass::Data
    } else if SCAN_LIMIT_CODES.contains(&code) {
        ErrorClass::ScanLimit
    } else if code == TIMEOUT_CODE {
        ErrorClass::Timeout
    } else {
        ErrorClass::Unavailable
    }
}

/// The `N` of `Code: N` in a ClickHouse error text.
pub fn server_code(text: &str) -> Option<u32> {
    let rest = &text[text.find("Code: ")? + 6..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The server code of an error, if the server answered with one.
pub fn code_of(error: &clickhouse::error::Error) -> Option<u32> {
    match error {
        clickhouse::error::Error::BadResponse(text) => server_code(text),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clickhouse::error::Error as E;

    #[test]
    fn server_codes_are_parsed() {
        assert_eq!(
            server_code("Code: 252. DB::Exception: Too many parts (600)"),
            Some(252)
        );
        assert_eq!(
            server_code("Code: 53, e.displayText() = DB::Exception: Type mismatch"),
            Some(53)
        );
        assert_eq!(server_code("502 Bad Gateway"), None);
        assert_eq!(server_code("Code: x"), None);
    }

    #[test]
    fn only_codes_about_row_values_blame_the_data() {
        let class = |text: &str| classify(&E::BadResponse(text.into()));
        assert_eq!(class("Code: 53. Type mismatch"), ErrorClass::Data);
        assert_eq!(class("Code: 131. Too large string size"), ErrorClass::Data);
        // Each of these once dead-lettered healthy messages (issue 12): they are
        // about the server, a table or the rights, never about one message.
        for outage in [
            60,  // UNKNOWN_TABLE (detached, dropped)
            81,  // UNKNOWN_DATABASE
            164, // READONLY
            192, // UNKNOWN_USER (18.16)
            193, // WRONG_PASSWORD (18.16)
            201, // QUOTA_EXPIRED
            202, // TOO_MANY_SIMULTANEOUS_QUERIES
            241, // MEMORY_LIMIT_EXCEEDED
            243, // NOT_ENOUGH_SPACE
            252, // TOO_MANY_PARTS
            291, // DATABASE_ACCESS_DENIED
            394, // QUERY_WAS_CANCELLED (shutting down)
            439, // CANNOT_SCHEDULE_TASK
            497, // ACCESS_DENIED
            516, // AUTHENTICATION_FAILED
            33,  // CANNOT_READ_ALL_DATA: also a cut connection
            62,  // SYNTAX_ERROR: our statement, every message alike
            9999,
        ] {
            assert_eq!(
                class(&format!("Code: {outage}. DB::Exception: …")),
                ErrorClass::Unavailable,
                "code {outage}"
            );
        }
        assert_eq!(
            class("<html>502 Bad Gateway</html>"),
            ErrorClass::Unavailable
        );
        assert_eq!(class("Code: 158. Limit for rows"), ErrorClass::ScanLimit);
        assert_eq!(class("Code: 159. Timeout exceeded"), ErrorClass::Timeout);
        assert_eq!(classify(&E::TimedOut), ErrorClass::Timeout);
        assert_eq!(classify(&E::Custom("bad".into())), ErrorClass::Data);
        assert_eq!(
            classify(&E::Network("reset".into())),
            ErrorClass::Unavailable
        );
    }
}
