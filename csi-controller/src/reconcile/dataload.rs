//! The DataLoad reconciler: decides when a load runs (Once, Cron, OnEvent), checks that the
//! Dataset is in the DataLoad's namespace and bound, picks the nodes that already serve it,
//! and hands the run to a background task that streams each node's `CacheNode.Warmup` progress
//! into the status. Finished loads are deleted after `ttlSecondsAfterFinished`.
//!
//! One copy of a target path: on a node with a private cache, the node warms all of it
//! (`replicas` nodes make `replicas` copies); when the serving nodes share one cache, every
//! member warms the blocks it owns, and together they hold the path once (a shared cache keeps
//! one copy of each block, so `replicas` is one there).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use fluid_proto::cache_auth::BearerToken;
use fluid_proto::fluid::{WarmupProgress, WarmupRequest};
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use serde_json::json;

use super::Context;
use super::nodes::{self, ServingNode};
use crate::crd::{
    ConditionStatus, DataLoad, DataLoadPhase, DataLoadStatus, Dataset, DatasetPhase, Policy,
    RuntimeCondition,
};
use crate::error::{Error, Result};

/// Files a node warms at once.
const PARALLELISM: u32 = 8;
/// How often a running load writes its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// How soon a DataLoad waiting for its Dataset or a node looks again.
const WAITING: Duration = Duration::from_secs(10);
/// Path errors listed in the condition (the rest are counted).
const ERRORS_SHOWN: usize = 5;

/// Loads in progress, by DataLoad uid.
#[derive(Default)]
pub struct Loads {
    running: Mutex<HashMap<String, tokio::task::AbortHandle>>,
}

impl Loads {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, tokio::task::AbortHandle>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_running(&self, uid: &str) -> bool {
        self.lock().get(uid).is_some_and(|t| !t.is_finished())
    }
}

