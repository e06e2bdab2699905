"""The book itself: every notebook runs (smoke profile), the package is what the notebooks export, README is what
index.ipynb renders, and committed notebooks carry no paths of anyone's machine."""
import os, re, shutil, subprocess, sys
from pathlib import Path

from medcl_nb.cli import render_readme
from medcl_nb.report import LEDGER_PAGE, VERDICT_MEANINGS, ledger_page

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def test_every_notebook_runs_in_the_smoke_profile():
    # two workers with one math thread each: with torch's default (a thread per core) two workers oversubscribe the
    # cores and the notebooks ran several times slower on a 2-core machine
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1'}
    r = subprocess.run([str(BIN/'nbdev_test'), '--n_workers', '2', '--timing'], cwd=REPO, capture_output=True, text=True, env=env)
    print(r.stdout[-5000:], r.stderr[-5000:])
    assert r.returncode == 0, r.stderr[-5000:]


def test_package_is_what_the_notebooks_export(tmp_path):
    for name in ('settings.ini', 'nbs', 'medcl_nb'):
        src = REPO/name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path/name)
    subprocess.run([str(BIN/'nbdev_export')], cwd=tmp_path, check=True, capture_output=True)
    exported = {p.relative_to(tmp_path/'medcl_nb'): p.read_text() for p in (tmp_path/'medcl_nb').glob('*.py')}
    committed = {p.relative_to(REPO/'medcl_nb'): p.read_text() for p in (REPO/'medcl_nb').glob('*.py')}
    assert exported.keys() == committed.keys()
    stale = [str(k) for k in exported if exported[k] != committed[k]]
    assert not stale, f"medcl_nb/ differs from the notebooks in {stale}: run nbdev_export and commit"


def test_readme_is_generated_from_index():
    text, _ = render_readme(REPO)
    assert (REPO/'README.md').read_text() == text, "README.md is stale: run `medcl readme`"


def test_claims_ledger_page_is_generated_and_linked_from_readme():
    page = (REPO/LEDGER_PAGE).read_text()
    assert page == ledger_page(REPO), f"{LEDGER_PAGE} is stale: run `medcl readme`"
    assert f'({LEDGER_PAGE})' in (REPO/'README.md').read_text(), 'README must link the claims ledger'
    used = set(re.findall(r'\| ([a-z][a-z ]+?) \|$', page, re.M)) - {'verdict'}   # each line's last column, not the header's
    assert used and used <= set(VERDICT_MEANINGS), used - set(VERDICT_MEANINGS)
    assert all(f'- *{v}*:' in page for v in used), 'every verdict on the ledger page is defined above its tables'


def test_notebooks_hold_no_machine_paths():
    for nb in [*(REPO/'nbs').glob('*.ipynb'), *(REPO/'nbs'/'_exercises').glob('*.ipynb')]:
        found = re.findall(r'/(?:root|home|tmp|work|Users)/[^"\s]+', nb.read_text())
        assert not found, f"{nb.name} holds absolute paths {found[:3]}"


def test_exported_modules_use_no_name_they_do_not_import():
    "A name defined only in a notebook's test cells works in the notebook but breaks the package: pyflakes finds it."
    r = subprocess.run([sys.executable, '-m', 'pyflakes', *map(str, sorted((REPO/'medcl_nb').glob('*.py')))],
                       capture_output=True, text=True)
    undefined = [l for l in r.stdout.splitlines() if 'undefined name' in l]
    assert not undefined, '\n'.join(undefined)


def test_papermill_reads_every_chapter_parameter():
    "papermill parses the parameters cell itself; a quote inside a comment can hide a parameter from it."
    import papermill as pm
    from medcl_nb.cli import find_chapters, parameters_cell
    import nbformat
    for name, path in find_chapters(REPO/'nbs').items():
        ours = set(parameters_cell(nbformat.read(path, as_version=4)))
        assert set(pm.inspect_notebook(str(path))) == ours, name


def test_no_cell_mixes_imports_with_other_code():
    "nbdev's docs processing executes every cell that imports something, so such a cell may only import and define."
    import ast
    from nbdev.process import NBProcessor
    harmless = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef)
    mixed = []
    for nb in sorted((REPO/'nbs').glob('*.ipynb')):
        for cell in NBProcessor(nb).nb.cells:
            if cell.cell_type != 'code' or not cell.source.strip() or cell.directives_.keys() & {'export', 'exports'}: continue
            tree = ast.parse('\n'.join(l for l in cell.source.splitlines() if not l.lstrip().startswith(('%', '!'))))
            if any(isinstance(n, (ast.Import, ast.ImportFrom)) for n in ast.walk(tree)) and \
               not all(isinstance(stmt, harmless) for stmt in tree.body):
                mixed.append(f"{nb.name} cell {cell.idx_}: {cell.source.splitlines()[0][:60]}")
    assert not mixed, 'split the imports into a cell of their own:\n' + '\n'.join(mixed)
