#!/usr/bin/env bash
# Checks the deployment files under deploy/:
# - `portcullis check` on every example configuration (deploy/examples/*.toml)
#   and on the Kubernetes one (deploy/kubernetes/config/portcullis.toml, with
#   its container paths pointed at the repository's policies and at dummy
#   secrets in a temporary directory); `portcullis policy test` wherever the
#   policy directory has tests;
# - every YAML file under deploy/kubernetes parses, the manifests agree with
#   the configuration (mount paths, secret keys, listed policy files, grace
#   period), and, where kubectl is installed, `kubectl kustomize` renders;
# - the systemd unit passes `systemd-analyze verify`, where that is installed;
# - the Dockerfile's JSON-form instructions parse.
# `_env` secrets get dummy values exported for the check only; `_file`
# secrets of the container configuration are made up in the temporary
# directory. Uses $PORTCULLIS_BIN if set, else builds the binary. Installs
# PyYAML into target/deploy-venv only if python3 lacks it. Exits non-zero
# on any failure, naming it.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)

passed=0
failed=0
ok() { passed=$((passed + 1)); printf 'ok:   %s\n' "$*"; }
fail() { failed=$((failed + 1)); printf 'FAIL: %s\n' "$*" >&2; }
note() { printf 'note: %s\n' "$*"; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# --- tools -------------------------------------------------------------------

if [ -n "${PORTCULLIS_BIN:-}" ]; then
  bin=$(realpath "$PORTCULLIS_BIN")
else
  cargo build -q -p portcullis
  bin=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug/portcullis
fi
[ -x "$bin" ] || { echo "no portcullis binary at $bin" >&2; exit 1; }

python=python3
if ! python3 -c 'import yaml' 2>/dev/null; then
  venv=target/deploy-venv
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" 2>/dev/null || {
      # Debian ships venv separately.
      if command -v apt-get >/dev/null; then apt-get install -y -qq python3-venv >/dev/null; fi
      rm -rf "$venv"
      python3 -m venv "$venv"
    }
  fi
  "$venv/bin/pip" install -q --disable-pip-version-check "PyYAML==6.0.2"
  python=$venv/bin/python
fi
"$python" -c 'import tomllib' 2>/dev/null || { echo "python 3.11 or later is needed (tomllib)" >&2; exit 1; }

# --- helpers -----------------------------------------------------------------

# A dummy value for an environment-variable secret, by the key that names it.
dummy_env_value() { # KEY
  case "$1" in
    token_sha256_env) printf '%s' dummy | sha256sum | cut -d' ' -f1 ;;
    basic_env) printf 'dummy-user:dummy-password' ;;
    *) printf 'dummy-secret' ;;
  esac
}

# NAME=value for every `*_env = "NAME"` line of a configuration.
env_assignments() { # CONFIG
  local key name
  grep -oE '^[[:space:]]*[a-z0-9_]+_env[[:space:]]*=[[:space:]]*"[^"]+"' "$1" | tr -d ' \t"' |
    while IFS='=' read -r key name; do
      printf '%s=%s\n' "$name" "$(dummy_env_value "$key")"
    done
}

# `portcullis check`, then `portcullis policy test` if the policy directory
# has tests. LABEL names the file in messages.
check_config() { # LABEL CONFIG
  local label=$1 config=$2 out
  local -a assignments=()
  mapfile -t assignments < <(env_assignments "$config")
  if out=$(env "${assignments[@]}" "$bin" check --config "$config" 2>&1); then
    ok "portcullis check $label"
  else
    fail "portcullis check $label:"$'\n'"$out"
    return
  fi
  local policy_dir
  policy_dir=$("$python" - "$config" <<'PY'
import os, sys, tomllib
path = sys.argv[1]
with open(path, "rb") as f:
    config = tomllib.load(f)
d = config.get("policy", {}).get("dir", "policies")
print(os.path.join(os.path.dirname(os.path.abspath(path)), d))
PY
)
  if compgen -G "$policy_dir/tests/*.toml" >/dev/null; then
    if out=$(env "${assignments[@]}" "$bin" policy test --config "$config" 2>&1); then
      ok "portcullis policy test $label ($(printf '%s\n' "$out" | tail -n 1))"
    else
      fail "portcullis policy test $label:"$'\n'"$out"
    fi
  fi
}

# --- example configurations ---------------------------------------------------

