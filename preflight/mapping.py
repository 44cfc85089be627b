"""How each resource type of the Pulumi providers reaches a Google API.

The provider turns a resource's inputs (camelCase, as the engine records them) into a
request: most inputs become fields of the request body under the same name, some are
renamed (``envs`` -> ``env``), reshaped (a list of cleanup policies -> a map keyed by id)
or belong to the provider alone (``deletionProtection``); identifiers (``name``,
``accountId``) become parts of resource names, which must match the method's path
pattern. An input that none of this accounts for is reported: the map must learn it
before the preflight can vouch for it.

Paths: dotted, with ``[]`` for every list index (``template.containers[].envs``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

_IAM_MEMBER_INPUTS = frozenset({"role", "member", "condition"})


@dataclass(frozen=True)
class ResourceName:
    """A resource name built from inputs, checked against a method's path pattern.
    ``{key}`` is an input (``project`` defaults to the provider's); an input that already
    holds a full name (``projects/...``) is taken whole."""

    template: str
    method: str
    parameter: str


@dataclass(frozen=True)
class Carried:
    """A value a service's environment hands the app, which the app sends to an API."""

    api: str
    target: str
    unit: str = ""
    """Appended to the value to make the API's form ("s": 900 -> "900s")."""


@dataclass(frozen=True)
class ApiMapping:
    api: str
    schema: str
    """The request body's schema."""
    provider_only: frozenset[str] = frozenset()
    """Inputs the provider acts on itself (or puts in the URL): never in the body."""
    renames: Mapping[str, str] = field(default_factory=dict)
    """Input path -> the body field's name, when the provider renames it."""
    shapes: Mapping[str, str] = field(default_factory=dict)
    """Input path -> ``list`` (one value is the list's only item) or ``map:KEY``
    (a list of objects is a map keyed by each object's KEY)."""
    ids: Mapping[str, str] = field(default_factory=dict)
    """Input -> the rule target (``id:queue``) its value is held to."""
    enums: Mapping[str, str] = field(default_factory=dict)
    """Provider-only input -> ``Schema.field`` whose enum it takes."""
    names: tuple[ResourceName, ...] = ()
    body_fields: Mapping[str, str] = field(default_factory=dict)
    """Input -> ``Schema.field`` of another request (a create request's own field)."""
    carried_env: Mapping[str, Carried] = field(default_factory=dict)
    """Container environment variable -> the API field the app sends its value as."""


def _iam_member(api: str, schema: str, *names: ResourceName, target: str) -> ApiMapping:
    return ApiMapping(
        api=api,
        schema=schema,
        provider_only=frozenset({"project", "location", target}),
        renames={"member": "members"},
        shapes={"member": "list"},
        names=names,
    )


_RUN_NAME = "projects/{project}/locations/{location}/services/{name}"
_QUEUE_NAME = "projects/{project}/locations/{location}/queues/{name}"

MAPPINGS: dict[str, ApiMapping] = {
    "gcp:cloudtasks/queue:Queue": ApiMapping(
        api="cloudtasks.v2",
        schema="Queue",
        provider_only=frozenset({"project", "location", "name", "desiredState", "deletionPolicy"}),
        ids={"name": "id:queue"},
        enums={"desiredState": "Queue.state"},
        names=(ResourceName(_QUEUE_NAME, "cloudtasks.projects.locations.queues.get", "name"),),
    ),
    "gcp:cloudtasks/queueIamMember:QueueIamMember": _iam_member(
        "cloudtasks.v2",
        "Binding",
        ResourceName(_QUEUE_NAME, "cloudtasks.projects.locations.queues.setIamPolicy", "resource"),
        target="name",
    ),
    "gcp:cloudrunv2/service:Service": ApiMapping(
        api="run.v2",
        schema="GoogleCloudRunV2Service",
        provider_only=frozenset(
            {"project", "location", "name", "deletionProtection", "deletionPolicy", "tags"}
        ),
        renames={
            "template.containers[].envs": "env",
            "template.containers[].commands": "command",
            "template.containers[].dependsOns": "dependsOn",
            "traffics": "traffic",
        },
        shapes={"template.containers[].ports": "list"},
        ids={"name": "id:service"},
        names=(ResourceName(_RUN_NAME, "run.projects.locations.services.get", "name"),),
        carried_env={
            # The task-app sets each task's dispatch deadline from this variable.
            "DISPATCH_DEADLINE_SECONDS": Carried("cloudtasks.v2", "Task.dispatchDeadline", "s"),
        },
    ),
    "gcp:cloudrunv2/serviceIamMember:ServiceIamMember": _iam_member(
        "run.v2",
        "GoogleIamV1Binding",
        ResourceName(_RUN_NAME, "run.projects.locations.services.setIamPolicy", "resource"),
        target="name",
    ),
    "gcp:artifactregistry/repository:Repository": ApiMapping(
        api="artifactregistry.v1",
        schema="Repository",
        provider_only=frozenset({"project", "location", "repositoryId"}),
        shapes={"cleanupPolicies": "map:id"},
        names=(
            ResourceName(
                "projects/{project}/locations/{location}/repositories/{repositoryId}",
                "artifactregistry.projects.locations.repositories.get",
                "name",
            ),
        ),
    ),
    "gcp:serviceaccount/account:Account": ApiMapping(
        api="iam.v1",
        schema="ServiceAccount",
        provider_only=frozenset({"project", "accountId", "createIgnoreAlreadyExists", "disabled"}),
        ids={"accountId": "id:serviceAccount"},
        body_fields={"accountId": "CreateServiceAccountRequest.accountId"},
        names=(ResourceName("projects/{project}", "iam.projects.serviceAccounts.create", "name"),),
    ),
    "gcp:serviceaccount/iAMMember:IAMMember": _iam_member(
        "iam.v1",
        "Binding",
        # The account's full resource name, never its email (which addresses nothing).
        ResourceName("{serviceAccountId}", "iam.projects.serviceAccounts.setIamPolicy", "resource"),
        target="serviceAccountId",
    ),
    "gcp:secretmanager/secret:Secret": ApiMapping(
        api="secretmanager.v1",
        schema="Secret",
        provider_only=frozenset({"project", "secretId", "deletionProtection"}),
        renames={"replication.auto": "automatic"},
        ids={"secretId": "id:secret"},
        names=(
            ResourceName(
                "projects/{project}/secrets/{secretId}",
                "secretmanager.projects.secrets.get",
                "name",
            ),
        ),
    ),
    "gcp:secretmanager/secretIamMember:SecretIamMember": _iam_member(
        "secretmanager.v1",
        "Binding",
        ResourceName(
            "projects/{project}/secrets/{secretId}",
            "secretmanager.projects.secrets.setIamPolicy",
            "resource",
        ),
        target="secretId",
    ),
    "gcp:secretmanager/secretVersion:SecretVersion": ApiMapping(
        api="secretmanager.v1",
        schema="AddSecretVersionRequest",
        provider_only=frozenset(
            {"secret", "enabled", "deletionPolicy", "isSecretDataBase64", "project"}
        ),
        # The provider base64-encodes the data: its size is what the limit holds.
        renames={"secretData": "payload.data"},
        names=(ResourceName("{secret}", "secretmanager.projects.secrets.addVersion", "parent"),),
    ),
    "gcp:projects/service:Service": ApiMapping(
        api="serviceusage.v1",
        schema="EnableServiceRequest",
        provider_only=frozenset(
            {
                "project",
                "service",
                "disableOnDestroy",
                "disableDependentServices",
                "checkIfServiceHasUsageOnDestroy",
            }
        ),
        names=(
            ResourceName(
                "projects/{project}/services/{service}", "serviceusage.services.enable", "name"
            ),
        ),
    ),
}

# Resource types that no Google API receives (built locally, or generated by a provider).
NOT_GOOGLE_APIS = frozenset(
    {"docker:index/image:Image", "random:index/randomPassword:RandomPassword"}
)
