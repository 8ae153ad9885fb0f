//! The Dataset reconciler: a Dataset with its CacheRuntime becomes a pre-bound PV and PVC (and
//! a credentials Secret) and phase Bound; its deletion waits until no pod uses the PVC, then
//! removes them (finalizer).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{self, finalizer};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::Context;
use super::nodes;
use super::objects::{self, VolumeParts};
use super::ufs::Progress;
use crate::catalogue;
use crate::crd::{
    CacheRuntime, ConditionStatus, Dataset, DatasetCondition, DatasetPhase, EncryptOption,
};
use crate::error::{Error, Result};
use fluid_volume::endpoints::{SECRET_ENDPOINT_KEY, refused_endpoint};

/// Keeps a Dataset until its PV, PVC and Secret are gone.
pub const FINALIZER: &str = "data.fluid.io/dataset-controller";
/// The field manager of every object the controller writes.
pub const MANAGER: &str = "fluid-csi-controller";

/// How soon a Dataset is looked at again in each situation.
const WHILE_SCANNING: Duration = Duration::from_secs(5);
const WAITING_FOR_RUNTIME: Duration = Duration::from_secs(60);
const AFTER_FAILURE: Duration = Duration::from_secs(120);
const RESYNC: Duration = Duration::from_secs(600);

