//! Parser for messages of PostgreSQL's `pgoutput` logical decoding plugin,
//! protocol version 1, as carried in the payload of `XLogData` messages.
//!
//! Column values are slices of the input buffer, so decoding a change does not
//! copy row data; only names (relation, namespace, column, origin, prefix)
//! are turned into owned strings.

use std::fmt;

use bytes::Bytes;

/// One column of a TupleData section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TupleValue {
    /// SQL NULL.
    Null,
    /// A TOASTed value the server did not resend because it did not change;
    /// the consumer must keep the value it already has.
    Unchanged,
    /// The value in its type's text output format.
    Text(Bytes),
    /// The value in its type's binary send format (subscriptions with `binary`).
    Binary(Bytes),
}

/// One column of a Relation message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    /// Whether the column belongs to the replica identity (the key sent in 'K' tuples).
    pub is_key: bool,
    /// Column name.
    pub name: String,
    /// OID of the column's data type.
    pub type_oid: u32,
    /// Type modifier (`atttypmod`), -1 when the type has none.
    pub type_modifier: i32,
}

/// Schema of a table, sent before the first change that uses it and again
/// whenever it may have changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// OID of the table.
    pub oid: u32,
    /// Schema name; the server sends an empty string for `pg_catalog`.
    pub namespace: String,
    /// Table name.
    pub name: String,
    /// Replica identity setting: b'd' default, b'n' nothing, b'f' full, b'i' index.
    pub replica_identity: u8,
    /// Columns in tuple order.
    pub columns: Vec<RelationColumn>,
}

/// A decoded pgoutput message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgOutputMessage {
    /// Start of a transaction.
    Begin {
        /// LSN of the transaction's commit record.
        final_lsn: u64,
        /// Commit time in microseconds since 2000-01-01 00:00:00 UTC.
        commit_time: i64,
        /// Transaction id.
        xid: u32,
    },
    /// End of a transaction.
    Commit {
        /// Reserved flags, currently always 0.
        flags: u8,
        /// LSN of the commit record.
        commit_lsn: u64,
        /// LSN just past the commit record, where streaming may resume.
        end_lsn: u64,
        /// Commit time in microseconds since 2000-01-01 00:00:00 UTC.
        commit_time: i64,
    },
    /// The transaction originated on another node (replication origin).
    Origin {
        /// Commit LSN on the origin server.
        lsn: u64,
        /// Name of the origin.
        name: String,
    },
    /// Table schema.
    Relation(Relation),
    /// Data type name, sent for types outside `pg_catalog` before they are used.
    Type {
        /// OID of the type.
        oid: u32,
        /// Schema name; empty for `pg_catalog`.
        namespace: String,
        /// Type name.
        name: String,
    },
    /// A row was inserted.
    Insert {
        /// OID of the table, as announced by a Relation message.
        relation: u32,
        /// The new row.
        new: Vec<TupleValue>,
    },
    /// A row was updated.
    Update {
        /// OID of the table, as announced by a Relation message.
        relation: u32,
        /// The old row or its key, present only when the key changed or the
        /// table has `REPLICA IDENTITY FULL`.
        old: Option<Vec<TupleValue>>,
        /// Whether `old` holds only replica identity columns ('K') rather
        /// than the whole row ('O'); other columns are then null.
        old_is_key_only: bool,
        /// The new row.
        new: Vec<TupleValue>,
    },
    /// A row was deleted.
    Delete {
        /// OID of the table, as announced by a Relation message.
        relation: u32,
        /// The old row or its key.
        old: Vec<TupleValue>,
        /// Whether `old` holds only replica identity columns ('K') rather
        /// than the whole row ('O'); other columns are then null.
        old_is_key_only: bool,
    },
    /// Tables were truncated.
    Truncate {
        /// OIDs of the truncated tables.
        relations: Vec<u32>,
        /// `TRUNCATE ... CASCADE`.
        cascade: bool,
        /// `TRUNCATE ... RESTART IDENTITY`.
        restart_identity: bool,
    },
    /// A message written with `pg_logical_emit_message`.
    Message {
        /// Whether the message belongs to the enclosing transaction.
        transactional: bool,
        /// LSN of the message.
        lsn: u64,
        /// Prefix given by the writer.
        prefix: String,
        /// Message body.
        content: Bytes,
    },
}

