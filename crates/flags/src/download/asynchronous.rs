//! `--mode async`: tokio tasks in a `JoinSet`, at most `max_req` in flight, results in completion
//! order. Each task holds a lane (a slot of the concurrency bound) that it hands back when it
//! ends; the next code starts on the lane freed first, in code order.
//!
//! Ctrl-C stops scheduling and aborts the tasks in flight. A task is only interrupted at an
//! `.await` (a request or a backoff), never in the middle of a save, so no partial file remains.

use std::collections::HashMap;
use std::sync::Arc;

use super::{AsyncClient, Record, Target, get_flag};

/// Downloads `codes` with at most `max_req` requests in flight.
pub(super) async fn run(
    codes: &[String],
    max_req: usize,
    client: Arc<AsyncClient>,
    target: Arc<Target>,
    sink: &mut dyn FnMut(Record),
) {
    let mut tasks = tokio::task::JoinSet::new();
    let mut free_lanes: Vec<usize> = (0..max_req.max(1)).rev().collect();
    let mut next_lane = free_lanes.len();
    let mut codes = codes.iter();
    // The code of each task in flight, so that a failed task is counted under its own code.
    let mut running = HashMap::new();
    loop {
        while !target.cancel.is_cancelled() {
            let Some(lane) = free_lanes.pop() else { break };
            let Some(code) = codes.next() else {
                free_lanes.push(lane);
                break;
            };
            let task = {
                let (client, target, code) =
                    (Arc::clone(&client), Arc::clone(&target), code.clone());
                tasks.spawn(async move { get_flag(&*client, &target, &code, lane).await })
            };
            running.insert(task.id(), code.as_str());
        }
        let joined = tokio::select! {
            joined = tasks.join_next_with_id() => joined,
            () = target.cancel.cancelled() => {
                tasks.abort_all();
                while let Some(joined) = tasks.join_next().await {
                    if let Ok(record) = joined {
                        sink(record);
                    }
                }
                return;
            }
        };
        match joined {
            None => return,
            Some(Ok((id, record))) => {
                running.remove(&id);
                free_lanes.push(record.lane);
                sink(record);
            }
            Some(Err(error)) => {
                // A panic in the download path is a bug; count it under its code, and replace
                // its lane.
                let code = running.remove(&error.id()).unwrap_or_default();
                free_lanes.push(next_lane);
                next_lane += 1;
                sink(Record::failed_task(code, &error));
            }
        }
    }
}
