"""What runs locally, and with which settings: the three parts of the system as data.

The plan is derived from one stack's settings (``stack_settings.StackSettings``), so the
queue the emulator creates and the environment the two services get are those the Pulumi
stack declares on Cloud Run. Only the addresses differ: everything listens on the loopback
interface, and the task-app talks to the emulator instead of Google's endpoint.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from service_common import contract

from stack_settings import StackSettings

PROJECT_DIR = Path(__file__).resolve().parent.parent
APP_DIR = PROJECT_DIR / "app"
# Files the runner writes for the parts (the emulator's queue configuration), one folder
# per stack; git ignores it.
STATE_ROOT = PROJECT_DIR / ".local"

# A fixed, obviously-local value: on Cloud Run the stack takes the key from Secret Manager.
DEV_SECRET_KEY = "local-dev-only-secret-key-never-used-on-cloud-run"  # noqa: S105

EMULATOR = "emulator"
WORKER = "worker"
TASK_APP = "task-app"
PART_NAMES = (EMULATOR, WORKER, TASK_APP)


@dataclass(frozen=True)
class Ports:
    """Where each part listens (all on the same host)."""

    task_app: int = 8080
    worker: int = 8081
    emulator: int = 8123
    keys: int = 8124

    def by_role(self) -> dict[str, int]:
        """Each port with what it is for, in the words used in error messages."""
        return {
            "task-app": self.task_app,
            "worker": self.worker,
            "emulator gRPC": self.emulator,
            "emulator keys": self.keys,
        }


@dataclass(frozen=True)
class Part:
    """One process of the local system: how to start it and how to tell it is ready."""

    name: str
    argv: tuple[str, ...]
    env: dict[str, str]
    health_url: str
    """An HTTP URL that answers 200 once the part serves."""
    url: str
    """What the status line shows a person."""
    cwd: Path = PROJECT_DIR
    needs: tuple[str, ...] = field(default=())
    """Parts that must be ready before this one starts."""
    files: Mapping[Path, str] = field(default_factory=dict)
    """Files to write before the part starts (path -> content)."""

    def write_files(self) -> None:
        for path, content in self.files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")


def task_app_service_account(settings: StackSettings) -> str:
    """The task-app's service-account email, as the stack names it on Google Cloud."""
    return f"{settings.task_app_name}@{settings.project}.iam.gserviceaccount.com"


def _gunicorn(service: str) -> tuple[str, ...]:
    # The containers' own command: each service's gunicorn_conf reads HOST, PORT and
    # GUNICORN_THREADS from the environment and sets workers, threads and timeouts.
    return (
        sys.executable,
        "-m",
        "gunicorn",
        "--config",
        f"python:{service}.gunicorn_conf",
        f"{service}:create_app()",
    )


def state_dir_for(stack_file: Path) -> Path:
    """Where the runner keeps the files of one stack: ``.local/<stack>``."""
    return STATE_ROOT / stack_file.name.removeprefix("Pulumi.").removesuffix(".yaml")


def emulator_config(settings: StackSettings) -> str:
    """The emulator's start-up configuration: the stack's queue, as the REST API writes it."""
    queue = settings.queue_spec().to_api(settings.queue_id)
    return json.dumps({"queues": [queue]}, indent=2) + "\n"


def build_plan(
    settings: StackSettings,
    stack_file: Path,
    ports: Ports | None = None,
    host: str = "127.0.0.1",
    state_dir: Path | None = None,
) -> dict[str, Part]:
    """The three parts, keyed by name, in start order (emulator first). The runner's files
    go to ``state_dir`` (default: ``.local/<stack>`` in the project)."""
    ports = ports or Ports()
    state_dir = state_dir or state_dir_for(stack_file)
    config_file = state_dir / "emulator-config.json"
    base = f"http://{host}:"
    worker_url = f"{base}{ports.worker}"
    keys_url = f"{base}{ports.keys}"
    emulator_address = f"{host}:{ports.emulator}"
    caller = task_app_service_account(settings)
    deadline = str(settings.dispatch_deadline_seconds)

    emulator = Part(
        name=EMULATOR,
        argv=(
            sys.executable,
            "-m",
            "tasks_emulator",
            "--host",
            host,
            "--port",
            str(ports.emulator),
            "--keys-port",
            str(ports.keys),
            # The REST API on a free port: a fixed one would collide between stacks.
            "--rest-port",
            "0",
            "--config",
            str(config_file),
        ),
        env={},
        files={config_file: emulator_config(settings)},
        health_url=f"{keys_url}/.well-known/openid-configuration",
        url=f"gRPC {emulator_address}, keys {keys_url}",
    )
    worker = Part(
        name=WORKER,
        argv=_gunicorn("worker"),
        env={
            contract.HOST.name: host,
            contract.PORT.name: str(ports.worker),
            contract.OIDC_SERVICE_ACCOUNT.name: caller,
            contract.OIDC_AUDIENCE.name: worker_url,
            contract.OIDC_CERTS_URL.name: f"{keys_url}/oauth2/v1/certs",
            contract.DISPATCH_DEADLINE_SECONDS.name: deadline,
        },
        health_url=f"{worker_url}/healthz",
        url=worker_url,
        cwd=APP_DIR,
        needs=(EMULATOR,),
    )
    task_app = Part(
        name=TASK_APP,
        argv=_gunicorn("task_app"),
        env={
            contract.HOST.name: host,
            contract.PORT.name: str(ports.task_app),
            contract.QUEUE.name: settings.queue_id,
            contract.WORKER_URL.name: worker_url,
            contract.OIDC_SERVICE_ACCOUNT.name: caller,
            contract.DISPATCH_DEADLINE_SECONDS.name: deadline,
            contract.SECRET_KEY.name: DEV_SECRET_KEY,
            contract.CLOUD_TASKS_EMULATOR_HOST.name: emulator_address,
        },
        health_url=f"{base}{ports.task_app}/healthz",
        url=f"{base}{ports.task_app}",
        cwd=APP_DIR,
        needs=(EMULATOR,),
    )
    return {part.name: part for part in (emulator, worker, task_app)}
