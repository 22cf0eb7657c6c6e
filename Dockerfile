# The one image every Sluice Cloud Run Job runs: `sluice extract|load|dbt` (ENTRYPOINT sluice,
# the job's args pick the subcommand) plus `sluice-trigger`. See docs/image.md.
#
#   chef     Rust toolchain + cargo-chef
#   planner  dependency recipe from the manifests; picks the dbt project
#   builder  cooks the dependencies (cached layer), then builds the static binaries.
#            Both steps run scripts/build-static: the same script and flags the checks use.
#   runtime  python slim + dbt-bigquery (pinned, hashed) + the binaries, non-root
#
# Build args: SLUICE_GIT_SHA (shown by `sluice --version`), DBT_PROJECT_SRC (context path of
# the dbt project to ship, default `dbt`; an absent path ships an empty project dir),
# RUST_IMAGE / PYTHON_IMAGE (both Debian bookworm: same glibc for the static binaries' NSS;
# scripts/image-bases builds stand-ins when no registry is reachable), CARGO_PROFILE (default
# release; the test suite builds with static-check: same flags, no LTO, a third of the CPU time).
# No `# syntax=` line: the build must not pull a frontend image (classic builder or BuildKit
# with its built-in frontend both work).

ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${RUST_IMAGE} AS chef
ARG CARGO_CHEF_VERSION=0.1.78
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path /recipe.json
# The dbt project to ship: DBT_PROJECT_SRC when the context has it, else an empty directory
# (a plain COPY would fail the build when dbt/ is absent). Its generated dirs (target/, logs/,
# dbt_packages/) are kept out by .dockerignore.
ARG DBT_PROJECT_SRC=dbt
RUN mkdir -p /dbt-project \
 && if [ -d "${DBT_PROJECT_SRC}" ]; then cp -a "${DBT_PROJECT_SRC}/." /dbt-project/; \
    else echo "no dbt project at ${DBT_PROJECT_SRC}: shipping an empty DBT_PROJECT_DIR"; fi

FROM chef AS builder
COPY scripts/build-static scripts/build-static
COPY --from=planner /recipe.json recipe.json
ARG CARGO_PROFILE=release
# Dependencies only: this layer is reused until Cargo.toml/Cargo.lock change.
RUN scripts/build-static --profile "${CARGO_PROFILE}" --target-dir /build/target --cook recipe.json
COPY . .
# Declared after the cook so a new commit does not invalidate the dependency layer.
ARG SLUICE_GIT_SHA=unknown
RUN scripts/build-static --profile "${CARGO_PROFILE}" --target-dir /build/target --out /out

FROM ${PYTHON_IMAGE} AS runtime
# ca-certificates: the Rust binaries (rustls) and Python read the system bundle. Unpinned on
# purpose: it must follow Debian's security updates. apt's caches go too (75 MB of package
# caches on a base without Debian's docker-clean apt config, e.g. the stand-in bases).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/dbt \
    PATH=/opt/dbt/bin:$PATH
# dbt-core + dbt-bigquery and every dependency, pinned with hashes (docker/compile-requirements).
# pip byte-compiles at install time: the job user cannot write .pyc files into /opt/dbt, and dbt
# imports a lot at every start.
COPY docker/requirements.txt /opt/dbt-requirements.txt
RUN python -m venv /opt/dbt \
 && pip install --require-hashes --no-deps --compile -r /opt/dbt-requirements.txt \
 && pip check \
 && python -c "import dbt.adapters.bigquery"
ENV PYTHONDONTWRITEBYTECODE=1

RUN groupadd --gid 10001 sluice \
 && useradd --uid 10001 --gid sluice --create-home --home-dir /home/sluice \
      --shell /usr/sbin/nologin sluice

# Read-only for the job user: `sluice dbt` runs dbt from a writable copy when it must write.
COPY --from=planner /dbt-project/ /opt/sluice/dbt/
COPY --from=builder /out/sluice /out/sluice-trigger /usr/local/bin/

ENV DBT_PROJECT_DIR=/opt/sluice/dbt
USER 10001:10001
WORKDIR /home/sluice
ENTRYPOINT ["sluice"]
CMD ["--help"]

# Last, so a new commit only changes this metadata layer.
ARG SLUICE_GIT_SHA=unknown
LABEL org.opencontainers.image.title="sluice" \
      org.opencontainers.image.description="Sluice ELT jobs for Google Cloud Run: extract, load, dbt" \
      org.opencontainers.image.source="https://github.com/sluice-data/sluice" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.revision="${SLUICE_GIT_SHA}"
