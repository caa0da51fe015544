//! The server-side scripts: each step that must see and change the broker's state at
//! once. Invoked with `EVALSHA` (the `redis` crate falls back to `EVAL` when the
//! broker does not know the script, as after a restart).
//!
//! Every script that settles a task first checks that the entry is still pending for
//! the calling consumer (`XPENDING key group id id 1`): a worker that lost its lease
//! (stopped past it, partitioned) and had its entry claimed by another cannot deliver a
//! result, requeue or dead-letter it. Redis runs a script alone, so nothing can claim
//! the entry between the check and the write.

use std::sync::LazyLock;

use redis::Script;

/// Stream ids compared as numbers (`ms-seq`), for the scripts below.
const ID_LESS: &str = r"
local function id_parts(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms) or 0, tonumber(seq) or 0
end
local function id_less(a, b)
  local am, as = id_parts(a)
  local bm, bs = id_parts(b)
  return am < bm or (am == bm and as < bs)
end
";

/// Fenced commit of a batch of results.
///
/// `KEYS[1]` the task stream; for client `j` (from 1), `KEYS[2j]` its result stream and
/// `KEYS[2j+1]` its cancel set. `ARGV[1]` group, `ARGV[2]` consumer, `ARGV[3]` how many
/// ms after the oldest pending entry an entry is deleted at once; then five per entry:
/// entry id, result message, client number `j`, sequence number, and `1` when the task
/// was cancelled (its sequence number leaves the cancel set) or empty. The result entry
/// has the fields `s` (the sequence number, plain, so that a client that cannot decode
/// the message still knows whose it is) and `r`. Returns, per entry, 1 (committed: result added, entry
/// acknowledged) or 0 (refused: the entry is not this consumer's any more). A client
/// whose result stream expired gets nothing (`NOMKSTREAM`), and its entry is still
/// acknowledged. One `XACK` for the batch.
///
/// An acknowledged entry is left for [`TRIM`], which removes whole stream nodes at
/// once: `XDEL` of single entries was most of the broker's time per task (it rewrites
/// a listpack node, and deleting a node's first entry rescans its tombstones). Only
/// while an old task keeps its entry pending (a long task: trimming stops at it) is
/// an entry more than `ARGV[3]` ms younger deleted at once, so that what a long task
/// pins stays bounded.
pub(crate) static COMMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{ID_LESS}{}",
        r"
local out = {}
local acked = {}
local summary = redis.call('XPENDING', KEYS[1], ARGV[1])
local pin_ms = nil
if summary[2] then
  pin_ms = id_parts(summary[2]) + tonumber(ARGV[3])
  local now = redis.call('TIME')
  -- No entry is younger than now: skip the per-entry check while nothing pins.
  if pin_ms > tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) then pin_ms = nil end
end
local n = (#ARGV - 3) / 5
for i = 1, n do
  local base = 5 * i - 1
  local id = ARGV[base]
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
  if #p == 1 and p[1][2] == ARGV[2] then
    local j = tonumber(ARGV[base + 2])
    redis.call('XADD', KEYS[2 * j], 'NOMKSTREAM', '*', 's', ARGV[base + 3], 'r', ARGV[base + 1])
    if ARGV[base + 4] ~= '' then redis.call('SREM', KEYS[2 * j + 1], ARGV[base + 3]) end
    if pin_ms and id_parts(id) > pin_ms then redis.call('XDEL', KEYS[1], id) end
    acked[#acked + 1] = id
    out[i] = 1
  else
    out[i] = 0
  end
end
if #acked > 0 then redis.call('XACK', KEYS[1], ARGV[1], unpack(acked)) end
return out
"
    ))
});

/// Trims the task stream of acknowledged entries: everything older than both the
/// oldest pending entry and the group's last delivered one (`XTRIM MINID`, which frees
/// whole nodes). Undelivered and pending entries stay.
///
/// `KEYS[1]` the task stream. `ARGV[1]` group. Returns how many entries went.
pub(crate) static TRIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{ID_LESS}{}",
        r"
local safe = nil
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local name, last = nil, nil
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1] end
    if g[i] == 'last-delivered-id' then last = g[i + 1] end
  end
  if name == ARGV[1] then safe = last end
end
if not safe then return 0 end
local summary = redis.call('XPENDING', KEYS[1], ARGV[1])
if summary[2] and id_less(summary[2], safe) then safe = summary[2] end
return redis.call('XTRIM', KEYS[1], 'MINID', safe)
"
    ))
});

/// Fenced move of one entry: requeue it (a new entry at the end of the task stream,
/// with its attempts so far) or dead-letter it, optionally adding a result for the
/// client in the same step.
///
/// `KEYS[1]` task stream, `KEYS[2]` destination stream, `KEYS[3]` result stream,
/// `KEYS[4]` cancel set. `ARGV[1]` group, `ARGV[2]` consumer, `ARGV[3]` entry id,
/// `ARGV[4]` how many arguments `m` the result entry's fields and values take (0: no
/// result), `ARGV[5..4+m]` those, `ARGV[5+m]` a sequence number to remove from the
/// cancel set or empty, then the new entry's fields and values. Returns the new entry's
/// id, or nil when the entry is not this consumer's any more.
pub(crate) static MOVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 or p[1][2] ~= ARGV[2] then return false end
local m = tonumber(ARGV[4])
local new = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 6 + m))
if m > 0 then redis.call('XADD', KEYS[3], 'NOMKSTREAM', '*', unpack(ARGV, 5, 4 + m)) end
if ARGV[5 + m] ~= '' then redis.call('SREM', KEYS[4], ARGV[5 + m]) end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
return new
",
    )
});

