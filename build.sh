#!/usr/bin/env bash
# Builds the Sluice image with Cloud Build and pushes it to Artifact Registry:
#   LOCATION-docker.pkg.dev/PROJECT/REPOSITORY/IMAGE:TAG  and  :latest
#
# Usage: ./build.sh --location LOCATION --repository REPOSITORY [options]
#   --project PROJECT      GCP project (default: gcloud's active project)
#   --location LOCATION    Artifact Registry location, e.g. europe-west1 or us   (required)
#   --repository REPO      Artifact Registry Docker repository id                (required)
#   --image NAME           image name (default: sluice)
#   --tag TAG              image tag (default: the git commit, short, +"-dirty" with local
#                          changes; outside git: chosen by cloudbuild.yaml)
#   --dbt-project PATH     dbt project directory to ship, relative to the repo root
#                          (default: dbt; absent -> the image has an empty DBT_PROJECT_DIR)
#   --dry-run              check and print the gcloud command, do not run it
#   -h, --help
# The repository must exist: gcloud artifacts repositories create REPO \
#   --repository-format=docker --location=LOCATION
# See docs/image.md.
set -euo pipefail

die() { echo "build.sh: $*" >&2; exit 2; }
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }

project=""
location=""
repository=""
image="sluice"
tag=""
dbt_project="dbt"
dry_run=0

need_value() { [ "$2" -ge 2 ] || die "$1 needs a value"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --project) need_value "$1" $#; project="$2"; shift 2 ;;
    --project=*) project="${1#*=}"; shift ;;
    --location) need_value "$1" $#; location="$2"; shift 2 ;;
    --location=*) location="${1#*=}"; shift ;;
    --repository) need_value "$1" $#; repository="$2"; shift 2 ;;
    --repository=*) repository="${1#*=}"; shift ;;
    --image) need_value "$1" $#; image="$2"; shift 2 ;;
    --image=*) image="${1#*=}"; shift ;;
    --tag) need_value "$1" $#; tag="$2"; shift 2 ;;
    --tag=*) tag="${1#*=}"; shift ;;
    --dbt-project) need_value "$1" $#; dbt_project="$2"; shift 2 ;;
    --dbt-project=*) dbt_project="${1#*=}"; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done

# Everything below is relative to the repo root (where Dockerfile and cloudbuild.yaml live).
cd "$(dirname "${BASH_SOURCE[0]}")"

# --- arguments -------------------------------------------------------------------------------
[ -n "$location" ] || die "--location is required (an Artifact Registry location, e.g. europe-west1)"
[ -n "$repository" ] || die "--repository is required (an Artifact Registry Docker repository id)"
[[ "$location" =~ ^[a-z]+(-[a-z]+[0-9]+)?$ ]] ||
  die "--location '$location' is not a region (europe-west1) or multi-region (europe, us, asia)"
[[ "$repository" =~ ^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$ ]] ||
  die "--repository '$repository' must be lowercase letters, digits and hyphens, starting with a letter"
[[ "$image" =~ ^[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*$ ]] ||
  die "--image '$image' is not a valid image name (lowercase letters, digits, . _ - /)"
[[ "$dbt_project" =~ ^[A-Za-z0-9_][A-Za-z0-9_./-]*$ && "$dbt_project" != *..* ]] ||
  die "--dbt-project '$dbt_project' must be a path inside the repository"
if [ -d "$dbt_project" ]; then
  [ -f "$dbt_project/dbt_project.yml" ] || die "--dbt-project $dbt_project has no dbt_project.yml"
elif [ "$dbt_project" != dbt ]; then
  die "--dbt-project $dbt_project: no such directory"
else
  echo "build.sh: note: no dbt/ directory; the image ships an empty DBT_PROJECT_DIR" >&2
fi

git_sha=""
if git rev-parse --git-dir >/dev/null 2>&1; then
  git_sha="$(git rev-parse --short=12 HEAD)"
  if [ -z "$tag" ]; then
    tag="$(git rev-parse --short=7 HEAD)"
    if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
      tag="$tag-dirty"
    fi
  fi
fi
if [ -n "$tag" ]; then
  [[ "$tag" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] ||
    die "--tag '$tag' is not a valid tag (letters, digits, _ . -, at most 128)"
  [ "$tag" != latest ] || die "--tag latest: every build already pushes :latest; give a distinct tag"
fi

# --- gcloud and the project -----------------------------------------------------------------
command -v gcloud >/dev/null 2>&1 ||
  { echo "build.sh: gcloud not found on PATH: install the Google Cloud CLI" >&2; exit 1; }
if [ -z "$project" ]; then
  project="$(gcloud config get-value project 2>/dev/null || true)"
  [ "$project" != "(unset)" ] || project=""
  [ -n "$project" ] || {
    echo "build.sh: no active gcloud project: pass --project or run 'gcloud config set project ID'" >&2
    exit 1
  }
fi
[[ "$project" =~ ^([a-z0-9.-]+:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$ ]] ||
  die "project '$project' is not a valid project id"
account="$(gcloud auth list --filter=status:ACTIVE --format='value(account)' 2>/dev/null || true)"
if [ -z "$account" ]; then
  echo "build.sh: warning: no active gcloud account ('gcloud auth login'); the submit will fail" >&2
fi

# --- the command ----------------------------------------------------------------------------
substitutions="_LOCATION=$location,_REPOSITORY=$repository,_IMAGE=$image,_TAG=$tag"
substitutions+=",_GIT_SHA=$git_sha,_DBT_PROJECT_SRC=$dbt_project"
cmd=(gcloud builds submit --project="$project" --config=cloudbuild.yaml
  --substitutions="$substitutions" .)

echo "build.sh: image $location-docker.pkg.dev/$project/$repository/$image:${tag:-<build id>} and :latest"
# Print it so it can be copied: quote only the arguments that need it.
quoted=()
for arg in "${cmd[@]}"; do
  if [[ "$arg" =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then quoted+=("$arg"); else quoted+=("$(printf '%q' "$arg")"); fi
done
echo "${quoted[*]}"
if [ "$dry_run" -eq 1 ]; then
  echo "build.sh: --dry-run: not submitted" >&2
  exit 0
fi
exec "${cmd[@]}"
