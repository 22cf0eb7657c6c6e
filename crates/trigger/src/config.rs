//! Where a command acts: project and region from flags, the spec, or the environment, and
//! execution names from the short forms people type.

use crate::render::JobTarget;
use crate::spec::{self, Spec};

/// Env vars consulted for the project, in order (gcloud's, then the client libraries').
pub(crate) const PROJECT_ENV: &[&str] = &[
    "CLOUDSDK_CORE_PROJECT",
    "GOOGLE_CLOUD_PROJECT",
    "GCLOUD_PROJECT",
];
/// Env vars consulted for the region, in order.
pub(crate) const REGION_ENV: &[&str] = &[
    "CLOUDSDK_RUN_REGION",
    "GOOGLE_CLOUD_REGION",
    "CLOUD_RUN_REGION",
];

/// An environment lookup (the binary passes `std::env::var`; tests pass a map).
pub(crate) type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

fn first_env(names: &[&str], env: Lookup<'_>) -> Option<String> {
    names.iter().find_map(|n| {
        env(n)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    })
}

/// Project and region a spec gives a job: the job's own (with `[defaults]` merged in) if the
/// spec has the job, else `[defaults]`.
pub(crate) fn spec_location(spec: &Spec, job: &str) -> (Option<String>, Option<String>) {
    match spec.job(job) {
        Ok(j) => (j.project.clone(), j.region.clone()),
        Err(_) => (spec.project.clone(), spec.region.clone()),
    }
}

/// Flag, then the spec, then the environment.
pub(crate) fn resolve_target(
    job: &str,
    flag_project: Option<&str>,
    flag_region: Option<&str>,
    spec: (Option<String>, Option<String>),
    env: Lookup<'_>,
) -> Result<JobTarget, String> {
    spec::check_job_name(job)?;
    let (spec_project, spec_region) = spec;
    let project = flag_project
        .map(str::to_string)
        .or(spec_project)
        .or_else(|| first_env(PROJECT_ENV, env))
        .ok_or_else(|| {
            format!(
                "no project for job {job}: pass --project, set project in the spec's [defaults], \
                 or set {}",
                PROJECT_ENV.join(" / ")
            )
        })?;
    let region = flag_region
        .map(str::to_string)
        .or(spec_region)
        .or_else(|| first_env(REGION_ENV, env))
        .ok_or_else(|| {
            format!(
                "no region for job {job}: pass --region, set region in the spec's [defaults], \
                 or set {}",
                REGION_ENV.join(" / ")
            )
        })?;
    spec::check_project(&project)?;
    spec::check_region(&region)?;
    Ok(JobTarget {
        project,
        region,
        job: job.to_string(),
    })
}

/// The job an execution id belongs to: Cloud Run names executions `JOB-xxxxx`.
pub(crate) fn job_of_execution_id(id: &str) -> Option<&str> {
    id.rsplit_once('-')
        .map(|(job, _)| job)
        .filter(|j| !j.is_empty())
}

/// A full execution name from what was typed: the full name as is, or a short id
/// (`extract-ab12c`) with its job (`--job`, else inferred from the id) and project/region.
pub(crate) fn execution_name(
    typed: &str,
    job_flag: Option<&str>,
    resolve: impl Fn(&str) -> Result<JobTarget, String>,
) -> Result<String, String> {
    if crate::report::split_execution_name(typed).is_some() {
        return Ok(typed.to_string());
    }
    if typed.contains('/') {
        return Err(format!(
            "{typed:?} is neither an execution id (JOB-xxxxx) nor projects/P/locations/R/jobs/J/executions/E"
        ));
    }
    let job = match job_flag {
        Some(j) => j,
        None => job_of_execution_id(typed)
            .ok_or_else(|| format!("cannot tell the job of execution {typed:?}: pass --job"))?,
    };
    let target = resolve(job)?;
    Ok(format!("{}/executions/{typed}", target.name()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn precedence_flag_spec_env() {
        let vars: HashMap<&str, &str> = [
            ("GOOGLE_CLOUD_PROJECT", "env-p"),
            ("CLOUDSDK_RUN_REGION", "env-r"),
        ]
        .into();
        let env = |n: &str| vars.get(n).map(|v| v.to_string());
        let t = resolve_target("extract", None, None, (None, None), &env).unwrap();
        assert_eq!((t.project.as_str(), t.region.as_str()), ("env-p", "env-r"));
        let t = resolve_target(
            "extract",
            Some("flag-p"),
            None,
            (None, Some("spec-r".into())),
            &env,
        )
        .unwrap();
        assert_eq!(t.project, "flag-p");
        assert_eq!(t.name(), "projects/flag-p/locations/spec-r/jobs/extract");
        let none = |_: &str| None;
        let err = resolve_target("extract", None, Some("r"), (None, None), &none).unwrap_err();
        assert!(err.contains("no project for job extract"), "{err}");
        assert!(err.contains("CLOUDSDK_CORE_PROJECT"), "{err}");
    }

    #[test]
    fn execution_names() {
        let resolve = |job: &str| {
            Ok(JobTarget {
                project: "p".into(),
                region: "r".into(),
                job: job.into(),
            })
        };
        assert_eq!(
            execution_name("extract-nyc-ab12c", None, resolve).unwrap(),
            "projects/p/locations/r/jobs/extract-nyc/executions/extract-nyc-ab12c"
        );
        let full = "projects/x/locations/y/jobs/j/executions/j-1";
        assert_eq!(execution_name(full, None, resolve).unwrap(), full);
        assert_eq!(
            execution_name("manual", Some("load"), resolve).unwrap(),
            "projects/p/locations/r/jobs/load/executions/manual"
        );
        assert!(execution_name("a/b", None, resolve).is_err());
        assert!(
            execution_name("nodash", None, resolve)
                .unwrap_err()
                .contains("--job")
        );
    }
}
