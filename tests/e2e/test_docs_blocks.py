"""Every fenced block of README.md and docs/*.md is run, checked or skipped with its stated reason.

One test per block, named by file and the line of its opening fence (``test_block[README.md:177]``).
python blocks run as scripts and sh blocks under ``bash -euo pipefail`` against the session's local stack
(the ``stack`` fixture), each with a fresh tenant's key as OPENAI_API_KEY and the stack's other exports,
in a fresh working directory holding photo.png and mask.png (``docs_blocks.write_inputs``); curl fails on
an HTTP error there. json blocks are parsed, and catalog entries validated. A block that is neither
runnable nor marked fails, saying how to mark it; docs_blocks.py has the rules and the marker syntax.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import docs_blocks
from local_stack_process import clean_environment

pytestmark = pytest.mark.e2e

BLOCKS = docs_blocks.all_blocks()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    docs_blocks.write_inputs(tmp_path)
    return tmp_path


def _check_json(block: docs_blocks.Block) -> None:
    from pydantic import ValidationError

    from darkroom.catalog import ModelEntry

    document = docs_blocks.json_document(block)
    assert document, f"{block.id}: an empty json block"
    for name, entry in docs_blocks.catalog_entries(document).items():
        try:
            ModelEntry.model_validate({**entry, "id": name})
        except ValidationError as exc:
            pytest.fail(f"{block.id}: the catalog entry {name!r} is not one darkroom accepts:\n{exc}", pytrace=False)


@pytest.mark.parametrize("block", BLOCKS, ids=[block.id for block in BLOCKS])
def test_block(block: docs_blocks.Block, request, workdir: Path) -> None:
    problem = block.problem()
    if problem:
        pytest.fail(problem, pytrace=False)
    if block.directive == "skip":
        pytest.skip(f"{block.id}: {block.reason}")
    if block.directive == "model-server":
        pytest.skip(
            f"{block.id}: needs make run-endpoint's model server; tests/e2e/test_endpoint_e2e.py runs it "
            "against darkroom serve --model-server"
        )
    if block.language in docs_blocks.TEXT:
        pytest.skip(f"{block.id}: text (a diagram, a listing or output), nothing to run")
    if block.language in docs_blocks.JSON:
        _check_json(block)
        return
    if block.language in docs_blocks.SHELL and "curl" in block.code and not shutil.which("curl"):
        if os.environ.get("CI"):
            pytest.fail(f"{block.id} needs curl (apt-get install curl)", pytrace=False)
        pytest.skip(f"{block.id}: curl is not installed")
    stack = request.getfixturevalue("stack")
    tenant = request.getfixturevalue("make_tenant")()
    ran = docs_blocks.run(block, docs_blocks.environment(clean_environment(), stack, tenant.key, workdir), workdir)
    assert ran.returncode == 0, docs_blocks.failure(block, ran)


def test_every_docs_test_marker_precedes_a_block() -> None:
    dangling = [problem for path in docs_blocks.documents() for problem in docs_blocks.parse(path)[1]]
    assert not dangling, "\n".join(dangling)


def test_markers_and_languages_are_read_as_the_module_says(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text(
        "<!-- docs-test: skip (deploys to AWS (twice)) -->\n```sh\nsam deploy\n```\n\n"
        "```\nplain\n```\n\n~~~yaml\na: 1\n~~~\n\n"
        "<!-- docs-test: skip -->\n```python\nx\n```\n\n"
        "<!-- docs-test: model-server -->\n```sh\ncurl x\n```\n\n"
        "- a list\n\n  <!-- docs-test: model-server -->\n  ```python\n  print(1)\n  ```\n\n"
        "<!-- docs-test: run please -->\n```json\n{}\n```\n\n"
        "<!-- docs-test: skip (nothing follows) -->\n\nText.\n\n    indented code\n"
    )
    blocks, dangling = docs_blocks.parse(tmp_path / "README.md", repo=tmp_path)
    deploy, plain, yaml, reasonless, shell_on_model_server, listed, unknown, indented = blocks

    assert (deploy.id, deploy.language, deploy.directive, deploy.reason) == (
        "README.md:2",
        "sh",
        "skip",
        "deploys to AWS (twice)",
    )
    assert deploy.problem() is None
    assert "without a language" in plain.problem()
    assert "does not know the language 'yaml'" in yaml.problem()
    assert "needs its reason" in reasonless.problem()
    assert "for python blocks" in shell_on_model_server.problem()
    assert (listed.language, listed.directive, listed.code, listed.problem()) == (
        "python",
        "model-server",
        "print(1)\n",
        None,
    )
    assert "unknown marker" in unknown.problem()
    assert (indented.line, indented.code) == (40, "indented code\n")
    assert "an indented code block" in indented.problem()
    assert dangling == ["README.md:36: a docs-test marker must come right before a fenced block"]
