//! `--mode sequential`: a loop, one download after the other, on one keep-alive connection.

use super::{BlockingClient, Record, Target, block_on, get_flag};

/// Downloads `codes` in order; stops before the next code once the run is cancelled.
pub(super) fn run(
    codes: &[String],
    client: &BlockingClient,
    target: &Target,
    sink: &mut dyn FnMut(Record),
) {
    for code in codes {
        if target.cancel.is_cancelled() {
            break;
        }
        sink(block_on(get_flag(client, target, code, 0)));
    }
}
