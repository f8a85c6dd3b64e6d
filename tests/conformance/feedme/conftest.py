"""Runs the real feedme-client's own code through Node as the oracle.

A missing Node or npm is a failure, not a skip: these tests are the proof
that tidings.protocol.feedme matches the installed client.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parents[1] / "unit" / "protocol" / "feedme"))  # feedme_strategies
sys.path.insert(0, str(HERE))  # feedme_node

from feedme_node import NodeRunner  # noqa: E402


@pytest.fixture(scope="session")
def feedme_node() -> NodeRunner:
    """``run(script, inputs)``: one Node process per batch, one JSON line per input."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is required for the Feedme conformance tests")
    if not (HERE / "node_modules" / "feedme-client").is_dir():
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail("npm is required to install the pinned Feedme packages")
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=HERE, check=True, timeout=600)

    def run(script: str, inputs: Iterable[Any]) -> list[Any]:
        lines = [json.dumps(item, allow_nan=False) for item in inputs]
        completed = subprocess.run(
            [node, str(HERE / script)],
            input="\n".join(lines) + "\n",
            capture_output=True,
            text=True,
            encoding="utf-8",
            check=True,
            timeout=120,
        )
        answers = [json.loads(line) for line in completed.stdout.split("\n") if line]
        assert len(answers) == len(lines), completed.stderr
        for answer in answers:
            assert "crash" not in answer, answer
        return answers

    return run
