"""A local Cloud Tasks: the ``google.cloud.tasks.v2.CloudTasks`` gRPC API with the real
service's retry schedule, counters, headers, rate limits and OIDC tokens, on a real or a
virtual clock. It knows nothing of the applications it dispatches to."""

from .clock import Clock, RealClock, VirtualClock
from .retry import RetryPolicy
from .server import Emulator, EmulatorThread

__all__ = ["Clock", "Emulator", "EmulatorThread", "RealClock", "RetryPolicy", "VirtualClock"]
