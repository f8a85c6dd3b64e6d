"""feedme.js outside the browser, in Node (skipped without it): its MD5 against the FeedMd5
vectors (checked against feedme-client's own md5calculator) and Node's crypto, and its delta
writer over all 14 operations and the main errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from importlib import resources
from pathlib import Path

import pytest

VECTORS = Path(__file__).parents[1] / "protocol" / "feedme" / "feedme_md5_vectors.jsonl"

SCRIPT = r"""
import { feedMd5, canonicalJson, md5, applyDeltas } from "./feedme.mjs";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
const out = { vectors: [], md5: 0, deltas: null, errors: [] };
for (const line of readFileSync(process.argv[2], "utf8").split("\n").filter((l) => l.trim())) {
  const v = JSON.parse(line);
  const data = JSON.parse(v.input);
  out.vectors.push(canonicalJson(data) === v.canonical && feedMd5(data) === v.md5);
}
for (let n = 0; n < 300; n++) {
  const bytes = new Uint8Array(n * 7).map((_, i) => (i * 31 + n) & 255);
  const ours = Buffer.from(md5(bytes)).toString("hex");
  if (ours !== createHash("md5").update(bytes).digest("hex")) out.md5++;
}
const op = (Operation, Path, ...value) =>
  ({ Operation, Path, ...(value.length ? { Value: value[0] } : {}) });
const start = { a: 1, s: "b", l: [1, 2, 2], t: true, o: { x: 1 } };
out.deltas = applyDeltas(start, [
  op("Increment", ["a"], 2), op("Decrement", ["a"], 1), op("Prepend", ["s"], "a"),
  op("Append", ["s"], "c"), op("Toggle", ["t"]), op("DeleteValue", ["l"], 2),
  op("InsertFirst", ["l"], 0), op("InsertLast", ["l"], 9), op("InsertBefore", ["l", 1], "b"),
  op("InsertAfter", ["l", 1], "a"), op("DeleteFirst", ["l"]), op("DeleteLast", ["l"]),
  op("Set", ["l", 3], "end"), op("Delete", ["o", "x"]), op("Set", ["o", "y"], [1]),
  op("DeleteValue", [], false),
]);
out.untouched = start.a === 1 && start.l.length === 3;
for (const delta of [
  op("Set", [], 1), op("Delete", []), op("Set", ["l", 5], 1), op("Increment", ["s"], 1),
  op("DeleteFirst", ["e"]), op("Set", ["s", "x"], 1), op("Set", ["l", "0"], 1),
  op("Toggle", ["nope"]), op("Increment", ["big"], 1e308),
]) {
  try {
    applyDeltas({ l: [], s: "x", e: [], big: 1e308 }, [delta]);
    out.errors.push(null);
  } catch (error) {
    out.errors.push(error.code);
  }
}
console.log(JSON.stringify(out));
"""


def test_feedme_js_md5_and_deltas(tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI"):  # scripts/test needs Node for the conformance clients anyway
            pytest.fail("needs Node.js")
        pytest.skip("needs node")
    source = resources.files("tidings") / "console" / "feedme.js"
    (tmp_path / "feedme.mjs").write_bytes(source.read_bytes())
    listeners = resources.files("tidings") / "console" / "listeners.js"
    (tmp_path / "listeners.js").write_bytes(listeners.read_bytes())  # what feedme.js imports
    (tmp_path / "package.json").write_text('{"type": "module"}')
    (tmp_path / "check.mjs").write_text(SCRIPT)
    run = subprocess.run(
        [node, "check.mjs", str(VECTORS)], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["vectors"] and all(out["vectors"])
    assert out["md5"] == 0
    assert out["deltas"] == {"a": 2, "s": "abc", "l": ["b", "a", 1, "end"], "o": {"y": [1]}}
    assert out["untouched"]
    assert out["errors"] == [
        "ROOT_NOT_OBJECT",
        "ROOT_NOT_DELETABLE",
        "NON_CONTIGUOUS",
        "NOT_A_NUMBER",
        "EMPTY_ARRAY",
        "NOT_A_CONTAINER",
        "STRICT_PATH_TYPE",
        "NON_EXISTENT",
        "STRICT_NON_FINITE",
    ]
