"""Exercise notebooks: in sync with the chapters, failing until solved, passing with the chapter's solution pasted back."""
import copy, json, os
from pathlib import Path

import nbformat
import pytest
from execnb.nbio import dict2nb
from execnb.shell import CaptureShell

from medcl_nb.exercises import paste_solutions, stale_exercises, is_exercise

REPO = Path(__file__).resolve().parent.parent
EXERCISES = sorted((REPO/'nbs'/'_exercises').glob('*.ipynb'))


def test_exercise_notebooks_are_in_sync_with_the_chapters():
    assert EXERCISES, 'no exercise notebooks: run `medcl exercises`'
    assert stale_exercises(REPO/'nbs') == [], 'run `medcl exercises` and commit nbs/_exercises/'


def run(nb):
    "Execute like nbdev_test does (in nbs/, stopping at the first error); return the error or None."
    cwd = os.getcwd()
    os.chdir(REPO/'nbs')
    try:
        shell = CaptureShell()
        shell.run_all(dict2nb(json.loads(nbformat.writes(nb))), exc_stop=True)
        return None
    except Exception as e:
        return e
    finally:
        os.chdir(cwd)


def through_last_exercise(nb):
    "The notebook up to its last exercise cell. nbdev_test already runs every chapter whole; stopping here keeps a paper chapter's training out of this check."
    last = max(i for i, c in enumerate(nb.cells) if is_exercise(c))
    nb = copy.deepcopy(nb)
    nb.cells = nb.cells[:last + 1]
    return nb


@pytest.mark.parametrize('path', EXERCISES, ids=lambda p: p.stem)
def test_exercise_fails_unsolved_and_passes_with_the_solution(path):
    exercise = nbformat.read(path, as_version=4)
    chapter = nbformat.read(REPO/'nbs'/path.name, as_version=4)
    assert any(is_exercise(c) for c in exercise.cells)
    assert isinstance(run(exercise), NotImplementedError)
    assert run(through_last_exercise(paste_solutions(exercise, chapter))) is None
