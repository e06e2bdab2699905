"""Pretraining on several processes (08c_distributed) on the CPU: 2 gloo ranks forked from this process (so they start
without importing the book again), and the torchrun command itself."""
import json, multiprocessing, os, socket, subprocess, sys, time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn

from medcl_nb.core import md5sum, seed_everything, seeded_rng
from medcl_nb.distributed import process_group
from medcl_nb.losses import multi_positive_nt_xent, nt_xent_loss, positive_mask_from_groups
from medcl_nb.simclr import BagSampler, SimCLRNet, contrastive_batches, pretrain_simclr, pretraining_augment
from medcl_nb.train import epoch_generator, load_checkpoint

REPO = Path(__file__).resolve().parent.parent
WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _rank_main(fn, rank, world, port, timeout_s, out, args, join=True):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR='127.0.0.1',
                      MASTER_PORT=str(port), OMP_NUM_THREADS='1')
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    try:
        if not join: result = {'ok': fn(rank, *args)}       # fn joins the group itself (the command's `main`)
        else:
            with process_group('gloo', timeout_s, 'cpu'): result = {'ok': fn(rank, *args)}
    except Exception as e:
        result = {'error': f"{type(e).__name__}: {e}"}
    torch.save({**result, 'seconds': time.perf_counter() - t0}, out/f'rank{rank}.pt')


def _spawn(fn, out, args, world, port, timeout_s, wait_s, grace_s, join) -> list[dict]:
    for f in out.glob('rank*.pt'): f.unlink()
    ctx = multiprocessing.get_context('fork')
    procs = [ctx.Process(target=_rank_main, args=(fn, r, world, port, timeout_s, out, args, join)) for r in range(world)]
    for p in procs: p.start()
    deadline = time.monotonic() + wait_s
    while any(p.is_alive() for p in procs) and time.monotonic() < deadline:
        if any(p.exitcode not in (None, 0) for p in procs) or any(
                (out/f'rank{r}.pt').exists() and not p.is_alive() and 'error' in torch.load(out/f'rank{r}.pt', weights_only=False)
                for r, p in enumerate(procs)):
            deadline = min(deadline, time.monotonic() + grace_s)   # one rank failed: the others get a moment, then go
        time.sleep(0.05)
    results = []
    for r, p in enumerate(procs):
        killed = p.is_alive()
        if killed: p.kill()
        p.join()
        f = out/f'rank{r}.pt'
        results.append({**(torch.load(f, weights_only=False) if f.exists() else {'died': p.exitcode}), **({'killed': True} if killed else {})})
    return results


def run_ranks(fn, out: Path, *args, world: int = WORLD, port: int | None = None, tries: int = 3, timeout_s: float = 30,
              wait_s: float = 60, grace_s: float = 2, join: bool = True) -> list[dict]:
    """`fn(rank, *args)` on `world` forked gloo ranks; per rank {'ok': result} or {'error': message}, or {'died': exitcode},
    with 'killed' when the spawner had to end it. A taken port (`PortInUse`) is retried on a free one, `tries` times in all."""
    out.mkdir(parents=True, exist_ok=True)
    for _ in range(tries):
        results = _spawn(fn, out, args, world, port or _free_port(), timeout_s, wait_s, grace_s, join)
        if not any(r.get('error', '').startswith('PortInUse') for r in results): break
        port = None            # taken (on purpose, or by a program that took the free port first): another one
    return results


def _ok(results) -> list:
    bad = [r for r in results if 'ok' not in r]
    assert not bad, bad
    return [r['ok'] for r in results]


# The loss and its gradients: 2 ranks x N against one process on the 2N batch

CASES = [(2, 0.1, None), (5, 0.5, None), (3, 0.2, 'mean_log'), (3, 0.2, 'log_sum')]

def _global_batch(n):
    g = torch.Generator().manual_seed(n)
    x1, x2 = torch.randn(WORLD * n, 6, generator=g), torch.randn(WORLD * n, 6, generator=g)
    ids = torch.arange(WORLD * n) % (n + 1)          # groups that straddle the ranks, none holding every row
    return x1, x2, ids

def _loss_and_grads(model, x1, x2, ids, temperature, combine, group=None):
    if combine is None: loss = nt_xent_loss(model(x1), model(x2), temperature, group=group)
    else: loss = multi_positive_nt_xent(model(x1), positive_mask_from_groups(ids), temperature, combine, group=group)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]

