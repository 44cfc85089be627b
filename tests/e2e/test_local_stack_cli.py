"""The local runner's plan and command line, without starting the system: the environment
each part gets is the one the stack gives it on Cloud Run, ports are configurable, and a
port in use or a bad value stops the runner with a message that says what to do."""

from __future__ import annotations

import dataclasses
import io
import json
import socket
from pathlib import Path

import pytest

from local_stack.cli import LinePrinter, main, parse_args, port_problems, readable, run_yourself
from local_stack.plan import EMULATOR, TASK_APP, WORKER, Ports, build_plan
from stack_settings import load_stack_file, stack_files
from tests.e2e.harness import stack_queues


@pytest.mark.parametrize("stack_file", stack_files(), ids=lambda path: path.name)
def test_each_part_gets_the_environment_the_stack_declares(stack_file: Path) -> None:
    """The local wiring mirrors Cloud Run's: full queue id, the worker's base URL as both
    target and OIDC audience, the task-app's service account as token email on one side and
    expected caller on the other, one dispatch deadline, the emulator's keys for checking."""
    settings = load_stack_file(stack_file)
    ports = Ports(
        task_app=18080, worker=18081, emulator=18123, keys=18124, rest=18125,
        task_app_metadata=18126, worker_metadata=18127,
    )  # fmt: skip
    queues = stack_queues(stack_file)
    plan = build_plan(settings, stack_file, queues, ports=ports, state_dir=Path("/state"))
    assert list(plan) == [EMULATOR, WORKER, TASK_APP]
    app, worker, emulator = plan[TASK_APP].env, plan[WORKER].env, plan[EMULATOR]

    sa = f"{settings.task_app_name}@{settings.project}.iam.gserviceaccount.com"
    assert app["QUEUE"] == settings.queue_id
    assert app["QUEUE"].startswith(f"projects/{settings.project}/locations/{settings.region}/")
    assert app["WORKER_URL"] == worker["OIDC_AUDIENCE"] == "http://127.0.0.1:18081"
    assert app["OIDC_SERVICE_ACCOUNT"] == worker["OIDC_SERVICE_ACCOUNT"] == sa
    assert app["DISPATCH_DEADLINE_SECONDS"] == worker["DISPATCH_DEADLINE_SECONDS"]
    assert int(app["DISPATCH_DEADLINE_SECONDS"]) == settings.dispatch_deadline_seconds
    # The same REST client as on Cloud Run, only pointed at the emulator's REST port.
    assert app["CLOUD_TASKS_API_ENDPOINT"] == "http://127.0.0.1:18125"
    assert "CLOUD_TASKS_EMULATOR_HOST" not in app
    assert app["SECRET_KEY"]
    assert worker["OIDC_CERTS_URL"] == "http://127.0.0.1:18124/oauth2/v1/certs"
    assert (app["PORT"], worker["PORT"]) == ("18080", "18081")
    argv = emulator.argv
    config_file = Path(argv[argv.index("--config") + 1])
    assert config_file == Path("/state/emulator-config.json")
    assert json.loads(emulator.files[config_file])["queues"] == queues
    queue = next(q for q in queues if q["name"] == settings.queue_id)
    assert queue["rateLimits"]["maxDispatchesPerSecond"] == settings.max_dispatches_per_second
    assert queue["retryConfig"]["maxAttempts"] == settings.max_attempts
    assert argv[argv.index("--rest-port") + 1] == "18125"
    worker_sa = f"{settings.worker_name}@{settings.project}.iam.gserviceaccount.com"
    metadata = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--metadata"]
    assert metadata == [f"{sa}=18126", f"{worker_sa}=18127"]
    # Each service finds its own account through the metadata server, as on Cloud Run, and
    # no credentials of the developer's machine.
    assert app["GCE_METADATA_HOST"] == app["GCE_METADATA_IP"] == "127.0.0.1:18126"
    assert worker["GCE_METADATA_HOST"] == worker["GCE_METADATA_IP"] == "127.0.0.1:18127"
    assert app["CLOUDSDK_CONFIG"] != worker["CLOUDSDK_CONFIG"]
    assert Path(app["CLOUDSDK_CONFIG"]).is_relative_to("/state")
    for service in (TASK_APP, WORKER):
        assert "GOOGLE_APPLICATION_CREDENTIALS" in plan[service].unset
    gcloud = emulator.files[Path("/state/gcloud/configurations/config_default")]
    assert "cloudtasks = http://127.0.0.1:18125/" in gcloud
    assert "disable_credentials = True" in gcloud
    assert argv[argv.index("--port") + 1] == "18123"
    assert argv[argv.index("--keys-port") + 1] == "18124"
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    # The emulator's state is kept in the stack's folder (git ignores .local/), across runs.
    assert argv[argv.index("--data-dir") + 1] == "/state/emulator"
    assert "--reset" not in argv
    reset = build_plan(
        settings, stack_file, queues, ports=ports, state_dir=Path("/state"), reset_emulator=True
    )
    assert "--reset" in reset[EMULATOR].argv
    assert app["HOST"] == worker["HOST"] == "127.0.0.1"
    # Locally the services run with what Cloud Run gives them, and no local-only tuning.
    assert "GUNICORN_CMD_ARGS" not in worker
    assert plan[TASK_APP].argv[-1] == "task_app:create_app()"
    assert plan[WORKER].argv[-1] == "worker:create_app()"


