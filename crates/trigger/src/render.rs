//! From a [`JobSpec`] to the Admin API's `Job`, and back to the handful of fields `deploy`
//! manages, so that "unchanged" means "no call".
//!
//! Both sides of a comparison go through the same [`managed`] extraction, which also fills in
//! the values the API applies when a field is left out (1 CPU, 512Mi, 600 s, 3 retries,
//! private-ranges-only egress) and normalises spellings (`"1"` vs `"1000m"`), so a job the API
//! hands back compares equal to the spec it was created from.
//!
//! An update starts from the job as fetched and replaces only the managed fields: settings made
//! outside the spec (volumes, annotations, binary authorization...) survive a deploy.

use crate::spec::{self, Egress, EnvValue, JobSpec, VpcAccess};
use google_cloud_run_v2::model;
use std::collections::BTreeMap;

/// Where a job lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobTarget {
    pub project: String,
    pub region: String,
    pub job: String,
}

impl JobTarget {
    /// `projects/P/locations/R`
    pub fn parent(&self) -> String {
        format!("projects/{}/locations/{}", self.project, self.region)
    }

    /// `projects/P/locations/R/jobs/J`
    pub fn name(&self) -> String {
        format!("{}/jobs/{}", self.parent(), self.job)
    }
}

/// Identifies sluice-trigger in the Job's `client` / `clientVersion` fields.
pub(crate) const CLIENT: &str = "sluice-trigger";

/// The body of `jobs.create` for `job` (its `name` stays empty: the API builds it from `jobId`).
pub(crate) fn new_job(job: &JobSpec) -> model::Job {
    apply(&model::Job::default(), job)
}

/// The body of `jobs.patch`: `actual` with the managed fields replaced by `job`'s and the
/// output-only fields cleared. `etag` is kept, so a concurrent change makes the update fail
/// instead of being overwritten.
pub(crate) fn updated_job(actual: &model::Job, job: &JobSpec) -> model::Job {
    let mut j = apply(actual, job);
    // Output-only fields: the API ignores them, but sending them back would be noise in
    // --dry-run output and a trap if a future API version started rejecting them.
    j.uid.clear();
    j.generation = 0;
    j.create_time = None;
    j.update_time = None;
    j.delete_time = None;
    j.expire_time = None;
    j.creator.clear();
    j.last_modifier.clear();
    j.observed_generation = 0;
    j.terminal_condition = None;
    j.conditions.clear();
    j.execution_count = 0;
    j.latest_created_execution = None;
    j.reconciling = false;
    j.satisfies_pzs = false;
    j
}

fn apply(base: &model::Job, job: &JobSpec) -> model::Job {
    let mut j = base.clone();
    j.client = CLIENT.to_string();
    j.client_version = env!("CARGO_PKG_VERSION").to_string();

    // Labels: the spec owns every user label; reserved-namespace ones (set by Google) stay.
    j.labels.retain(|k, _| is_reserved_label(k));
    j.labels
        .extend(job.labels.iter().map(|(k, v)| (k.clone(), v.clone())));

    let mut exec = j.template.take().unwrap_or_default();
    exec.task_count = job.tasks as i32;
    exec.parallelism = job.parallelism as i32;
    let mut task = exec.template.take().unwrap_or_default();
    if task.containers.is_empty() {
        task.containers.push(model::Container::default());
    }
    // sluice jobs are single-container; with sidecars, the first container is ours.
    let c = &mut task.containers[0];
    c.image = job.image.clone().unwrap_or_default();
    c.command = job.command.clone();
    c.args = job.args.clone();
    c.env = job.env.iter().map(env_var).collect();
    let mut resources = c.resources.take().unwrap_or_default();
    resources.limits.insert("cpu".into(), job.cpu.to_api());
    resources
        .limits
        .insert("memory".into(), job.memory.text.clone());
    c.resources = Some(resources);
    task.timeout = Some(wkt_duration(job.task_timeout));
    task.retries = Some(model::task_template::Retries::MaxRetries(
        job.max_retries as i32,
    ));
    if let Some(sa) = &job.service_account {
        task.service_account = sa.clone();
    }
    task.vpc_access = job.vpc.as_ref().map(vpc_access);
    exec.template = Some(task);
    j.template = Some(exec);
    j
}

/// A spec env entry as the API's `EnvVar` (secrets as `valueSource.secretKeyRef`).
pub(crate) fn env_var(v: &spec::EnvVar) -> model::EnvVar {
    let mut e = model::EnvVar::default();
    e.name = v.name.clone();
    e.values = Some(match &v.value {
        EnvValue::Plain(s) => model::env_var::Values::Value(s.clone()),
        EnvValue::Secret { secret, version } => {
            let mut sel = model::SecretKeySelector::default();
            sel.secret = secret.clone();
            sel.version = version.clone();
            let mut src = model::EnvVarSource::default();
            src.secret_key_ref = Some(sel);
            model::env_var::Values::ValueSource(Box::new(src))
        }
    });
    e
}

