//! Leases: which agent runs which pipeline.
//!
//! A pipeline runs only under a lease row (one per pipeline, so never on two agents). Each
//! new lease raises the pipeline's epoch, the fencing token the target checks on every
//! commit, so an agent that lost its lease without noticing cannot write. A lease ends when
//! it expires (its agent stopped heartbeating) or, once revoked, when its agent reports it
//! stopped. Revocation is how pipelines are paused and how load is rebalanced.

use std::time::Duration;

use deadpool_postgres::Client;
use uuid::Uuid;

use crate::error::ApiResult;
use crate::store::Sql;

/// Assign, expire, revoke and rebalance the leases of one environment.
pub async fn schedule(client: &mut Client, environment: Uuid, lease: Duration) -> ApiResult<()> {
    let lease_secs = lease.as_secs_f64();
    let tx = client.transaction().await?;
    // One scheduler per environment at a time.
    if tx
        .q_opt(
            "select 1 from environments where id = $1 for update",
            &[&environment],
        )
        .await?
        .is_none()
    {
        return Ok(());
    }
    tx.exec(
        "update leases l set revoked = true from pipelines p
         where l.pipeline_id = p.id and p.environment_id = $1 and p.state <> 'running' and not l.revoked",
        &[&environment],
    )
    .await?;
    tx.exec(
        "delete from leases l using pipelines p
         where l.pipeline_id = p.id and p.environment_id = $1 and l.expires_at < now()",
        &[&environment],
    )
    .await?;
    let agents = tx
        .q(
            "select a.id, (select count(*) from leases l where l.agent_id = a.id)
             from agents a where a.environment_id = $1 and a.healthy
               and a.last_heartbeat_at > now() - make_interval(secs => $2)
             order by a.registered_at",
            &[&environment, &lease_secs],
        )
        .await?;
    let mut load: Vec<(Uuid, i64)> = agents.iter().map(|r| (r.get(0), r.get(1))).collect();
    if load.is_empty() {
        tx.commit().await?;
        return Ok(());
    }
    let waiting: Vec<Uuid> = tx
        .q(
            "select p.id from pipelines p where p.environment_id = $1 and p.state = 'running'
               and not exists (select 1 from leases l where l.pipeline_id = p.id)
             order by p.seq",
            &[&environment],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for pipeline in waiting {
        let slot = load
            .iter_mut()
            .min_by_key(|(_, n)| *n)
            .expect("at least one agent");
        let epoch: i64 = tx
            .q_one(
                "update pipelines set epoch = epoch + 1 where id = $1 returning epoch",
                &[&pipeline],
            )
            .await?
            .get(0);
        tx.exec(
            "insert into leases (pipeline_id, agent_id, epoch, expires_at)
             values ($1, $2, $3, now() + make_interval(secs => $4))",
            &[&pipeline, &slot.0, &epoch, &lease_secs],
        )
        .await?;
        tracing::info!(%pipeline, agent = %slot.0, epoch, "lease granted");
        slot.1 += 1;
    }
    // Move one pipeline at a time from the busiest to the idlest agent.
    let busiest = load.iter().max_by_key(|(_, n)| *n).copied();
    let idlest = load.iter().min_by_key(|(_, n)| *n).copied();
    if let (Some((from, max)), Some((_, min))) = (busiest, idlest) {
        let moving: i64 = tx
            .q_one(
                "select count(*) from leases l join pipelines p on p.id = l.pipeline_id
                 where p.environment_id = $1 and l.revoked",
                &[&environment],
            )
            .await?
            .get(0);
        if max - min >= 2 && moving == 0 {
            let n = tx
                .exec(
                    "update leases set revoked = true where pipeline_id =
                       (select pipeline_id from leases where agent_id = $1 order by epoch desc limit 1)",
                    &[&from],
                )
                .await?;
            if n > 0 {
                tracing::info!(agent = %from, "lease revoked to rebalance");
            }
        }
    }
    tx.commit().await?;
    Ok(())
}
