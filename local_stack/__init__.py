"""The whole system on one machine: the Cloud Tasks emulator with the stack's queue, the
worker and the task-app under gunicorn, wired as the Pulumi stack wires them on Cloud Run.

``python -m local_stack --stack Pulumi.dev.yaml`` (``make dev``) runs it; ``plan`` says what
runs with which settings, ``supervisor`` starts, watches and stops the processes.
"""