impl PgOutputMessage {
    /// The message's kind, for logging and dispatch.
    pub fn kind(&self) -> MessageKind {
        match self {
            PgOutputMessage::Begin { .. } => MessageKind::Begin,
            PgOutputMessage::Commit { .. } => MessageKind::Commit,
            PgOutputMessage::Origin { .. } => MessageKind::Origin,
            PgOutputMessage::Relation(_) => MessageKind::Relation,
            PgOutputMessage::Type { .. } => MessageKind::Type,
            PgOutputMessage::Insert { .. } => MessageKind::Insert,
            PgOutputMessage::Update { .. } => MessageKind::Update,
            PgOutputMessage::Delete { .. } => MessageKind::Delete,
            PgOutputMessage::Truncate { .. } => MessageKind::Truncate,
            PgOutputMessage::Message { .. } => MessageKind::Message,
        }
    }
}

/// The kinds of protocol version 1 messages, named in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// 'B'.
    Begin,
    /// 'C'.
    Commit,
    /// 'O'.
    Origin,
    /// 'R'.
    Relation,
    /// 'Y'.
    Type,
    /// 'I'.
    Insert,
    /// 'U'.
    Update,
    /// 'D'.
    Delete,
    /// 'T'.
    Truncate,
    /// 'M'.
    Message,
}

impl MessageKind {
    /// The byte that opens messages of this kind.
    pub const fn tag(self) -> u8 {
        match self {
            MessageKind::Begin => b'B',
            MessageKind::Commit => b'C',
            MessageKind::Origin => b'O',
            MessageKind::Relation => b'R',
            MessageKind::Type => b'Y',
            MessageKind::Insert => b'I',
            MessageKind::Update => b'U',
            MessageKind::Delete => b'D',
            MessageKind::Truncate => b'T',
            MessageKind::Message => b'M',
        }
    }

    /// The kind a message's first byte announces, if protocol version 1 defines it.
    pub const fn from_tag(tag: u8) -> Option<MessageKind> {
        Some(match tag {
            b'B' => MessageKind::Begin,
            b'C' => MessageKind::Commit,
            b'O' => MessageKind::Origin,
            b'R' => MessageKind::Relation,
            b'Y' => MessageKind::Type,
            b'I' => MessageKind::Insert,
            b'U' => MessageKind::Update,
            b'D' => MessageKind::Delete,
            b'T' => MessageKind::Truncate,
            b'M' => MessageKind::Message,
            _ => return None,
        })
    }
}

impl fmt::Display for MessageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} ('{}')", self, char::from(self.tag()))
    }
}

/// Why a pgoutput message could not be parsed. Offsets count from the
/// message's first (type) byte.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PgOutputError {
    /// The payload held no bytes at all.
    #[error("empty pgoutput message")]
    Empty,
    /// The first byte names no protocol version 1 message.
    #[error("unknown pgoutput message type byte 0x{0:02X}")]
    UnknownMessageType(u8),
    /// The message ended in the middle of a field.
    #[error(
        "{kind} message truncated at byte {offset} reading {field}: needs {needed} bytes, {available} left"
    )]
    Truncated {
        /// Message being parsed.
        kind: MessageKind,
        /// Field being read.
        field: &'static str,
        /// Where the field starts.
        offset: usize,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the message.
        available: usize,
    },
    /// A string field ran to the end of the message without its NUL terminator.
    #[error("{kind} message truncated: {field} at byte {offset} has no terminating NUL")]
    UnterminatedString {
        /// Message being parsed.
        kind: MessageKind,
        /// Field being read.
        field: &'static str,
        /// Where the string starts.
        offset: usize,
    },
    /// A string field is not UTF-8; the connection must use UTF8 client encoding.
    #[error("{kind} message: {field} at byte {offset} is not valid UTF-8")]
    InvalidUtf8 {
        /// Message being parsed.
        kind: MessageKind,
        /// Field being read.
        field: &'static str,
        /// Where the string starts.
        offset: usize,
    },
    /// A marker byte had a value the protocol does not allow there.
    #[error("{kind} message: unexpected byte 0x{byte:02X} at byte {offset}, expected {expected}")]
    UnexpectedByte {
        /// Message being parsed.
        kind: MessageKind,
        /// The byte found.
        byte: u8,
        /// Where it was found.
        offset: usize,
        /// What the protocol allows there.
        expected: &'static str,
    },
    /// A count or length field was negative.
    #[error("{kind} message: {field} at byte {offset} is negative ({value})")]
    NegativeLength {
        /// Message being parsed.
        kind: MessageKind,
        /// Field being read.
        field: &'static str,
        /// Where the field starts.
        offset: usize,
        /// The value read.
        value: i32,
    },
    /// Bytes remained after the last field of the message.
    #[error("{kind} message has {extra} unexpected bytes after its last field")]
    TrailingBytes {
        /// Message being parsed.
        kind: MessageKind,
        /// Number of extra bytes.
        extra: usize,
    },
}

