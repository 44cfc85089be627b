"""The README and the pages in docs/ say only what the code does: the environment
contract's table is the contract module, the grants table is what each stack grants, the
policy rules' table is the pack, the emulator's option table is its command line (both
ways), every `make` target and runner option they name exists, and every link between them
points at a file and heading that exist."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from service_common import contract
from tasks_emulator.__main__ import parse_args as emulator_args

from local_stack.cli import parse_args as local_stack_args
from policy import stack_rules
from stack_review import StackRun
from stack_settings import PROJECT_DIR
from tests.infra.helpers import (
    QUEUE_MEMBER,
    SA_MEMBER,
    SECRET_MEMBER,
    SERVICE_INVOKER,
    account_named,
)

DOCS = PROJECT_DIR / "docs"
PAGES = [PROJECT_DIR / "README.md", PROJECT_DIR / "emulator" / "README.md", *DOCS.glob("*.md")]
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def section(path: Path, name: str) -> str:
    found = re.search(
        rf"<!-- section:{name} -->(.*?)<!-- /section:{name} -->", path.read_text(), re.S
    )
    assert found is not None, f"{path.name} has no {name} section"
    return found.group(1)


def table_rows(text: str, columns: int) -> list[list[str]]:
    """The body rows of the markdown tables in ``text`` with that many columns."""
    rows = []
    lines = text.splitlines()
    for line, following in zip(lines, [*lines[1:], ""], strict=True):
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        is_header = following.lstrip().startswith("| ---") or following.startswith("|---")
        is_rule = set(line.replace("|", "").strip()) <= {"-", " "}
        if (
            line.lstrip().startswith("|")
            and len(cells) == columns
            and not is_header
            and not is_rule
        ):
            rows.append(cells)
    return rows


def help_options(parse: Callable[[], object], capsys: pytest.CaptureFixture[str]) -> set[str]:
    """Every option a command line's --help lists."""
    with pytest.raises(SystemExit):
        parse()
    return set(OPTION.findall(capsys.readouterr().out))


def test_the_contract_table_is_the_contract_module() -> None:
    """One row per variable of service_common.contract, its task-app and worker columns as
    the module's lists say, and each earlier name mentioned in its row."""
    rows = {
        cells[0].strip("`"): cells
        for cells in table_rows(section(DOCS / "services.md", "contract"), 4)
    }
    variables = {variable.name: variable for variable in contract.ALL_VARIABLES}
    assert set(rows) == set(variables)
    servers = {variable.name for variable in contract.SERVER_VARIABLES}
    task_app = {variable.name for variable in contract.TASK_APP_VARIABLES} | servers
    worker = {variable.name for variable in contract.WORKER_VARIABLES} | servers
    for name, cells in rows.items():
        assert (cells[1] == "yes") == (name in task_app), f"{name}: task-app column"
        assert (cells[2] == "yes") == (name in worker), f"{name}: worker column"
        for alias in variables[name].aliases:
            assert f"`{alias}`" in cells[3], f"{name}: its earlier name {alias}"


def test_the_emulator_options_table_is_its_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    """docs/emulator.md's option table lists exactly the options `tasks-emulator` takes."""
    rows = table_rows(section(DOCS / "emulator.md", "options"), 3)
    listed = {OPTION.findall(cells[0])[0] for cells in rows}
    assert listed == help_options(lambda: emulator_args(["--help"]), capsys) - {"--help"}


def test_the_policy_rules_table_is_the_pack() -> None:
    """docs/review.md lists exactly the rules of the policy pack, by their names."""
    rows = table_rows(section(DOCS / "review.md", "policy-rules"), 2)
    assert [cells[0].strip("`") for cells in rows] == [rule.name for rule in stack_rules.RULES]


GRANT_TARGETS = {
    SERVICE_INVOKER: ("Cloud Run service", "name"),
    QUEUE_MEMBER: ("queue", "name"),
    SA_MEMBER: ("service account", "serviceAccountId"),
    SECRET_MEMBER: ("secret", "secretId"),
}


def test_the_grants_table_is_the_stacks_grants(stack: StackRun) -> None:
    """docs/deploy.md's grants table holds one row per grant the program declares: who, the
    role, and the kind and name of the one resource it is on."""
    accounts = {
        f"serviceAccount:{account_named(stack, name).outputs['email']}": name
        for name in ("task-app", "worker")
    }
    declared = set()
    for resource in stack.resources:
        if resource.type in GRANT_TARGETS:
            kind, key = GRANT_TARGETS[resource.type]
            target = str(resource.inputs[key]).rsplit("/", 1)[-1].split("@")[0]
            member = resource.inputs["member"]
            who = f"{accounts[member]}'s account" if member in accounts else f"`{member}`"
            declared.add((who, resource.inputs["role"], kind, target))
    listed = set()
    for who, role, on, _why in table_rows(section(DOCS / "deploy.md", "grants"), 4):
        if on == "its own service account":
            kind, target = "service account", who.split("'")[0]
        else:
            kind, _, target = on.partition(" `")
        listed.add((who, role.strip("`"), kind, target.strip("`")))
    assert listed == declared


def test_every_option_named_exists(capsys: pytest.CaptureFixture[str]) -> None:
    """An option written after `tasks-emulator`/`tasks_emulator` is the emulator's; one after
    `local_stack` or in `DEV_ARGS` is the runner's."""
    emulator = help_options(lambda: emulator_args(["--help"]), capsys)
    runner = help_options(lambda: local_stack_args(["--help"], {}), capsys)
    unknown = []
    for page in PAGES:
        for line in page.read_text().splitlines():
            for command, known in (
                (r"tasks[-_]emulator\b", emulator),
                (r"local_stack\b|DEV_ARGS=", runner),
            ):
                start = re.search(command, line)
                if start is None:
                    continue
                for option in OPTION.findall(line[start.end() :].split("#")[0]):
                    if option not in known:
                        unknown.append(f"{page.name}: {option} in {line.strip()!r}")
    assert unknown == []


def test_every_make_target_named_exists() -> None:
    makefile = (PROJECT_DIR / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, re.M))
    named = {
        (page.name, target)
        for page in PAGES
        for target in re.findall(r"`make ([a-z][a-z-]*)", page.read_text())
    }
    assert {entry for entry in named if entry[1] not in targets} == set()


def anchors(path: Path) -> set[str]:
    """GitHub's anchors for a page's headings."""
    slugs = set()
    for heading in re.findall(r"^#+ (.+)$", path.read_text(), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        slugs.add(slug)
    return slugs


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(PROJECT_DIR)))
def test_every_link_resolves(page: Path) -> None:
    """Every relative link points at a file of the project and, with #anchor, a heading of it."""
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # an absolute URL
        path_part, _, anchor = target.partition("#")
        linked = (page.parent / path_part).resolve() if path_part else page
        if not linked.exists() or (
            anchor and linked.suffix == ".md" and anchor not in anchors(linked)
        ):
            broken.append(target)
    assert broken == []