pub async fn reconcile(dl: Arc<DataLoad>, ctx: Arc<Context>) -> Result<Action> {
    let uid = dl.uid().unwrap_or_default();
    if dl.metadata.deletion_timestamp.is_some() || ctx.loads.is_running(&uid) {
        return Ok(Action::requeue(WAITING));
    }
    let ns = dl.namespace().unwrap_or_default();
    // The watch cache can lag our own status writes: a load that has just finished (its
    // result written, then no longer running) would look unfinished there and run again.
    let loads: Api<DataLoad> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(dl) = loads.get_opt(&dl.name_any()).await? else {
        return Ok(Action::await_change());
    };
    let dl = Arc::new(dl);
    let status = dl.status.clone().unwrap_or_default();
    if let Some(other) = dl.spec.dataset.namespace.as_deref().filter(|o| *o != ns) {
        let message = format!(
            "spec.dataset.namespace {other:?}: a DataLoad loads Datasets of its own namespace ({ns:?}) only"
        );
        return fail(&dl, &ctx, "CrossNamespace", &message).await;
    }
    let schedule = match (dl.spec.policy, dl.spec.schedule.as_deref()) {
        (Policy::Cron, Some(s)) => parse_schedule(s).map(Some),
        (Policy::Cron, None) => {
            Err("spec.schedule: required with policy Cron, e.g. \"0 */6 * * *\"".to_string())
        }
        _ => Ok(None),
    };
    let schedule = match schedule {
        Ok(s) => s,
        Err(m) => return fail(&dl, &ctx, "BadSchedule", &m).await,
    };

    let datasets: Api<Dataset> = Api::namespaced(ctx.client.clone(), &ns);
    let dataset = datasets.get_opt(&dl.spec.dataset.name).await?;
    let finished = matches!(
        status.phase,
        Some(DataLoadPhase::Complete | DataLoadPhase::Failed)
    );

    // When to run.
    let now = Utc::now();
    let due = match dl.spec.policy {
        Policy::Once => !finished,
        Policy::OnEvent => {
            !finished
                || dataset.as_ref().and_then(|d| d.metadata.generation) != status.dataset_generation
        }
        Policy::Cron => {
            let after = status
                .last_schedule_time
                .as_ref()
                .or(dl.metadata.creation_timestamp.as_ref())
                .map(to_chrono)
                .unwrap_or(now);
            match schedule
                .as_ref()
                .and_then(|c| c.find_next_occurrence(&after, false).ok())
            {
                Some(next) if next <= now => true,
                Some(next) => {
                    let wait = (next - now).to_std().unwrap_or(Duration::from_secs(1));
                    return Ok(Action::requeue(wait.max(Duration::from_millis(200))));
                }
                None => {
                    return fail(&dl, &ctx, "BadSchedule", "spec.schedule: it never fires").await;
                }
            }
        }
    };
    if !due {
        return Ok(expire(&dl, &ctx, &status)
            .await?
            .unwrap_or(Action::await_change()));
    }

    let Some(dataset) =
        dataset.filter(|d| d.status.as_ref().and_then(|s| s.phase) == Some(DatasetPhase::Bound))
    else {
        let message = format!(
            "waiting for Dataset {:?} of namespace {ns:?} to be Bound",
            dl.spec.dataset.name
        );
        write_status(
            &dl,
            &ctx,
            DataLoadPhase::Pending,
            "Ready",
            "DatasetNotBound",
            &message,
        )
        .await?;
        return Ok(Action::requeue(WAITING));
    };
    let serving = nodes::list_serving(&ctx.client, &ns, &dataset.name_any()).await?;
    if serving.is_empty() {
        let message = "no node serves the Dataset yet: a node caches a Dataset once a pod there mounts its PVC";
        write_status(
            &dl,
            &ctx,
            DataLoadPhase::Pending,
            "Ready",
            "NoNodes",
            message,
        )
        .await?;
        return Ok(Action::requeue(WAITING));
    }

    let shared = shares_cache(&ctx, &serving, &format!("{ns}/{}", dataset.name_any())).await;
    let plan = plan(&dl, &serving, shared);
    let started = Time(Timestamp::now());
    let patch = json!({"status": {
        "phase": DataLoadPhase::Executing,
        "conditions": [condition("Executing", true, "Started", &format!("loading on {}", node_names(&plan).join(", ")))],
        "lastScheduleTime": started,
        "filesLoaded": 0, "bytesLoaded": 0, "bytesAlreadyCached": 0,
        "loaded": fluid_volume::size::human_size(0),
        "nodes": node_names(&plan),
    }});
    patch_status(&ctx, &dl, &patch).await?;
    let task = tokio::spawn(run(
        ctx.clone(),
        dl.clone(),
        plan,
        dataset.metadata.generation,
    ));
    ctx.loads.lock().insert(uid, task.abort_handle());
    Ok(Action::requeue(WAITING))
}

pub fn error_policy(dl: Arc<DataLoad>, err: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(dataload = %format!("{}/{}", dl.namespace().unwrap_or_default(), dl.name_any()), "reconcile failed: {err}");
    Action::requeue(Duration::from_secs(15))
}

/// A five-field cron schedule (or six, seconds first).
fn parse_schedule(s: &str) -> std::result::Result<croner::Cron, String> {
    croner::Cron::new(s)
        .with_seconds_optional()
        .parse()
        .map_err(|e| format!("spec.schedule {s:?}: {e}"))
}

fn to_chrono(t: &Time) -> DateTime<Utc> {
    Utc.timestamp_opt(t.0.as_second(), 0)
        .single()
        .unwrap_or_else(Utc::now)
}

/// Deletes a finished Once/OnEvent load whose time to live is over, or says when to look again.
async fn expire(dl: &DataLoad, ctx: &Context, status: &DataLoadStatus) -> Result<Option<Action>> {
    let (Some(ttl), false) = (
        dl.spec.ttl_seconds_after_finished,
        dl.spec.policy == Policy::Cron,
    ) else {
        return Ok(None);
    };
    let finished_at = status
        .conditions
        .iter()
        .filter_map(|c| c.last_transition_time.as_ref())
        .map(|t| t.0.as_second())
        .max()
        .unwrap_or_default();
    let left = finished_at + ttl - Timestamp::now().as_second();
    if left > 0 {
        return Ok(Some(Action::requeue(Duration::from_secs(left as u64))));
    }
    let api: Api<DataLoad> =
        Api::namespaced(ctx.client.clone(), &dl.namespace().unwrap_or_default());
    match api.delete(&dl.name_any(), &DeleteParams::default()).await {
        Ok(_) => Ok(Some(Action::await_change())),
        Err(kube::Error::Api(ae)) if ae.code == 404 => Ok(Some(Action::await_change())),
        Err(e) => Err(e.into()),
    }
}