impl PgOutputError {
    /// The kind of message that failed, when its type byte was recognised.
    pub fn kind(&self) -> Option<MessageKind> {
        match self {
            PgOutputError::Empty | PgOutputError::UnknownMessageType(_) => None,
            PgOutputError::Truncated { kind, .. }
            | PgOutputError::UnterminatedString { kind, .. }
            | PgOutputError::InvalidUtf8 { kind, .. }
            | PgOutputError::UnexpectedByte { kind, .. }
            | PgOutputError::NegativeLength { kind, .. }
            | PgOutputError::TrailingBytes { kind, .. } => Some(*kind),
        }
    }
}

/// Parses one pgoutput message; column values and message content share `data`'s buffer.
pub fn parse_message(data: Bytes) -> Result<PgOutputMessage, PgOutputError> {
    let Some(&tag) = data.first() else {
        return Err(PgOutputError::Empty);
    };
    let kind = MessageKind::from_tag(tag).ok_or(PgOutputError::UnknownMessageType(tag))?;
    let mut r = Reader { data, pos: 1, kind };
    let message = match kind {
        MessageKind::Begin => PgOutputMessage::Begin {
            final_lsn: r.u64("final LSN")?,
            commit_time: r.i64("commit timestamp")?,
            xid: r.u32("transaction id")?,
        },
        MessageKind::Commit => PgOutputMessage::Commit {
            flags: r.u8("flags")?,
            commit_lsn: r.u64("commit LSN")?,
            end_lsn: r.u64("end LSN")?,
            commit_time: r.i64("commit timestamp")?,
        },
        MessageKind::Origin => PgOutputMessage::Origin {
            lsn: r.u64("origin LSN")?,
            name: r.string("origin name")?,
        },
        MessageKind::Relation => PgOutputMessage::Relation(r.relation()?),
        MessageKind::Type => PgOutputMessage::Type {
            oid: r.u32("type OID")?,
            namespace: r.string("type namespace")?,
            name: r.string("type name")?,
        },
        MessageKind::Insert => {
            let relation = r.u32("relation OID")?;
            r.expect(b'N', "'N' (new tuple)")?;
            PgOutputMessage::Insert {
                relation,
                new: r.tuple()?,
            }
        }
        MessageKind::Update => {
            let relation = r.u32("relation OID")?;
            let offset = r.pos;
            let (old, old_is_key_only) = match r.u8("tuple marker")? {
                marker @ (b'K' | b'O') => {
                    let old = r.tuple()?;
                    r.expect(b'N', "'N' (new tuple)")?;
                    (Some(old), marker == b'K')
                }
                b'N' => (None, false),
                byte => return Err(r.unexpected(byte, offset, "'K', 'O' or 'N' (tuple)")),
            };
            PgOutputMessage::Update {
                relation,
                old,
                old_is_key_only,
                new: r.tuple()?,
            }
        }
        MessageKind::Delete => {
            let relation = r.u32("relation OID")?;
            let offset = r.pos;
            let old_is_key_only = match r.u8("tuple marker")? {
                b'K' => true,
                b'O' => false,
                byte => return Err(r.unexpected(byte, offset, "'K' or 'O' (old tuple)")),
            };
            PgOutputMessage::Delete {
                relation,
                old: r.tuple()?,
                old_is_key_only,
            }
        }
        MessageKind::Truncate => {
            let count = r.u32("relation count")? as usize;
            let options = r.u8("options")?;
            // Bound the allocation by what the message can actually hold.
            let mut relations = Vec::with_capacity(count.min(r.remaining() / 4));
            for _ in 0..count {
                relations.push(r.u32("relation OID")?);
            }
            PgOutputMessage::Truncate {
                relations,
                cascade: options & 1 != 0,
                restart_identity: options & 2 != 0,
            }
        }
        MessageKind::Message => {
            let flags = r.u8("flags")?;
            let lsn = r.u64("message LSN")?;
            let prefix = r.string("message prefix")?;
            let len = r.u32("content length")? as usize;
            PgOutputMessage::Message {
                transactional: flags & 1 != 0,
                lsn,
                prefix,
                content: r.bytes(len, "message content")?,
            }
        }
    };
    r.finish()?;
    Ok(message)
}

/// Cursor over one message that names the message kind and field in every error.
struct Reader {
    data: Bytes,
    pos: usize,
    kind: MessageKind,
}