/// Heartbeat: resets the idle time of the entries this consumer still owns
/// (`XCLAIM .. 0 id JUSTID`, which does not count a delivery) and returns the ids it
/// no longer owns (claimed by another worker, or settled).
///
/// `KEYS[1]` task stream. `ARGV[1]` group, `ARGV[2]` consumer, `ARGV[3..]` entry ids.
pub(crate) static EXTEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local lost = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #p == 1 and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  else
    table.insert(lost, ARGV[i])
  end
end
return lost
",
    )
});

/// Claims entries idle past their own lease (field `l`; leases are per task, so one
/// `XAUTOCLAIM` with one idle time cannot do it): a page of the pending list from a
/// cursor, `XCLAIM` with the entry's lease as the minimum idle time (which counts a
/// delivery). The caller's own entries too: one it holds is kept fresh by its
/// heartbeat, so an own entry idle past its lease is one whose delivery it never saw
/// (the connection broke before the `XREADGROUP` reply).
///
/// `KEYS[1]` task stream. `ARGV[1]` group, `ARGV[2]` consumer, `ARGV[3]` start (`-` or
/// `(id`), `ARGV[4]` page size, `ARGV[5]` the smallest idle time worth looking at,
/// `ARGV[6]` the lease of an entry without `l`. Returns `{cursor, {{id, previous
/// owner, fields}, ...}}`; the cursor is empty at the end of the list.
pub(crate) static RECLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local pend = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', tonumber(ARGV[5]), ARGV[3], '+', tonumber(ARGV[4]))
local out = {}
local last = ''
for _, p in ipairs(pend) do
  local id, owner, idle = p[1], p[2], p[3]
  last = '(' .. id
  local e = redis.call('XRANGE', KEYS[1], id, id)
  if #e == 0 then
    redis.call('XACK', KEYS[1], ARGV[1], id)
  else
    local fields = e[1][2]
    local lease = tonumber(ARGV[6])
    for i = 1, #fields, 2 do
      if fields[i] == 'l' then lease = tonumber(fields[i + 1]) or lease end
    end
    if idle >= lease then
      local c = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], lease, id)
      if #c > 0 then table.insert(out, {id, owner, c[1][2]}) end
    end
  end
end
if #pend < tonumber(ARGV[4]) then last = '' end
return {last, out}
",
    )
});

