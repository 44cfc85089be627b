"""What runs locally, and with which settings: the three parts of the system as data.

The plan is derived from one stack's settings (``stack_settings.StackSettings``), so the
queue the emulator creates and the environment the two services get are those the Pulumi
stack declares on Cloud Run. Only the addresses differ: everything listens on the loopback
interface, and the task-app talks to the emulator instead of Google's endpoint.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from service_common import contract

from stack_settings import StackSettings

PROJECT_DIR = Path(__file__).resolve().parent.parent
APP_DIR = PROJECT_DIR / "app"
# Files the runner writes for the parts (the emulator's queue configuration) and the
# emulator's state (its data directory, ``<state dir>/emulator``), one folder per stack;
# git ignores it.
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
    rest: int = 8125
    task_app_metadata: int = 8126
    worker_metadata: int = 8127

    @classmethod
    def free(cls, host: str = "127.0.0.1") -> Ports:
        """Distinct free ports on ``host``, one per part's port (held open together, so
        none is handed out twice), for systems that run beside another."""
        names = [item.name for item in dataclasses.fields(cls)]
        sockets = []
        try:
            for _ in names:
                sock = socket.socket()
                sock.bind((host, 0))
                sockets.append(sock)
            numbers = [int(sock.getsockname()[1]) for sock in sockets]
        finally:
            for sock in sockets:
                sock.close()
        return cls(**dict(zip(names, numbers, strict=True)))

    def by_role(self) -> dict[str, int]:
        """Each port with what it is for, in the words used in error messages."""
        return {
            "task-app": self.task_app,
            "worker": self.worker,
            "emulator gRPC": self.emulator,
            "emulator keys": self.keys,
            "emulator REST": self.rest,
            "task-app metadata": self.task_app_metadata,
            "worker metadata": self.worker_metadata,
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
    files: Mapping[Path, str] = field(default_factory=dict)
    """Files to write before the part starts (path -> content)."""
    unset: tuple[str, ...] = ()
    """Variables of the runner's own environment the part must not inherit."""

    def write_files(self) -> None:
        for path, content in self.files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")


def task_app_service_account(settings: StackSettings) -> str:
    """The task-app's service-account email, as the stack names it on Google Cloud."""
    return service_account(settings, settings.task_app_name)


def service_account(settings: StackSettings, account_id: str) -> str:
    """A service account's email in the stack's project."""
    return f"{account_id}@{settings.project}.iam.gserviceaccount.com"


# Credentials a developer's machine may hold that google-auth would find before the
# metadata server: a service's identity must be the one the stack gives it, nothing else.
FOREIGN_CREDENTIALS = ("GOOGLE_APPLICATION_CREDENTIALS",)


def identity_env(host: str, metadata_port: int, gcloud_dir: Path) -> dict[str, str]:
    """What makes google.auth.default() in a service find its own account, as on Cloud Run:
    the emulator's metadata server for that account, and an empty gcloud folder in place of
    the developer's own (whose application-default credentials would win otherwise)."""
    address = f"{host}:{metadata_port}"
    return {
        "GCE_METADATA_HOST": address,
        "GCE_METADATA_IP": address,
        "CLOUDSDK_CONFIG": str(gcloud_dir),
    }


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


def emulator_config(queues: Sequence[Mapping[str, object]]) -> str:
    """The emulator's start-up configuration: the stack's queues with their IAM policies, as
    the REST API writes them."""
    return json.dumps({"queues": list(queues)}, indent=2) + "\n"


def gcloud_config(settings: StackSettings, rest_url: str) -> dict[str, str]:
    """A gcloud configuration folder's files (relative path -> content) that point gcloud at
    the local system, without credentials, leaving the developer's own setup untouched."""
    return {
        "active_config": "default",  # read as it is: no newline
        "configurations/config_default": (
            f"[core]\nproject = {settings.project}\n\n"
            "[auth]\ndisable_credentials = True\n\n"
            f"[api_endpoint_overrides]\ncloudtasks = {rest_url}/\n"
        ),
    }


def build_plan(
    settings: StackSettings,
    stack_file: Path,
    queues: Sequence[Mapping[str, object]],
    *,
    ports: Ports | None = None,
    host: str = "127.0.0.1",
    state_dir: Path | None = None,
    reset_emulator: bool = False,
) -> dict[str, Part]:
    """The three parts, keyed by name. ``queues`` are the stack's queues with their IAM
    policies (``rendering.declared_queues``). The runner's files go to ``state_dir``
    (default: ``.local/<stack>`` in the project); the emulator keeps its queues, tasks and
    signing key in ``state_dir/emulator`` across runs (wiped first with ``reset_emulator``)."""
    ports = ports or Ports()
    state_dir = state_dir or state_dir_for(stack_file)
    config_file = state_dir / "emulator-config.json"
    rest_url = f"http://{host}:{ports.rest}"
    worker_account = service_account(settings, settings.worker_name)
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
            "--rest-port",
            str(ports.rest),
            "--metadata",
            f"{caller}={ports.task_app_metadata}",
            "--metadata",
            f"{worker_account}={ports.worker_metadata}",
            "--config",
            str(config_file),
            "--data-dir",
            str(state_dir / EMULATOR),
            *(("--reset",) if reset_emulator else ()),
        ),
        env={},
        files={
            config_file: emulator_config(queues),
            **{
                state_dir / "gcloud" / name: content
                for name, content in gcloud_config(settings, rest_url).items()
            },
        },
        health_url=f"{keys_url}/.well-known/openid-configuration",
        url=f"gRPC {emulator_address}, REST {rest_url}, keys {keys_url}",
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
            contract.QUEUE_RETRY_CONFIG.name: settings.retry_config_json(),
            contract.DEAD_LETTER_QUEUE.name: settings.dead_letter_queue_id,
            # The worker parks dead letters through the REST API: the emulator's here.
            contract.CLOUD_TASKS_API_ENDPOINT.name: rest_url,
            **identity_env(host, ports.worker_metadata, state_dir / WORKER / "gcloud"),
        },
        health_url=f"{worker_url}/healthz",
        url=worker_url,
        cwd=APP_DIR,
        unset=FOREIGN_CREDENTIALS,
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
            # The audience of each task's token: the one the worker accepts.
            contract.OIDC_AUDIENCE.name: worker_url,
            contract.DISPATCH_DEADLINE_SECONDS.name: deadline,
            contract.SECRET_KEY.name: DEV_SECRET_KEY,
            contract.QUEUE_RETRY_CONFIG.name: settings.retry_config_json(),
            contract.DEAD_LETTER_QUEUE.name: settings.dead_letter_queue_id,
            contract.CLOUD_TASKS_API_ENDPOINT.name: rest_url,
            **identity_env(host, ports.task_app_metadata, state_dir / TASK_APP / "gcloud"),
        },
        health_url=f"{base}{ports.task_app}/healthz",
        url=f"{base}{ports.task_app}",
        cwd=APP_DIR,
        unset=FOREIGN_CREDENTIALS,
    )
    return {part.name: part for part in (emulator, worker, task_app)}
