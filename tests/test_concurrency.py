"""Threads and processes: concurrent calls are bitwise equal to serial ones, threadpoolctl
limits are honoured, and children started with fork or spawn compute right and never hang.

* ``test_threads_stress``: 8 Python threads call every kernel concurrently, ``ROUNDS`` times,
  on shared read-only inputs with ``n_threads`` drawn from (None, 1, 2, 3, 4) per call, some
  into their own ``out=`` arrays; every result must equal the one-thread result computed
  beforehand, bit for bit.
* ``test_thread_pool_executor``: the same calls as tasks of a ThreadPoolExecutor.
* ``test_threadpool_limits_one_thread``: inside ``threadpool_limits(1, user_api="openmp")``
  fastxent resolves ``n_threads=None`` to 1, and only the calling thread accumulates CPU time
  during a long kernel (read from /proc/self/task/*/stat); with a limit of 2 a second thread
  does.
* ``test_fork_*``/``test_spawn``: multiprocessing children (fork after the parent ran OpenMP
  teams; spawn; forkserver) compute every kernel and send back results equal to the parent's;
  each child runs under a timeout (a hang fails the test instead of blocking the suite).
"""
import concurrent.futures
import multiprocessing
import os
import sys
import threading
import time

import numpy as np
import pytest

import fastxent
from fastxent import _validate

THREADS = 8
ROUNDS = 30
TIMEOUT = 120  # seconds, for joins and children

pytestmark = [
    pytest.mark.timeout(600),
    # Python >= 3.12 warns when a process with threads (OpenMP's pool counts) forks; forking
    # such a process is what these tests are about.
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]