/// One warm-up: a target path on one node. Warm-ups with the same `copy` make one copy of the
/// path together.
#[derive(Clone, Debug)]
struct Warm {
    path: String,
    node: ServingNode,
    copy: usize,
}

/// Whether the serving nodes share one cache: the first one lists other members (a node that
/// does not answer leaves the load to plan private copies, as before sharing).
async fn shares_cache(ctx: &Context, serving: &[ServingNode], dataset: &str) -> bool {
    let Some(first) = serving.first() else {
        return false;
    };
    match nodes::stats(first, &ctx.cache_auth, dataset).await {
        Ok(s) => s.members.len() > 1,
        Err(e) => {
            tracing::debug!(dataset, "no stats, planning private copies: {e}");
            false
        }
    }
}

/// The warm-ups of a load: each target path on its first `replicas` serving nodes, or, in a
/// shared cache, on every member as one copy.
fn plan(dl: &DataLoad, serving: &[ServingNode], shared: bool) -> Vec<Warm> {
    let targets: Vec<(String, usize)> = if dl.spec.target.is_empty() {
        vec![("/".to_string(), 1)]
    } else {
        dl.spec
            .target
            .iter()
            .map(|t| (t.path.clone(), t.replicas.unwrap_or(1).max(1) as usize))
            .collect()
    };
    let mut out = Vec::new();
    let mut copy = 0;
    for (path, replicas) in targets {
        let nodes = if shared {
            serving
        } else {
            &serving[..replicas.min(serving.len())]
        };
        for node in nodes {
            out.push(Warm {
                path: path.clone(),
                node: node.clone(),
                copy,
            });
            copy += usize::from(!shared);
        }
        copy += usize::from(shared);
    }
    out
}

fn node_names(plan: &[Warm]) -> Vec<String> {
    let mut names: Vec<String> = plan.iter().map(|w| w.node.name.clone()).collect();
    names.sort();
    names.dedup();
    names
}

/// One warm-up's last progress, or why it failed.
type Outcome = std::result::Result<WarmupProgress, String>;

async fn run(ctx: Arc<Context>, dl: Arc<DataLoad>, plan: Vec<Warm>, generation: Option<i64>) {
    let started = Instant::now();
    let dataset = format!(
        "{}/{}",
        dl.namespace().unwrap_or_default(),
        dl.spec.dataset.name
    );
    let progress: Arc<Mutex<Vec<Outcome>>> =
        Arc::new(Mutex::new(vec![Ok(WarmupProgress::default()); plan.len()]));
    let warmups = plan.iter().enumerate().map(|(i, Warm { path, node, .. })| {
        let progress = progress.clone();
        let dataset = dataset.clone();
        let auth = ctx.cache_auth.clone();
        async move {
            let result = warm(node, &auth, &dataset, path, |p| {
                progress.lock().unwrap_or_else(|e| e.into_inner())[i] = Ok(p);
            })
            .await;
            if let Err(e) = result {
                progress.lock().unwrap_or_else(|e| e.into_inner())[i] =
                    Err(format!("{path} on {}: {e}", node.name));
            }
        }
    });
    let all = futures::future::join_all(warmups);
    tokio::pin!(all);
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    loop {
        tokio::select! {
            _ = &mut all => break,
            _ = tick.tick() => {
                let outcomes = progress.lock().unwrap_or_else(|e| e.into_inner()).clone();
                if let Err(e) = patch_status(&ctx, &dl, &json!({"status": totals(&plan, &outcomes)})).await {
                    if matches!(&e, Error::Kube(kube::Error::Api(ae)) if ae.code == 404) {
                        return; // The DataLoad was deleted: stop loading.
                    }
                    tracing::warn!(dataset = %dataset, "writing DataLoad progress: {e}");
                }
            }
        }
    }
    let outcomes = progress.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut status = totals(&plan, &outcomes);
    let errors: Vec<String> = outcomes
        .iter()
        .flat_map(|o| match o {
            Ok(p) => p
                .errors
                .iter()
                .map(|e| format!("{}: {}", e.path, e.message))
                .collect(),
            Err(e) => vec![e.clone()],
        })
        .collect();
    let quota = outcomes
        .iter()
        .any(|o| matches!(o, Ok(p) if p.quota_reached));
    let now = Time(Timestamp::now());
    let (phase, cond) = if !errors.is_empty() {
        let mut message = errors
            .iter()
            .take(ERRORS_SHOWN)
            .cloned()
            .collect::<Vec<_>>()
            .join("; ");
        if errors.len() > ERRORS_SHOWN {
            message.push_str(&format!("; and {} more", errors.len() - ERRORS_SHOWN));
        }
        (
            DataLoadPhase::Failed,
            condition("Failed", true, "PathErrors", &message),
        )
    } else if quota {
        let message = "stopped at the cache quota: the cache cannot hold more of the Dataset; loaded what fits";
        (
            DataLoadPhase::Complete,
            condition("Complete", true, "CacheQuotaReached", message),
        )
    } else {
        (
            DataLoadPhase::Complete,
            condition(
                "Complete",
                true,
                "Loaded",
                "every target path is in the cache",
            ),
        )
    };
    status["phase"] = json!(phase);
    status["conditions"] = json!([cond]);
    status["duration"] = json!(
        humantime::format_duration(Duration::from_secs(started.elapsed().as_secs())).to_string()
    );
    status["datasetGeneration"] = json!(generation);
    if phase == DataLoadPhase::Complete {
        status["lastSuccessfulTime"] = json!(now);
    }
    if let Err(e) = patch_status(&ctx, &dl, &json!({ "status": status })).await {
        tracing::warn!(dataset = %dataset, "writing the DataLoad's result: {e}");
    }
    tracing::info!(dataset = %dataset, dataload = %dl.name_any(), ?phase, "load finished");
    ctx.loads.lock().remove(&dl.uid().unwrap_or_default());
}

