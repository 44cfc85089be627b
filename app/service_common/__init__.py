"""Code shared by the two Flask services: logging, HTTP hygiene, settings and gunicorn defaults.

Nothing here knows about Cloud Tasks or Pulumi; each service image copies this package next
to its own.
"""