def _on_rank(rank):
    out = []
    for n, temperature, combine in CASES:
        torch.manual_seed(0); model = nn.Linear(6, 4)
        x1, x2, ids = _global_batch(n)
        mine = slice(rank * n, (rank + 1) * n)
        ddp = nn.parallel.DistributedDataParallel(model)
        out.append(_loss_and_grads(ddp, x1[mine], x2[mine], ids, temperature, combine, dist.group.WORLD))
    return out

def test_loss_and_gradients_on_2_ranks_equal_one_process_on_the_whole_batch(tmp_path):
    ranks = _ok(run_ranks(_on_rank, tmp_path))
    for k, (n, temperature, combine) in enumerate(CASES):
        torch.manual_seed(0); model = nn.Linear(6, 4)
        loss, grads = _loss_and_grads(model, *_global_batch(n), temperature, combine)
        for rank in ranks:
            torch.testing.assert_close(rank[k][0], loss, rtol=1e-6, atol=1e-6)
            for got, want in zip(rank[k][1], grads): torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


# The training step itself: SimCLR and MICLe on 2 ranks x N end where one process on 2N ends

def _pretrained_linear(rank=0, bags=None):
    "Two epochs of `pretrain_simclr` with a deterministic augmentation (no stream per rank to differ): the weights."
    with seeded_rng(0): net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    pretrain_simclr(net, _IDS, lambda x: x.float() / 255, epochs=2, batch_size=8, seed=1, bags=bags)
    return net.state_dict()

def _both_forms(rank):
    return {'simclr': _pretrained_linear(rank), 'micle': _pretrained_linear(rank, _BAGS)}

def test_simclr_and_micle_training_on_2_ranks_equals_one_process_on_the_global_batch(tmp_path):
    ranks = _ok(run_ranks(_both_forms, tmp_path))
    for kind, bags in (('simclr', None), ('micle', _BAGS)):
        alone = _pretrained_linear(bags=bags)
        assert not torch.allclose(alone['1.weight'], _pretrained_linear(bags=None if bags is not None else _BAGS)['1.weight'])
        for rank in ranks:
            for k in alone: torch.testing.assert_close(rank[kind][k], alone[k], rtol=1e-5, atol=1e-6, msg=f'{kind} {k}')


# Each rank's share of every global batch

class _RecordingAugment:
    "Records which images (pixel value = image index) each call gets; returns them as float images."
    def __init__(self): self.seen = []
    def __call__(self, x):
        self.seen.append(x[:, 0, 0, 0].tolist())
        return x.float() / 255

_IDS = torch.arange(24, dtype=torch.uint8)[:, None, None, None].expand(-1, 1, 2, 2).contiguous()
_BAGS = BagSampler(torch.arange(24) // 2)            # 12 bags of 2 images

def _shares(rank):
    seen = {}
    for kind in ('simclr', 'micle'):
        aug = _RecordingAugment()
        pretrain_simclr(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)), _IDS, aug, epochs=2, batch_size=8, seed=1,
                        bags=_BAGS if kind == 'micle' else None)
        seen[kind] = aug.seen
    return seen

def test_each_rank_draws_its_own_share_of_the_one_process_batch(tmp_path):
    ranks = _ok(run_ranks(_shares, tmp_path))
    simclr, micle = [], []
    for epoch in range(2):
        for idx in contrastive_batches(24, 8, drop_last=True, generator=epoch_generator(1, epoch)):
            simclr += [idx.tolist(), idx.tolist()]                    # two views of the same images
        g = torch.Generator().manual_seed(1 * 100_003 + epoch)
        for _ in range(24 // 8):
            i1, i2 = _BAGS.pairs(torch.randperm(_BAGS.n_bags, generator=g)[:8], g)
            micle += [i1.tolist(), i2.tolist()]
    for kind, expected in (('simclr', simclr), ('micle', micle)):
        got0, got1 = ranks[0][kind], ranks[1][kind]
        assert len(got0) == len(got1) == len(expected)
        for a, b, whole in zip(got0, got1, expected):
            assert len(a) == len(b) == 4 and a + b == whole             # rank 0's half, then rank 1's: the global batch
            assert len(set(a + b)) == 8                                 # disjoint: 8 different images


def _refusals(rank):
    net, images = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)), _IDS
    messages = []
    for kw in (dict(batch_size=7), dict(batch_size=8, sync_bn=True)):
        try: pretrain_simclr(net, images, _RecordingAugment(), epochs=1, **kw)
        except ValueError as e: messages.append(str(e))
    return messages

