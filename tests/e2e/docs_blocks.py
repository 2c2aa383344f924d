"""The fenced code blocks of README.md and docs/*.md, and how each is checked (tests/e2e/test_docs_blocks.py).

Every fence is found with markdown-it-py (CommonMark: backtick and tilde fences, fences inside lists), so
what is checked is exactly what a reader sees as a code block. Each fence has a language:

- ``python``: run as a script; ``sh``/``bash``/``shell``: run with ``bash -euo pipefail``. Both run against
  the e2e local stack, with its exported environment and a fresh tenant's key (see ``environment``), in a
  working directory holding the input files the examples open (see ``write_inputs``).
- ``json``: parsed (a fragment such as ``"my-model": {...}`` as the members of an object); an object whose
  values name a ``backend`` is a catalog and each entry is validated by ``darkroom.catalog.ModelEntry``.
- ``text``: diagrams, listings and output: nothing to run, skipped with that reason.

Anything else fails: a fence without a language, a language not listed here, an indented code block, a
malformed marker, a block that exits non-zero or takes over ``BLOCK_TIMEOUT_SECONDS``. The working
directory is a fresh temporary one and AWS_ENDPOINT_URL is the stack's embedded moto, so a block that
should have been marked fails there without touching the repository or an AWS account.

A block that cannot run here is marked by an HTML comment on the line before its fence (invisible on
GitHub), which the test reports as the skip reason::

    <!-- docs-test: skip (deploys to AWS) -->

``<!-- docs-test: model-server -->`` marks a python block that needs ``make run-endpoint``'s model
server: tests/e2e/test_endpoint_e2e.py runs it against its own stack (``darkroom serve --model-server``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from markdown_it import MarkdownIt

REPO = Path(__file__).resolve().parents[2]
PYTHON = {"python", "py"}
SHELL = {"sh", "bash", "shell"}
JSON = {"json"}
TEXT = {"text"}
DIRECTIVES = {"skip", "model-server"}
# Generous for one example against loopback (they take about a second each); a slow one is a bad example.
BLOCK_TIMEOUT_SECONDS = 60
HOW_TO_MARK = (
    "If it cannot run against the local stack, put `<!-- docs-test: skip (the reason) -->` on the line "
    "before its fence; tests/e2e/docs_blocks.py says what each language gets."
)
_MARKER = re.compile(r"<!--\s*docs-test:(?P<body>.*?)-->", re.S)
_DIRECTIVE = re.compile(r"\s*(?P<name>[a-z-]+)\s*(?:\((?P<reason>[^()]*(?:\([^()]*\)[^()]*)*)\))?\s*")


@dataclass(frozen=True)
class Block:
    path: str  # relative to the repository
    line: int  # 1-based line of the opening fence
    language: str
    code: str
    directive: str | None = None
    reason: str | None = None
    marker_problem: str | None = None

    @property
    def id(self) -> str:
        return f"{self.path}:{self.line}"

    def problem(self) -> str | None:
        """Why this block can be neither run nor skipped, or None."""
        if self.marker_problem:
            return f"{self.id}: {self.marker_problem}"
        if self.directive == "skip":
            return None
        if not self.language:
            return (
                f"{self.id}: a fence without a language. Give it one: ```text for a diagram, a listing or "
                f"output; ```python or ```sh for code, which the test runs. {HOW_TO_MARK}"
            )
        if self.language not in PYTHON | SHELL | JSON | TEXT:
            return f"{self.id}: the test does not know the language {self.language!r}. {HOW_TO_MARK}"
        if self.directive == "model-server" and self.language not in PYTHON:
            return f"{self.id}: `docs-test: model-server` is for python blocks; this one is {self.language!r}"
        return None


def documents(repo: Path = REPO) -> list[Path]:
    """README.md and every docs/*.md, in a stable order."""
    return [repo / "README.md", *sorted((repo / "docs").glob("*.md"))]


def _marker(token) -> tuple[str | None, str | None, str | None]:
    """(directive, reason, problem) of a ``<!-- docs-test: ... -->`` html block; all None when it is not one."""
    if token is None or token.type != "html_block":
        return None, None, None
    found = _MARKER.fullmatch(token.content.strip())
    if not found:
        return (
            None,
            None,
            (
                "an HTML block right before this fence mentions docs-test but is not one "
                "`<!-- docs-test: ... -->` comment"
            )
            if "docs-test" in token.content
            else None,
        )
    directive = _DIRECTIVE.fullmatch(found["body"])
    if not directive or directive["name"] not in DIRECTIVES:
        return (
            None,
            None,
            (
                f"unknown marker {token.content.strip()!r}: write `<!-- docs-test: skip (the reason) -->` "
                "or `<!-- docs-test: model-server -->`"
            ),
        )
    reason = (directive["reason"] or "").strip() or None
    if directive["name"] == "skip" and not reason:
        return None, None, "`docs-test: skip` needs its reason in parentheses: `<!-- docs-test: skip (why) -->`"
    return directive["name"], reason, None


def parse(path: Path, repo: Path = REPO) -> tuple[list[Block], list[str]]:
    """The fenced blocks of one Markdown file, and the markers that precede no fence (as problems)."""
    tokens = MarkdownIt("commonmark").parse(path.read_text(encoding="utf-8"))
    name = path.relative_to(repo).as_posix()
    blocks: list[Block] = []
    dangling: list[str] = []
    for index, token in enumerate(tokens):
        previous = tokens[index - 1] if index else None
        if token.type == "fence":
            directive, reason, problem = _marker(previous)
            blocks.append(
                Block(
                    name,
                    token.map[0] + 1,
                    token.info.split(maxsplit=1)[0].lower() if token.info else "",
                    token.content,
                    directive,
                    reason,
                    problem,
                )
            )
        elif token.type == "code_block":  # indented four spaces: no language, so nothing could say how to check it
            blocks.append(
                Block(
                    name,
                    token.map[0] + 1,
                    "",
                    token.content,
                    marker_problem=(
                        "an indented code block: write it as a fenced block with a language (```text for non-code)"
                    ),
                )
            )
        elif token.type == "html_block" and "docs-test" in token.content:
            following = tokens[index + 1] if index + 1 < len(tokens) else None
            if following is None or following.type != "fence":
                dangling.append(f"{name}:{token.map[0] + 1}: a docs-test marker must come right before a fenced block")
    return blocks, dangling


def all_blocks(repo: Path = REPO) -> list[Block]:
    return [block for path in documents(repo) for block in parse(path, repo)[0]]


def write_inputs(directory: Path) -> None:
    """The files the examples open: photo.png (256x256 RGB) and mask.png (its size, RGBA; the lower right
    quarter transparent, i.e. the part to edit)."""
    from PIL import Image, ImageDraw

    photo = Image.new("RGB", (256, 256), "steelblue")
    ImageDraw.Draw(photo).ellipse([32, 32, 160, 160], fill="gold")
    photo.save(directory / "photo.png")
    mask = Image.new("RGBA", (256, 256), (0, 0, 0, 255))
    ImageDraw.Draw(mask).rectangle([128, 128, 255, 255], fill=(0, 0, 0, 0))
    mask.save(directory / "mask.png")


def environment(base: dict[str, str], stack: dict[str, str], key: str, directory: Path) -> dict[str, str]:
    """What a reader's shell has after sourcing ``make run``'s exports, with ``key`` as OPENAI_API_KEY.

    PATH starts with a ``curl`` that adds ``--fail-with-body`` (so an HTTP error fails the block, with the
    error envelope in its output) and then this interpreter's bin directory (``python``, ``darkroom``).
    """
    real = shutil.which("curl")
    shims = directory / ".docs-test-bin"
    shims.mkdir(exist_ok=True)
    if real:
        shim = shims / "curl"
        shim.write_text(f'#!/bin/sh\nexec {real} --fail-with-body "$@"\n')
        shim.chmod(0o755)
    path = f"{shims}:{Path(sys.executable).parent}:{base.get('PATH', '/usr/bin:/bin')}"
    return base | stack | {"OPENAI_API_KEY": key, "PATH": path, "PYTHONUNBUFFERED": "1"}


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str
    seconds: float


def run(block: Block, env: dict[str, str], directory: Path) -> Ran:
    """Run a python or shell block as a script in ``directory``; a timeout is a failure (returncode None)."""
    suffix = ".py" if block.language in PYTHON else ".sh"
    script = directory / f"docs_block_{block.line}{suffix}"
    script.write_text(block.code, encoding="utf-8")
    command = [sys.executable, script.name] if block.language in PYTHON else ["bash", "-euo", "pipefail", script.name]
    started = time.monotonic()
    try:
        done = subprocess.run(
            command,
            env=env,
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT_SECONDS,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as expired:
        return Ran(
            -1,
            _text(expired.stdout),
            _text(expired.stderr) + f"\n(timed out after {BLOCK_TIMEOUT_SECONDS}s)",
            time.monotonic() - started,
        )
    return Ran(done.returncode, done.stdout, done.stderr, time.monotonic() - started)


def _text(output: str | bytes | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


def failure(block: Block, ran: Ran) -> str:
    """The message for a block that failed: its output, where its lines are, and how to mark it."""

    def tail(text: str) -> str:
        return text[-4000:] if text.strip() else "(nothing)"

    first = block.line + 1
    return (
        f"{block.id} ({block.language}, lines {first}-{first + block.code.count(chr(10)) - 1}) exited "
        f"{ran.returncode} after {ran.seconds:.1f}s; line N of the script is line {first} + N - 1 of the "
        f"file.\n--- stdout ---\n{tail(ran.stdout)}\n--- stderr ---\n{tail(ran.stderr)}\n"
        f"Fix the example. {HOW_TO_MARK}"
    )


def json_document(block: Block) -> dict:
    """A json block as an object: a whole document, or a fragment of members (``"id": {...}, ...``)."""
    import json

    try:
        document = json.loads(block.code)
    except json.JSONDecodeError:
        document = json.loads("{" + block.code + "}")  # a fragment; still broken: this error is the report
    if not isinstance(document, dict):
        raise TypeError(f"{block.id}: a json block is an object or an object's members, not {type(document).__name__}")
    return document


def catalog_entries(document: dict) -> dict[str, dict]:
    """The members of ``document`` that are catalog entries (objects naming a ``backend``)."""
    return {name: entry for name, entry in document.items() if isinstance(entry, dict) and "backend" in entry}


_ISSUE_KEY = """
import contextlib, io, json, sys
from darkroom.cli import main

def call(*args):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main([*args, "--json"])
    if status:
        sys.exit(f"darkroom {' '.join(args)} exited {status}")
    return json.loads(out.getvalue())

tenant = call("tenants", "create", sys.argv[1])
print(call("keys", "issue", tenant["tenant_id"])["key"])
"""


def issue_key(env: dict[str, str], name: str) -> str:
    """A fresh tenant's new key, from the darkroom CLI's own commands in one interpreter (for a stack that the
    session's ``admin`` fixture does not serve)."""
    done = subprocess.run(
        [sys.executable, "-c", _ISSUE_KEY, name],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT_SECONDS,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, f"issuing a key failed:\n{done.stdout}\n{done.stderr}"
    key = done.stdout.strip().splitlines()[-1]
    assert key.startswith("dk-"), done.stdout
    return key
