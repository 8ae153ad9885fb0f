//! Leader election on a coordination.k8s.io Lease, so that of several controller replicas one
//! runs the reconcilers (two would each run every DataLoad and race each other re-creating
//! PVs). The CSI Controller service and the webhook answer in every replica.
//!
//! The leader renews the Lease every third of its duration. A candidate takes it when it is
//! free, or when its record (holder and renew time) has not changed for a whole duration as
//! seen by the candidate's own clock, so clocks of different nodes need not agree. Every write
//! carries the resourceVersion read, so two candidates cannot both win. A leader that cannot
//! renew within the duration stops leading: the process exits, its pod restarts as a candidate.
//! At a clean stop it hands the Lease back at once.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Client, ResourceExt};

use crate::error::Result;

/// Where the Lease is and how long it lasts.
#[derive(Clone, Debug)]
pub struct Election {
    pub namespace: String,
    pub name: String,
    /// This process, as the Lease's holderIdentity names it.
    pub identity: String,
    pub duration: Duration,
}

impl Election {
    fn renew_every(&self) -> Duration {
        self.duration / 3
    }
}

/// What a candidate last saw of the Lease, and when it saw it change.
struct Observed {
    record: Option<(String, Option<Timestamp>)>,
    since: Instant,
}

/// Waits until this process holds the Lease.
pub async fn acquire(client: &Client, election: &Election) -> Result<()> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &election.namespace);
    let mut observed = Observed {
        record: None,
        since: Instant::now(),
    };
    let mut waiting_logged = false;
    loop {
        match try_acquire(&api, election, &mut observed).await {
            Ok(true) => {
                tracing::info!(lease = %election.name, identity = %election.identity, "leading: this replica runs the reconcilers");
                return Ok(());
            }
            Ok(false) => {
                if !waiting_logged {
                    let holder = observed
                        .record
                        .as_ref()
                        .map(|(h, _)| h.as_str())
                        .unwrap_or("");
                    tracing::info!(lease = %election.name, holder, "standing by: another replica leads");
                    waiting_logged = true;
                }
            }
            Err(e) => tracing::warn!(lease = %election.name, "leader election: {e}"),
        }
        tokio::time::sleep(election.renew_every()).await;
    }
}

/// One attempt: true when this process holds the Lease afterwards.
async fn try_acquire(
    api: &Api<Lease>,
    election: &Election,
    observed: &mut Observed,
) -> Result<bool> {
    let now = Timestamp::now();
    let Some(mut lease) = api.get_opt(&election.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(election.name.clone()),
                ..Default::default()
            },
            spec: Some(spec(election, now, None, 0)),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(ae)) if ae.code == 409 => Ok(false),
            Err(e) => Err(e.into()),
        };
    };
    let current = lease.spec.clone().unwrap_or_default();
    let holder = current.holder_identity.clone().unwrap_or_default();
    let record = Some((holder.clone(), current.renew_time.as_ref().map(|t| t.0)));
    if record != observed.record {
        observed.record = record;
        observed.since = Instant::now();
    }
    let free = holder.is_empty() || holder == election.identity;
    if !free && observed.since.elapsed() < election.duration {
        return Ok(false);
    }
    let transitions =
        current.lease_transitions.unwrap_or(0) + i32::from(holder != election.identity);
    let acquired = if holder == election.identity {
        current.acquire_time.map(|t| t.0)
    } else {
        None
    };
    lease.spec = Some(spec(election, now, acquired, transitions));
    // The resourceVersion read travels with the write: a candidate that lost the race gets 409.
    match api
        .replace(&election.name, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(ae)) if ae.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn spec(
    election: &Election,
    now: Timestamp,
    acquired: Option<Timestamp>,
    transitions: i32,
) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(election.identity.clone()),
        lease_duration_seconds: Some(election.duration.as_secs().max(1) as i32),
        acquire_time: Some(MicroTime(acquired.unwrap_or(now))),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..Default::default()
    }
}

/// Renews the Lease while this process leads; returns when it could not for a whole duration
/// (or another replica holds it), which ends the leadership.
pub async fn keep(client: &Client, election: &Election) {
    let api: Api<Lease> = Api::namespaced(client.clone(), &election.namespace);
    let mut renewed = Instant::now();
    loop {
        tokio::time::sleep(election.renew_every()).await;
        match renew(&api, election).await {
            Ok(true) => renewed = Instant::now(),
            Ok(false) => {
                tracing::error!(lease = %election.name, "another replica holds the Lease");
                return;
            }
            Err(e) => tracing::warn!(lease = %election.name, "renewing the Lease: {e}"),
        }
        if renewed.elapsed() >= election.duration {
            tracing::error!(lease = %election.name, "the Lease was not renewed for {:?}", election.duration);
            return;
        }
    }
}

async fn renew(api: &Api<Lease>, election: &Election) -> Result<bool> {
    let mut lease = api.get(&election.name).await?;
    let Some(spec) = lease.spec.as_mut() else {
        return Ok(false);
    };
    if spec.holder_identity.as_deref() != Some(election.identity.as_str()) {
        return Ok(false);
    }
    spec.renew_time = Some(MicroTime(Timestamp::now()));
    // A 409 (written since the read) is an error like any other: the next round reads again.
    api.replace(&lease.name_any(), &PostParams::default(), &lease)
        .await?;
    Ok(true)
}

/// Hands the Lease back (a clean stop): the next candidate need not wait out the duration.
pub async fn release(client: &Client, election: &Election) {
    let api: Api<Lease> = Api::namespaced(client.clone(), &election.namespace);
    let Ok(mut lease) = api.get(&election.name).await else {
        return;
    };
    let Some(spec) = lease.spec.as_mut() else {
        return;
    };
    if spec.holder_identity.as_deref() != Some(election.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    match api
        .replace(&lease.name_any(), &PostParams::default(), &lease)
        .await
    {
        Ok(_) => tracing::info!(lease = %election.name, "handed the Lease back"),
        Err(e) => tracing::warn!(lease = %election.name, "handing the Lease back: {e}"),
    }
}