for config in deploy/examples/*.toml; do
  check_config "$config" "$config"
done

# --- the Kubernetes configuration ---------------------------------------------

# It names container paths; check a copy with those pointed at the
# repository's policy copy and at made-up secrets and store.
k8s_config=deploy/kubernetes/config/portcullis.toml
k8s=$tmp/kubernetes
mkdir -p "$k8s/secrets" "$k8s/var-lib-portcullis"
sed -e "s|\"/etc/portcullis/policies\"|\"$repo/deploy/kubernetes/config/policies\"|g" \
    -e "s|\"/etc/portcullis/secrets/|\"$k8s/secrets/|g" \
    -e "s|\"/var/lib/portcullis/|\"$k8s/var-lib-portcullis/|g" \
    "$k8s_config" > "$k8s/portcullis.toml"
if unmapped=$(grep -nE '^[^#]*"/(etc|var|run|srv|opt|usr|home|tmp)/' "$k8s/portcullis.toml" | grep -vF "\"$repo/" | grep -vF "\"$tmp/"); then
  fail "$k8s_config: container paths this script does not map (add them to tests/deploy/check.sh):"$'\n'"$unmapped"
fi
secrets=$(grep -oE '^[^#]*"/etc/portcullis/secrets/[A-Za-z0-9._-]+"' "$k8s_config" | grep -oE '[A-Za-z0-9._-]+"$' | tr -d '"' | sort -u)
for name in $secrets; do
  case "$name" in
    *.pem)
      if command -v openssl >/dev/null; then
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$k8s/secrets/$name" 2>/dev/null
      else
        fail "openssl is needed to make a dummy $name"
      fi
      ;;
    *sha256*) printf '%s' dummy | sha256sum | cut -d' ' -f1 > "$k8s/secrets/$name" ;;
    *basic*) printf 'dummy-user:dummy-password\n' > "$k8s/secrets/$name" ;;
    *) printf 'dummy-secret\n' > "$k8s/secrets/$name" ;;
  esac
done
check_config "$k8s_config" "$k8s/portcullis.toml"

# --- Kubernetes manifests -----------------------------------------------------

# shellcheck disable=SC2086 # $secrets is a list of plain file names
if out=$("$python" - "$k8s_config" $secrets <<'PY' 2>&1
"""Every YAML file parses; the manifests agree with the configuration."""
import glob, os, sys, tomllib
import yaml

config_path, secret_names = sys.argv[1], sys.argv[2:]
base = "deploy/kubernetes"
problems = []
docs = {}
for path in sorted(glob.glob(f"{base}/**/*.yaml", recursive=True) + glob.glob(f"{base}/**/*.yml", recursive=True)):
    try:
        with open(path) as f:
            loaded = [d for d in yaml.safe_load_all(f) if d is not None]
    except yaml.YAMLError as e:
        problems.append(f"{path}: does not parse: {e}")
        continue
    for d in loaded:
        if not isinstance(d, dict) or "apiVersion" not in d or "kind" not in d:
            problems.append(f"{path}: a document without apiVersion and kind")
            continue
        docs.setdefault(d["kind"], []).append((path, d))
if problems:
    sys.exit("\n".join(problems))

def one(kind):
    found = docs.get(kind, [])
    if len(found) != 1:
        sys.exit(f"expected one {kind} under {base}, found {len(found)}")
    return found[0][1]

with open(config_path, "rb") as f:
    config = tomllib.load(f)
kust = one("Kustomization")
deploy = one("Deployment")

for entry in kust.get("resources", []):
    if not os.path.exists(os.path.join(base, entry)):
        problems.append(f"kustomization.yaml: resource {entry} does not exist")
generators = {g["name"]: g for g in kust.get("configMapGenerator", [])}
for g in generators.values():
    for entry in g.get("files", []):
        if not os.path.exists(os.path.join(base, entry.split("=")[-1])):
            problems.append(f"kustomization.yaml: {g['name']}: file {entry} does not exist")
listed = sorted(generators.get("portcullis-policies", {}).get("files", []))
present = sorted(os.path.relpath(p, base) for p in glob.glob(f"{base}/config/policies/*.toml"))
if listed != present:
    problems.append(f"kustomization.yaml: portcullis-policies lists {listed}, config/policies/ holds {present}")
if "secret.example.yaml" in kust.get("resources", []):
    problems.append("kustomization.yaml: secret.example.yaml must not be applied (placeholders)")

spec = deploy["spec"]
if spec.get("replicas") != 1 or spec.get("strategy", {}).get("type") != "Recreate":
    problems.append("deployment.yaml: the store is single-writer: replicas must be 1 with strategy Recreate")
