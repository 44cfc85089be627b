"""The cloud-run-tasks stack: read the stack's settings once, declare the system, export
what a person or a pipeline needs from it.

    browser -> task-app (public) -> Cloud Tasks queue -> worker (IAM-protected, internal)

Every setting is validated before the first resource is declared; a bad value stops
``pulumi preview``/``pulumi up`` with a message naming each problem.
"""

from __future__ import annotations

import pulumi
import pulumi_gcp as gcp
from service_common import contract

from components import (
    CloudRunService,
    CloudRunServiceArgs,
    GeneratedSecret,
    GeneratedSecretArgs,
    ImageRegistry,
    ImageRegistryArgs,
    ProjectApis,
    ProjectApisArgs,
    QueueGrant,
    SecretEnv,
    ServiceIdentity,
    ServiceIdentityArgs,
    ServiceImage,
    ServiceImageArgs,
    TaskQueue,
    TaskQueueArgs,
)
from components.image import RegistryLogin
from components.service import deterministic_url
from stack_settings import SettingsError, StackSettings, validate_config

RUN_API = "run.googleapis.com"
TASKS_API = "cloudtasks.googleapis.com"
REGISTRY_API = "artifactregistry.googleapis.com"
IAM_API = "iam.googleapis.com"
SECRETS_API = "secretmanager.googleapis.com"

# Build context and Dockerfiles, relative to the project directory (where Pulumi runs the
# program): both images share app/ so that they can share app/service_common.
BUILD_CONTEXT = "app"
DOCKERFILES = {"task-app": "app/task_app/Dockerfile", "worker": "app/worker/Dockerfile"}
# Requests an instance serves at once: the services' gunicorn threads, and what Cloud Run
# may send one instance (its default of 80 would queue requests behind busy threads, and a
# queued task can run into its dispatch deadline).
REQUEST_THREADS = contract.DEFAULT_REQUEST_THREADS


def read_settings() -> StackSettings:
    """The stack's config as the Pulumi CLI hands it over (project defaults from Pulumi.yaml
    already applied, every value a string), validated as a whole."""
    config = {**pulumi.runtime.config.get_config_env(), **pulumi.runtime.config.CONFIG.get()}
    try:
        return validate_config(config, source=f"stack {pulumi.get_stack()}")
    except SettingsError as error:
        # RunError: the CLI prints the message (every problem) without a traceback.
        raise pulumi.RunError(str(error)) from None


settings = read_settings()
project, region = settings.project, settings.region

apis = ProjectApis(
    "apis",
    ProjectApisArgs(
        project=project, services=[RUN_API, TASKS_API, REGISTRY_API, IAM_API, SECRETS_API]
    ),
)

# ---- identities ------------------------------------------------------------------------
task_app_identity = ServiceIdentity(
    settings.task_app_name,
    ServiceIdentityArgs(
        project=project,
        account_id=settings.task_app_name,
        display_name="task-app: schedules tasks on the queue",
        # Its tasks carry an OIDC token naming this same account.
        can_act_as_itself=True,
        requires=apis.require(IAM_API),
    ),
)
worker_identity = ServiceIdentity(
    settings.worker_name,
    ServiceIdentityArgs(
        project=project,
        account_id=settings.worker_name,
        display_name="worker: runs the tasks Cloud Tasks delivers",
        requires=apis.require(IAM_API),
    ),
)

# ---- images ----------------------------------------------------------------------------
registry = ImageRegistry(
    "registry",
    ImageRegistryArgs(
        project=project,
        location=settings.registry_location,
        repository_id=settings.repository_name,
        keep_versions=settings.keep_image_versions,
        requires=apis.require(REGISTRY_API),
    ),
)
prebuilt = {"task-app": settings.task_app_image, "worker": settings.worker_image}
login = None
if not all(prebuilt.values()):
    # The deploying identity's own short-lived token: no registry key stored anywhere.
    login = RegistryLogin(
        server=registry.host,
        password=gcp.organizations.get_client_config_output().access_token,
    )
images = {
    image: ServiceImage(
        f"{image}-image",
        ServiceImageArgs(
            repository_url=registry.url,
            image=image,
            context=BUILD_CONTEXT,
            dockerfile=DOCKERFILES[image],
            login=login,
            prebuilt=prebuilt[image],
            requires=[registry],
        ),
    )
    for image in ("task-app", "worker")
}

# ---- queue -----------------------------------------------------------------------------
queue = TaskQueue(
    settings.queue_name,
    TaskQueueArgs(
        project=project,
        location=region,
        queue_name=settings.queue_name,
        spec=settings.queue_spec(),
        grants={
            "task-app": [
                # CreateTask (POST /tasks).
                QueueGrant("roles/cloudtasks.enqueuer", task_app_identity.member),
                # ListTasks (the page and GET /api/tasks) needs cloudtasks.tasks.list. Of
                # Google's predefined roles only viewer, editor and admin hold it; viewer is
                # the smallest (it reads the queue and its tasks and changes nothing).
                QueueGrant("roles/cloudtasks.viewer", task_app_identity.member),
            ]
        },
        deletion_protection=settings.deletion_protection,
        requires=apis.require(TASKS_API),
    ),
)