pub async fn reconcile(ds: Arc<Dataset>, ctx: Arc<Context>) -> Result<Action> {
    let key = key(&ds);
    let api: Api<Dataset> = Api::namespaced(ctx.client.clone(), &namespace(&ds));
    finalizer(&api, FINALIZER, ds, |event| async {
        match event {
            finalizer::Event::Apply(ds) => apply(&ds, &ctx).await,
            finalizer::Event::Cleanup(ds) => cleanup(&ds, &ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
        finalizer::Error::AddFinalizer(e) | finalizer::Error::RemoveFinalizer(e) => Error::Kube(e),
        other => Error::dataset(key, other.to_string()),
    })
}

pub fn error_policy(ds: Arc<Dataset>, err: &Error, _: Arc<Context>) -> Action {
    match err {
        Error::InUse { .. } => {
            tracing::info!(dataset = %key(&ds), "{err}; deletion waits");
            Action::requeue(Duration::from_secs(5))
        }
        _ => {
            tracing::warn!(dataset = %key(&ds), "reconcile failed: {err}");
            Action::requeue(Duration::from_secs(15))
        }
    }
}

fn namespace(ds: &Dataset) -> String {
    ds.namespace()
        .unwrap_or_else(|| catalogue::DEFAULT_NAMESPACE.into())
}

fn key(ds: &Dataset) -> String {
    format!("{}/{}", namespace(ds), ds.name_any())
}

async fn apply(ds: &Dataset, ctx: &Context) -> Result<Action> {
    let (ns, name) = (namespace(ds), ds.name_any());
    let runtimes: Api<CacheRuntime> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(runtime) = runtimes.get_opt(&name).await? else {
        // Daemons kept after their pods left (cleanPolicy OnRuntimeDeleted) go with the runtime.
        nodes::release(&ctx.client, &ctx.cache_auth, &ns, &name).await?;
        let message = format!("waiting for a CacheRuntime named {name:?} in namespace {ns:?}");
        write_status(
            ds,
            ctx,
            DatasetPhase::Pending,
            "Ready",
            false,
            "NoRuntime",
            &message,
            None,
        )
        .await?;
        return Ok(Action::requeue(WAITING_FOR_RUNTIME));
    };
    let (plan, secrets) = match prepare(ds, &runtime, ctx).await {
        Ok(p) => p,
        Err(Error::Dataset { message, .. }) => {
            write_status(
                ds,
                ctx,
                DatasetPhase::Failed,
                "Ready",
                false,
                "Invalid",
                &message,
                None,
            )
            .await?;
            return Ok(Action::requeue(AFTER_FAILURE));
        }
        Err(e) => return Err(e),
    };

    // Names a tenant can choose may already be taken by objects that are not this Dataset's
    // (a user's own PVC, another Dataset's PV): those are never taken over.
    let owned = Owned::look_up(ds, ctx).await?;
    if let Some(conflict) = &owned.conflict {
        let message = format!(
            "{conflict} and is not this Dataset's: the Dataset is not bound (rename it, or \
             remove that object)"
        );
        write_status(
            ds,
            ctx,
            DatasetPhase::Failed,
            "Ready",
            false,
            "Conflict",
            &message,
            None,
        )
        .await?;
        return Ok(Action::requeue(AFTER_FAILURE));
    }
    let pv_name = owned.pv_name.clone();

    let context = plan.volume_context();
    let parts = VolumeParts {
        namespace: &ns,
        name: &name,
        pv_name: &pv_name,
        driver: &ctx.driver,
        attributes: context.to_map(),
        node_selector: &runtime.spec.fuse.node_selector,
    };
    let secret_api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let secret = objects::credentials(ds, &parts, &secrets);
    apply_exactly(&secret_api, &secret, owned.secret.as_ref()).await?;
    let pv_api: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let pv = objects::persistent_volume(ds, &parts);
    if let Err(e) = apply_exactly(&pv_api, &pv, owned.pv.as_ref()).await {
        // A PV's source is immutable: a changed Dataset needs a new PV, made once unused.
        if !is_invalid(&e) {
            return Err(e.into());
        }
        let users = users(ctx, &ns, &name).await?;
        if users.is_empty() {
            tracing::info!(dataset = %key(ds), "the Dataset changed: re-creating its PV and PVC");
            owned.delete_claim_and_volume(ctx).await?;
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
        let message = format!(
            "the spec changed while pod(s) {} use the volume; its PV is re-created once they are gone",
            users.join(", ")
        );
        write_status(
            ds,
            ctx,
            DatasetPhase::Bound,
            "Ready",
            false,
            "VolumeOutdated",
            &message,
            None,
        )
        .await?;
        return Ok(Action::requeue(Duration::from_secs(10)));
    }
    let pvc_api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    apply_exactly(&pvc_api, &objects::claim(ds, &parts), owned.claim.as_ref()).await?;

    let uid = ds.uid().unwrap_or_default();
    let mounts = context
        .mounts_with_secrets(&objects::stage_secrets(&secret))
        .map_err(|e| Error::dataset(key(ds), e.to_string()))?;
    let progress = ctx.scans.ensure(&uid, mounts);
    let (scanned, ufs) = match &progress {
        Progress::Running { files, bytes } => (
            (
                false,
                "Scanning",
                format!(
                    "counting the files of the sources: {files} files, {} so far ({} s)",
                    fluid_volume::size::human_size(*bytes),
                    ctx.scans.elapsed(&uid).unwrap_or_default()
                ),
            ),
            None,
        ),
        Progress::Done { files, bytes } => (
            (
                true,
                "Scanned",
                format!("{files} files, {}", fluid_volume::size::human_size(*bytes)),
            ),
            Some((*files, *bytes)),
        ),
        Progress::Failed(m) => ((false, "ScanFailed", m.clone()), None),
    };
    let ready_message = format!("PVC {name} is bound to PV {pv_name}");
    write_status(
        ds,
        ctx,
        DatasetPhase::Bound,
        "Ready",
        true,
        "Bound",
        &ready_message,
        Some((scanned, ufs)),
    )
    .await?;
    Ok(Action::requeue(match progress {
        Progress::Running { .. } => WHILE_SCANNING,
        Progress::Failed(_) => super::ufs::RETRY_AFTER,
        Progress::Done { .. } => RESYNC,
    }))
}

/// The Dataset as the node will serve it, and each mount's encrypt options read from Secrets
/// of the Dataset's own namespace (shared ones first, a mount's own win).
async fn prepare(
    ds: &Dataset,
    runtime: &CacheRuntime,
    ctx: &Context,
) -> Result<(catalogue::Dataset, Vec<BTreeMap<String, String>>)> {
    let plan = catalogue::Dataset::from_resource(ds, Some(&runtime.spec))?;
    check_local_roots(ds, &plan, &ctx.local_roots)?;
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace(ds));
    let mut fetched: HashMap<String, Option<Secret>> = HashMap::new();
    let mut per_mount = Vec::with_capacity(ds.spec.mounts.len());
    for (i, m) in ds.spec.mounts.iter().enumerate() {
        let mut values = BTreeMap::new();
        let options = ds
            .spec
            .shared_encrypt_options
            .iter()
            .map(|o| (o, "spec.sharedEncryptOptions".to_string()))
            .chain(
                m.encrypt_options
                    .iter()
                    .map(|o| (o, format!("spec.mounts[{i}].encryptOptions"))),
            );
        let mut pinned = None;
        for (opt, field) in options {
            let value = secret_value(ds, &api, &mut fetched, opt, &field).await?;
            values.insert(opt.name.clone(), value);
            // A credentials Secret may name the endpoint its credentials are for.
            let secret = fetched.get(&opt.value_from.secret_key_ref.name);
            if let Some(Some(s)) = secret {
                pinned = pinned.or_else(|| secret_text(s, SECRET_ENDPOINT_KEY));
            }
        }
        if let Some(endpoint) = pinned {
            values.insert(SECRET_ENDPOINT_KEY.to_string(), endpoint);
        }
        let plain = plan
            .mounts
            .get(i)
            .map(|m| m.options.clone())
            .unwrap_or_default();
        if let Some(why) = refused_endpoint(&plain, &values, &ctx.credential_endpoints) {
            return Err(Error::dataset(key(ds), format!("spec.mounts[{i}]: {why}")));
        }
        per_mount.push(values);
    }
    Ok((plan, per_mount))
}

/// The text of a Secret's key, from `data` or `stringData`.
fn secret_text(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.clone())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|s| s.clone().into_bytes())
        })?;
    String::from_utf8(bytes)
        .ok()
        .filter(|s| !s.trim().is_empty())
}