def bitwise_equal(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return (a.dtype == b.dtype and a.shape == b.shape
            and np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes())


def _readonly(a):
    a = np.ascontiguousarray(a)
    a.flags.writeable = False
    return a


def make_inputs(seed=0):
    """Shared read-only inputs: small (serial) and large (parallel) cases, both dtypes."""
    rng = np.random.default_rng(seed)
    inputs = {}
    for dtype in (np.float32, np.float64):
        for tag, (n, c) in {"small": (37, 10), "blocks": (3000, 24),
                            "wide": (300, 400)}.items():
            x = (rng.standard_normal((n, c)) * 4).astype(dtype)
            x[::17, 3] = -np.inf
            key = f"{tag}-{np.dtype(dtype).name}"
            t = rng.integers(0, c, n)
            t[::5] = -100
            inputs[key] = {k: _readonly(v) for k, v in {
                "x": x, "y": fastxent.softmax(x), "ly": fastxent.log_softmax(x),
                "g": rng.standard_normal((n, c)).astype(dtype),
                "g_rows": rng.standard_normal(n).astype(dtype),
                "lse": fastxent.logsumexp(x), "t": t,
                "p": rng.dirichlet(np.ones(c), n).astype(dtype),
                "w": rng.random(c)}.items()}
    return inputs


def kernel_calls(a):
    """name -> function(n_threads, out) of the inputs ``a``; out is None or an array for
    the functions that take one."""
    x = a["x"]
    return {
        "logsumexp": lambda n, o: fastxent.logsumexp(x, n_threads=n),
        "logsumexp/axis0": lambda n, o: fastxent.logsumexp(x, axis=0, n_threads=n),
        "softmax": lambda n, o: fastxent.softmax(x, out=o, n_threads=n),
        "log_softmax": lambda n, o: fastxent.log_softmax(x, out=o, n_threads=n),
        "softmax/axis0": lambda n, o: fastxent.softmax(x, axis=0, n_threads=n),
        "softmax_backward": lambda n, o: fastxent.softmax_backward(a["g"], a["y"], out=o,
                                                                   n_threads=n),
        "log_softmax_backward": lambda n, o: fastxent.log_softmax_backward(
            a["g"], a["ly"], out=o, n_threads=n),
        "logsumexp_backward": lambda n, o: fastxent.logsumexp_backward(
            a["g_rows"], x, out=o, n_threads=n),
        "logsumexp_backward/lse": lambda n, o: fastxent.logsumexp_backward(
            a["g_rows"], x, lse=a["lse"], n_threads=n),
        "cross_entropy/index": lambda n, o: fastxent.cross_entropy(
            x, a["t"], weight=a["w"], label_smoothing=0.1, n_threads=n),
        "cross_entropy/prob/none": lambda n, o: fastxent.cross_entropy(
            x, a["p"], reduction="none", n_threads=n),
        "cross_entropy_with_grad/index": lambda n, o: fastxent.cross_entropy_with_grad(
            x, a["t"], reduction="sum", label_smoothing=0.2, out=o, n_threads=n),
        "cross_entropy_with_grad/prob": lambda n, o: fastxent.cross_entropy_with_grad(
            x, a["p"], weight=a["w"], out=o, n_threads=n),
    }


def _as_tuple(r):
    return r if isinstance(r, tuple) else (r,)


@pytest.fixture(scope="module")
def cases():
    """[(case name, call, serial result)] over every input set and kernel."""
    out = []
    for key, a in make_inputs().items():
        for name, call in kernel_calls(a).items():
            out.append((f"{key}:{name}", call, _as_tuple(call(1, None)), a["x"]))
    return out


N_THREADS = [None, 1, 2, 3, 4]


def _check(call, want, n, out):
    got = _as_tuple(call(n, out))
    return all(bitwise_equal(g, w) for g, w in zip(got, want))


def test_threads_stress(cases):
    """THREADS Python threads x ROUNDS rounds x every case, started together."""
    barrier = threading.Barrier(THREADS)
    failures, errors, counts = [], [], [0] * THREADS

    def worker(k):
        rng = np.random.default_rng(100 + k)
        try:
            barrier.wait(timeout=TIMEOUT)
            for _ in range(ROUNDS):
                for i in rng.permutation(len(cases)):
                    name, call, want, x = cases[i]
                    n = N_THREADS[rng.integers(len(N_THREADS))]
                    out = np.empty_like(x) if rng.random() < 0.3 else None
                    if not _check(call, want, n, out):
                        failures.append((k, name, n, out is not None))
                    counts[k] += 1
        except Exception as exc:  # reported below, with the thread
            errors.append((k, repr(exc)))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(THREADS)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join(TIMEOUT * 4)
    elapsed = time.perf_counter() - t0
    assert not any(th.is_alive() for th in threads), "a thread is stuck"
    assert not errors, errors
    assert not failures, f"{len(failures)} results differ from serial: {failures[:5]}"
    assert sum(counts) == THREADS * ROUNDS * len(cases)
    if os.environ.get("FASTXENT_CONCURRENCY_REPORT") == "1":
        print(f"\n{THREADS} threads x {ROUNDS} rounds x {len(cases)} cases = {sum(counts)} "
              f"calls in {elapsed:.1f} s")


def test_thread_pool_executor(cases):
    """Every case 4 times as tasks of an 8-worker ThreadPoolExecutor, mixed n_threads."""
    tasks = [(i, N_THREADS[(i + j) % len(N_THREADS)]) for i in range(len(cases))
             for j in range(4)]

    def task(i, n):
        name, call, want, _ = cases[i]
        return name, n, _check(call, want, n, None)

    with concurrent.futures.ThreadPoolExecutor(max_workers=THREADS) as pool:
        results = list(pool.map(lambda a: task(*a), tasks, timeout=TIMEOUT * 4))
    bad = [(name, n) for name, n, ok in results if not ok]
    assert not bad, bad
    assert len(results) == len(tasks)


def test_nested_executor_inside_kernel_threads():
    """A ThreadPoolExecutor whose tasks call fastxent with n_threads=2 while the main thread
    runs a parallel kernel of its own: no deadlock, right results."""
    x = np.random.default_rng(3).standard_normal((4000, 300))
    want = fastxent.softmax(x, n_threads=1)
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(fastxent.softmax, x, n_threads=2) for _ in range(8)]
        mine = fastxent.softmax(x, n_threads=2)
        results = [f.result(timeout=TIMEOUT) for f in futures]
    assert bitwise_equal(mine, want)
    assert all(bitwise_equal(r, want) for r in results)


# --------------------------------------------------------------------------- threadpoolctl

def _thread_cpu_ticks():
    """{thread id: user + system CPU ticks} of this process, from /proc/self/task."""
    ticks = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks[int(tid)] = int(fields[11]) + int(fields[12])  # utime, stime
        except (FileNotFoundError, ProcessLookupError):
            pass
    return ticks


def _busy_threads(run, seconds=0.4):
    """How many threads of this process did the work of ``run`` (repeated for about
    ``seconds`` seconds): those that got a quarter or more of the process's CPU time over
    that span. (A share of the CPU time, not of the wall time, so that a loaded machine
    does not change the count.)"""
    before = _thread_cpu_ticks()
    t0 = time.perf_counter()
    reps = 0
    while time.perf_counter() - t0 < seconds or reps < 2:
        run()
        reps += 1
    after = _thread_cpu_ticks()
    grown = [after[t] - before.get(t, 0) for t in after]
    total = sum(grown)
    assert total >= 10, f"only {total} clock ticks of CPU time measured: make the run longer"
    return sum(g >= total / 4 for g in grown), grown