def test_what_cannot_be_split_over_the_ranks_is_refused(tmp_path):
    for messages in _ok(run_ranks(_refusals, tmp_path)):
        assert 'does not split over 2 ranks' in messages[0] and 'sync_bn needs CUDA' in messages[1], messages


# Resume: interrupted and resumed on 2 ranks, the weights of a run that never stopped

class _Interrupted(Exception): pass

class _StopAt:
    "The augmentation, interrupted at its `at`-th call (mid-epoch), as a preempted job would be."
    def __init__(self, augment, at): self.augment, self.at, self.calls = augment, at, 0
    def __call__(self, x):
        self.calls += 1
        if self.calls == self.at: raise _Interrupted
        return self.augment(x)

_IMAGES = torch.randint(0, 256, (24, 1, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))

def _pretrain(checkpoint_path=None, stop_at=None):
    seed_everything(0)
    with seeded_rng(0): net = SimCLRNet('resnet18_w8')
    augment = pretraining_augment('colour', size=16)
    try: pretrain_simclr(net, _IMAGES, augment if stop_at is None else _StopAt(augment, stop_at), epochs=3,
                         batch_size=8, seed=0, checkpoint_path=checkpoint_path)
    except _Interrupted: return None
    return net.state_dict()

def _same(a, b) -> bool:
    "Nested dicts, lists and tensors equal to the bit."
    if isinstance(a, dict): return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)): return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, torch.Tensor): return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, np.ndarray): return np.array_equal(a, b)
    return a == b

def _straight_and_interrupted(rank, folder):
    return _pretrain(folder/'straight.pt'), _pretrain(folder/'stopped.pt', stop_at=2 * (3 + 1) + 1)   # epoch 2, step 2

def _resumed(rank, folder):
    return _pretrain(folder/'stopped.pt')

def test_an_interrupted_2_rank_run_resumes_to_the_weights_of_one_that_was_not(tmp_path):
    first = _ok(run_ranks(_straight_and_interrupted, tmp_path/'a', tmp_path))
    assert all(stopped is None for _, stopped in first)
    state = load_checkpoint(tmp_path/'stopped.pt')
    assert (state['epoch'], state['world_size'], len(state['rng_by_rank'])) == (1, 2, 2)
    assert not torch.equal(state['rng_by_rank'][0]['torch'], state['rng_by_rank'][1]['torch'])   # a stream per rank
    resumed = _ok(run_ranks(_resumed, tmp_path/'b', tmp_path))
    for rank in range(WORLD):   # BatchNorm's running statistics are each rank's own (DDP broadcasts rank 0's before a step)
        straight = first[rank][0]
        different = [k for k in straight if not torch.equal(resumed[rank][k], straight[k])]
        assert not different, (rank, different)
    params = [k for k, _ in SimCLRNet('resnet18_w8').named_parameters()]
    assert all(torch.equal(resumed[1][k], first[0][0][k]) for k in params)   # the weights are the same on every rank
    # and the whole state both runs end with (rank 0 wrote each run's last checkpoint): optimiser, schedule, step, streams
    straight, stopped = load_checkpoint(tmp_path/'straight.pt'), load_checkpoint(tmp_path/'stopped.pt')
    assert (stopped['epoch'], stopped['global_step']) == (straight['epoch'], straight['global_step']) == (3, 9)
    for key in ('optimizer', 'scheduler', 'rng_by_rank'): assert _same(stopped[key], straight[key]), key
    assert [h['loss'] for h in stopped['history']] == [h['loss'] for h in straight['history']]


# One rank is the one-process run

def test_a_1_rank_run_is_the_one_process_run_with_the_same_seed(tmp_path):
    (one_rank,) = _ok(run_ranks(lambda rank: _pretrain(), tmp_path, world=1))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                               # as the rank ran: the same order of float additions
    try: alone = _pretrain()                               # this process, no process group
    finally: torch.set_num_threads(threads)
    different = [k for k in alone if not torch.equal(one_rank[k], alone[k])]
    assert not different, different


# A rank that dies or stalls: the others stop with an error, they do not hang

def _fails(rank, how):
    def augment(x):
        augment.calls += 1
        if rank == 1 and augment.calls == 3:
            if how == 'dies': os._exit(3)
            if how == 'raises': raise ValueError('rank 1 fails on purpose')
            time.sleep(60)
        return x.float() / 255
    augment.calls = 0
    pretrain_simclr(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)), _IDS, augment, epochs=50, batch_size=8)

