"""The deploy files (deploy/Dockerfile, deploy/rayjob.yaml, cluster.yaml): each YAML parses, every
command of the project in them (a RayJob's entrypoint, the `pix2video ...` lines of their comments)
parses with the project's own command line, and the image's Ray is the version the project pins."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

from jobs import submit
from jobs.cli import VERBS, build_parser

ROOT = Path(__file__).resolve().parents[1]
YAMLS = [ROOT / "deploy" / "rayjob.yaml", ROOT / "cluster.yaml"]


def _ray_pin() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [m.group(1) for d in deps if (m := re.fullmatch(r"ray(?:\[[^\]]*\])?==(\S+)", d.replace(" ", "")))]
    return pin


def _entrypoints(node: object) -> list[str]:
    """Every `entrypoint` value in a parsed YAML document, at any depth."""
    if isinstance(node, dict):
        found = [v for k, v in node.items() if k == "entrypoint"]
        return found + [e for v in node.values() for e in _entrypoints(v)]
    if isinstance(node, list):
        return [e for v in node for e in _entrypoints(v)]
    return []


def _commented_commands(text: str) -> list[str]:
    """The project's commands shown in comments (`#   pix2video VERB ... \\` continued on the next lines)."""
    lines = [ln.strip()[1:].strip() for ln in text.splitlines() if ln.strip().startswith("#")]
    commands, current = [], ""
    for line in lines:
        current = f"{current} {line}".strip() if current else line
        if current.endswith("\\"):
            current = current[:-1].rstrip()
            continue
        for part in current.split("&&"):
            part = part.split("  #")[0].strip()  # a trailing remark
            if part.startswith(("pix2video ", "python -m jobs.")):
                commands.append(part)
        current = ""
    return commands


def _parse_command(command: str) -> None:
    """Parse one command as `pix2video` would (argparse's exit is a failure), without running it."""
    argv = shlex.split(command)
    if argv[:2] == ["python", "-m"]:
        assert argv[2].startswith("jobs."), command
        module = argv[2]
        verbs = [v for v, (m, _) in VERBS.items() if m == module]
        assert verbs, f"{module} is no verb of the command line: {command}"
        verb, rest = verbs[0], argv[3:]
    else:
        assert argv[0] == "pix2video" and argv[1] in VERBS, command
        verb, rest = argv[1], argv[2:]
    try:
        args = build_parser(verb).parse_args(rest)
    except SystemExit as e:
        pytest.fail(f"{command!r} does not parse (exit {e.code})")
    if verb == "submit":  # the forwarded verb must parse too, and be one submit accepts
        forwarded = submit.entrypoint(args.command)
        _parse_command(forwarded)


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.name)
def test_each_yaml_parses_and_its_commands_parse_with_the_cli(path: Path) -> None:
    text = path.read_text()
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    assert docs and all(isinstance(d, dict) for d in docs)
    commands = [e for d in docs for e in _entrypoints(d)] + _commented_commands(text)
    assert commands, f"{path.name} shows no command of the project"
    for command in commands:
        _parse_command(" ".join(command.split()))


def test_the_rayjob_runs_the_project_image_on_the_pinned_ray() -> None:
    (job,) = list(yaml.safe_load_all((ROOT / "deploy" / "rayjob.yaml").read_text()))
    assert job["apiVersion"].startswith("ray.io/") and job["kind"] == "RayJob"
    spec = job["spec"]
    assert _entrypoints(spec) and spec["shutdownAfterJobFinishes"] is True
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == _ray_pin()
    head = cluster["headGroupSpec"]
    assert str(head["rayStartParams"].get("num-gpus")) == "0"  # the driver's node holds no editor
    groups = [head] + cluster["workerGroupSpecs"]
    images = {c["image"] for g in groups for c in g["template"]["spec"]["containers"]}
    assert len(images) == 1  # head and workers run the same code
    gpus = [
        c["resources"]["limits"].get("nvidia.com/gpu")
        for g in cluster["workerGroupSpecs"]
        for c in g["template"]["spec"]["containers"]
    ]
    assert any(gpus)
    # Credentials come from the service account, never from the job's text.
    assert not re.search(r"(?i)aws_secret|secret_access|storage-option", (ROOT / "deploy" / "rayjob.yaml").read_text())


def test_the_dockerfile_builds_on_rays_image_of_the_pinned_version() -> None:
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, flags=re.M))
    (base,) = re.findall(r"^FROM (\S+)", text, flags=re.M)
    base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
    image, tag = base.split(":")
    assert image == "rayproject/ray"
    version, python, *rest = tag.split("-")
    assert version == _ray_pin()
    assert rest and (rest[-1] == "gpu" or rest[-1].startswith("cu"))  # a CUDA build
    floor = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    minimum = tuple(int(x) for x in floor.removeprefix(">=").split("."))
    assert python.startswith("py") and (int(python[2]), int(python[3:])) >= minimum
    assert re.search(r"^COPY .*\. \.$", text, flags=re.M)
    assert re.search(r"^RUN pip install [^\n]*\s\.(\s|$)", text, flags=re.M)  # the copied project
    ignored = (ROOT / "deploy" / "Dockerfile.dockerignore").read_text().split()
    assert ".git" in ignored and ".venv" in ignored  # the dev machine's venv must not land in the image
