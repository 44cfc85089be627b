"""Review the stack without a cloud: run the real ``__main__.py`` for a committed stack
file under GCP-shaped Pulumi mocks and get a record of every resource it declares.

    from stack_review import run_stack
    run = run_stack("Pulumi.dev.yaml")
    run.one("gcp:cloudtasks/queue:Queue").inputs["retryConfig"]
"""

from stack_review.mocks import GcpMocks
from stack_review.runner import (
    PROGRAM,
    ProgramFailed,
    RecordedCall,
    RecordedResource,
    StackRun,
    cli_config,
    run_stack,
    stack_name,
)

__all__ = [
    "PROGRAM",
    "GcpMocks",
    "ProgramFailed",
    "RecordedCall",
    "RecordedResource",
    "StackRun",
    "cli_config",
    "run_stack",
    "stack_name",
]
