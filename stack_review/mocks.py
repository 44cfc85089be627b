"""Pulumi mocks that answer like Google Cloud: every computed output the stack reads comes
back in the shape the real providers give it (service-account ``email`` and full resource
``name``, Cloud Run ``uri``, queue id, image ``repoDigest``, Secret Manager names...).

Computed values are derived from the inputs (hashes, not counters), so two runs of the same
stack give the same answers, and a value the program did not wire cannot match by chance.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pulumi

from stack_review import pulumi_internals as internals

_Outputs = tuple[str, dict[str, Any]]
CLIENT_CONFIG = "gcp:organizations/getClientConfig:getClientConfig"
GET_PROJECT = "gcp:organizations/getProject:getProject"


def _digest(*parts: Any) -> str:
    return hashlib.sha256("\x00".join(map(str, parts)).encode()).hexdigest()


def _plain(value: Any) -> Any:
    """The value inside a Pulumi secret envelope (mock inputs arrive wrapped)."""
    return internals.unwrap_secret(value) if internals.is_secret(value) else value


class GcpMocks(pulumi.runtime.Mocks):
    """Answers for every resource type and provider function the stack uses.

    ``project`` is the provider's default project (``gcp:project``), used when a resource
    does not name one, as the real provider does. An unknown function call fails loudly: the
    stack calling something new deserves a mock that answers like Google does."""

    def __init__(self, project: str, project_number: str | None = None) -> None:
        self.project = project
        # Secret Manager answers names with the project NUMBER, not its id.
        self.project_number = project_number or str(int(_digest(project)[:10], 16))
        self._resources: dict[str, Callable[[str, dict[str, Any]], _Outputs]] = {
            "gcp:projects/service:Service": self._api,
            "gcp:serviceaccount/account:Account": self._service_account,
            "gcp:artifactregistry/repository:Repository": self._repository,
            "docker:index/image:Image": self._image,
            "gcp:cloudtasks/queue:Queue": self._queue,
            "gcp:cloudrunv2/service:Service": self._cloud_run,
            "gcp:secretmanager/secret:Secret": self._secret,
            "gcp:secretmanager/secretVersion:SecretVersion": self._secret_version,
            "random:index/randomPassword:RandomPassword": self._random_password,
        }

    # ---- pulumi.runtime.Mocks ------------------------------------------------------------

    def new_resource(
        self, args: pulumi.runtime.MockResourceArgs
    ) -> tuple[str | None, dict[str, Any]]:
        inputs = dict(args.inputs)
        if not args.custom and not args.typ.startswith("pulumi:providers:"):
            return "", {}  # component resources have no cloud state
        handler = self._resources.get(args.typ)
        if handler is not None:
            return handler(args.name, inputs)
        if args.typ.endswith("IamMember") or args.typ.endswith("/iAMMember:IAMMember"):
            return self._iam_member(args.typ, inputs)
        # Anything else (providers included): the provider echoes its inputs.
        return f"{args.name}-id", inputs

    def call(
        self, args: pulumi.runtime.MockCallArgs
    ) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        if args.token == CLIENT_CONFIG:
            return {
                "id": f"projects/{self.project}/regions//zones/",
                "project": self.project,
                "region": "",
                "zone": "",
                "accessToken": f"ya29.mock-{_digest(self.project)[:24]}",
                "defaultLabels": {},
            }, []
        if args.token == GET_PROJECT:
            project = str(args.args.get("projectId") or self.project)
            return {
                "id": f"projects/{project}",
                "projectId": project,
                "name": project,
                # The number Google assigns; the same one Secret Manager names carry.
                "number": self.project_number,
            }, []
        raise NotImplementedError(f"no mock answer for provider function {args.token}")

    # ---- per type --------------------------------------------------------------------------

    def _project(self, inputs: dict[str, Any]) -> str:
        return str(inputs.get("project") or self.project)

    def _api(self, name: str, inputs: dict[str, Any]) -> _Outputs:
        project = self._project(inputs)
        return f"{project}/{inputs['service']}", {**inputs, "project": project}

    def _service_account(self, name: str, inputs: dict[str, Any]) -> _Outputs:
        project = self._project(inputs)
        email = f"{inputs['accountId']}@{project}.iam.gserviceaccount.com"
        resource_name = f"projects/{project}/serviceAccounts/{email}"
        return resource_name, {
            **inputs,
            "project": project,
            "email": email,
            "name": resource_name,
            "member": f"serviceAccount:{email}",
            "uniqueId": str(int(_digest(email)[:15], 16)),
        }

    def _repository(self, name: str, inputs: dict[str, Any]) -> _Outputs:
        project, location = self._project(inputs), inputs["location"]
        repository = inputs["repositoryId"]
        resource_id = f"projects/{project}/locations/{location}/repositories/{repository}"
        return resource_id, {
            **inputs,
            "project": project,
            "name": repository,
            "registryUri": f"{location}-docker.pkg.dev/{project}/{repository}",
        }

    def _image(self, name: str, inputs: dict[str, Any]) -> _Outputs:
        image_name = inputs["imageName"]
        build = inputs.get("build") or {}
        digest = f"sha256:{_digest(image_name, build.get('dockerfile'), build.get('context'))}"
        head, _, last = image_name.rpartition("/")
        repository = f"{head}/{last.split(':', 1)[0]}"  # a tag is not part of the digest ref
        return f"{repository}@{digest}", {
            **inputs,
            "baseImageName": image_name,
            "repoDigest": f"{repository}@{digest}",
            "registryServer": _plain((inputs.get("registry") or {}).get("server")),
        }

    def _queue(self, name: str, inputs: dict[str, Any]) -> _Outputs:
        project, location = self._project(inputs), inputs["location"]
        queue_id = f"projects/{project}/locations/{location}/queues/{inputs['name']}"
        rate_limits = dict(inputs.get("rateLimits") or {})
        # Output only: the service derives the burst from the rate (100 at 500/s).
        rate = float(rate_limits.get("maxDispatchesPerSecond", 500))
        rate_limits["maxBurstSize"] = max(1, min(100, round(rate / 5)))
        return queue_id, {
            **inputs,
            "project": project,
            "rateLimits": rate_limits,
            "state": inputs.get("desiredState") or "RUNNING",
        }

    def _cloud_run(self, name: str, inputs: dict[str, Any]) -> _Outputs:
        project, location = self._project(inputs), inputs["location"]
        service = inputs["name"]
        project_hash = _digest(project)[:10]
        uri = f"https://{service}-{project_hash}-uc.a.run.app"
        service_id = f"projects/{project}/locations/{location}/services/{service}"
        return service_id, {
            **inputs,
            "project": project,
            "uri": uri,
            "urls": [uri, f"https://{service}-{self.project_number}.{location}.run.app"],
            "latestReadyRevision": f"{service_id}/revisions/{service}-00001-abc",
            "uid": _digest(service_id)[:32],
        }

    def _secret(self, name: str, inputs: dict[str, Any]) -> _Outputs:
        project = self._project(inputs)
        secret_id = inputs["secretId"]
        return f"projects/{project}/secrets/{secret_id}", {
            **inputs,
            "project": project,
            "name": f"projects/{self.project_number}/secrets/{secret_id}",
        }

    def _secret_version(self, name: str, inputs: dict[str, Any]) -> _Outputs:
        # `secret` is the secret's id: projects/P/secrets/S.
        secret_id = str(inputs["secret"]).rsplit("/", 1)[-1]
        version_name = f"projects/{self.project_number}/secrets/{secret_id}/versions/1"
        return version_name, {**inputs, "name": version_name, "version": "1", "enabled": True}

    def _random_password(self, name: str, inputs: dict[str, Any]) -> _Outputs:
        length = int(inputs.get("length", 16))
        alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
        seed = _digest(name)
        result = "".join(
            alphabet[int(seed[(2 * i) % 64 : (2 * i) % 64 + 2], 16) % len(alphabet)]
            for i in range(length)
        )
        # The SDK marks both as secret outputs itself (additional_secret_outputs).
        return "none", {**inputs, "result": result, "bcryptHash": f"$2a$10${_digest(result)[:53]}"}

    def _iam_member(self, typ: str, inputs: dict[str, Any]) -> _Outputs:
        target = (
            inputs.get("name")
            or inputs.get("serviceAccountId")
            or inputs.get("secretId")
            or inputs.get("project")
        )
        return f"{target}/{inputs['role']}/{inputs['member']}", {
            **inputs,
            "etag": f"BwY{_digest(target, inputs['role'], inputs['member'])[:10]}=",
        }
