//! Recovers a consumer that its group coordinator left alone with nothing to
//! read. A lone member of a group must own every partition of its topics; one
//! that owns none will never consume again unless it rejoins.
//!
//! Seen on the local broker (tansu 0.6, issue 12): when a killed member's
//! session expires while the restarted consumer's SyncGroup is in flight, the
//! coordinator drops the dead leader, accepts the follower's empty assignment
//! as the leader's and marks the group formed; heartbeats then succeed forever
//! with zero partitions. On Kafka this state does not arise, and the check
//! never fires: a member that owns nothing there shares the group with owners.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};

/// How often the state is checked; [`CHECKS`] in a row must see it.
const EVERY: Duration = Duration::from_secs(5);
const CHECKS: u32 = 3;

/// Whether this consumer is the only member of a group the coordinator calls
/// stable (no join in progress), owns no partition, and its topics have some:
/// the state no coordinator should leave it in.
fn stranded(consumer: &StreamConsumer, group: &str, topics: &[String]) -> bool {
    let timeout = Duration::from_secs(5);
    let owned = consumer.assignment().map_or(1, |a| a.count());
    if owned > 0 {
        return false;
    }
    if partitions_of(consumer, topics, timeout) == 0 {
        return false;
    }
    consumer
        .fetch_group_list(Some(group), timeout)
        .is_ok_and(|list| {
            list.groups()
                .iter()
                .find(|g| g.name() == group)
                .is_some_and(|g| g.state() == "Stable" && g.members().len() == 1)
        })
}

/// The partitions of `topics` the broker knows of (0 for a topic it cannot describe).
pub fn partitions_of(consumer: &StreamConsumer, topics: &[String], timeout: Duration) -> usize {
    topics
        .iter()
        .filter_map(|t| consumer.fetch_metadata(Some(t), timeout).ok())
        .map(|m| {
            m.topics()
                .iter()
                .map(|t| t.partitions().len())
                .sum::<usize>()
        })
        .sum()
}

/// Runs forever: a consumer found stranded [`CHECKS`] times in a row leaves the group
/// and subscribes again, so the coordinator forms the group anew.
pub async fn run(consumer: Arc<StreamConsumer>, group: String, topics: Vec<String>) {
    let mut seen = 0u32;
    loop {
        tokio::time::sleep(EVERY).await;
        let (c, g, t) = (consumer.clone(), group.clone(), topics.clone());
        let is_stranded = tokio::task::spawn_blocking(move || stranded(&c, &g, &t))
            .await
            .unwrap_or(false);
        seen = if is_stranded { seen + 1 } else { 0 };
        if seen < CHECKS {
            continue;
        }
        seen = 0;
        tracing::warn!(
            %group,
            "alone in the consumer group with no partition assigned: rejoining"
        );
        consumer.unsubscribe();
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        if let Err(e) = consumer.subscribe(&names) {
            tracing::error!(error = %e, "subscribing again failed");
        }
    }
}
