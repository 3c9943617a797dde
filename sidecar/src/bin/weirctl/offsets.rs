//! `weirctl reset-offset` and `weirctl backlog`: move a consumer group's position on a topic, and
//! show what each partition still has to deliver.

use anyhow::{Result, anyhow};
use weir_proto::weir::admin::v1 as admin;
use weir_proto::weir::admin::v1::reset_offset_request::Target;

use crate::admin_client;

/// Parses `earliest`, `latest`, `offset:N`, an RFC 3339 time (`2026-11-24T10:00:00Z`) or
/// milliseconds since the epoch.
pub fn parse_target(s: &str) -> Result<Target, String> {
    match s {
        "earliest" => return Ok(Target::Earliest(true)),
        "latest" => return Ok(Target::Latest(true)),
        _ => {}
    }
    if let Some(offset) = s.strip_prefix("offset:") {
        return offset.parse().map(Target::Offset).map_err(|_| format!("{offset:?} is not a queue offset"));
    }
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(Target::TimestampMs(ms));
    }
    let time = humantime::parse_rfc3339_weak(s).map_err(|_| {
        format!("{s:?}: expected earliest, latest, offset:N, an RFC 3339 time or milliseconds since the epoch")
    })?;
    let ms = time.duration_since(std::time::UNIX_EPOCH).map_err(|_| format!("{s:?} is before 1970"))?.as_millis();
    Ok(Target::TimestampMs(ms as i64))
}

/// Resets `group` on `topic` and says how many partitions moved.
pub async fn reset(server: &str, group: String, topic: String, to: Target) -> Result<()> {
    let response = admin_client(server)
        .await?
        .reset_offset(admin::ResetOffsetRequest { group: group.clone(), topic: topic.clone(), target: Some(to) })
        .await
        .map_err(|s| anyhow!("ResetOffset failed: {}", s.message()))?
        .into_inner();
    println!("group {group} reset on {} partition(s) of {topic}", response.partitions);
    Ok(())
}

/// Prints the backlog of each partition of `topic`.
pub async fn backlog(server: &str, topic: String) -> Result<()> {
    let response = admin_client(server)
        .await?
        .get_partition_backlog(admin::GetPartitionBacklogRequest { topic })
        .await
        .map_err(|s| anyhow!("GetPartitionBacklog failed: {}", s.message()))?
        .into_inner();
    println!("{:>9} {:>12} {:>12}", "PARTITION", "END", "BACKLOG");
    for p in &response.partitions {
        println!("{:>9} {:>12} {:>12}", p.partition, p.end_offset, p.backlog);
    }
    Ok(())
}
