//! What crosses the broker: the key names of a queue, and the postcard messages in its
//! streams. Only this module knows a field name or a message layout.
//!
//! | key | type | written by | holds |
//! |---|---|---|---|
//! | `{q}:tasks` | stream, group `workers` | clients (`XADD`), workers (requeue) | one entry per task: `t` (a [`TaskMsg`]), `l` (lease in ms, read by the reclaim script), `k` (`<client hex>:<seq>`, plain, so that a worker that cannot decode `t` can still answer), `a` (the [`Attempt`]s so far, after a requeue) |
//! | `{q}:dead` | stream | workers | tasks that exhausted `max_deliveries`, or did not decode: `t`, `a`, `why` |
//! | `{q}:r:<client>` | stream, expires | workers (`XADD NOMKSTREAM` in the fenced commit) | the client's results: `s` (the sequence number, plain) and `r` (a [`ResultMsg`]), or `s` and `e` (a worker's error text, for a task it could not decode) |
//! | `{q}:c:<client>` | set, expires | clients (cancel script) | sequence numbers of the client's cancelled tasks that a worker holds |
//! | `{q}:cancel` | pub/sub channel | clients | `<client>:<seq>` of a cancelled task that a worker holds |
//!
//! `{q}` is the queue name in braces (a Redis Cluster hash tag: every key of a queue
//! lands in one slot, as the scripts need).

use serde::{Deserialize, Serialize};

use crate::error::{Attempt, TaskError};

/// The consumer group of every task stream.
pub(crate) const GROUP: &str = "workers";
/// Stream entry fields.
pub(crate) const FIELD_TASK: &str = "t";
pub(crate) const FIELD_LEASE: &str = "l";
pub(crate) const FIELD_ATTEMPTS: &str = "a";
pub(crate) const FIELD_KEY: &str = "k";
pub(crate) const FIELD_RESULT: &str = "r";
pub(crate) const FIELD_SEQ: &str = "s";
pub(crate) const FIELD_ERROR: &str = "e";
pub(crate) const FIELD_WHY: &str = "why";

/// The key names of one queue.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
    pub(crate) tasks: String,
    pub(crate) dead: String,
    pub(crate) cancel_channel: String,
}

impl Keys {
    /// The keys of queue `name`, which must be 1 to 200 printable ASCII characters
    /// without braces.
    pub(crate) fn new(name: &str) -> Result<Self, String> {
        if name.is_empty() || name.len() > 200 {
            return Err(format!(
                "the queue name must have 1 to 200 characters, not {}",
                name.len()
            ));
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !c.is_ascii_graphic() || *c == '{' || *c == '}')
        {
            return Err(format!(
                "the queue name {name:?} has the character {bad:?}: use printable ASCII without braces or spaces"
            ));
        }
        let prefix = format!("{{{name}}}");
        Ok(Self {
            tasks: format!("{prefix}:tasks"),
            dead: format!("{prefix}:dead"),
            cancel_channel: format!("{prefix}:cancel"),
            prefix,
        })
    }

    /// A client's result stream.
    pub(crate) fn results(&self, client: u64) -> String {
        format!("{}:r:{client:016x}", self.prefix)
    }

    /// A client's set of cancelled sequence numbers.
    pub(crate) fn cancels(&self, client: u64) -> String {
        format!("{}:c:{client:016x}", self.prefix)
    }
}

/// A task in the task stream (field `t`): one call (`submit`) or a chunk of a `map`,
/// each item encoded on its own so that a worker runs them one by one in its pool.
/// Whose task it is travels in the plain field `k` only ([`TaskMsg::read`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TaskMsg {
    #[serde(skip)]
    pub(crate) client: u64,
    #[serde(skip)]
    pub(crate) seq: u64,
    pub(crate) task: String,
    pub(crate) fingerprint: u64,
    pub(crate) max_deliveries: u32,
    pub(crate) items: Vec<Vec<u8>>,
}

impl TaskMsg {
    /// The task of a stream entry: its message (`t`) and owner (`k`).
    pub(crate) fn read(entry: &Entry) -> Result<Self, String> {
        let (client, seq) = entry
            .field(FIELD_KEY)
            .and_then(parse_task_key)
            .ok_or("the entry has no task key (field k)")?;
        let mut message: Self = decode(entry.field(FIELD_TASK).unwrap_or_default())?;
        message.client = client;
        message.seq = seq;
        Ok(message)
    }
}

/// A result in a client's result stream (field `r`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ResultMsg {
    pub(crate) seq: u64,
    pub(crate) outcome: Outcome,
}

/// How a task ended on the worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Outcome {
    /// Each item's outcome, in order.
    Items(Vec<ItemOutcome>),
    /// The whole task failed before any item ran (unknown task, another signature).
    Failed(TaskError),
    /// The task was cancelled while a worker held it.
    Cancelled,
}