/// A plain `NAME=value` env entry.
pub(crate) fn plain_env(name: &str, value: &str) -> model::EnvVar {
    env_var(&spec::EnvVar {
        name: name.to_string(),
        value: EnvValue::Plain(value.to_string()),
    })
}

fn vpc_access(v: &spec::Vpc) -> model::VpcAccess {
    let mut a = model::VpcAccess::default();
    match &v.access {
        VpcAccess::Connector(c) => a.connector = c.clone(),
        VpcAccess::Direct {
            network,
            subnetwork,
            tags,
        } => {
            let mut ni = model::vpc_access::NetworkInterface::default();
            ni.network = network.clone().unwrap_or_default();
            ni.subnetwork = subnetwork.clone().unwrap_or_default();
            ni.tags = tags.clone();
            a.network_interfaces = vec![ni];
        }
    }
    a.egress = match v.egress {
        Egress::AllTraffic => model::vpc_access::VpcEgress::AllTraffic,
        Egress::PrivateRangesOnly => model::vpc_access::VpcEgress::PrivateRangesOnly,
    };
    a
}

pub(crate) fn wkt_duration(d: std::time::Duration) -> google_cloud_wkt::Duration {
    google_cloud_wkt::Duration::clamp(d.as_secs() as i64, d.subsec_nanos() as i32)
}

fn is_reserved_label(key: &str) -> bool {
    spec::RESERVED_LABEL_PREFIXES
        .iter()
        .any(|p| key.starts_with(p))
}

/// The fields `deploy` manages, normalised (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Managed {
    pub labels: BTreeMap<String, String>,
    pub tasks: i32,
    pub parallelism: i32,
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: Vec<(String, EnvValue)>,
    pub cpu_millis: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub task_timeout: (i64, i32),
    pub max_retries: i32,
    pub service_account: String,
    pub vpc: Option<ManagedVpc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ManagedVpc {
    pub connector: String,
    pub interfaces: Vec<(String, String, Vec<String>)>,
    pub egress: &'static str,
}

/// Extracts the managed fields of `job`.
pub(crate) fn managed(job: &model::Job) -> Managed {
    let exec = job.template.clone().unwrap_or_default();
    let task = exec.template.clone().unwrap_or_default();
    let c = task.containers.first().cloned().unwrap_or_default();
    let limits = c.resources.map(|r| r.limits).unwrap_or_default();
    let env = c
        .env
        .iter()
        .map(|e| {
            let value = match &e.values {
                Some(model::env_var::Values::Value(s)) => EnvValue::Plain(s.clone()),
                Some(model::env_var::Values::ValueSource(src)) => {
                    let sel = src.secret_key_ref.clone().unwrap_or_default();
                    EnvValue::Secret {
                        secret: sel.secret,
                        version: if sel.version.is_empty() {
                            "latest".into()
                        } else {
                            sel.version
                        },
                    }
                }
                _ => EnvValue::Plain(String::new()),
            };
            (e.name.clone(), value)
        })
        .collect();
    let timeout = task
        .timeout
        .map(|d| (d.seconds(), d.nanos()))
        .unwrap_or((spec::DEFAULT_TASK_TIMEOUT.as_secs() as i64, 0));
    let max_retries = match task.retries {
        Some(model::task_template::Retries::MaxRetries(n)) => n,
        _ => spec::DEFAULT_MAX_RETRIES as i32,
    };
    let vpc = task.vpc_access.map(|v| ManagedVpc {
        connector: v.connector.clone(),
        interfaces: v
            .network_interfaces
            .iter()
            .map(|n| (n.network.clone(), n.subnetwork.clone(), n.tags.clone()))
            .collect(),
        egress: match v.egress {
            model::vpc_access::VpcEgress::AllTraffic => "ALL_TRAFFIC",
            // Unspecified means the default, which is private ranges only.
            _ => "PRIVATE_RANGES_ONLY",
        },
    });
    Managed {
        labels: job
            .labels
            .iter()
            .filter(|(k, _)| !is_reserved_label(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        tasks: exec.task_count.max(1),
        parallelism: exec.parallelism,
        image: c.image,
        command: c.command,
        args: c.args,
        env,
        cpu_millis: Some(
            limits
                .get("cpu")
                .and_then(|s| spec::parse_cpu_millis(s))
                .unwrap_or(1000),
        ),
        memory_bytes: Some(
            limits
                .get("memory")
                .and_then(|s| spec::parse_memory_bytes(s))
                .unwrap_or(512 << 20),
        ),
        task_timeout: timeout,
        max_retries,
        service_account: task.service_account,
        vpc,
    }
}

/// The spec fields whose deployed value differs from the spec's, in spec vocabulary. The
/// service account counts only when the spec sets one (otherwise Cloud Run's default stands).
pub(crate) fn diff(
    desired: &Managed,
    actual: &Managed,
    spec_sets_service_account: bool,
) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let mut check = |name: &'static str, same: bool| {
        if !same {
            changed.push(name);
        }
    };
    check("image", desired.image == actual.image);
    check("command", desired.command == actual.command);
    check("args", desired.args == actual.args);
    check("env", desired.env == actual.env);
    check("cpu", desired.cpu_millis == actual.cpu_millis);
    check("memory", desired.memory_bytes == actual.memory_bytes);
    check("tasks", desired.tasks == actual.tasks);
    check("parallelism", desired.parallelism == actual.parallelism);
    check("task_timeout", desired.task_timeout == actual.task_timeout);
    check("max_retries", desired.max_retries == actual.max_retries);
    check("labels", desired.labels == actual.labels);
    check("vpc", desired.vpc == actual.vpc);
    if spec_sets_service_account {
        check(
            "service_account",
            desired.service_account == actual.service_account,
        );
    }
    changed
}

