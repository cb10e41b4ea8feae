"""Golden reports: the full text report and JSON of two small fixed cases.

A change to the cost model, scheduler or report layout shows up here as a diff. When the change
is intended, regenerate with `APEX_UPDATE_GOLDEN=1 python -m pytest tests/test_golden.py` and
review the diff of tests/golden/ in the commit.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import orjson
import pytest

from apex_fast.cli import main

GOLDEN = Path(__file__).parent / "golden"
ROOT = Path(__file__).resolve().parents[1]

CASES = {
    "llama7b_2gpu_all": [
        "plan", "--model", "llama-7b", "--num-gpus-per-node", "2", "--trace-file",
        str(ROOT / "traces" / "lmsys_r2_n300.jsonl"), "--all",
    ],
    "mixtral_4gpu_ep": [
        "plan", "--model", "mixtral-8x7b", "--num-gpus-per-node", "4", "--num-requests", "32",
        "--prompt-len", "256", "--output-len", "64", "--ep", "4",
    ],
}  # fmt: skip


def _normalise(text: str) -> str:
    # absolute paths differ between checkouts
    return re.sub(r"/\S*/(profile_data|traces)\b", r"<root>/\1", text)


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_report(name: str, capsys, tmp_path: Path) -> None:
    js = tmp_path / "out.json"
    assert main([*CASES[name], "--quiet", "--json", str(js)]) == 0
    text = _normalise(capsys.readouterr().out)
    data = orjson.loads(js.read_bytes())
    best = {k: data["best"][k] for k in ("label", "ttft_mean_s", "tpot_mean_s", "energy_kj")}
    golden_txt = GOLDEN / f"{name}.txt"
    golden_json = GOLDEN / f"{name}.best.json"
    if os.environ.get("APEX_UPDATE_GOLDEN"):
        golden_txt.write_text(text)
        golden_json.write_bytes(
            orjson.dumps(best, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
        )
    assert text == golden_txt.read_text()
    assert best == orjson.loads(golden_json.read_bytes())
