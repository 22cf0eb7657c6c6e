//! What Sluice needs to know about a dbt project before starting dbt: the profile name (a
//! generated profile must carry it), and whether packages are declared and installed.

use std::path::{Path, PathBuf};

use yaml_rust2::{Yaml, YamlLoader};

use crate::DbtError;

/// The project file dbt looks for.
pub const PROJECT_FILE: &str = "dbt_project.yml";
/// Files that declare packages `dbt deps` installs (`dependencies.yml` since dbt 1.6).
pub(crate) const PACKAGE_FILES: [&str; 2] = ["packages.yml", "dependencies.yml"];
/// dbt's default `packages-install-path`.
pub(crate) const DEFAULT_PACKAGES_INSTALL_PATH: &str = "dbt_packages";

/// The parts of a dbt project Sluice reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProjectInfo {
    pub dir: PathBuf,
    /// `profile:` of dbt_project.yml.
    pub profile: Option<String>,
    /// `packages-install-path:`, relative to `dir` unless absolute.
    pub packages_install_path: PathBuf,
    /// The package file declaring at least one package, if any.
    pub packages_file: Option<PathBuf>,
}

impl ProjectInfo {
    /// Reads `dir/dbt_project.yml` and the package files next to it.
    pub(crate) fn read(dir: &Path) -> Result<Self, DbtError> {
        let project_file = dir.join(PROJECT_FILE);
        let text = std::fs::read_to_string(&project_file).map_err(|err| DbtError::Project {
            path: project_file.clone(),
            reason: match err.kind() {
                std::io::ErrorKind::NotFound => {
                    "not found: is --project-dir the directory holding dbt_project.yml?".to_string()
                }
                _ => format!("cannot read: {err}"),
            },
        })?;
        let doc = parse_yaml(&project_file, &text)?;
        let profile = match &doc["profile"] {
            Yaml::BadValue | Yaml::Null => None,
            value => Some(scalar(value).ok_or_else(|| DbtError::Project {
                path: project_file.clone(),
                reason: "`profile:` is not a string".into(),
            })?),
        };
        let packages_install_path = match &doc["packages-install-path"] {
            Yaml::BadValue | Yaml::Null => PathBuf::from(DEFAULT_PACKAGES_INSTALL_PATH),
            value => PathBuf::from(scalar(value).ok_or_else(|| DbtError::Project {
                path: project_file.clone(),
                reason: "`packages-install-path:` is not a string".into(),
            })?),
        };

        let mut packages_file = None;
        for name in PACKAGE_FILES {
            let path = dir.join(name);
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                Err(err) => return Err(DbtError::io("read", path, err)),
            };
            let doc = parse_yaml(&path, &text)?;
            let declared = doc["packages"]
                .as_vec()
                .is_some_and(|list| !list.is_empty());
            if declared {
                packages_file = Some(path);
                break;
            }
        }

        Ok(ProjectInfo {
            dir: dir.to_path_buf(),
            profile,
            packages_install_path,
            packages_file,
        })
    }

    /// The directory packages are installed into.
    pub(crate) fn packages_dir(&self) -> PathBuf {
        self.dir.join(&self.packages_install_path)
    }

    /// Whether some package is installed: the install directory exists and is not empty. dbt
    /// itself names each package's directory after the package's own project name, which
    /// packages.yml does not tell, so "something is there" is the check that does not guess.
    pub(crate) fn packages_installed(&self) -> bool {
        std::fs::read_dir(self.packages_dir())
            .map(|mut entries| entries.next().is_some())
            .unwrap_or(false)
    }

    /// The profile name a generated profile must use: the override, else `profile:`.
    pub(crate) fn profile_name(&self, override_name: Option<&str>) -> Result<String, DbtError> {
        if let Some(name) = override_name {
            return Ok(name.to_string());
        }
        let path = self.dir.join(PROJECT_FILE);
        match &self.profile {
            None => Err(DbtError::Project {
                path,
                reason: "has no `profile:`; set one, or name the profile with --profile-name"
                    .into(),
            }),
            // Jinja here would be rendered by dbt, not by us: we cannot know the name.
            Some(name) if name.contains("{{") => Err(DbtError::Project {
                path,
                reason: format!(
                    "`profile: {name}` is a template; name the profile with --profile-name"
                ),
            }),
            Some(name) => Ok(name.clone()),
        }
    }
}

