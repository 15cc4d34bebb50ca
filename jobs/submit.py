"""Submit a pix2video verb as a Ray job and (with --wait) follow its logs to the end.

    pix2video submit --address http://127.0.0.1:8265 --wait -- run --manifest s3://b/m.parquet --output s3://b/out

Uses Ray's JobSubmissionClient: the current folder is uploaded as the job's `working_dir` (so the
cluster runs this checkout's code), and the entrypoint is `python -m jobs.<verb> ...`, which inside
the job connects to the cluster through $RAY_ADDRESS. The dashboard address is usually reached
through an SSH tunnel or `ray dashboard cluster.yaml` (the cluster does not expose it publicly).

Credentials are refused, in one line and before any cluster is contacted, wherever Ray would store
them: on the forwarded command line (the entrypoint is shown in the dashboard and kept in the job's
record) as a secret --storage-option, a URL's `user:password@` or a signed query (`?X-Amz-Signature=`,
`?token=`), and in --env (the job's runtime_env is kept too) as a variable named like a secret or
holding such a URL. Let the nodes use their own credentials (instance profile, environment), or put
them in a --config file.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shlex
import sys

from jobs import _common
from pipeline.dataset.storage import SECRET_NAME, redact
from pipeline.errors import InputError, first_line

log = logging.getLogger(__name__)

# What never needs to travel to the cluster (Ray also honours .gitignore in the working_dir).
EXCLUDES = [
    ".git",
    ".venv",
    "venv",
    "__pycache__",
    "*.pyc",
    ".pytest_cache",
    ".ruff_cache",
    "demo-output",
    "out",
]
SUBMITTABLE = ("run", "relabel", "augment", "demo")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--address",
        default=os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS"),
        help="the cluster's dashboard, e.g. http://127.0.0.1:8265 (default: $RAY_API_SERVER_ADDRESS, $RAY_ADDRESS)",
    )
    parser.add_argument("--wait", action="store_true", help="follow the job's logs; exit with its outcome")
    parser.add_argument("--working-dir", default=".", help="folder to upload as the job's code (default: .)")
    parser.add_argument(
        "--pip",
        action="append",
        default=[],
        metavar="PKG",
        help="extra pip package for the job's environment (repeatable)",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment variable for the job (repeatable; not for secrets)",
    )
    parser.add_argument("--submission-id", help="job id to use (default: Ray makes one)")
    parser.add_argument(
        "command",
        nargs=argparse.REMAINDER,
        metavar="-- VERB ...",
        help="the pix2video verb and its flags, after --",
    )


def entrypoint(command: list[str]) -> str:
    """`python -m jobs.<verb> ...` for the forwarded command; refuses credentials in it."""
    if command and command[0] == "--":
        command = command[1:]
    if not command or command[0] not in SUBMITTABLE:
        raise InputError(f"after --, give one of {', '.join(SUBMITTABLE)} and its flags, e.g. -- run --manifest ...")
    for i, arg in enumerate(command):
        value = arg.split("=", 1)[1] if arg.startswith("--storage-option=") else None
        if arg == "--storage-option" and i + 1 < len(command):
            value = command[i + 1]
        if value and SECRET_NAME.search(value.split("=", 1)[0]):
            raise InputError(_REFUSED.format(what=f"a secret storage option ({value.split('=', 1)[0]})"))
        if redact(arg) != arg:  # a URL's user:password@ or signed query, or a secret of the environment
            raise InputError(_REFUSED.format(what=f"argument {i + 1} holds credentials ({_shown(arg)})"))
    return shlex.join(["python", "-m", f"jobs.{command[0]}", *command[1:]])


_REFUSED = (
    "{what}: credentials on a submitted command line end up in the job's record and the dashboard; "
    "let the cluster nodes use their own credentials, give the URL without them, or pass them in a --config file"
)


def _shown(text: str) -> str:
    """`text` as an error may show it: its secrets replaced, cut short."""
    shown = redact(text)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def runtime_env(args: argparse.Namespace) -> dict:
    """The job's runtime_env (kept by Ray, shown in the dashboard): refuses a --env that is a secret."""
    env_vars = {}
    for pair in args.env:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(f"--env {redact(pair)!r}: write KEY=VALUE")
        # PIX2VIDEO_STORAGE_OPTION is --storage-option KEY=VALUE, whose value is a secret when KEY names one.
        option = key.upper() == "PIX2VIDEO_STORAGE_OPTION" and SECRET_NAME.search(value.partition("=")[0])
        if SECRET_NAME.search(key) or redact(value) != value or option:
            raise InputError(
                f"--env {key}: a secret in the job's runtime_env ends up in the job's record and the dashboard; "
                "let the cluster nodes use their own credentials (instance profile, their environment)"
            )
        env_vars[key] = value
    env: dict = {"working_dir": os.path.abspath(args.working_dir), "excludes": EXCLUDES}
    if env_vars:
        env["env_vars"] = env_vars
    if args.pip:
        env["pip"] = list(args.pip)
    return env


def run(args: argparse.Namespace) -> int:
    # Everything that can be refused, before the cluster is contacted.
    cmd = entrypoint(args.command)
    env = runtime_env(args)
    if not args.address:
        raise InputError("give --address http://HEAD:8265 (the Ray dashboard of the cluster)")
    if not os.path.isdir(args.working_dir):
        raise InputError(f"--working-dir {args.working_dir!r}: no such folder")
    # Ray here, not at the top: `pix2video submit --help` and a usage error do not wait for it.
    from ray.job_submission import JobStatus, JobSubmissionClient

    try:
        client = JobSubmissionClient(args.address)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise InputError(f"cannot reach the Ray dashboard at {args.address}: {first_line(e)}") from None
    job_id = client.submit_job(entrypoint=cmd, runtime_env=env, submission_id=args.submission_id)
    print(f"submitted {job_id}: {cmd}", flush=True)
    if not args.wait:
        print(f"follow it with: ray job logs --follow {job_id} --address {args.address}")
        return 0

    async def follow() -> None:
        async for chunk in client.tail_job_logs(job_id):
            sys.stdout.write(chunk)
            sys.stdout.flush()

    try:
        asyncio.run(follow())
    except KeyboardInterrupt:
        print(f"\nstopped following; the job goes on. Stop it with: ray job stop {job_id} --address {args.address}")
        return 130
    status = client.get_job_status(job_id)
    print(f"job {job_id}: {status}")
    if status == JobStatus.SUCCEEDED:
        return 0
    info = client.get_job_info(job_id)
    if info.message:
        print(info.message, file=sys.stderr)
    return 1


if __name__ == "__main__":
    _common.main_for("submit")