def test_ports_come_from_options_then_environment_then_defaults() -> None:
    """Each port is configurable by option or environment variable (the option wins), so
    `make dev` can move off a busy port without editing anything."""
    env = {"TASK_APP_PORT": "9090", "WORKER_PORT": "9091"}
    args = parse_args(["--worker-port", "7071"], env)
    assert args.ports == Ports(task_app=9090, worker=7071, emulator=8123, keys=8124)
    assert parse_args([], {}).ports == Ports()


@pytest.mark.parametrize(
    ("argv", "env", "named"),
    [
        (["--port", "http"], {}, "--port = 'http'"),
        ([], {"EMULATOR_PORT": "70000"}, "EMULATOR_PORT = '70000'"),
        ([], {"WORKER_PORT": "0"}, "WORKER_PORT = '0'"),
    ],
)
def test_a_bad_port_value_is_named(
    argv: list[str],
    env: dict[str, str],
    named: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A port that is not 1..65535 stops the runner (exit 2) naming the option or variable
    and the value given."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(argv, io.StringIO()) == 2
    error = capsys.readouterr().err
    assert named in error
    assert "must be a port number from 1 to 65535" in error


def test_a_port_in_use_is_reported_with_a_way_out(capsys: pytest.CaptureFixture[str]) -> None:
    """A busy port stops the runner before it starts anything (exit 2), naming the port, the
    part it was for, and the option and variable that choose another."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = io.StringIO()
        assert main(["--worker-port", str(port)], out) == 2
    error = capsys.readouterr().err
    assert f"port {port} on 127.0.0.1 (worker) is already in use" in error
    assert "--worker-port N or WORKER_PORT=N" in error
    assert out.getvalue() == "", "nothing may start when a port is busy"


def test_one_port_for_two_parts_is_refused() -> None:
    """Two parts cannot share a port; the message names both."""
    # Free ports for every other part: a system running beside this test keeps the defaults.
    free = Ports.free()
    ports = dataclasses.replace(free, worker=free.task_app)
    problems = port_problems("127.0.0.1", ports)
    assert problems == [
        f"port {ports.task_app} is given to both the task-app and the worker: "
        "pick another with --worker-port N or WORKER_PORT=N"
    ]


def test_a_bad_stack_file_is_reported(capsys: pytest.CaptureFixture[str]) -> None:
    """A missing stack file stops the runner with exit 2 and names the file."""
    assert main(["--stack", "Pulumi.nosuch.yaml"], io.StringIO()) == 2
    assert "stack file Pulumi.nosuch.yaml not found" in capsys.readouterr().err


def test_a_skipped_part_is_described_so_it_can_be_run_by_hand() -> None:
    """--skip worker prints the exact command and environment the runner would have used,
    so a developer runs that part in a debugger with the same wiring."""
    settings = load_stack_file("Pulumi.dev.yaml")
    worker = build_plan(settings, Path("Pulumi.dev.yaml"), stack_queues())[WORKER]
    command = run_yourself(worker)
    assert "env -u GOOGLE_APPLICATION_CREDENTIALS " in command
    assert "OIDC_SERVICE_ACCOUNT=task-app@cloud-run-tasks-dev.iam.gserviceaccount.com" in command
    assert "'worker:create_app()'" in command
    assert "HOST=127.0.0.1 PORT=8081" in command
    assert "python:worker.gunicorn_conf" in command


WORKER_LINE = (
    '{"cloud_tasks": {"queue": "jobs", "task": "t1", "retry_count": "1"}, "task_message": "hi",'
    ' "message": "task t1 attempt 2: hi","severity": "INFO", "logging.googleapis.com/labels":'
    ' {"service": "worker"}, "logging.googleapis.com/trace": "", "httpRequest": {} }'
)
DIAGNOSTIC_LINE = (
    '{"logging.googleapis.com/diagnostic": {"instrumentation_source": []},"severity": "INFO",'
    ' "logging.googleapis.com/labels": {}, "httpRequest": {} }'
)


def test_structured_lines_are_shown_readably_and_json_logs_keeps_them_as_they_are() -> None:
    """On the terminal a service's JSON line shows as severity, message and its own fields
    (Cloud Logging's routine fields left out); --json-logs passes every line unchanged;
    plain lines are never altered."""
    shown = readable(WORKER_LINE)
    assert shown == (
        'INFO    task t1 attempt 2: hi cloud_tasks={"queue":"jobs","task":"t1",'
        '"retry_count":"1"} task_message="hi"'
    )
    assert readable("tasks_emulator ready: gRPC 127.0.0.1:8123") == (
        "tasks_emulator ready: gRPC 127.0.0.1:8123"
    )
    assert readable("{not json") == "{not json"
    assert readable(DIAGNOSTIC_LINE) is None

    pretty, raw = io.StringIO(), io.StringIO()
    for line in (WORKER_LINE, DIAGNOSTIC_LINE):
        LinePrinter(pretty, colour=False)("worker", line)
        LinePrinter(raw, colour=False, raw=True)("worker", line)
    assert pretty.getvalue().count("\n") == 1
    assert pretty.getvalue().split(" ", 1)[1] == f"worker   | {shown}\n"
    assert [line.split(" | ", 1)[1] for line in raw.getvalue().splitlines()] == [
        WORKER_LINE,
        DIAGNOSTIC_LINE,
    ]