/// Streams one node's warm-up of `path`, handing each progress message to `on_progress`.
async fn warm(
    node: &ServingNode,
    auth: &BearerToken,
    dataset: &str,
    path: &str,
    mut on_progress: impl FnMut(WarmupProgress),
) -> Result<()> {
    let mut client = nodes::connect(node, auth).await?;
    let mut stream = client
        .warmup(WarmupRequest {
            paths: vec![path.to_string()],
            parallelism: PARALLELISM,
            dataset: dataset.to_string(),
        })
        .await
        .map_err(|s| node.refused(s))?
        .into_inner();
    while let Some(p) = stream.next().await {
        on_progress(p.map_err(|s| node.refused(s))?);
    }
    Ok(())
}

/// The running sums of a load, as status fields: the bytes of every warm-up, and the files of
/// each copy once (the members that make one copy of a path each walk all its files).
fn totals(plan: &[Warm], outcomes: &[Outcome]) -> serde_json::Value {
    let mut files_of_copy: HashMap<usize, u64> = HashMap::new();
    let (mut bytes, mut cached) = (0, 0);
    for (w, o) in plan.iter().zip(outcomes) {
        let Ok(p) = o else { continue };
        let files = files_of_copy.entry(w.copy).or_default();
        *files = (*files).max(p.files_done);
        bytes += p.bytes_done;
        cached += p.bytes_already_cached;
    }
    let files: u64 = files_of_copy.values().sum();
    json!({
        "filesLoaded": files,
        "bytesLoaded": bytes,
        "bytesAlreadyCached": cached,
        "loaded": fluid_volume::size::human_size(bytes),
    })
}

fn condition(type_: &str, ok: bool, reason: &str, message: &str) -> RuntimeCondition {
    let now = Time(Timestamp::now());
    RuntimeCondition {
        type_: type_.to_string(),
        status: if ok {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        },
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        last_probe_time: Some(now.clone()),
        last_transition_time: Some(now),
    }
}

/// Marks a DataLoad that cannot run as it is Failed, with `reason`, until it changes.
async fn fail(dl: &DataLoad, ctx: &Context, reason: &str, message: &str) -> Result<Action> {
    write_status(dl, ctx, DataLoadPhase::Failed, "Failed", reason, message).await?;
    Ok(Action::await_change())
}