async fn secret_value(
    ds: &Dataset,
    api: &Api<Secret>,
    fetched: &mut HashMap<String, Option<Secret>>,
    opt: &EncryptOption,
    field: &str,
) -> Result<String> {
    let sel = &opt.value_from.secret_key_ref;
    if !fetched.contains_key(&sel.name) {
        let s = api.get_opt(&sel.name).await?;
        fetched.insert(sel.name.clone(), s);
    }
    let ns = namespace(ds);
    let fail = |why: String| Error::dataset(key(ds), format!("{field} {:?}: {why}", opt.name));
    let Some(Some(secret)) = fetched.get(&sel.name) else {
        return Err(fail(format!(
            "Secret {:?} not found in namespace {ns:?} (encrypt options read Secrets of the Dataset's own namespace only)",
            sel.name
        )));
    };
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&sel.key))
        .map(|b| b.0.clone())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(&sel.key))
                .map(|s| s.clone().into_bytes())
        })
        .ok_or_else(|| fail(format!("Secret {:?} has no key {:?}", sel.name, sel.key)))?;
    String::from_utf8(bytes).map_err(|_| {
        fail(format!(
            "key {:?} of Secret {:?} is not UTF-8 text",
            sel.key, sel.name
        ))
    })
}

async fn cleanup(ds: &Dataset, ctx: &Context) -> Result<Action> {
    let (ns, name) = (namespace(ds), ds.name_any());
    let users = users(ctx, &ns, &name).await?;
    if !users.is_empty() {
        let message = format!(
            "deletion waits for pod(s) {} to stop using PVC {name}",
            users.join(", ")
        );
        write_status(
            ds,
            ctx,
            ds.status
                .as_ref()
                .and_then(|s| s.phase)
                .unwrap_or(DatasetPhase::Bound),
            "Ready",
            false,
            "Terminating",
            &message,
            None,
        )
        .await?;
        return Err(Error::InUse {
            dataset: key(ds),
            pods: users,
        });
    }
    ctx.scans.stop(&ds.uid().unwrap_or_default());
    nodes::release(&ctx.client, &ctx.cache_auth, &ns, &name).await?;
    let owned = Owned::look_up(ds, ctx).await?;
    owned.delete_claim_and_volume(ctx).await?;
    owned.delete_secret(ctx).await?;
    tracing::info!(dataset = %key(ds), "deleted its PV, PVC and Secret");
    Ok(Action::await_change())
}

/// Pods of the namespace that mount the PVC and have not finished.
async fn users(ctx: &Context, ns: &str, claim: &str) -> Result<Vec<String>> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let mut users: Vec<String> = pods
        .list(&ListParams::default())
        .await?
        .into_iter()
        .filter(|p| {
            let finished = p
                .status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .is_some_and(|ph| ph == "Succeeded" || ph == "Failed");
            let mounts = p.spec.as_ref().is_some_and(|s| {
                s.volumes.iter().flatten().any(|v| {
                    v.persistent_volume_claim
                        .as_ref()
                        .is_some_and(|c| c.claim_name == claim)
                })
            });
            mounts && !finished
        })
        .map(|p| p.name_any())
        .collect();
    users.sort();
    Ok(users)
}