@pytest.mark.parametrize('how', ['dies', 'raises', 'stalls'])
def test_a_rank_that_dies_raises_or_stalls_stops_the_others_with_an_error(tmp_path, how):
    t0 = time.monotonic()
    rank0, rank1 = run_ranks(_fails, tmp_path, how, timeout_s=3, wait_s=30)
    assert time.monotonic() - t0 < 25
    if how == 'raises': assert rank1['error'] == 'ValueError: rank 1 fails on purpose', rank1   # the book's error, unchanged
    else: assert 'died' in rank1 or rank1.get('killed'), rank1
    assert rank0.get('error', '').startswith('RankFailure: rank 0 of 2 stopped: '), rank0
    assert '\n' not in rank0['error'] and rank0['seconds'] < 15, rank0
    assert 'killed' not in rank0, rank0                        # it stopped by itself; the spawner did not have to end it


_SCRIPT = '''import sys, time, torch, torch.distributed as dist
from medcl_nb.distributed import process_group
with process_group('gloo', 20, 'cpu'):
    if sys.argv[1] == 'orphaned': print('ready', flush=True); time.sleep(60)
    if dist.get_rank() == 1: raise ValueError('rank 1 fails on purpose')
    dist.all_reduce(torch.ones(1))   # rank 0 waits here for a rank that is gone
'''

def _running(marker: str) -> list[int]:
    "The processes whose command line holds `marker` (zombies have none)."
    found = []
    for d in Path('/proc').iterdir():
        try:
            if d.name.isdigit() and marker.encode() in (d/'cmdline').read_bytes(): found.append(int(d.name))
        except OSError: pass
    return found