fn parse_yaml(path: &Path, text: &str) -> Result<Yaml, DbtError> {
    let mut docs = YamlLoader::load_from_str(text).map_err(|err| DbtError::Project {
        path: path.to_path_buf(),
        reason: format!("invalid YAML: {err}"),
    })?;
    Ok(if docs.is_empty() {
        Yaml::Null
    } else {
        docs.swap_remove(0)
    })
}

/// A YAML scalar as a string (`profile: 123` is a valid, if odd, name).
fn scalar(value: &Yaml) -> Option<String> {
    match value {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    #[test]
    fn reads_profile_and_defaults() {
        let dir = project(&[(
            PROJECT_FILE,
            "name: demo\nversion: '1.0'\nprofile: 'demo_bq'  # comment\nmodels:\n  demo:\n    +materialized: view\n",
        )]);
        let info = ProjectInfo::read(dir.path()).unwrap();
        assert_eq!(info.profile.as_deref(), Some("demo_bq"));
        assert_eq!(info.profile_name(None).unwrap(), "demo_bq");
        assert_eq!(info.profile_name(Some("other")).unwrap(), "other");
        assert_eq!(info.packages_install_path, PathBuf::from("dbt_packages"));
        assert_eq!(info.packages_file, None);
        assert!(!info.packages_installed());
    }

    #[test]
    fn missing_project_file_says_which_flag() {
        let dir = tempfile::tempdir().unwrap();
        let err = ProjectInfo::read(dir.path()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("dbt_project.yml") && msg.contains("--project-dir"),
            "{msg}"
        );
        assert_eq!(
            sluice_runtime::ExitStatus::exit_code(&err),
            sluice_runtime::ExitCode::Usage
        );
    }

    #[test]
    fn missing_or_templated_profile_is_a_usage_error() {
        let dir = project(&[(PROJECT_FILE, "name: demo\n")]);
        let err = ProjectInfo::read(dir.path())
            .unwrap()
            .profile_name(None)
            .unwrap_err();
        assert!(err.to_string().contains("--profile-name"), "{err}");
        let dir = project(&[(PROJECT_FILE, "profile: \"{{ env_var('P') }}\"\n")]);
        let err = ProjectInfo::read(dir.path())
            .unwrap()
            .profile_name(None)
            .unwrap_err();
        assert!(err.to_string().contains("template"), "{err}");
    }

    #[test]
    fn invalid_yaml_names_the_file() {
        let dir = project(&[(PROJECT_FILE, "profile: [unclosed\n")]);
        let err = ProjectInfo::read(dir.path()).unwrap_err().to_string();
        assert!(err.contains("dbt_project.yml: invalid YAML"), "{err}");
    }

    #[test]
    fn packages_declared_and_installed() {
        let dir = project(&[
            (PROJECT_FILE, "profile: p\npackages-install-path: vendor\n"),
            ("packages.yml", "packages: []\n"),
            (
                "dependencies.yml",
                "packages:\n  - package: dbt-labs/dbt_utils\n    version: 1.3.0\n",
            ),
        ]);
        let info = ProjectInfo::read(dir.path()).unwrap();
        // An empty packages.yml declares nothing; dependencies.yml does.
        assert_eq!(
            info.packages_file,
            Some(dir.path().join("dependencies.yml"))
        );
        assert_eq!(info.packages_dir(), dir.path().join("vendor"));
        assert!(!info.packages_installed());
        std::fs::create_dir_all(dir.path().join("vendor")).unwrap();
        assert!(
            !info.packages_installed(),
            "an empty install dir is not installed"
        );
        std::fs::create_dir_all(dir.path().join("vendor/dbt_utils")).unwrap();
        assert!(info.packages_installed());
    }

    #[test]
    fn dependencies_yml_with_only_projects_declares_no_packages() {
        let dir = project(&[
            (PROJECT_FILE, "profile: p\n"),
            ("dependencies.yml", "projects:\n  - name: upstream\n"),
        ]);
        assert_eq!(ProjectInfo::read(dir.path()).unwrap().packages_file, None);
    }
}