@pytest.mark.skipif(not fastxent.openmp_enabled(), reason="built without OpenMP")
def test_threadpool_limits_one_thread():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if os.cpu_count() < 2:
        pytest.skip("needs 2 CPUs")
    x = np.random.default_rng(4).standard_normal((4000, 2000)).astype(np.float32)
    out = np.empty_like(x)
    run = lambda: fastxent.softmax(x, out=out)  # noqa: E731
    want = fastxent.softmax(x, n_threads=1)
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        assert _validate.resolve_n_threads(None, 10**7) == 1
        assert fastxent._dispatch.kernels.omp_max_threads() == 1
        info = [lib for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "openmp"]
        assert info and all(lib["num_threads"] == 1 for lib in info), info
        busy_1, ticks_1 = _busy_threads(run)
        assert bitwise_equal(out, want)
    with threadpoolctl.threadpool_limits(limits=2, user_api="openmp"):
        assert _validate.resolve_n_threads(None, 10**7) == 2
        busy_2, ticks_2 = _busy_threads(run)
        assert bitwise_equal(out, want)
    if os.environ.get("FASTXENT_CONCURRENCY_REPORT") == "1":
        print(f"\nlimit 1: {busy_1} busy thread(s), CPU ticks per thread "
              f"{sorted(ticks_1, reverse=True)[:4]}; limit 2: {busy_2}, "
              f"{sorted(ticks_2, reverse=True)[:4]}")
    assert busy_1 == 1, f"{busy_1} threads did the work under threadpool_limits(1): {ticks_1}"
    # The control: the same measurement sees two threads when two are allowed.
    assert busy_2 >= 2, f"only {busy_2} thread(s) busy under threadpool_limits(2): {ticks_2}"


def test_omp_num_threads_one_in_a_subprocess():
    """OMP_NUM_THREADS=1 in the environment: n_threads=None resolves to 1."""
    code = ("import fastxent; from fastxent import _validate; "
            "print(_validate.resolve_n_threads(None, 10**7))")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    import subprocess
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=TIMEOUT)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "1"


# --------------------------------------------------------------------------- processes

def _child_work(seed, queue):
    """In a child: every kernel on large inputs with n_threads None and 2; send back the
    results and what resolve_n_threads says."""
    try:
        a = make_inputs(seed)["wide-float64"]
        results = {name: [_as_tuple(call(n, None)) for n in (None, 2)]
                   for name, call in kernel_calls(a).items()}
        queue.put(("ok", os.getpid(), _validate.resolve_n_threads(None, 10**7), results))
    except BaseException as exc:  # sent to the parent
        queue.put(("error", os.getpid(), None, repr(exc)))