pod = spec["template"]["spec"]
container = pod["containers"][0]
mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
args = container.get("args", [])
config_in_pod = args[args.index("--config") + 1] if "--config" in args else None
if config_in_pod not in mounts:
    problems.append(f"deployment.yaml: --config {config_in_pod} is not a mount path")
for key, path in [("policy.dir", config.get("policy", {}).get("dir")),
                  ("store.path", config.get("store", {}).get("path")),
                  ("audit.path", config.get("audit", {}).get("path"))]:
    if path and not any(path == m or path.startswith(m.rstrip("/") + "/") for m in mounts):
        problems.append(f"deployment.yaml: {key} {path} is on no volume mount (the root filesystem is read-only)")
if secret_names and "/etc/portcullis/secrets" not in mounts:
    problems.append("deployment.yaml: the configuration reads /etc/portcullis/secrets, which is not mounted")
secret_example = [d for _, d in docs.get("Secret", []) if d["metadata"]["name"] == "portcullis-secrets"]
keys = set(secret_example[0].get("stringData", {})) if secret_example else set()
for name in secret_names:
    if name not in keys:
        problems.append(f"secret.example.yaml: no key {name}, which {config_path} reads")
ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
for key, name in [("server.listen", "http"), ("admin.listen", "admin")]:
    section = key.split(".")[0]
    listen = config.get(section, {}).get("listen", "")
    if not listen.startswith("0.0.0.0:") or ports.get(name) != int(listen.rsplit(":", 1)[1]):
        problems.append(f"deployment.yaml: port {name} does not match {key} = {listen!r} (must listen on 0.0.0.0)")
grace = config.get("server", {}).get("shutdown_grace", "10s")
seconds = {"ms": 0.001, "s": 1, "m": 60}
unit = next(u for u in ("ms", "s", "m") if grace.endswith(u))
if pod.get("terminationGracePeriodSeconds", 30) <= float(grace[: -len(unit)]) * seconds[unit]:
    problems.append(f"deployment.yaml: terminationGracePeriodSeconds must exceed server.shutdown_grace ({grace})")
if problems:
    sys.exit("\n".join(problems))
print(f"{sum(len(v) for v in docs.values())} documents")
PY
); then
  ok "deploy/kubernetes YAML parses and agrees with $k8s_config ($out)"
else
  fail "deploy/kubernetes manifests:"$'\n'"$out"
fi

if command -v kubectl >/dev/null; then
  if out=$(kubectl kustomize deploy/kubernetes 2>&1 >"$tmp/rendered.yaml"); then
    ok "kubectl kustomize deploy/kubernetes"
  else
    fail "kubectl kustomize deploy/kubernetes:"$'\n'"$out"
  fi
else
  note "kubectl not installed: kustomize rendering not checked"
fi

# --- systemd ------------------------------------------------------------------

if command -v systemd-analyze >/dev/null; then
  # verify insists that ExecStart's binary exists: point it at ours.
  sed "s|/usr/local/bin/portcullis|$bin|g" deploy/systemd/portcullis.service > "$tmp/portcullis.service"
  # It reports unknown or malformed settings as warnings with exit code 0.
  if out=$(systemd-analyze verify "$tmp/portcullis.service" 2>&1) && [ -z "$out" ]; then
    ok "systemd-analyze verify deploy/systemd/portcullis.service"
  else
    fail "systemd-analyze verify deploy/systemd/portcullis.service:"$'\n'"$out"
  fi
else
  note "systemd-analyze not installed: the unit file is not checked"
fi

# --- Dockerfile ---------------------------------------------------------------

if out=$("$python" - deploy/docker/Dockerfile <<'PY' 2>&1
"""JSON-form (exec form) instructions must be valid JSON arrays of strings."""
import json, re, sys
path = sys.argv[1]
text = open(path).read().replace("\\\n", " ")
problems = []
for n, line in enumerate(text.splitlines(), 1):
    m = re.match(r"\s*(CMD|ENTRYPOINT|VOLUME|HEALTHCHECK\b.*?\bCMD)\s+(\[.*)$", line)
    if not m:
        continue
    try:
        value = json.loads(m.group(2))
        assert isinstance(value, list) and all(isinstance(v, str) for v in value)
    except (ValueError, AssertionError):
        problems.append(f"{path}: {m.group(1).split()[0]} is not a JSON array of strings: {m.group(2)}")
sys.exit("\n".join(problems) if problems else 0)
PY
); then
  ok "deploy/docker/Dockerfile exec-form instructions parse"
else
  fail "$out"
fi

echo
echo "deploy: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