impl Reader {
    fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    /// Takes the next `N` bytes as an array.
    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], PgOutputError> {
        match self.data[self.pos..].first_chunk::<N>() {
            Some(array) => {
                self.pos += N;
                Ok(*array)
            }
            None => Err(self.truncated(field, N)),
        }
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, PgOutputError> {
        Ok(self.array::<1>(field)?[0])
    }

    fn i16(&mut self, field: &'static str) -> Result<i16, PgOutputError> {
        self.array(field).map(i16::from_be_bytes)
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, PgOutputError> {
        self.array(field).map(u32::from_be_bytes)
    }

    fn i32(&mut self, field: &'static str) -> Result<i32, PgOutputError> {
        self.array(field).map(i32::from_be_bytes)
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, PgOutputError> {
        self.array(field).map(u64::from_be_bytes)
    }

    fn i64(&mut self, field: &'static str) -> Result<i64, PgOutputError> {
        self.array(field).map(i64::from_be_bytes)
    }

    /// Takes `len` bytes as a slice sharing the message buffer.
    fn bytes(&mut self, len: usize, field: &'static str) -> Result<Bytes, PgOutputError> {
        if len > self.remaining() {
            return Err(self.truncated(field, len));
        }
        let value = self.data.slice(self.pos..self.pos + len);
        self.pos += len;
        Ok(value)
    }

    /// Reads a NUL-terminated string.
    fn string(&mut self, field: &'static str) -> Result<String, PgOutputError> {
        let offset = self.pos;
        let rest = &self.data[offset..];
        let Some(len) = rest.iter().position(|&b| b == 0) else {
            return Err(PgOutputError::UnterminatedString {
                kind: self.kind,
                field,
                offset,
            });
        };
        let text = std::str::from_utf8(&rest[..len]).map_err(|_| PgOutputError::InvalidUtf8 {
            kind: self.kind,
            field,
            offset,
        })?;
        let text = text.to_owned();
        self.pos += len + 1;
        Ok(text)
    }

    /// Reads a marker byte that must have one specific value.
    fn expect(&mut self, marker: u8, expected: &'static str) -> Result<(), PgOutputError> {
        let offset = self.pos;
        match self.u8("tuple marker")? {
            byte if byte == marker => Ok(()),
            byte => Err(self.unexpected(byte, offset, expected)),
        }
    }

    /// Reads an Int16 count or Int32 length that must not be negative.
    fn length(&mut self, field: &'static str, wide: bool) -> Result<usize, PgOutputError> {
        let offset = self.pos;
        let value = if wide {
            self.i32(field)?
        } else {
            i32::from(self.i16(field)?)
        };
        usize::try_from(value).map_err(|_| PgOutputError::NegativeLength {
            kind: self.kind,
            field,
            offset,
            value,
        })
    }

    /// Reads a TupleData section.
    fn tuple(&mut self) -> Result<Vec<TupleValue>, PgOutputError> {
        let count = self.length("tuple column count", false)?;
        // Every column takes at least its kind byte, which bounds the allocation.
        let mut values = Vec::with_capacity(count.min(self.remaining()));
        for _ in 0..count {
            let offset = self.pos;
            let value = match self.u8("tuple column kind")? {
                b'n' => TupleValue::Null,
                b'u' => TupleValue::Unchanged,
                b't' => {
                    let len = self.length("text column length", true)?;
                    TupleValue::Text(self.bytes(len, "text column value")?)
                }
                b'b' => {
                    let len = self.length("binary column length", true)?;
                    TupleValue::Binary(self.bytes(len, "binary column value")?)
                }
                byte => {
                    return Err(self.unexpected(
                        byte,
                        offset,
                        "'n', 'u', 't' or 'b' (column kind)",
                    ));
                }
            };
            values.push(value);
        }
        Ok(values)
    }

    /// Reads the body of a Relation message.
    fn relation(&mut self) -> Result<Relation, PgOutputError> {
        let oid = self.u32("relation OID")?;
        let namespace = self.string("relation namespace")?;
        let name = self.string("relation name")?;
        let replica_identity = self.u8("replica identity")?;
        let count = self.length("column count", false)?;
        // A column takes at least ten bytes (flags, empty name, type, modifier).
        let mut columns = Vec::with_capacity(count.min(self.remaining() / 10));
        for _ in 0..count {
            let flags = self.u8("column flags")?;
            columns.push(RelationColumn {
                is_key: flags & 1 != 0,
                name: self.string("column name")?,
                type_oid: self.u32("column type OID")?,
                type_modifier: self.i32("column type modifier")?,
            });
        }
        Ok(Relation {
            oid,
            namespace,
            name,
            replica_identity,
            columns,
        })
    }

    /// Fails unless every byte of the message was consumed.
    fn finish(self) -> Result<(), PgOutputError> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(PgOutputError::TrailingBytes {
                kind: self.kind,
                extra,
            }),
        }
    }

    fn truncated(&self, field: &'static str, needed: usize) -> PgOutputError {
        PgOutputError::Truncated {
            kind: self.kind,
            field,
            offset: self.pos,
            needed,
            available: self.remaining(),
        }
    }

    fn unexpected(&self, byte: u8, offset: usize, expected: &'static str) -> PgOutputError {
        PgOutputError::UnexpectedByte {
            kind: self.kind,
            byte,
            offset,
            expected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Column of a tuple written by the test encoder.
    enum Col<'a> {
        Null,
        Unchanged,
        Text(&'a [u8]),
        Binary(&'a [u8]),
    }

    /// Builds protocol messages field by field.
    struct Encoder(Vec<u8>);

    impl Encoder {
        fn new(tag: u8) -> Self {
            Encoder(vec![tag])
        }

        fn u8(mut self, value: u8) -> Self {
            self.0.push(value);
            self
        }

        fn i16(mut self, value: i16) -> Self {
            self.0.extend_from_slice(&value.to_be_bytes());
            self
        }

        fn u32(mut self, value: u32) -> Self {
            self.0.extend_from_slice(&value.to_be_bytes());
            self
        }

        fn i32(mut self, value: i32) -> Self {
            self.0.extend_from_slice(&value.to_be_bytes());
            self
        }

        fn u64(mut self, value: u64) -> Self {
            self.0.extend_from_slice(&value.to_be_bytes());
            self
        }

        fn i64(mut self, value: i64) -> Self {
            self.0.extend_from_slice(&value.to_be_bytes());
            self
        }

        fn raw(mut self, bytes: &[u8]) -> Self {
            self.0.extend_from_slice(bytes);
            self
        }

        fn cstr(self, text: &str) -> Self {
            self.raw(text.as_bytes()).u8(0)
        }

        fn tuple(mut self, cols: &[Col<'_>]) -> Self {
            self = self.i16(cols.len() as i16);
            for col in cols {
                self = match col {
                    Col::Null => self.u8(b'n'),
                    Col::Unchanged => self.u8(b'u'),
                    Col::Text(value) => self.u8(b't').i32(value.len() as i32).raw(value),
                    Col::Binary(value) => self.u8(b'b').i32(value.len() as i32).raw(value),
                };
            }
            self
        }

        fn build(self) -> Bytes {
            Bytes::from(self.0)
        }
    }

    fn parse(data: &Bytes) -> PgOutputMessage {
        parse_message(data.clone()).unwrap_or_else(|e| panic!("parsing {data:?}: {e}"))
    }

    fn text(value: &str) -> TupleValue {
        TupleValue::Text(Bytes::copy_from_slice(value.as_bytes()))
    }

    /// One valid message of every kind and shape, for the truncation sweep.
    fn samples() -> Vec<Bytes> {
        vec![
            Encoder::new(b'B')
                .u64(0x16B_3748)
                .i64(7_000_000)
                .u32(731)
                .build(),
            Encoder::new(b'C').u8(0).u64(1).u64(2).i64(-3).build(),
            Encoder::new(b'O').u64(99).cstr("node_a").build(),
            Encoder::new(b'R')
                .u32(16385)
                .cstr("public")
                .cstr("orders")
                .u8(b'd')
                .i16(2)
                .u8(1)
                .cstr("id")
                .u32(20)
                .i32(-1)
                .u8(0)
                .cstr("amount")
                .u32(1700)
                .i32(655366)
                .build(),
            Encoder::new(b'Y')
                .u32(70000)
                .cstr("app")
                .cstr("mood")
                .build(),
            Encoder::new(b'I')
                .u32(16385)
                .u8(b'N')
                .tuple(&[
                    Col::Text(b"1"),
                    Col::Null,
                    Col::Unchanged,
                    Col::Binary(&[0, 1]),
                ])
                .build(),
            Encoder::new(b'U')
                .u32(16385)
                .u8(b'K')
                .tuple(&[Col::Text(b"1")])
                .u8(b'N')
                .tuple(&[Col::Text(b"2"), Col::Text(b"")])
                .build(),
            Encoder::new(b'U')
                .u32(1)
                .u8(b'N')
                .tuple(&[Col::Null])
                .build(),
            Encoder::new(b'D')
                .u32(1)
                .u8(b'O')
                .tuple(&[Col::Text(b"x")])
                .build(),
            Encoder::new(b'T').u32(2).u8(3).u32(10).u32(11).build(),
            Encoder::new(b'M')
                .u8(1)
                .u64(5)
                .cstr("culvert")
                .u32(3)
                .raw(b"a\0b")
                .build(),
        ]
    }

    #[test]
    fn begin_and_commit() {
        let begin = Encoder::new(b'B')
            .u64(0x0000_0001_6B37_4D48)
            .i64(-5)
            .u32(4_000_000_000);
        assert_eq!(
            parse(&begin.build()),
            PgOutputMessage::Begin {
                final_lsn: 0x0000_0001_6B37_4D48,
                commit_time: -5,
                xid: 4_000_000_000,
            }
        );
        let commit = Encoder::new(b'C')
            .u8(0)
            .u64(10)
            .u64(20)
            .i64(769_000_000_123_456);
        let message = parse(&commit.build());
        assert_eq!(message.kind(), MessageKind::Commit);
        assert_eq!(
            message,
            PgOutputMessage::Commit {
                flags: 0,
                commit_lsn: 10,
                end_lsn: 20,
                commit_time: 769_000_000_123_456,
            }
        );
    }

    #[test]
    fn origin_and_type() {
        assert_eq!(
            parse(&Encoder::new(b'O').u64(42).cstr("upstream").build()),
            PgOutputMessage::Origin {
                lsn: 42,
                name: "upstream".into(),
            }
        );
        assert_eq!(
            parse(
                &Encoder::new(b'Y')
                    .u32(90001)
                    .cstr("")
                    .cstr("ümlaut")
                    .build()
            ),
            PgOutputMessage::Type {
                oid: 90001,
                namespace: String::new(),
                name: "ümlaut".into(),
            }
        );
    }

    #[test]
    fn relation() {
        let message = parse(&samples()[3]);
        assert_eq!(
            message,
            PgOutputMessage::Relation(Relation {
                oid: 16385,
                namespace: "public".into(),
                name: "orders".into(),
                replica_identity: b'd',
                columns: vec![
                    RelationColumn {
                        is_key: true,
                        name: "id".into(),
                        type_oid: 20,
                        type_modifier: -1,
                    },
                    RelationColumn {
                        is_key: false,
                        name: "amount".into(),
                        type_oid: 1700,
                        type_modifier: 655366,
                    },
                ],
            })
        );
        let empty = Encoder::new(b'R').u32(7).cstr("").cstr("t").u8(b'n').i16(0);
        let PgOutputMessage::Relation(relation) = parse(&empty.build()) else {
            panic!("not a relation");
        };
        assert!(relation.columns.is_empty());
        assert_eq!(relation.replica_identity, b'n');
    }

    #[test]
    fn insert_with_every_tuple_kind() {
        let data = samples()[5].clone();
        assert_eq!(
            parse(&data),
            PgOutputMessage::Insert {
                relation: 16385,
                new: vec![
                    text("1"),
                    TupleValue::Null,
                    TupleValue::Unchanged,
                    TupleValue::Binary(Bytes::from_static(&[0, 1])),
                ],
            }
        );
        let empty = Encoder::new(b'I').u32(3).u8(b'N').tuple(&[]).build();
        assert_eq!(
            parse(&empty),
            PgOutputMessage::Insert {
                relation: 3,
                new: Vec::new(),
            }
        );
    }

    #[test]
    fn values_share_the_input_buffer() {
        let data = Encoder::new(b'I')
            .u32(1)
            .u8(b'N')
            .tuple(&[Col::Text(b"hello"), Col::Binary(b"\x00\x01\x02")])
            .build();
        let range = data.as_ptr_range();
        let PgOutputMessage::Insert { new, .. } = parse(&data) else {
            panic!("not an insert");
        };
        for value in &new {
            let (TupleValue::Text(bytes) | TupleValue::Binary(bytes)) = value else {
                panic!("unexpected {value:?}");
            };
            assert!(range.contains(&bytes.as_ptr()), "{value:?} was copied");
        }

        let data = samples()[10].clone();
        let range = data.as_ptr_range();
        let PgOutputMessage::Message { content, .. } = parse(&data) else {
            panic!("not a message");
        };
        assert!(range.contains(&content.as_ptr()));
    }

    #[test]
    fn update_shapes() {
        assert_eq!(
            parse(&samples()[6]),
            PgOutputMessage::Update {
                relation: 16385,
                old: Some(vec![text("1")]),
                old_is_key_only: true,
                new: vec![text("2"), text("")],
            }
        );
        assert_eq!(
            parse(&samples()[7]),
            PgOutputMessage::Update {
                relation: 1,
                old: None,
                old_is_key_only: false,
                new: vec![TupleValue::Null],
            }
        );
        let full = Encoder::new(b'U')
            .u32(9)
            .u8(b'O')
            .tuple(&[Col::Text(b"a"), Col::Null])
            .u8(b'N')
            .tuple(&[Col::Text(b"b"), Col::Unchanged])
            .build();
        assert_eq!(
            parse(&full),
            PgOutputMessage::Update {
                relation: 9,
                old: Some(vec![text("a"), TupleValue::Null]),
                old_is_key_only: false,
                new: vec![text("b"), TupleValue::Unchanged],
            }
        );
    }

    #[test]
    fn delete_shapes() {
        assert_eq!(
            parse(&samples()[8]),
            PgOutputMessage::Delete {
                relation: 1,
                old: vec![text("x")],
                old_is_key_only: false,
            }
        );
        let key = Encoder::new(b'D')
            .u32(2)
            .u8(b'K')
            .tuple(&[Col::Text(b"7"), Col::Null]);
        assert_eq!(
            parse(&key.build()),
            PgOutputMessage::Delete {
                relation: 2,
                old: vec![text("7"), TupleValue::Null],
                old_is_key_only: true,
            }
        );
    }

    #[test]
    fn truncate_options() {
        assert_eq!(
            parse(&samples()[9]),
            PgOutputMessage::Truncate {
                relations: vec![10, 11],
                cascade: true,
                restart_identity: true,
            }
        );
        for (options, cascade, restart_identity) in
            [(0, false, false), (1, true, false), (2, false, true)]
        {
            let data = Encoder::new(b'T').u32(1).u8(options).u32(5).build();
            assert_eq!(
                parse(&data),
                PgOutputMessage::Truncate {
                    relations: vec![5],
                    cascade,
                    restart_identity,
                }
            );
        }
        assert_eq!(
            parse(&Encoder::new(b'T').u32(0).u8(0).build()),
            PgOutputMessage::Truncate {
                relations: Vec::new(),
                cascade: false,
                restart_identity: false,
            }
        );
    }

    #[test]
    fn logical_messages() {
        assert_eq!(
            parse(&samples()[10]),
            PgOutputMessage::Message {
                transactional: true,
                lsn: 5,
                prefix: "culvert".into(),
                content: Bytes::from_static(b"a\0b"),
            }
        );
        let data = Encoder::new(b'M').u8(0).u64(6).cstr("p").u32(0).build();
        assert_eq!(
            parse(&data),
            PgOutputMessage::Message {
                transactional: false,
                lsn: 6,
                prefix: "p".into(),
                content: Bytes::new(),
            }
        );
    }

    #[test]
    fn every_truncation_is_reported() {
        for data in samples() {
            let kind = MessageKind::from_tag(data[0]).unwrap();
            assert_eq!(parse_message(data.slice(..0)), Err(PgOutputError::Empty));
            for len in 1..data.len() {
                let error = parse_message(data.slice(..len)).unwrap_err();
                assert!(
                    matches!(
                        error,
                        PgOutputError::Truncated { .. } | PgOutputError::UnterminatedString { .. }
                    ),
                    "{kind} cut to {len} bytes gave {error}"
                );
                assert_eq!(error.kind(), Some(kind));
                assert!(error.to_string().contains(&format!("{kind:?}")), "{error}");
            }
        }
    }

    #[test]
    fn truncation_error_details() {
        let data = Encoder::new(b'I')
            .u32(1)
            .u8(b'N')
            .tuple(&[Col::Text(b"abcdef")])
            .build();
        assert_eq!(
            parse_message(data.slice(..data.len() - 2)),
            Err(PgOutputError::Truncated {
                kind: MessageKind::Insert,
                field: "text column value",
                offset: 13,
                needed: 6,
                available: 4,
            })
        );
        assert_eq!(
            parse_message(Bytes::from_static(b"Ofoo"))
                .unwrap_err()
                .to_string(),
            "Origin ('O') message truncated at byte 1 reading origin LSN: needs 8 bytes, 3 left"
        );
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        for data in samples() {
            let kind = MessageKind::from_tag(data[0]).unwrap();
            let mut longer = data.to_vec();
            longer.push(0);
            assert_eq!(
                parse_message(Bytes::from(longer)),
                Err(PgOutputError::TrailingBytes { kind, extra: 1 })
            );
        }
    }

    #[test]
    fn unknown_and_unexpected_bytes() {
        for tag in [
            0u8, b'Z', b'S', b'E', b'c', b'A', b'b', b'P', b'K', b'r', b'p', b'w',
        ] {
            assert_eq!(
                parse_message(Bytes::from(vec![tag, 0, 0, 0, 0])),
                Err(PgOutputError::UnknownMessageType(tag))
            );
        }
        let bad_column = Encoder::new(b'I').u32(1).u8(b'N').i16(1).u8(b'x').build();
        assert_eq!(
            parse_message(bad_column),
            Err(PgOutputError::UnexpectedByte {
                kind: MessageKind::Insert,
                byte: b'x',
                offset: 8,
                expected: "'n', 'u', 't' or 'b' (column kind)",
            })
        );
        let insert_with_key = Encoder::new(b'I').u32(1).u8(b'K').tuple(&[]).build();
        assert!(matches!(
            parse_message(insert_with_key),
            Err(PgOutputError::UnexpectedByte {
                kind: MessageKind::Insert,
                byte: b'K',
                offset: 5,
                ..
            })
        ));
        let update_bad_marker = Encoder::new(b'U').u32(1).u8(b'X').tuple(&[]).build();
        assert!(matches!(
            parse_message(update_bad_marker),
            Err(PgOutputError::UnexpectedByte {
                kind: MessageKind::Update,
                byte: b'X',
                offset: 5,
                ..
            })
        ));
        let update_without_new = Encoder::new(b'U')
            .u32(1)
            .u8(b'K')
            .tuple(&[])
            .u8(b'K')
            .tuple(&[])
            .build();
        assert!(matches!(
            parse_message(update_without_new),
            Err(PgOutputError::UnexpectedByte {
                kind: MessageKind::Update,
                byte: b'K',
                offset: 8,
                ..
            })
        ));
        let delete_with_new = Encoder::new(b'D').u32(1).u8(b'N').tuple(&[]).build();
        let error = parse_message(delete_with_new).unwrap_err();
        assert!(matches!(
            error,
            PgOutputError::UnexpectedByte {
                kind: MessageKind::Delete,
                byte: b'N',
                ..
            }
        ));
        assert_eq!(
            error.to_string(),
            "Delete ('D') message: unexpected byte 0x4E at byte 5, expected 'K' or 'O' (old tuple)"
        );
    }

    #[test]
    fn malformed_fields() {
        let negative_columns = Encoder::new(b'I').u32(1).u8(b'N').i16(-1).build();
        assert_eq!(
            parse_message(negative_columns),
            Err(PgOutputError::NegativeLength {
                kind: MessageKind::Insert,
                field: "tuple column count",
                offset: 6,
                value: -1,
            })
        );
        let negative_length = Encoder::new(b'D')
            .u32(1)
            .u8(b'K')
            .i16(1)
            .u8(b't')
            .i32(-4)
            .build();
        assert!(matches!(
            parse_message(negative_length),
            Err(PgOutputError::NegativeLength {
                kind: MessageKind::Delete,
                field: "text column length",
                value: -4,
                ..
            })
        ));
        let negative_relation_columns = Encoder::new(b'R')
            .u32(1)
            .cstr("")
            .cstr("t")
            .u8(b'd')
            .i16(-2);
        assert!(matches!(
            parse_message(negative_relation_columns.build()),
            Err(PgOutputError::NegativeLength {
                kind: MessageKind::Relation,
                field: "column count",
                ..
            })
        ));
        let bad_utf8 = Encoder::new(b'R')
            .u32(1)
            .raw(b"\xFF\xFE\0")
            .cstr("t")
            .u8(b'd')
            .i16(0);
        assert_eq!(
            parse_message(bad_utf8.build()),
            Err(PgOutputError::InvalidUtf8 {
                kind: MessageKind::Relation,
                field: "relation namespace",
                offset: 5,
            })
        );
        // Counts far beyond the payload must fail cleanly, not allocate.
        let huge_truncate = Encoder::new(b'T').u32(u32::MAX).u8(0).build();
        assert!(matches!(
            parse_message(huge_truncate),
            Err(PgOutputError::Truncated {
                kind: MessageKind::Truncate,
                field: "relation OID",
                ..
            })
        ));
        let huge_tuple = Encoder::new(b'I').u32(1).u8(b'N').i16(i16::MAX).build();
        assert!(matches!(
            parse_message(huge_tuple),
            Err(PgOutputError::Truncated {
                kind: MessageKind::Insert,
                field: "tuple column kind",
                ..
            })
        ));
        let huge_content = Encoder::new(b'M')
            .u8(0)
            .u64(1)
            .cstr("p")
            .u32(u32::MAX)
            .build();
        assert!(matches!(
            parse_message(huge_content),
            Err(PgOutputError::Truncated {
                kind: MessageKind::Message,
                field: "message content",
                ..
            })
        ));
    }

    #[test]
    fn kinds_round_trip_through_tags() {
        for data in samples() {
            let message = parse(&data);
            assert_eq!(message.kind().tag(), data[0]);
            assert_eq!(MessageKind::from_tag(data[0]), Some(message.kind()));
        }
        assert_eq!(MessageKind::Type.to_string(), "Type ('Y')");
    }
}