def _run_children(method, n_children=3, seed=0):
    ctx = multiprocessing.get_context(method)
    queue = ctx.Queue()
    procs = [ctx.Process(target=_child_work, args=(seed, queue)) for _ in range(n_children)]
    for p in procs:
        p.start()
    messages = []
    deadline = time.monotonic() + TIMEOUT
    try:
        for _ in procs:
            messages.append(queue.get(timeout=max(1.0, deadline - time.monotonic())))
    except Exception:
        pass
    for p in procs:
        p.join(max(1.0, deadline - time.monotonic()))
    hung = [p.pid for p in procs if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
    assert not hung, f"{method}: children {hung} hung (killed after {TIMEOUT} s)"
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    return messages


def _expected(seed=0):
    a = make_inputs(seed)["wide-float64"]
    return {name: _as_tuple(call(1, None)) for name, call in kernel_calls(a).items()}


def _check_messages(messages, want, n_children=3):
    assert len(messages) == n_children
    for status, pid, resolved, results in messages:
        assert status == "ok", results
        for name, per_n in results.items():
            for got in per_n:
                assert all(bitwise_equal(g, w) for g, w in zip(got, want[name])), (pid, name)
    return [m[2] for m in messages]


@pytest.mark.skipif(sys.platform != "linux", reason="fork semantics of Linux")
def test_fork_after_parent_used_threads():
    """The parent runs OpenMP teams (n_threads=2) first; forked children must not hang and
    must compute right: fastxent notices the fork and runs them serially."""
    x = np.random.default_rng(5).standard_normal((2000, 500))
    fastxent.softmax(x, n_threads=2)
    want = _expected()
    resolved = _check_messages(_run_children("fork"), want)
    assert resolved == [1, 1, 1], resolved  # serial in the children
    # and the parent still runs teams afterwards
    if fastxent.openmp_enabled():
        assert _validate.resolve_n_threads(2, 10**7) == 2
        assert bitwise_equal(fastxent.softmax(x, n_threads=2), fastxent.softmax(x, n_threads=1))


@pytest.mark.skipif(sys.platform != "linux", reason="fork semantics of Linux")
def test_fork_from_a_thread_while_kernels_run():
    """Fork while two other threads of the parent are inside parallel kernels."""
    x = np.random.default_rng(6).standard_normal((3000, 400))
    stop = threading.Event()

    def busy():
        while not stop.is_set():
            fastxent.softmax(x, n_threads=2)

    want = _expected()
    threads = [threading.Thread(target=busy) for _ in range(2)]
    for th in threads:
        th.start()
    try:
        time.sleep(0.05)
        messages = _run_children("fork", n_children=2)
    finally:
        stop.set()
        for th in threads:
            th.join(TIMEOUT)
    resolved = _check_messages(messages, want, n_children=2)
    assert resolved == [1, 1], resolved


def test_spawn():
    """Spawned children import fastxent afresh and may use threads."""
    want = _expected()
    resolved = _check_messages(_run_children("spawn", n_children=2), want, n_children=2)
    if fastxent.openmp_enabled():
        assert all(r == fastxent._dispatch.kernels.omp_max_threads() for r in resolved)


@pytest.mark.skipif(sys.platform != "linux", reason="forkserver is POSIX")
def test_forkserver():
    want = _expected()
    _check_messages(_run_children("forkserver", n_children=2), want, n_children=2)


@pytest.mark.skipif(sys.platform != "linux", reason="fork semantics of Linux")
def test_fork_pool_map():
    """A fork Pool (as data-loader workers): many small tasks, each a kernel call."""
    x = np.random.default_rng(7).standard_normal((2000, 300))
    fastxent.cross_entropy(x, np.zeros(2000, np.int64), n_threads=2)
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2) as pool:
        res = pool.map_async(_pool_task, range(16))
        got = res.get(timeout=TIMEOUT)
    want = [_pool_task(i) for i in range(16)]
    assert all(bitwise_equal(g, w) for g, w in zip(got, want))


def _pool_task(i):
    x = np.random.default_rng(i).standard_normal((1000, 200))
    return fastxent.cross_entropy_with_grad(x, np.arange(1000) % 200, n_threads=2)[1]


# --------------------------------------------------------------------------- findings

_FORK_AFTER_OTHER_OPENMP_USER = """
import os, sys, time
{prelude}
import numpy as np, fastxent
x = np.random.default_rng(0).standard_normal((2000, 500))
{parent_uses_openmp}
pid = os.fork()
if pid == 0:
    fastxent.softmax(x, n_threads=2)
    os._exit(0)
deadline = time.monotonic() + {timeout}
while time.monotonic() < deadline:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        sys.exit(0 if status == 0 else 3)
    time.sleep(0.05)
os.kill(pid, 9)
os.waitpid(pid, 0)
sys.exit(2)  # the child hung
"""


def _fork_after(prelude, parent_uses_openmp, timeout=5):
    import subprocess
    code = _FORK_AFTER_OTHER_OPENMP_USER.format(prelude=prelude, timeout=timeout,
                                                parent_uses_openmp=parent_uses_openmp)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=TIMEOUT).returncode


@pytest.mark.skipif(sys.platform != "linux" or not fastxent.openmp_enabled(),
                    reason="GNU OpenMP and fork")
def test_fork_after_another_openmp_user_kernel_direct():
    """The parent runs an OpenMP team through a path fastxent does not see (here its kernel
    module directly; in practice another extension sharing libgomp.so.1), then forks: the
    child's parallel fastxent calls would hang in GNU OpenMP; every forked child runs
    serially."""
    rc = _fork_after("", "fastxent._dispatch.kernels.softmax_rows(x, np.empty_like(x), 2)")
    assert rc == 0, "the child hung" if rc == 2 else f"exit code {rc}"


@pytest.mark.skipif(sys.platform != "linux" or not fastxent.openmp_enabled(),
                    reason="GNU OpenMP and fork")
def test_fork_after_torch_used_openmp():
    """The data-loader case: ``import torch`` (its bundled libgomp.so.1 becomes the process's
    one, fastxent's included), a parallel torch op in the parent, a forked worker calls
    fastxent: it must not hang (it runs serially)."""
    pytest.importorskip("torch")
    rc = _fork_after("import torch",
                     "t = torch.randn(2000, 2000); (t @ t).sum(); torch.softmax(t, 1).sum()")
    assert rc == 0, "the child hung" if rc == 2 else f"exit code {rc}"
