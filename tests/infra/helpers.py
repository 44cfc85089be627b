"""Readers over a stack run's record, shared by the infra tests."""

from __future__ import annotations

import functools
from typing import Any

from stack_review import RecordedResource, StackRun, run_stack
from stack_settings import stack_files

STACK_FILES = [path.name for path in stack_files()]

SERVICE = "gcp:cloudrunv2/service:Service"
ACCOUNT = "gcp:serviceaccount/account:Account"
QUEUE = "gcp:cloudtasks/queue:Queue"
IMAGE = "docker:index/image:Image"
API = "gcp:projects/service:Service"
REPOSITORY = "gcp:artifactregistry/repository:Repository"
SECRET = "gcp:secretmanager/secret:Secret"
SECRET_VERSION = "gcp:secretmanager/secretVersion:SecretVersion"
SERVICE_INVOKER = "gcp:cloudrunv2/serviceIamMember:ServiceIamMember"
QUEUE_MEMBER = "gcp:cloudtasks/queueIamMember:QueueIamMember"
SA_MEMBER = "gcp:serviceaccount/iAMMember:IAMMember"
SECRET_MEMBER = "gcp:secretmanager/secretIamMember:SecretIamMember"
PASSWORD = "random:index/randomPassword:RandomPassword"


def container(service: RecordedResource) -> dict[str, Any]:
    containers = service.inputs["template"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def env_of(service: RecordedResource) -> dict[str, Any]:
    """Env name -> plain value, or the valueSource dict for a secret reference."""
    return {
        env["name"]: env["value"] if "value" in env else env["valueSource"]
        for env in container(service).get("envs", [])
    }


def service_named(stack: StackRun, name: str) -> RecordedResource:
    return stack.one(SERVICE, name=name)


def account_named(stack: StackRun, account_id: str) -> RecordedResource:
    return stack.one(ACCOUNT, accountId=account_id)


@functools.cache
def committed_run(stack_file: str) -> StackRun:
    """One run of the program per committed stack file, shared by the whole session (the
    program is deterministic and the tests only read the record)."""
    return run_stack(stack_file)
