"""Offline preflight: every value a stack declares, held to what Google's APIs accept.

    from preflight import check_stack
    for problem in check_stack("dev"):
        print(problem.render())

The schemas are Google's API discovery documents as google-api-python-client ships them
(Cloud Run v2, Cloud Tasks v2, Artifact Registry v1, IAM v1, Secret Manager v1, Service
Usage v1); the limits they state only in prose, and the Cloud Run limits they do not
carry, are data in ``rules.json`` with their sources. ``make preflight`` runs it for every
committed stack before a deploy.
"""

from preflight.check import Problem, check_run, check_stack

__all__ = ["Problem", "check_run", "check_stack"]
