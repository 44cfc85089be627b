# Everyday verbs. Each installs what it needs: uv (with pip, when missing), then the
# locked dependencies into .venv, using this machine's Python 3.11 (never a download).
PYTHON ?= python3
STACK ?= dev
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON := 3.11

# Evaluated at each use, after the `uv` target may have installed it.
UV = $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")
RUN = $(UV) run --frozen

.DEFAULT_GOAL := help
.PHONY: help uv sync dev test check lint format requirements manifest preflight bench emulator gcloud

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

uv:
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m uv --version >/dev/null 2>&1 \
	  || $(PYTHON) -m pip install --quiet uv || $(PYTHON) -m pip install --quiet --user uv

sync: uv ## Install the locked dependencies into .venv
	@$(UV) sync --frozen --quiet

dev: sync ## Run the whole system locally (STACK=prod for Pulumi.prod.yaml's queue)
	@$(RUN) python -m local_stack --stack Pulumi.$(STACK).yaml $(DEV_ARGS)

test: sync ## Run every test (infra mocks, apps, emulator, end-to-end, browser)
	$(RUN) pytest

check: sync ## Fast feedback (under a minute): ruff, mypy, and the tests that start no system or tool
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy .
	$(RUN) pytest -q -n 2 -m "not e2e and not browser and not process"

lint: sync ## ruff, mypy, hadolint, workflow schema and audit
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy .
	$(RUN) check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	$(RUN) zizmor --offline --quiet .github/workflows
	$(RUN) hadolint app/task_app/Dockerfile app/worker/Dockerfile

format: sync ## Apply ruff's fixes and formatting
	$(RUN) ruff check --fix .
	$(RUN) ruff format .

requirements: sync ## Regenerate each service's pinned requirements.txt from uv.lock
	$(UV) export --frozen --quiet --only-group task-app --no-emit-project -o app/task_app/requirements.txt
	$(UV) export --frozen --quiet --only-group worker --no-emit-project -o app/worker/requirements.txt

manifest: sync ## Regenerate the reviewed infrastructure manifest of every stack
	$(RUN) python -m stack_review --write

preflight: sync ## Check every stack's values against Google's API schemas and limits (offline)
	$(RUN) python -m preflight $(if $(filter command line,$(origin STACK)),--stack $(STACK))

bench: sync ## Run the benchmarks (prints figures)
	$(RUN) python -m bench

emulator: sync ## Run the Cloud Tasks emulator alone, with the stack's queue
	@$(RUN) python -m local_stack --stack Pulumi.$(STACK).yaml --skip worker --skip task-app

gcloud: ## gcloud against the local system (make dev running): make gcloud ARGS="tasks queues list --location us-central1"
	@CLOUDSDK_CONFIG=.local/$(STACK)/gcloud gcloud $(ARGS)