/// Refuses `local://` mount points outside the administrator's local roots: served by a root
/// daemon, one elsewhere would show the node's own files to the tenant's pods. (Compared as
/// written, with no `..`; the node checks again with links resolved.)
fn check_local_roots(
    ds: &Dataset,
    plan: &catalogue::Dataset,
    roots: &[std::path::PathBuf],
) -> Result<()> {
    let mounts = fluid_volume::dataset::resolve(plan.mounts.clone(), "spec.mounts")
        .map_err(|e| Error::dataset(key(ds), e.to_string()))?;
    for m in mounts {
        let fluid_volume::mountpoint::Store::Local { root } = &m.mount_point.store else {
            continue;
        };
        if fluid_volume::roots::lies_under(root, roots) {
            continue;
        }
        return Err(Error::dataset(
            key(ds),
            format!(
                "{}: local:// mount points must lie under a directory the administrator allows \
                 (--local-roots / the chart's node.localRoots: {})",
                m.mount_point.url,
                fluid_volume::roots::describe(roots)
            ),
        ));
    }
    Ok(())
}

/// The objects of a Dataset's names as they are: the PV, PVC and Secret that are its own, and
/// the first object of one of those names that is someone else's.
struct Owned {
    namespace: String,
    /// The PV's name: the one a PV made for the Dataset has (also one made when PV names were
    /// `<namespace>-<name>`, which its pre-bound PVC names), or [`objects::pv_name`].
    pv_name: String,
    pv: Option<PersistentVolume>,
    claim: Option<PersistentVolumeClaim>,
    secret: Option<Secret>,
    conflict: Option<String>,
}

impl Owned {
    async fn look_up(ds: &Dataset, ctx: &Context) -> Result<Owned> {
        let (ns, name, uid) = (namespace(ds), ds.name_any(), ds.uid().unwrap_or_default());
        let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
        let labelled = pvs
            .list(&ListParams::default().labels(&objects::pv_selector(&ns, &name)))
            .await?;
        let mut conflict = None;
        let (pv_name, pv) = match labelled.items.into_iter().next() {
            Some(pv) => (pv.name_any(), Some(pv)),
            None => {
                let pv_name = objects::pv_name(&ns, &name);
                if pvs.get_opt(&pv_name).await?.is_some() {
                    conflict = Some(format!("PersistentVolume {pv_name} exists"));
                }
                (pv_name, None)
            }
        };
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
        let mut claim = claims.get_opt(&name).await?;
        if claim
            .as_ref()
            .is_some_and(|c| !objects::owned_by(c.meta(), &uid))
        {
            conflict.get_or_insert(format!(
                "PersistentVolumeClaim {name} exists in namespace {ns}"
            ));
            claim = None;
        }
        let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
        let secret_name = objects::secret_name(&name);
        let mut secret = secrets.get_opt(&secret_name).await?;
        if secret
            .as_ref()
            .is_some_and(|s| !objects::owned_by(s.meta(), &uid))
        {
            conflict.get_or_insert(format!("Secret {secret_name} exists in namespace {ns}"));
            secret = None;
        }
        Ok(Owned {
            namespace: ns,
            pv_name,
            pv,
            claim,
            secret,
            conflict,
        })
    }

    /// Deletes the Dataset's PVC and PV (never an object of their names that is not its own).
    async fn delete_claim_and_volume(&self, ctx: &Context) -> Result<()> {
        let claims = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), &self.namespace);
        delete_exactly(&claims, self.claim.as_ref()).await?;
        delete_exactly(&Api::all(ctx.client.clone()), self.pv.as_ref()).await
    }

    async fn delete_secret(&self, ctx: &Context) -> Result<()> {
        let secrets = Api::<Secret>::namespaced(ctx.client.clone(), &self.namespace);
        delete_exactly(&secrets, self.secret.as_ref()).await
    }
}

/// Writes `desired` (named as it names itself) over `found`, the Dataset's own object of that
/// name as looked up, never over another: absent at the look-up, it is created (so an object
/// someone made under the name since fails with AlreadyExists, and the next look-up reports
/// the conflict); found, it is applied with the found object's resourceVersion in the body,
/// which the API server checks (a Conflict if the name now holds another object, or the object
/// changed since: the next reconcile looks again), so nothing made by someone else in between
/// is force-taken.
pub async fn apply_exactly<K>(api: &Api<K>, desired: &K, found: Option<&K>) -> kube::Result<K>
where
    K: Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = desired.meta().name.clone().unwrap_or_default();
    let Some(found) = found else {
        let params = PostParams {
            field_manager: Some(MANAGER.into()),
            ..PostParams::default()
        };
        return api.create(&params, desired).await;
    };
    let mut desired = desired.clone();
    desired.meta_mut().resource_version = found.meta().resource_version.clone();
    let ssa = PatchParams::apply(MANAGER).force();
    api.patch(&name, &ssa, &Patch::Apply(&desired)).await
}