def _torchrun(*args, cwd, stdout, stderr, env=None):
    return subprocess.Popen([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2', *args],
                            cwd=cwd, env={**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': str(REPO), **(env or {})},
                            stdout=stdout, stderr=stderr, text=True, start_new_session=True)

def _wait(p, timeout_s):
    "`p`'s exit status; on a timeout its whole session is killed (no launcher left behind by the test) and the test fails."
    try: return p.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, 9); p.wait()
        pytest.fail(f'torchrun still running after {timeout_s} s')

@pytest.mark.skipif(not Path('/proc/self/cmdline').exists(), reason='lists processes through /proc')
def test_under_torchrun_a_rank_that_raises_ends_the_run_and_leaves_no_worker(tmp_path):
    script = tmp_path/'fails.py'; script.write_text(_SCRIPT)
    p = _torchrun(str(script), 'raises', cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = p.communicate(timeout=120)
    assert p.returncode != 0 and 'ValueError: rank 1 fails on purpose' in err, err[-3000:]
    assert not _running(str(script))

@pytest.mark.skipif(not Path('/proc/self/cmdline').exists(), reason='lists processes through /proc')
def test_a_killed_launcher_leaves_no_worker_behind(tmp_path):
    script, log = tmp_path/'orphaned.py', tmp_path/'out.log'
    script.write_text(_SCRIPT)
    with open(log, 'w') as f: p = _torchrun(str(script), 'orphaned', cwd=tmp_path, stdout=f, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while log.read_text().count('ready') < 2 and p.poll() is None and time.monotonic() < deadline: time.sleep(0.2)
    assert log.read_text().count('ready') == 2, log.read_text()[-3000:]
    os.kill(p.pid, 9); p.wait()                                # the launcher only: its ranks live in sessions of their own
    deadline = time.monotonic() + 20
    while _running(str(script)) and time.monotonic() < deadline: time.sleep(0.2)
    left = _running(str(script))
    for pid in left: os.kill(pid, 9)
    assert not left, f'workers left behind: {left}'


# A taken port

def _hello(rank):
    x = torch.tensor([rank + 1.0]); dist.all_reduce(x)
    return float(x)

def test_a_taken_port_is_named_and_the_spawner_retries_on_a_free_one(tmp_path):
    with socket.socket() as busy:
        busy.bind(('', 0)); busy.listen(); port = busy.getsockname()[1]
        first = run_ranks(_hello, tmp_path, port=port, tries=1, grace_s=0.5)
        assert first[0]['error'].startswith(f'PortInUse: rank 0 of 2 stopped: MASTER_PORT {port} is already in use'), first
        assert _ok(run_ranks(_hello, tmp_path, port=port, grace_s=0.5)) == [3.0, 3.0]


# The command a reader runs

def test_the_torchrun_command_pretrains_and_saves_the_encoder(project):
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': str(REPO)}
    args = ['--device', 'cpu', '--arch', 'resnet18_w8', '--epochs', '1', '--batch-size', '8', '--crops-per-epoch', '16']
    r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
                        '-m', 'medcl_nb.distributed', *args], cwd=project, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    saved = list((project/'runs'/'pretrained').glob('simclr-natural-resnet18_w8-seed0-*.pt'))
    assert len(saved) == 1 and f"saved {saved[0]}" in r.stdout, r.stdout
    SimCLRNet('resnet18_w8').load_state_dict(torch.load(saved[0], weights_only=True))
    info = json.loads(saved[0].with_suffix('.json').read_text())
    assert info['world_size'] == 2 and info['backend'] == 'gloo' and len(info['history']) == 1
    assert not any((project/'runs'/'checkpoints'/'pretrained').glob('*.pt'))   # the spent checkpoint is gone


def _main(rank, argv):
    from medcl_nb.distributed import main
    return str(main(argv))

def test_the_command_runs_micle_from_the_natural_stage(project, tmp_path):
    "natural -> MICLe, as chapter 12 composes its stages: the LUS bags, started from the natural stage's weights (`--init`)."
    common = ['--arch', 'resnet18_w8', '--batch-size', '8', '--device', 'cpu', '--backend', 'gloo']
    (natural_path, _) = _ok(run_ranks(_main, tmp_path/'a', ['--epochs', '1', '--crops-per-epoch', '16', *common], join=False))
    (micle_path, other) = _ok(run_ranks(_main, tmp_path/'b', ['--data', 'lus', '--lus-frames', '1', '--steps', '2',
                                                              '--init', natural_path, *common], join=False))
    micle_path = Path(micle_path)
    assert micle_path == Path(other) and micle_path.name.startswith('micle-lus-resnet18_w8-seed0-'), micle_path
    info = json.loads(micle_path.with_suffix('.json').read_text())
    assert info['protocol']['init'] == md5sum(natural_path) and info['protocol']['positives'] == 'micle', info['protocol']
    assert len(info['history']) == 1 and info['history'][0]['steps'] == 2 and info['world_size'] == 2, info['history']
    natural, after = torch.load(natural_path, weights_only=True), torch.load(micle_path, weights_only=True)
    with seeded_rng(0): scratch = SimCLRNet('resnet18_w8').state_dict()   # where a run without --init would start
    moved = lambda a: max(float((after[k].float() - a[k].float()).abs().max()) for k in after if after[k].is_floating_point())
    assert 0 < moved(natural) < moved(scratch)                 # trained, from the natural stage's weights

# Rank 0 fetches the data; the others wait, then read the cache

def _fetch_logged(rank, log):
    "The command's `main` on MedMNIST, every `ensure_file` logged: (rank, file, cached before?, start, end)."
    import medcl_nb.data as data
    from medcl_nb.distributed import main
    ensure = data.ensure_file
    def logged(f, root=None, download=True):
        cached, t0 = (Path(root) if root else data.data_dir()).joinpath(f.relpath).exists(), time.monotonic()
        try: return ensure(f, root, download)
        finally:
            with open(log, 'a') as out: out.write(json.dumps([rank, f.relpath, cached, t0, time.monotonic()]) + '\n')
    data.ensure_file = logged
    return str(main(['--data', 'breastmnist', '--n-images', '16', '--arch', 'resnet18_w8', '--epochs', '1',
                     '--batch-size', '8', '--device', 'cpu', '--backend', 'gloo']))

def test_rank_0_fetches_the_data_while_the_others_wait(project, source, monkeypatch, tmp_path):
    monkeypatch.setenv('MEDCL_DATA_MIRROR', str(source))    # a fresh cache, filled from the verified copies
    log = tmp_path/'fetch.log'
    paths = _ok(run_ranks(_fetch_logged, tmp_path/'ranks', log, join=False))
    assert paths[0] == paths[1] and Path(paths[0]).is_file()
    calls = [json.loads(l) for l in log.read_text().splitlines()]
    first, others = [c for c in calls if c[0] == 0], [c for c in calls if c[0] == 1]
    assert first and others and not any(c[2] for c in first) and all(c[2] for c in others), calls   # rank 0 wrote, rank 1 read
    assert max(c[4] for c in first) <= min(c[3] for c in others), calls                                # after rank 0 had finished