/// Writes phase and one condition unless they are already so (no write, no new event).
async fn write_status(
    dl: &DataLoad,
    ctx: &Context,
    phase: DataLoadPhase,
    type_: &str,
    reason: &str,
    message: &str,
) -> Result<()> {
    let status = dl.status.clone().unwrap_or_default();
    let same = status.phase == Some(phase)
        && status.conditions.len() == 1
        && status.conditions[0].type_ == type_
        && status.conditions[0].reason.as_deref() == Some(reason)
        && status.conditions[0].message.as_deref() == Some(message);
    if same {
        return Ok(());
    }
    let cond = condition(type_, phase != DataLoadPhase::Pending, reason, message);
    patch_status(
        ctx,
        dl,
        &json!({"status": {"phase": phase, "conditions": [cond]}}),
    )
    .await
}

async fn patch_status(ctx: &Context, dl: &DataLoad, patch: &serde_json::Value) -> Result<()> {
    let api: Api<DataLoad> =
        Api::namespaced(ctx.client.clone(), &dl.namespace().unwrap_or_default());
    api.patch_status(
        &dl.name_any(),
        &PatchParams::default(),
        &Patch::Merge(patch),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{DataLoadSpec, TargetDataset, TargetPath};

    fn node(name: &str) -> ServingNode {
        ServingNode {
            name: name.into(),
            endpoint: "127.0.0.1:1".into(),
        }
    }

    #[test]
    fn each_target_goes_to_its_replicas() {
        let mut dl = DataLoad::new(
            "load",
            DataLoadSpec {
                dataset: TargetDataset {
                    name: "d".into(),
                    namespace: None,
                },
                load_metadata: false,
                target: vec![],
                policy: Policy::Once,
                schedule: None,
                ttl_seconds_after_finished: None,
            },
        );
        let serving = [node("a"), node("b"), node("c")];
        let p = plan(&dl, &serving, false);
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].path.as_str(), p[0].node.name.as_str()), ("/", "a"));
        // A shared cache: every member warms its share, all of them one copy.
        let p = plan(&dl, &serving, true);
        assert_eq!(node_names(&p), vec!["a", "b", "c"]);
        assert!(p.iter().all(|w| w.path == "/" && w.copy == 0), "{p:?}");
        dl.spec.target = vec![
            TargetPath {
                path: "/train".into(),
                replicas: Some(2),
            },
            TargetPath {
                path: "/val".into(),
                replicas: Some(9),
            },
        ];
        let p = plan(&dl, &serving, false);
        assert_eq!(p.len(), 5);
        assert_eq!(node_names(&p), vec!["a", "b", "c"]);
        let copies: Vec<usize> = p.iter().map(|w| w.copy).collect();
        assert_eq!(copies, [0, 1, 2, 3, 4]);
        let p = plan(&dl, &serving, true);
        let copies: Vec<(&str, usize)> = p.iter().map(|w| (w.path.as_str(), w.copy)).collect();
        assert_eq!(
            copies,
            [
                ("/train", 0),
                ("/train", 0),
                ("/train", 0),
                ("/val", 1),
                ("/val", 1),
                ("/val", 1)
            ]
        );
    }

    #[test]
    fn schedules_take_five_or_six_fields() {
        assert!(parse_schedule("*/10 * * * *").is_ok());
        assert!(parse_schedule("*/5 * * * * *").is_ok());
        let err = parse_schedule("every day").unwrap_err();
        assert!(err.contains("spec.schedule"), "{err}");
    }

    #[test]
    fn totals_add_up_the_nodes() {
        let p = |files, bytes| WarmupProgress {
            files_done: files,
            bytes_done: bytes,
            ..Default::default()
        };
        let warm = |copy| Warm {
            path: "/".into(),
            node: node("a"),
            copy,
        };
        let private = [warm(0), warm(1), warm(2)];
        let t = totals(&private, &[Ok(p(2, 100)), Err("x".into()), Ok(p(1, 50))]);
        assert_eq!(t["filesLoaded"], 3);
        assert_eq!(t["bytesLoaded"], 150);
        // Two members make one copy: their files once, their bytes summed.
        let shared = [warm(0), warm(0)];
        let t = totals(&shared, &[Ok(p(4, 100)), Ok(p(4, 60))]);
        assert_eq!(t["filesLoaded"], 4);
        assert_eq!(t["bytesLoaded"], 160);
    }
}
