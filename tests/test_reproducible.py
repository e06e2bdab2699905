"""Two smoke runs of a chapter with the same seed give identical metrics on the CPU."""
import json, shutil
from pathlib import Path

from medcl_nb.cli import main

REPO = Path(__file__).resolve().parent.parent


def test_same_seed_same_metrics(project, monkeypatch):
    shutil.copy(REPO/'nbs'/'10_tour.ipynb', project/'nbs')
    monkeypatch.setenv('MEDCL_DATA', str(REPO/'data'))
    runs = []
    for _ in range(2):
        assert main(['reproduce', 'tour', '--profile', 'smoke', '--seeds', '7', '--device', 'cpu']) == 0
        runs.append(json.loads((project/'runs/smoke/tour/results/seed7.json').read_text()))
    assert runs[0]['rows'] == runs[1]['rows']
    assert runs[0]['provenance']['seeds'] == [7] and runs[0]['provenance']['profile'] == 'smoke'
