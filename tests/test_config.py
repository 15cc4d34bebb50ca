"""The verbs' options from three more places than the command line (issue 26, item 1): a YAML file
(`--config`, written by `--print_config`), environment variables `PIX2VIDEO_<KEY>`, and the defaults;
one checker per flag for all of them, and a bad value from any is one line naming where, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from cli_checks import one_line_error

from fixtures.clips import write_sample_frames
from jobs import _common
from jobs.cli import VERBS, build_parser, main
from pipeline.dataset.storage import StorageOptions
from pipeline.errors import InputError
from pipeline.io.video import read_frames

ROOT = Path(__file__).resolve().parents[1]
EDIT = ["--model", "tiny", "--steps", "2", "--size", "64x64", "--no-progress", "--source-prompt", "shapes"]
RUN = ["--manifest", "m.csv", "--output", "out"]
SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCY"


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sample_frames(tmp_path_factory.mktemp("in") / "frames", num_frames=2, width=64, height=64, seed=3)


def _printed_config(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    with pytest.raises(SystemExit) as done:
        main([*argv, "--print_config"])
    assert done.value.code == 0
    return capsys.readouterr().out


def _refused(capsys: pytest.CaptureFixture[str], argv: list[str], *needles: str) -> str:
    return one_line_error(capsys, argv, 2, *needles)


def test_print_config_then_config_edits_as_the_flags(capsys, tmp_path, frames) -> None:
    flags = [str(frames), "--prompt", "a red car", *EDIT, "--guidance-scale", "3", "--injection", "anchor"]
    text = _printed_config(capsys, ["edit", *flags, "-o", str(tmp_path / "by-flags")])
    values = yaml.safe_load(text)
    assert values["guidance_scale"] == 3 and values["injection"] == "anchor" and values["steps"] == 2
    assert values["latent_update"] is True and "config" not in values
    values["output"] = str(tmp_path / "by-config")
    config = tmp_path / "edit.yaml"
    config.write_text(yaml.safe_dump(values))
    assert main(["edit", *flags, "-o", str(tmp_path / "by-flags")]) == 0
    assert main(["edit", "--config", str(config)]) == 0  # the input too comes from the file
    by_flags, by_config = read_frames(tmp_path / "by-flags").frames, read_frames(tmp_path / "by-config").frames
    assert by_flags.shape == (2, 64, 64, 3) and np.array_equal(by_flags, by_config)  # same process, same kernels


def test_the_same_run_options_from_flags_a_config_file_and_the_environment(tmp_path, monkeypatch) -> None:
    argv = [*RUN, "--steps", "7", "--no-latent-update", "--prefetch", "4", "--prompt", "a", "--prompt", "b"]
    argv += ["--videos-per-call", "3", "--shots", "off", "--precompute-cpus", "0.5"]
    by_flags = build_parser("run").parse_args(argv)
    config = tmp_path / "run.yaml"
    config.write_text(
        "manifest: m.csv\noutput: out\nsteps: 7\nlatent_update: false\nprefetch: 4\nprompt: [a, b]\n"
        "videos_per_call: 3\nshots: 'off'\nprecompute_cpus: 0.5\n"
    )
    by_config = build_parser("run").parse_args(["--config", str(config)])
    for name, value in {"MANIFEST": "m.csv", "OUTPUT": "out", "STEPS": "7", "LATENT_UPDATE": "false"}.items():
        monkeypatch.setenv(f"PIX2VIDEO_{name}", value)
    monkeypatch.setenv("PIX2VIDEO_PREFETCH", "4")
    monkeypatch.setenv("PIX2VIDEO_PROMPT", "a")  # one value for a repeatable flag
    monkeypatch.setenv("PIX2VIDEO_VIDEOS_PER_CALL", "3")
    monkeypatch.setenv("PIX2VIDEO_SHOTS", "off")
    monkeypatch.setenv("PIX2VIDEO_PRECOMPUTE_CPUS", "0.5")
    by_env = build_parser("run").parse_args(["--prompt", "b"])  # a repeatable flag adds to what came before
    opts = [_common.run_options(a, StorageOptions()) for a in (by_flags, by_config, by_env)]
    assert opts[0].config.steps == 7 and opts[0].config.latent_update is False and opts[0].videos_per_call == 3
    assert opts[0] == opts[1] == opts[2]
    assert opts[0].fingerprint() == opts[1].fingerprint() == opts[2].fingerprint()
    assert by_flags.prompt == by_config.prompt == by_env.prompt == ["a", "b"]


def test_flags_beat_config_files_which_beat_the_environment(tmp_path, monkeypatch) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("steps: 5\nguidance_scale: 2\n")
    monkeypatch.setenv("PIX2VIDEO_STEPS", "9")
    monkeypatch.setenv("PIX2VIDEO_SEED", "4")
    parse = build_parser("run").parse_args
    assert (parse(RUN).steps, parse(RUN).seed) == (9, 4)
    args = parse([*RUN, "--config", str(config)])
    assert (args.steps, args.guidance_scale, args.seed) == (5, 2.0, 4)
    for argv in ([*RUN, "--steps", "3", "--config", str(config)], [*RUN, "--config", str(config), "--steps", "3"]):
        assert parse(argv).steps == 3  # wherever --config stands
    later = tmp_path / "later.yaml"
    later.write_text("steps: 6\n")
    assert parse([*RUN, "--config", str(config), "--config", str(later)]).steps == 6
    monkeypatch.setenv("PIX2VIDEO_CONFIG", str(later))  # the config file itself from the environment
    assert parse(RUN).steps == 9  # ... below the variables that name an option


def test_the_help_names_the_environment_variables() -> None:
    text = build_parser("run").format_help()
    assert "PIX2VIDEO_STEPS" in text and "--config FILE" in text and "--print_config" in text


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_no_option_is_read_from_a_variable_the_project_uses_otherwise(verb: str) -> None:
    parser = build_parser(verb)
    assert "PIX2VIDEO_CACHE" not in {parser.env_var(dest) for dest in parser.flags}  # fixtures/tiny.py's cache


@pytest.mark.parametrize(
    ("config", "needles"),
    [
        ("steps: 2\nbogus: 1\nzz_top: 2\n", ["has unknown keys: bogus, zz_top"]),
        ("- steps\n- 2\n", ["mapping"]),
        ("steps: [\n", ["not valid YAML"]),
        ("steps: 2.5\n", ["steps must be a whole number", "2.5"]),
    ],
    ids=["unknown-keys", "a-list", "bad-yaml", "bad-value"],
)
def test_a_bad_config_file_is_one_line_and_nothing_is_written(capsys, tmp_path, frames, config, needles) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(config)
    out = tmp_path / "out"
    _refused(
        capsys,
        ["edit", str(frames), "-o", str(out), "--prompt", "x", *EDIT, "--config", str(path)],
        f"config file {str(path)!r}",
        *needles,
    )
    _refused(capsys, ["run", *RUN[:2], "--output", str(out), "--config", str(path)], "config file", *needles)
    _refused(capsys, ["run", *RUN, "--config", str(tmp_path / "missing.yaml")], "missing.yaml", "does not exist")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]


@pytest.mark.parametrize(
    ("name", "value", "needles"),
    [
        ("PIX2VIDEO_STEPS", "many", ["steps must be a whole number", "'many'"]),
        ("PIX2VIDEO_GUIDANCE_SCALE", "high", ["guidance_scale must be a number"]),
        ("PIX2VIDEO_REVERSE", "yes", ["must be true or false", "'yes'"]),
        ("PIX2VIDEO_SCHEDULE", "fastest", ["must be one of auto, sequential, wavefront", "'fastest'"]),
    ],
)
def test_a_bad_environment_value_is_one_line_naming_it(capsys, tmp_path, frames, monkeypatch, name, value, needles):
    monkeypatch.setenv(name, value)
    out = tmp_path / "out"
    _refused(
        capsys, ["edit", str(frames), "-o", str(out), "--prompt", "x", *EDIT], f"environment variable {name}:", *needles
    )
    _refused(capsys, ["run", *RUN[:2], "--output", str(out)], name, *needles)
    assert not out.exists()


def test_a_variable_for_a_flag_the_verb_lacks_is_ignored(monkeypatch) -> None:
    monkeypatch.setenv("PIX2VIDEO_STEPS", "many")  # report has no --steps
    monkeypatch.setenv("PIX2VIDEO_NOT_A_FLAG", "x")
    assert build_parser("report").parse_args(["out"]).output == "out"


def test_print_config_never_shows_storage_secrets(capsys, tmp_path, monkeypatch) -> None:
    argv = ["run", *RUN, "--storage-option", f"secret={SECRET}", "--storage-option", "key=AKIAEXAMPLEKEY12"]
    argv += ["--endpoint-url", f"https://user:{SECRET}@minio.example:9000"]
    text = _printed_config(capsys, argv)
    assert SECRET not in text and "AKIAEXAMPLEKEY12" not in text
    assert yaml.safe_load(text)["storage_option"] == ["secret=***", "key=***"]
    nested = tmp_path / "nested.yaml"  # a config file's mapping, nested options included
    nested.write_text(f"storage_option:\n  secret: {SECRET}\n  client_kwargs: {{aws_session_token: {SECRET}}}\n")
    text = _printed_config(capsys, ["run", *RUN, "--config", str(nested)])
    assert SECRET not in text
    assert yaml.safe_load(text)["storage_option"] == {"secret": "***", "client_kwargs": {"aws_session_token": "***"}}
    monkeypatch.setenv("PIX2VIDEO_STORAGE_OPTION", f"token={SECRET}")
    assert SECRET not in _printed_config(capsys, ["run", *RUN])
    monkeypatch.delenv("PIX2VIDEO_STORAGE_OPTION")
    number = tmp_path / "number.yaml"  # a value of the wrong type is refused without being shown
    number.write_text("storage_option: [8675309123]\n")
    err = _refused(capsys, ["run", *RUN, "--config", str(number)], "storage_option must be text, got int")
    assert "8675309123" not in err
    # The printed file used as it is: refused in one line, before anything is read or written.
    printed = tmp_path / "printed.yaml"
    printed.write_text(text)
    args = build_parser("run").parse_args(["--config", str(printed)])
    with pytest.raises(InputError, match=r"storage option 'secret' is '\*\*\*'.*real value"):
        _common.storage_options(args)


def test_print_config_of_python_m_verb_and_a_verb_without_its_required_flags(tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "jobs.relabel", "--print_config"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    values = yaml.safe_load(done.stdout)
    assert values["manifest"] is None and values["precompute_cpus"] == 1.0 and "num_editors" not in values


def test_submit_refuses_a_storage_secret_in_a_variable_of_the_job(tmp_path) -> None:
    from jobs import submit

    args = build_parser("submit").parse_args(
        ["--working-dir", str(tmp_path), "--env", f"PIX2VIDEO_STORAGE_OPTION=secret={SECRET}"]
    )
    with pytest.raises(InputError, match="--env PIX2VIDEO_STORAGE_OPTION: a secret"):
        submit.runtime_env(args)
    args = build_parser("submit").parse_args(["--working-dir", str(tmp_path), "--env", "PIX2VIDEO_STEPS=20"])
    assert submit.runtime_env(args)["env_vars"] == {"PIX2VIDEO_STEPS": "20"}