/// What `deploy` has to change to bring `actual` in line with `job` (empty: nothing).
pub(crate) fn changes(job: &JobSpec, actual: &model::Job) -> Vec<&'static str> {
    diff(
        &managed(&new_job(job)),
        &managed(actual),
        job.service_account.is_some(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Spec;
    use std::path::Path;

    fn job(extra: &str) -> JobSpec {
        let text = format!(
            "[[jobs]]\nname = \"extract\"\nimage = \"img:1\"\nargs = [\"extract\"]\n{extra}"
        );
        Spec::parse(&text, Path::new("jobs.toml"), Path::new("."))
            .unwrap()
            .jobs
            .remove(0)
    }

    #[test]
    fn new_job_sets_every_managed_field_explicitly() {
        let j = new_job(&job(
            "secrets = { TOKEN = \"tok\" }\nenv = { A = \"1\" }\nvpc = { connector = \"c\" }\n",
        ));
        let body = serde_json::to_value(&j).unwrap();
        let task = &body["template"]["template"];
        assert_eq!(body["template"]["taskCount"], 1);
        assert_eq!(task["containers"][0]["image"], "img:1");
        assert_eq!(task["containers"][0]["resources"]["limits"]["cpu"], "1");
        assert_eq!(
            task["containers"][0]["resources"]["limits"]["memory"],
            "512Mi"
        );
        assert_eq!(task["timeout"], "600s");
        assert_eq!(task["maxRetries"], 3);
        assert_eq!(task["containers"][0]["env"][0]["value"], "1");
        assert_eq!(
            task["containers"][0]["env"][1]["valueSource"]["secretKeyRef"],
            serde_json::json!({"secret": "tok", "version": "latest"})
        );
        assert_eq!(task["vpcAccess"]["connector"], "c");
        assert_eq!(body["client"], CLIENT);
        assert!(body.get("name").is_none());
    }

    #[test]
    fn api_spellings_and_defaults_compare_equal() {
        let spec = job("");
        let mut served = new_job(&spec);
        // What the API hands back: defaults in its own spelling.
        let c = &mut served
            .template
            .as_mut()
            .unwrap()
            .template
            .as_mut()
            .unwrap()
            .containers[0];
        c.resources
            .as_mut()
            .unwrap()
            .limits
            .insert("cpu".into(), "1000m".into());
        served.uid = "abc".into();
        served.generation = 3;
        served
            .labels
            .insert("run.googleapis.com/x".into(), "y".into());
        assert!(
            changes(&spec, &served).is_empty(),
            "{:?}",
            changes(&spec, &served)
        );
        served
            .template
            .as_mut()
            .unwrap()
            .template
            .as_mut()
            .unwrap()
            .service_account = "123-compute@developer.gserviceaccount.com".into();
        assert!(
            changes(&spec, &served).is_empty(),
            "unset service account is not managed"
        );
    }

    #[test]
    fn differences_are_named_in_spec_vocabulary() {
        let before = new_job(&job(""));
        let after = job("memory = \"1Gi\"\nlabels = { team = \"data\" }\ntasks = 3\n");
        assert_eq!(changes(&after, &before), vec!["memory", "tasks", "labels"]);
        let sa = job("service_account = \"a@p.iam.gserviceaccount.com\"\n");
        assert_eq!(changes(&sa, &before), vec!["service_account"]);
    }

    #[test]
    fn update_keeps_unmanaged_fields_and_etag_and_drops_output_only() {
        let mut actual = new_job(&job(""));
        actual.name = "projects/p/locations/r/jobs/extract".into();
        actual.etag = "\"e1\"".into();
        actual.uid = "u".into();
        actual
            .annotations
            .insert("team.example/owner".into(), "x".into());
        actual
            .template
            .as_mut()
            .unwrap()
            .template
            .as_mut()
            .unwrap()
            .encryption_key = "k".into();
        let updated = updated_job(&actual, &job("max_retries = 1\n"));
        assert_eq!(updated.name, actual.name);
        assert_eq!(updated.etag, "\"e1\"");
        assert!(updated.uid.is_empty());
        assert_eq!(updated.annotations.len(), 1);
        let task = updated.template.unwrap().template.unwrap();
        assert_eq!(task.encryption_key, "k");
        assert_eq!(
            task.retries,
            Some(model::task_template::Retries::MaxRetries(1))
        );
    }
}
