"""The stack's building blocks: one Pulumi ComponentResource per concern.

Components take a typed ``Args`` dataclass and never read stack config or the environment;
``__main__.py`` reads the settings once and wires the components together.
"""

from components.apis import ProjectApis, ProjectApisArgs
from components.identity import ServiceIdentity, ServiceIdentityArgs
from components.image import ServiceImage, ServiceImageArgs
from components.queue import QueueGrant, TaskQueue, TaskQueueArgs
from components.registry import ImageRegistry, ImageRegistryArgs
from components.secret import GeneratedSecret, GeneratedSecretArgs
from components.service import CloudRunService, CloudRunServiceArgs, SecretEnv

__all__ = [
    "CloudRunService",
    "CloudRunServiceArgs",
    "GeneratedSecret",
    "GeneratedSecretArgs",
    "ImageRegistry",
    "ImageRegistryArgs",
    "ProjectApis",
    "ProjectApisArgs",
    "QueueGrant",
    "SecretEnv",
    "ServiceIdentity",
    "ServiceIdentityArgs",
    "ServiceImage",
    "ServiceImageArgs",
    "TaskQueue",
    "TaskQueueArgs",
]
