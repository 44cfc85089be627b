"""Components refuse bad arguments at construction, naming the value and the rule, before
they register anything (so a wrong call cannot leave half a component behind)."""

from __future__ import annotations

import dataclasses

import pulumi
import pytest
from service_common.queue_spec import QueueSpec, RetryConfig

from components import (
    CloudRunService,
    CloudRunServiceArgs,
    GeneratedSecret,
    GeneratedSecretArgs,
    ImageRegistry,
    ImageRegistryArgs,
    ProjectApis,
    ProjectApisArgs,
    ServiceIdentity,
    ServiceIdentityArgs,
    ServiceImage,
    ServiceImageArgs,
    TaskQueue,
    TaskQueueArgs,
)

SERVICE = CloudRunServiceArgs(
    project="p", location="us-central1", service_name="svc", image="i@sha256:0", service_account="a"
)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: CloudRunService("w", dataclasses.replace(SERVICE, cpu=3)),
            "cpu = 3: must be one of 1, 2, 4, 6, 8",
        ),
        (
            lambda: CloudRunService("w", dataclasses.replace(SERVICE, invokers={"x": "allUsers"})),
            "invokers ['allUsers']: public access is the explicit `public` flag only",
        ),
        (
            lambda: CloudRunService(
                "w",
                dataclasses.replace(SERVICE, min_instances=3, max_instances=2),
            ),
            "min_instances = 3, max_instances = 2",
        ),
        (
            lambda: TaskQueue(
                "q",
                TaskQueueArgs(
                    project="p",
                    location="l",
                    queue_name="q",
                    spec=QueueSpec(logging_sampling_ratio=1.5),
                ),
            ),
            "logging_sampling_ratio = 1.5: must be from 0.0 to 1.0",
        ),
        (
            lambda: TaskQueue(
                "q",
                TaskQueueArgs(
                    project="p",
                    location="l",
                    queue_name="q",
                    spec=QueueSpec(retry_config=RetryConfig(max_doublings=0)),
                ),
            ),
            "max_doublings = 0: the provider never sends 0",
        ),
        (
            lambda: CloudRunService("w", dataclasses.replace(SERVICE, cpu=1, memory="5Gi")),
            "memory = '5Gi': 1 CPU allows at most 4Gi on Cloud Run",
        ),
        (
            lambda: ServiceImage(
                "i",
                ServiceImageArgs(
                    repository_url="r",
                    image="i",
                    context="app",
                    dockerfile="D",
                    prebuilt="x:latest",
                ),
            ),
            "prebuilt = 'x:latest': must be a reference by digest",
        ),
        (
            lambda: ServiceImage(
                "i", ServiceImageArgs(repository_url="r", image="i", context="app", dockerfile="D")
            ),
            "building needs a registry login",
        ),
        (
            lambda: ProjectApis("a", ProjectApisArgs(project="p", services=["run"])),
            "each must be a distinct API name",
        ),
        (
            lambda: ImageRegistry(
                "r",
                ImageRegistryArgs(project="p", location="us", repository_id="r", keep_versions=0),
            ),
            "keep_versions = 0: must be at least 1",
        ),
        (
            lambda: ServiceIdentity(
                "s", ServiceIdentityArgs(project="p", account_id="abc", display_name="d")
            ),
            "account_id = 'abc': must be 6-30 characters",
        ),
        (
            lambda: GeneratedSecret(
                "k", GeneratedSecretArgs(project="p", secret_id="k", accessor="a", length=8)
            ),
            "length = 8: must be at least 32",
        ),
    ],
    ids=[
        "service-cpu",
        "service-public-invoker",
        "service-instances",
        "queue-logging-ratio",
        "queue-zero-doublings",
        "service-memory-for-cpus",
        "image-by-tag",
        "image-no-login",
        "apis-name",
        "registry-keep",
        "identity-id",
        "secret-length",
    ],
)
def test_bad_component_arguments_are_refused(
    build: object, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each component's own guard: the error names the value and what is allowed, and it
    comes before the component registers itself."""

    def registered(*args: object, **kwargs: object) -> None:
        raise AssertionError("the component registered before checking its arguments")

    monkeypatch.setattr(pulumi.ComponentResource, "__init__", registered)
    with pytest.raises(ValueError) as caught:  # noqa: PT011 (the message is checked below)
        build()  # type: ignore[operator]
    assert message in str(caught.value)