# The dead-letter queue: PAUSED, so Cloud Tasks keeps its tasks and never dispatches them.
# The worker parks a task there before answering its last failed attempt; the task-app
# lists the dead letters (with their bodies), replays one as a new task on the queue above
# and deletes it. Grants on this queue alone, each the smallest predefined role holding the
# permission (see stack_review/data/permission_map.json).
dead_letters = TaskQueue(
    settings.dead_letter_queue_name,
    TaskQueueArgs(
        project=project,
        location=region,
        queue_name=settings.dead_letter_queue_name,
        # Its tasks are never dispatched; the same settings keep a resumed queue as gentle
        # with the worker as the live one.
        spec=settings.queue_spec(),
        desired_state="PAUSED",
        grants={
            # CreateTask: cloudtasks.tasks.create. A parked task carries no OIDC token (its
            # queue never dispatches), so the worker needs no actAs.
            "worker": [QueueGrant("roles/cloudtasks.enqueuer", worker_identity.member)],
            "task-app": [
                # ListTasks: cloudtasks.tasks.list (viewer is the smallest role holding it).
                QueueGrant("roles/cloudtasks.viewer", task_app_identity.member),
                # The FULL view (a dead letter's body is what it tells and what a replay
                # sends) needs cloudtasks.tasks.fullView: held by enqueuer and taskRunner
                # alone among the small roles; enqueuer's other permission only adds tasks
                # to a paused queue, taskRunner's would dispatch them.
                QueueGrant("roles/cloudtasks.enqueuer", task_app_identity.member),
                # DeleteTask (Discard, and the end of a Replay): cloudtasks.tasks.delete.
                QueueGrant("roles/cloudtasks.taskDeleter", task_app_identity.member),
            ],
        },
        deletion_protection=settings.deletion_protection,
        requires=apis.require(TASKS_API),
    ),
)
retry_config = settings.retry_config_json()

# The audience of every task's token, and the one the worker accepts: the worker's
# deterministic URL (from its name and the project's number), known before the worker
# exists, so the worker can be told its own audience with no dependency cycle.
project_number = gcp.organizations.get_project_output(project_id=project).number
worker_audience = deterministic_url(settings.worker_name, project_number, region)

# ---- services --------------------------------------------------------------------------
deadline = str(settings.dispatch_deadline_seconds)
worker = CloudRunService(
    settings.worker_name,
    CloudRunServiceArgs(
        project=project,
        location=region,
        service_name=settings.worker_name,
        image=images["worker"].ref,
        service_account=worker_identity.email,
        env={
            # The worker verifies that each task's token was minted for this account.
            contract.OIDC_SERVICE_ACCOUNT.name: task_app_identity.email,
            contract.OIDC_AUDIENCE.name: worker_audience,
            contract.DISPATCH_DEADLINE_SECONDS.name: deadline,
            contract.GUNICORN_THREADS.name: str(REQUEST_THREADS),
            # The last-attempt judgement, and where a task given up on is parked.
            contract.QUEUE_RETRY_CONFIG.name: retry_config,
            contract.DEAD_LETTER_QUEUE.name: dead_letters.queue_id,
        },
        concurrency=REQUEST_THREADS,
        cpu=settings.worker_cpu,
        memory=settings.worker_memory,
        # One setting, two uses: the request timeout and every task's dispatch deadline.
        timeout_seconds=settings.dispatch_deadline_seconds,
        min_instances=settings.worker_min_instances,
        max_instances=settings.worker_max_instances,
        ingress="internal",
        public=False,
        invokers={"task-app": task_app_identity.member},
        deletion_protection=settings.deletion_protection,
        requires=apis.require(RUN_API),
    ),
)

session_key = GeneratedSecret(
    f"{settings.task_app_name}-secret-key",
    GeneratedSecretArgs(
        project=project,
        secret_id=f"{settings.task_app_name}-secret-key",
        accessor=task_app_identity.member,
        deletion_protection=settings.deletion_protection,
        requires=apis.require(SECRETS_API),
    ),
)

task_app = CloudRunService(
    settings.task_app_name,
    CloudRunServiceArgs(
        project=project,
        location=region,
        service_name=settings.task_app_name,
        image=images["task-app"].ref,
        service_account=task_app_identity.email,
        env={
            contract.QUEUE.name: queue.queue_id,
            contract.WORKER_URL.name: worker.uri,
            contract.OIDC_SERVICE_ACCOUNT.name: task_app_identity.email,
            contract.OIDC_AUDIENCE.name: worker_audience,
            contract.DISPATCH_DEADLINE_SECONDS.name: deadline,
            contract.GUNICORN_THREADS.name: str(REQUEST_THREADS),
            # Each task's retry plan on the page; the dead letters it lists and replays.
            contract.QUEUE_RETRY_CONFIG.name: retry_config,
            contract.DEAD_LETTER_QUEUE.name: dead_letters.queue_id,
        },
        concurrency=REQUEST_THREADS,
        cpu=settings.task_app_cpu,
        memory=settings.task_app_memory,
        secret_env={
            contract.SECRET_KEY.name: SecretEnv(
                secret=session_key.secret_id, version=session_key.version
            )
        },
        max_instances=settings.task_app_max_instances,
        ingress="all",
        public=True,
        deletion_protection=settings.deletion_protection,
        # The secret component includes the accessor grant: a revision whose account
        # cannot read its secret fails to start.
        requires=[*apis.require(RUN_API), session_key],
    ),
)

pulumi.export("taskAppUrl", task_app.uri)
pulumi.export("workerUrl", worker.uri)
pulumi.export("workerAudience", worker_audience)
pulumi.export("queueId", queue.queue_id)
pulumi.export("deadLetterQueueId", dead_letters.queue_id)
pulumi.export("taskAppServiceAccount", task_app_identity.email)
pulumi.export("workerServiceAccount", worker_identity.email)
pulumi.export("taskAppImage", images["task-app"].ref)
pulumi.export("workerImage", images["worker"].ref)