/// Deletes `object` if it is still the very object looked up (its uid as a precondition), so
/// one made under its name since is left alone.
async fn delete_exactly<K>(api: &Api<K>, object: Option<&K>) -> Result<()>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let Some(object) = object else {
        return Ok(());
    };
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: object.meta().uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&object.name_any(), &params).await {
        Ok(_) => Ok(()),
        // Gone already, or replaced by another object of the name since.
        Err(kube::Error::Api(ae)) if ae.code == 404 || ae.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn condition_of<'a>(
    conditions: &'a [DatasetCondition],
    type_: &str,
) -> Option<&'a DatasetCondition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Publishes an Event about the Dataset; one that cannot be published is only logged (the
/// condition says the same).
async fn note(ds: &Dataset, ctx: &Context, ok: bool, reason: &str, message: &str) {
    use kube::runtime::events::{Event, EventType};
    let event = Event {
        type_: if ok {
            EventType::Normal
        } else {
            EventType::Warning
        },
        reason: reason.to_string(),
        // An Event's note holds at most 1 KiB.
        note: Some(message.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.events.publish(&event, &ds.object_ref(&())).await {
        tracing::debug!(dataset = %key(ds), "publishing an Event: {e}");
    }
}

fn is_invalid(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(ae) if ae.code == 422)
}

/// (ok, reason, message) of the `UfsScanned` condition, and the totals once known.
type Scan = ((bool, &'static str, String), Option<(u64, u64)>);

/// Writes phase and one condition (plus the scan's when given), keeping other conditions and
/// each condition's transition time when its status did not change. Nothing is written when
/// nothing but times would change, so a status write does not wake the reconciler forever.
#[allow(clippy::too_many_arguments)]
async fn write_status(
    ds: &Dataset,
    ctx: &Context,
    phase: DatasetPhase,
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
    scan: Option<Scan>,
) -> Result<()> {
    let current = ds.status.clone().unwrap_or_default();
    let mut conditions = current.conditions.clone();
    set_condition(&mut conditions, type_, ok, reason, message);
    let mut status = current.clone();
    if let Some(((scan_ok, scan_reason, scan_message), totals)) = scan {
        set_condition(
            &mut conditions,
            "UfsScanned",
            scan_ok,
            scan_reason,
            &scan_message,
        );
        if let Some((files, bytes)) = totals {
            status.ufs_total = Some(fluid_volume::size::human_size(bytes));
            status.file_num = Some(files.to_string());
        }
    }
    status.phase = Some(phase);
    status.conditions = conditions;
    if phase == DatasetPhase::Bound {
        status.mounts = ds.spec.mounts.clone();
    }
    if same_but_times(&status, &current) {
        return Ok(());
    }
    // What changed also goes out as an Event: a refusal as a Warning, once per change.
    let was = condition_of(&current.conditions, type_);
    if was.is_none_or(|c| c.reason.as_deref() != Some(reason)) {
        note(ds, ctx, ok, reason, message).await;
    }
    let api: Api<Dataset> = Api::namespaced(ctx.client.clone(), &namespace(ds));
    let patch = json!({ "status": {
        "phase": status.phase,
        "conditions": status.conditions,
        "ufsTotal": status.ufs_total,
        "fileNum": status.file_num,
        "mounts": status.mounts,
    }});
    api.patch_status(
        &ds.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

fn set_condition(
    conditions: &mut Vec<DatasetCondition>,
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
) {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let status = if ok {
        ConditionStatus::True
    } else {
        ConditionStatus::False
    };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = Some(now.clone());
            }
            c.status = status;
            c.reason = Some(reason.to_string());
            c.message = Some(message.to_string());
            c.last_update_time = Some(now);
        }
        None => conditions.push(DatasetCondition {
            type_: type_.to_string(),
            status,
            reason: Some(reason.to_string()),
            message: Some(message.to_string()),
            last_update_time: Some(now.clone()),
            last_transition_time: Some(now),
        }),
    }
}

fn same_but_times(a: &crate::crd::DatasetStatus, b: &crate::crd::DatasetStatus) -> bool {
    let strip = |s: &crate::crd::DatasetStatus| {
        let mut s = s.clone();
        for c in &mut s.conditions {
            c.last_update_time = None;
            c.last_transition_time = None;
        }
        s.cache_states = None;
        s
    };
    strip(a) == strip(b)
}