/// Cancels one task: an entry no worker holds is deleted from the stream (returns 1);
/// otherwise its sequence number goes into the client's cancel set and the channel
/// tells the workers (returns 2), and the worker holding it stops it.
///
/// `KEYS[1]` task stream, `KEYS[2]` the client's cancel set. `ARGV[1]` group, `ARGV[2]`
/// entry id, `ARGV[3]` sequence number, `ARGV[4]` channel, `ARGV[5]` message,
/// `ARGV[6]` the cancel set's time to live in ms.
pub(crate) static CANCEL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #p == 0 and redis.call('XDEL', KEYS[1], ARGV[2]) == 1 then return 1 end
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 2
",
    )
});

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};
    use std::time::Duration;

    use redis::Value;

    use super::*;

    /// A private redis-server on a Unix socket, killed on drop.
    struct Server {
        child: Child,
        dir: PathBuf,
    }

    impl Server {
        fn start(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("cfr-unit-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let mut child = Command::new("redis-server")
                .args([
                    "--port",
                    "0",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--unixsocket",
                ])
                .arg(dir.join("redis.sock"))
                .arg("--dir")
                .arg(&dir)
                .stdout(Stdio::piped())
                .spawn()
                .expect("redis-server (apt-get install redis-server)");
            let stdout = child.stdout.take().unwrap();
            let mut lines = BufReader::new(stdout).lines();
            loop {
                let line = lines.next().expect("redis-server ended").unwrap();
                if line
                    .to_ascii_lowercase()
                    .contains("ready to accept connections")
                {
                    break;
                }
            }
            std::thread::spawn(move || lines.for_each(drop));
            Self { child, dir }
        }

        fn con(&self) -> redis::Connection {
            let url = format!("redis+unix://{}", self.dir.join("redis.sock").display());
            let con = redis::Client::open(url).unwrap().get_connection().unwrap();
            con.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            con
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn commit(con: &mut redis::Connection, consumer: &str, id: &str) -> Vec<i64> {
        COMMIT
            .key("tasks")
            .key("results")
            .key("cancels")
            .arg("workers")
            .arg(consumer)
            .arg(1000)
            .arg(id)
            .arg("the result")
            .arg(1)
            .arg(7)
            .arg("")
            .invoke(con)
            .unwrap()
    }

    /// The fence: once another consumer claimed the entry (the first one's lease
    /// expired), the first one can neither commit, requeue nor extend it; the owner can.
    #[test]
    fn a_worker_that_lost_its_entry_cannot_settle_it() {
        let server = Server::start("fence");
        let mut con = server.con();
        let () = redis::cmd("XGROUP")
            .arg(vec!["CREATE", "tasks", "workers", "0", "MKSTREAM"])
            .query(&mut con)
            .unwrap();
        let _: String = redis::cmd("XADD")
            .arg(vec!["results", "*", "hello", "1"])
            .query(&mut con)
            .unwrap();
        let id: String = redis::cmd("XADD")
            .arg(vec!["tasks", "*", "t", "x", "l", "10"])
            .query(&mut con)
            .unwrap();
        let _: Value = redis::cmd("XREADGROUP")
            .arg(vec![
                "GROUP", "workers", "A", "COUNT", "1", "STREAMS", "tasks", ">",
            ])
            .query(&mut con)
            .unwrap();
        // A's lease runs out: B claims the entry as the reclaim script would.
        let _: Value = redis::cmd("XCLAIM")
            .arg(vec!["tasks", "workers", "B", "0", id.as_str()])
            .query(&mut con)
            .unwrap();
        let lost: Vec<String> = EXTEND
            .key("tasks")
            .arg("workers")
            .arg("A")
            .arg(&id)
            .invoke(&mut con)
            .unwrap();
        assert_eq!(
            lost,
            std::slice::from_ref(&id),
            "A's heartbeat finds the entry gone"
        );
        assert_eq!(commit(&mut con, "A", &id), [0], "A's commit is refused");
        let moved: Option<String> = MOVE
            .key("tasks")
            .key("tasks")
            .key("results")
            .key("cancels")
            .arg("workers")
            .arg("A")
            .arg(&id)
            .arg(0)
            .arg("")
            .arg("t")
            .arg("x")
            .invoke(&mut con)
            .unwrap();
        assert_eq!(moved, None, "A cannot requeue it either");
        let len: usize = redis::cmd("XLEN").arg("results").query(&mut con).unwrap();
        assert_eq!(len, 1, "no result from A");
        assert_eq!(commit(&mut con, "B", &id), [1], "the owner commits");
        assert_eq!(commit(&mut con, "B", &id), [0], "once");
        let len: usize = redis::cmd("XLEN").arg("results").query(&mut con).unwrap();
        assert_eq!(len, 2);
        let trimmed: usize = TRIM.key("tasks").arg("workers").invoke(&mut con).unwrap();
        assert_eq!(trimmed, 0, "the last delivered entry stays");
        let len: usize = redis::cmd("XLEN").arg("tasks").query(&mut con).unwrap();
        assert_eq!(len, 1, "the acknowledged entry waits for a trim");
        let pending: Value = redis::cmd("XPENDING")
            .arg(vec!["tasks", "workers"])
            .query(&mut con)
            .unwrap();
        assert!(
            matches!(&pending, Value::Array(v) if v.first() == Some(&Value::Int(0))),
            "{pending:?}"
        );
    }

    /// The reclaim script claims an entry idle past its own lease (field `l`), not one
    /// within it, and says whose it was.
    #[test]
    fn reclaim_takes_only_entries_past_their_own_lease() {
        let server = Server::start("reclaim");
        let mut con = server.con();
        let () = redis::cmd("XGROUP")
            .arg(vec!["CREATE", "tasks", "workers", "0", "MKSTREAM"])
            .query(&mut con)
            .unwrap();
        let short: String = redis::cmd("XADD")
            .arg(vec!["tasks", "*", "t", "x", "l", "0"])
            .query(&mut con)
            .unwrap();
        let _long: String = redis::cmd("XADD")
            .arg(vec!["tasks", "*", "t", "y", "l", "3600000"])
            .query(&mut con)
            .unwrap();
        let _: Value = redis::cmd("XREADGROUP")
            .arg(vec![
                "GROUP", "workers", "A", "COUNT", "2", "STREAMS", "tasks", ">",
            ])
            .query(&mut con)
            .unwrap();
        let claim = |con: &mut redis::Connection, me: &str| -> Value {
            RECLAIM
                .key("tasks")
                .arg("workers")
                .arg(me)
                .arg("-")
                .arg(100)
                .arg(0)
                .arg(10_000)
                .invoke(con)
                .unwrap()
        };
        let taken = claim(&mut con, "B");
        let Value::Array(parts) = taken else {
            panic!("{taken:?}")
        };
        let Some(Value::Array(claimed)) = parts.get(1) else {
            panic!("{parts:?}")
        };
        assert_eq!(
            claimed.len(),
            1,
            "only the entry past its lease: {claimed:?}"
        );
        let Value::Array(first) = &claimed[0] else {
            panic!("{claimed:?}")
        };
        assert_eq!(first[0], Value::BulkString(short.into_bytes()));
        assert_eq!(
            first[1],
            Value::BulkString(b"A".to_vec()),
            "the previous owner"
        );
    }
}
