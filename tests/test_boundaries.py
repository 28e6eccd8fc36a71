"""Boundaries that read like the pipeline: the site, the loader and the director load no
torch, no Ray, and nothing of the driver or the actors."""

from __future__ import annotations

import json
import subprocess
import sys


def test_catalog_and_director_import_neither_the_driver_nor_the_heavy_libraries():
    code = ("import json, sys\n"
            "import catalog.site, catalog.stats, catalog.db.load, catalog.commands\n"
            "import director.plan, director.llm, director.offline, director.contract\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'torch', 'ray', 'actors', 'ray_jobs', 'diffusers', 'transformers'})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_contracts_import_nothing_of_the_project():
    code = ("import json, sys\nimport albumforge.rows, albumforge.manifest, albumforge.atomic\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'torch', 'ray', 'actors', 'ray_jobs', 'director', 'catalog'})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
