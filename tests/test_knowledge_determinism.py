"""Knowledge is the same in every process: nothing may depend on set order.

Python salts ``str`` hashes per process (``PYTHONHASHSEED``), so iterating a set of
gene symbols gives another order in the next run. Mouse knowledge was built that way:
when several human genes share one mouse ortholog (ACTB and POTEE -> Actb), the mouse
gene took the cell types of whichever came last, and mouse gene cards, their text
embeddings and the LLM's retrieved facts changed from one run to the next.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

_DIGEST = """
import hashlib, json
from kbfm.knowledge.gene_cards import marked_types
from kbfm.knowledge.retrieval import marker_facts
mouse = marked_types("mouse")
facts = marker_facts(sorted(mouse)[:3000], species="mouse")
print(json.dumps({
    "marked": hashlib.sha256(json.dumps(mouse, sort_keys=True).encode()).hexdigest(),
    "facts": hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest(),
    "Actb": mouse["Actb"],
}))
"""


def _digest(seed: int) -> dict:
    env = {**os.environ, "PYTHONHASHSEED": str(seed)}
    proc = subprocess.run(
        [sys.executable, "-c", _DIGEST],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_mouse_marker_facts_do_not_depend_on_the_hash_seed():
    # Seeds 1 and 2 gave Actb the cell types of POTEE and of ACTB before the fix.
    first, second = _digest(1), _digest(2)
    assert first == second


def test_a_mouse_gene_takes_the_cell_types_of_its_namesake():
    from kbfm.knowledge.gene_cards import marked_types

    human, mouse = marked_types("human"), marked_types("mouse")
    assert mouse["Actb"] == human["ACTB"]
    assert mouse["Actb"] != human["POTEE"]