/// How one item ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum ItemOutcome {
    /// The encoded value.
    Value(Vec<u8>),
    /// The task panicked: message and location (file, line, column).
    Panicked {
        message: String,
        location: Option<(String, u32, u32)>,
    },
    /// The cluster failed it.
    Failed(TaskError),
}

/// Encodes a message.
pub(crate) fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, String> {
    postcard::to_allocvec(message).map_err(|e| e.to_string())
}

/// Decodes a message, refusing trailing bytes.
pub(crate) fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, String> {
    match postcard::take_from_bytes(bytes) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(format!("{} bytes left over after the message", rest.len())),
        Err(e) => Err(e.to_string()),
    }
}

/// The task key field: `<client hex>:<seq>`.
pub(crate) fn task_key(client: u64, seq: u64) -> String {
    format!("{client:016x}:{seq}")
}

/// Parses a task key field.
pub(crate) fn parse_task_key(key: &[u8]) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(key).ok()?;
    let (client, seq) = text.split_once(':')?;
    Some((u64::from_str_radix(client, 16).ok()?, seq.parse().ok()?))
}

/// Decodes the attempts field (absent on a first delivery).
pub(crate) fn decode_attempts(bytes: Option<&[u8]>) -> Result<Vec<Attempt>, String> {
    bytes.map_or(Ok(Vec::new()), decode)
}

/// One entry of a stream reply: its id and fields.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) id: String,
    pub(crate) fields: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Entry {
    /// The value of `name`, when the entry has it.
    pub(crate) fn field(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| v.as_slice())
    }
}

/// Parses `[[id, [k, v, ...]], ...]` (XRANGE, one stream of XREAD/XREADGROUP, XCLAIM).
pub(crate) fn parse_entries(value: redis::Value) -> Vec<Entry> {
    let redis::Value::Array(items) = value else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let redis::Value::Array(mut parts) = item else {
            continue;
        };
        if parts.len() != 2 {
            continue;
        }
        let fields_value = parts.pop();
        let Some(id) = parts.pop().and_then(bytes_of) else {
            continue;
        };
        let mut fields = Vec::new();
        if let Some(redis::Value::Array(kv)) = fields_value {
            let mut kv = kv.into_iter();
            while let (Some(k), Some(v)) = (kv.next(), kv.next()) {
                if let (Some(k), Some(v)) = (bytes_of(k), bytes_of(v)) {
                    fields.push((k, v));
                }
            }
        }
        out.push(Entry {
            id: String::from_utf8_lossy(&id).into_owned(),
            fields,
        });
    }
    out
}

/// Parses an XREAD/XREADGROUP reply for one stream: `[[key, entries]]` (RESP2) or
/// `{key: entries}` (RESP3); nil when the block timed out.
pub(crate) fn parse_read(value: redis::Value) -> Vec<Entry> {
    match value {
        redis::Value::Array(mut streams) => match streams.pop() {
            Some(redis::Value::Array(mut pair)) if pair.len() == 2 => {
                parse_entries(pair.pop().unwrap_or(redis::Value::Nil))
            }
            _ => Vec::new(),
        },
        redis::Value::Map(mut streams) => streams
            .pop()
            .map(|(_, entries)| parse_entries(entries))
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// The bytes of a string reply.
pub(crate) fn bytes_of(value: redis::Value) -> Option<Vec<u8>> {
    match value {
        redis::Value::BulkString(b) => Some(b),
        redis::Value::SimpleString(s) => Some(s.into_bytes()),
        redis::Value::Int(i) => Some(i.to_string().into_bytes()),
        _ => None,
    }
}

/// The text of a string reply.
pub(crate) fn string_of(value: redis::Value) -> Option<String> {
    bytes_of(value).map(|b| String::from_utf8_lossy(&b).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_are_checked() {
        assert!(Keys::new("jobs").is_ok());
        assert!(Keys::new("").is_err());
        assert!(Keys::new("a b").is_err());
        assert!(Keys::new("a{b}").is_err());
        let keys = Keys::new("jobs").unwrap();
        assert_eq!(keys.tasks, "{jobs}:tasks");
        assert_eq!(keys.results(255), "{jobs}:r:00000000000000ff");
    }

    #[test]
    fn decode_refuses_garbage_and_trailing_bytes() {
        let bytes = encode(&ResultMsg {
            seq: 7,
            outcome: Outcome::Cancelled,
        })
        .unwrap();
        assert!(decode::<ResultMsg>(&bytes).is_ok());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode::<ResultMsg>(&longer).is_err());
        assert!(decode::<TaskMsg>(b"\xff\xff\xff").is_err());
        assert!(decode::<TaskMsg>(b"").is_err());
    }
}
