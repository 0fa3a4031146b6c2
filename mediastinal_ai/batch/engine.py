"""The cohort runner: one pipeline definition, run sequentially or on Dask, resumable.

Output layout under ``--out``::

    cases/<case_id>/      complete outputs of one case; ``case.json`` (written last) records
                          status, fingerprint, results and provenance
    results.csv/.parquet  one row per case with a ``status`` column (ok / skipped / failed)
    summary.json          counts, failures by reason, timing
    .work/                in-progress case folders; wiped at the start of every run

A case folder only appears under ``cases/`` by an atomic rename of a finished work folder,
so a crash or ``kill -9`` can leave debris in ``.work/`` but never a half-written case that
a later run trusts. A case is skipped when ``cases/<id>/case.json`` exists with the same
fingerprint: sha256 of the input files' contents, the models' sha256, the parameters, the
steps and the package version.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import logging
import os
import shutil
import sys
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import Cancelled, InputError, MediastinalAIError
from ..fileio import atomic_write_json, provenance
from .discover import CaseSpec
from .steps import STEPS, CaseContext, order_steps, resolve_models

log = logging.getLogger(__name__)
CASE_RECORD = "case.json"


@dataclass
class RunConfig:
    steps: list[str]
    params: dict[str, Any] = field(default_factory=dict)  # models per task, threshold, device...
    workers: int = 0  # 0 = plain in-process loop; N = Dask LocalCluster with N workers
    scheduler: str | None = None  # tcp://host:port of an existing Dask scheduler
    force: bool = False


# ---------------------------------------------------------------------------- fingerprints
def _hash_path(h: Any, p: Path) -> None:
    if p.is_dir():
        for f in sorted(x for x in p.rglob("*") if x.is_file()):
            h.update(os.fsencode(f.relative_to(p)))  # bytes as on disk: a non-UTF-8 name hashes too
            _hash_path(h, f)
    elif p.is_file():
        with open(p, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
    else:
        h.update(b"<missing>")


def fingerprint(spec: CaseSpec, cfg: RunConfig, model_shas: dict[str, str]) -> str:
    from .. import __version__

    h = hashlib.sha256()
    h.update(json.dumps({"spec": spec.to_dict(), "steps": cfg.steps, "params": cfg.params,
                         "models": model_shas, "version": __version__}, sort_keys=True, default=str).encode())
    for p in (spec.ct, spec.mask):
        if p:
            _hash_path(h, Path(p))
    return h.hexdigest()


def read_case_record(out_dir: Path, case_id: str) -> dict[str, Any] | None:
    p = out_dir / "cases" / case_id / CASE_RECORD
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return None


# ---------------------------------------------------------------------------- one case
def process_case(spec_dict: dict[str, Any], out_dir: str, steps: list[str], params: dict[str, Any],
                 force: bool = False, model_shas: dict[str, str] | None = None, run_id: str = "") -> dict[str, Any]:
    """Run the steps for one case; never raises: returns a status row. Runs on Dask workers too."""
    spec = CaseSpec(**spec_dict)
    out = Path(out_dir)
    t0 = time.perf_counter()
    row: dict[str, Any] = {"case_id": spec.case_id, "status": "failed", "error": "", "error_type": "",
                           "seconds": 0.0, "steps": ",".join(steps), "synthetic": spec.synthetic}
    cfg = RunConfig(steps=steps, params=params, force=force)
    try:
        for plugin in params.get("plugins", []):  # steps registered by other layers (e.g. MRML 'scene')
            importlib.import_module(plugin)
        if spec.error:
            raise InputError(spec.error, spec.ct or None)
        shas = model_shas if model_shas is not None else {t: m.card.sha256 for t, m in resolve_models(steps, params).items()}
        fp = fingerprint(spec, cfg, shas)
        row["fingerprint"] = fp
        old = read_case_record(out, spec.case_id)
        if not force and old and old.get("fingerprint") == fp and old.get("status") == "ok" \
                and outputs_intact(out / "cases" / spec.case_id, old):
            row.update(old.get("results", {}))
            row.update(status="ok" if run_id and old.get("run_id") == run_id else "skipped", seconds=0.0)
            return row
        work = out / ".work" / f"{spec.case_id}.{uuid.uuid4().hex[:8]}"
        work.mkdir(parents=True)
        try:
            ctx = CaseContext(spec=spec, workdir=work, params=params)
            for i, name in enumerate(steps):
                _mark_running(out, spec.case_id, name, i, len(steps))
                STEPS[name].run(ctx)
            record = {"case_id": spec.case_id, "status": "ok", "fingerprint": fp, "steps": steps,
                      "results": ctx.results, "outputs": sorted(ctx.outputs), "labels": spec.labels,
                      "output_files": _output_hashes(work), "run_id": run_id,
                      "synthetic": spec.synthetic, "provenance": provenance(params=params, models=shas)}
            atomic_write_json(work / CASE_RECORD, record)
            _publish(work, out / "cases" / spec.case_id)
        finally:
            shutil.rmtree(work, ignore_errors=True)
            _mark_running(out, spec.case_id, None)
        row.update(ctx.results)
        row["status"] = "ok"
    except (MediastinalAIError, ValueError) as e:
        row.update(error=str(e), error_type=type(e).__name__)
    except Exception as e:  # noqa: BLE001 - per-case isolation: record and go on
        row.update(error=f"unexpected {type(e).__name__}: {e}", error_type=type(e).__name__)
        log.debug("case %s failed:\n%s", spec.case_id, traceback.format_exc())
    row["seconds"] = round(time.perf_counter() - t0, 3)
    return row


def _output_hashes(folder: Path) -> dict[str, dict[str, Any]]:
    """Size and sha256 of every file of a finished case (``case.json`` excluded: it holds them)."""
    from ..fileio import sha256_file

    return {str(f.relative_to(folder)): {"size": f.stat().st_size, "sha256": sha256_file(f)}
            for f in sorted(folder.rglob("*")) if f.is_file() and f.name != CASE_RECORD}


def outputs_intact(case_dir: Path, record: dict[str, Any]) -> bool:
    """True when every output the record lists exists with its recorded size and sha256.

    Why: resuming trusted ``case.json`` alone, so a wiped or edited output was skipped on every
    rerun; a case whose files do not match is computed again. Records without hashes (written
    by older versions) are not trusted.
    """
    from ..fileio import sha256_file

    files = record.get("output_files")
    if not isinstance(files, dict):
        return False
    for name in record.get("outputs", []):
        if name not in files:
            return False
    for rel, info in files.items():
        f = case_dir / rel
        try:
            if not f.is_file() or f.stat().st_size != info.get("size") or sha256_file(f) != info.get("sha256"):
                log.info("case %s: output %s missing or changed; recomputing", case_dir.name, rel)
                return False
        except OSError:
            return False
    return True


def _publish(work: Path, final: Path) -> None:
    """Swap a finished work folder into place; the old complete result, if any, goes only
    after the new one is in place, so a crash leaves one of the two, never a mixture."""
    final.parent.mkdir(parents=True, exist_ok=True)
    trash = None
    if final.exists():
        trash = work.parent / f"old-{final.name}.{uuid.uuid4().hex[:8]}"
        os.replace(final, trash)
    os.replace(work, final)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


# ---------------------------------------------------------------------------- running cases
def _running_dir(out: Path) -> Path:
    return out / ".work" / "running"


def _mark_running(out: Path, case_id: str, step: str | None, index: int = 0, n_steps: int = 0) -> None:
    """Record which step a case is in (``.work/running/<case>.json``; ``step=None`` clears it), so
    the run can show the running cases and their steps while a long step runs on a worker.
    Best effort: progress display must never fail a case."""
    p = _running_dir(out) / f"{case_id}.json"
    try:
        if step is None:
            p.unlink(missing_ok=True)
            return
        p.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(p, {"case_id": case_id, "step": step, "index": index + 1, "n_steps": n_steps,
                              "since": time.time()})
    except OSError:
        pass


def read_running(out: Path) -> list[dict[str, Any]]:
    """The cases running now: ``[{"case_id", "step", "index", "n_steps", "seconds"}]``, longest first."""
    items = []
    d = _running_dir(out)
    try:
        files = sorted(d.glob("*.json"))
    except OSError:
        return []
    now = time.time()
    for f in files:
        try:
            r = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        items.append({**r, "seconds": max(0.0, now - float(r.get("since", now)))})
    return sorted(items, key=lambda r: -r["seconds"])


def _running_text(items: list[dict[str, Any]]) -> str:
    return "; ".join(f"{r['case_id']} {r['step']} ({r['index']}/{r['n_steps']}, {r['seconds']:.0f}s)" for r in items)


# ---------------------------------------------------------------------------- the run
class _Progress:
    """A one-line bar with ETA and the running cases (and their steps) on a terminal, plain log
    lines otherwise: one per finished case, and one per case whose step has run for a minute
    (then every minute), so a long case never looks like a hang."""

    LONG_STEP_S = 60.0

    def __init__(self, total: int, stream: Any = None):
        import threading

        self.total, self.done, self.t0 = total, 0, time.perf_counter()
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._lock = threading.Lock()
        self._said: dict[tuple[str, str], float] = {}  # (case, step) -> seconds when last logged

    def running(self, items: list[dict[str, Any]]) -> None:
        """Show the running cases; called every few seconds from the run's ticker thread."""
        with self._lock:
            if self.done >= self.total:
                return
            if self.tty:
                el = time.perf_counter() - self.t0
                text = _running_text(items) or "-"
                self.stream.write(f"\r{self.done}/{self.total} done, elapsed {el:5.0f}s; running: {text[:90]:<90}")
                self.stream.flush()
                return
            for r in items:
                key = (r["case_id"], r["step"])
                last = self._said.get(key)
                if r["seconds"] >= self.LONG_STEP_S and (last is None or r["seconds"] - last >= self.LONG_STEP_S):
                    self._said[key] = r["seconds"]
                    log.info("%s: still in step %s (%d/%d) after %.0fs", r["case_id"], r["step"], r["index"],
                             r["n_steps"], r["seconds"])

    def update(self, row: dict[str, Any]) -> None:
        with self._lock:
            self._update(row)

    def _update(self, row: dict[str, Any]) -> None:
        self.done += 1
        el = time.perf_counter() - self.t0
        eta = el / self.done * (self.total - self.done)
        msg = f"{row['case_id']}: {row['status']}" + (f" ({row['error']})" if row.get("error") else "")
        if self.tty:
            width = 30
            filled = int(width * self.done / max(1, self.total))
            self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
                              f"elapsed {el:5.0f}s ETA {eta:5.0f}s  {msg[:60]:<60}")
            if self.done == self.total:
                self.stream.write("\n")
            self.stream.flush()
        else:
            log.info("[%d/%d] %s (elapsed %.0fs, ETA %.0fs)", self.done, self.total, msg, el, eta)


class _Busy(MediastinalAIError):
    """Another run holds the output folder's lock."""


@contextlib.contextmanager
def _run_lock(out: Path):
    """An OS-level exclusive lock on ``<out>/.lock`` for the whole run.

    Why: the old check-then-write pid file let two runs in together (15 of 30 races) and took
    another user's live run for stale. ``fcntl.flock`` is atomic and the kernel drops it when
    the holder dies (even by ``kill -9``), so there is no stale lock to guess about. The file
    keeps ``pid@host`` only for the message; it is never deleted (deleting it would let a
    third run lock a new file while a second still holds the old one).
    """
    import fcntl
    import socket

    lock = out / ".lock"
    writable = True
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:
        # another user's lock file (mode 0644): a read-only descriptor still takes part in flock,
        # so that user's live run is seen as live, never as stale
        writable = False
        try:
            fd = os.open(lock, os.O_RDONLY)
        except OSError as e:
            raise MediastinalAIError(f"cannot open the run lock {lock.name} ({e.strerror}); is --out writable "
                                     "by you?", out) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = ""
            with contextlib.suppress(OSError, UnicodeDecodeError):
                holder = os.pread(fd, 200, 0).decode().strip()
            raise _Busy(f"another batch ({holder or 'unknown process'}) is writing to this output "
                                     "folder; wait for it or use another --out", out) from None
        if writable:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()}@{socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the flock


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (SLURM, Kubernetes, systemd stop a job with it) ends a run like Ctrl-C: finished
    cases are kept, the tables are written, the rerun resumes."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):  # noqa: ARG001 - signal handler signature
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def run_cohort(cases: list[CaseSpec], out_dir: str | Path, cfg: RunConfig,
               on_result: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Run every case; returns status rows (also written to results.csv/.parquet + summary.json)."""
    out = Path(out_dir)
    from ..io.images import check_path_name

    check_path_name(out)  # SimpleITK aborts the process when it writes below a non-UTF-8 path
    steps = order_steps(cfg.steps)
    resolve_models(steps, cfg.params)  # a missing/tampered model fails before --out is even created
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _run_locked(cases, out, steps, cfg, on_result)
    except _Busy:
        raise  # another run holds --out: never touch it
    except BaseException:
        if created and not (out / "results.csv").exists():  # a run that wrote nothing leaves no empty --out
            shutil.rmtree(out, ignore_errors=True)
        raise


def _run_locked(cases: list[CaseSpec], out: Path, steps: list[str], cfg: RunConfig,
                on_result: Callable[[dict[str, Any]], None] | None) -> list[dict[str, Any]]:
    with _run_lock(out), _sigterm_as_interrupt():
        shutil.rmtree(out / ".work", ignore_errors=True)  # debris of killed runs is never trusted
        (out / ".work").mkdir()
        models = resolve_models(steps, cfg.params)  # fail fast on a missing/tampered model
        shas = {t: m.card.sha256 for t, m in models.items()}
        bar = _Progress(len(cases))
        run_id = uuid.uuid4().hex  # a case published by this very run (then re-asked by Dask) is "ok", not "skipped"
        rows: list[dict[str, Any]] = []

        def done(row: dict[str, Any]) -> None:
            rows.append(row)
            bar.update(row)
            if on_result:
                on_result(row)
            _write_results(out, rows, cfg, partial=True)

        t0 = time.perf_counter()
        stop_ticker = _start_ticker(out, bar)
        try:
            if cfg.workers <= 0 and not cfg.scheduler:
                for c in cases:
                    done(process_case(c.to_dict(), str(out), steps, cfg.params, cfg.force, shas, run_id))
            else:
                _run_dask(cases, out, steps, cfg, shas, done, run_id)
        except KeyboardInterrupt:
            log.warning("interrupted: %d of %d cases finished; rerun to resume", len(rows), len(cases))
            _write_results(out, rows, cfg, partial=True, seconds=time.perf_counter() - t0)
            raise Cancelled("batch interrupted; finished cases are kept, rerun to resume") from None
        finally:
            stop_ticker()
            shutil.rmtree(out / ".work", ignore_errors=True)
        order = {c.case_id: i for i, c in enumerate(cases)}
        rows.sort(key=lambda r: order.get(r["case_id"], 0))
        _write_results(out, rows, cfg, partial=False, seconds=time.perf_counter() - t0)
    return rows


def _start_ticker(out: Path, bar: _Progress, every_s: float = 2.0) -> Callable[[], None]:
    """A daemon thread showing the running cases every ``every_s``; returns its stop function."""
    import threading

    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(every_s):
            try:
                bar.running(read_running(out))
            except Exception:  # noqa: BLE001 - display only
                log.debug("progress ticker: %s", traceback.format_exc())

    t = threading.Thread(target=tick, name="mediastinal-ai-progress", daemon=True)
    t.start()

    def halt() -> None:
        stop.set()
        t.join(timeout=5)

    return halt


def _run_dask(cases, out, steps, cfg, shas, done, run_id: str = "") -> None:
    import dask
    from distributed import Client, as_completed

    # SpecCluster closes a worker's nanny for good when no worker of that name is back
    # ``distributed.deploy.lost-worker-timeout`` (15 s) after one was lost. With cases that kill
    # workers in a row (the reruns below) that check could fall inside a restart: the nanny was
    # closed, the cluster had no worker left and the run waited forever. The nanny restarts its
    # worker itself, so the cluster never needs to give up on it during a run.
    keep_nannies = dask.config.set({"distributed.deploy.lost-worker-timeout": "30 days"})
    quiet = None
    if not log.isEnabledFor(logging.DEBUG):
        # Dask logs a dying worker as ERRORs naming every case it held ("marked as failed"), even
        # those rerun and finished here; our rows say what happened, -v shows Dask's own view.
        quiet = logging.getLogger("distributed").level
        logging.getLogger("distributed").setLevel(logging.CRITICAL)
    if cfg.scheduler:
        client = Client(cfg.scheduler)
        cluster = None
    else:
        cluster = make_local_cluster(cfg.workers, out / ".work" / "dask")
        client = Client(cluster)
    try:
        def submit(c: CaseSpec):
            return client.submit(process_case, c.to_dict(), str(out.resolve()), steps, cfg.params, cfg.force, shas,
                                 run_id, key=f"case-{c.case_id}-{uuid.uuid4().hex[:6]}", pure=False)

        futures = {submit(c): c for c in cases}
        lost: list[CaseSpec] = []
        for fut in as_completed(list(futures)):
            spec = futures.pop(fut)
            try:
                done(fut.result())
            except Exception:  # noqa: BLE001 - its worker died (OOM, native crash): maybe this case, maybe another
                lost.append(spec)
                _mark_running(out, spec.case_id, None)  # a dead worker cannot clear it: no "still in step" ghost
            finally:
                # a finished case's row is ours now: released, Dask does not recompute it when a worker dies
                fut.release()
        # A dying worker takes every case queued on it along; run those again one at a time, so a
        # death now is the case's own: it is recorded as failed and the others still finish.
        for k, c in enumerate(lost):
            if cluster is not None:
                try:
                    client.wait_for_workers(1, timeout=300)
                except Exception as e:  # noqa: BLE001 - no worker came back: fail the rest, never wait forever
                    for rest in lost[k:]:
                        done(_worker_died_row(rest, steps, RuntimeError(f"no Dask worker could be started ({e})")))
                    break
            fut = submit(c)
            try:
                done(fut.result())
            except Exception as e:  # noqa: BLE001
                _mark_running(out, c.case_id, None)
                done(_worker_died_row(c, steps, e))
            finally:
                fut.release()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
        if quiet is not None:
            logging.getLogger("distributed").setLevel(quiet)
        keep_nannies.__exit__(None, None, None)


def _worker_died_row(spec: CaseSpec, steps: list[str], e: BaseException) -> dict[str, Any]:
    """The status row of a case whose worker process died (or whose task Dask gave up on)."""
    name = type(e).__name__
    if name == "KilledWorker":
        reason = ("the worker process died while running this case (out of memory or a crash in native "
                  "code); the other cases went on")
    else:
        reason = f"the case could not be run on its worker ({name}: {str(e)[:200]})"
    return {"case_id": spec.case_id, "status": "failed", "error": reason, "error_type": "WorkerDied",
            "seconds": 0.0, "steps": ",".join(steps), "synthetic": spec.synthetic}


# Worker thread budget. Dask's nanny already sets OMP/MKL/OpenBLAS to 1 thread per worker (kept: the
# setdefault below only fills what is missing), but ITK (SimpleITK filters, pyradiomics' resampling)
# defaulted to every core in every worker: N workers ran N x cores ITK threads. Now cores // workers.
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS")


def make_local_cluster(n_workers: int, local_dir: Path, worker_ttl: str | None = None):
    """A LocalCluster of single-threaded worker processes; with a GPU, one of them owns it.

    Workers write their scratch files under the run's ``.work`` folder, so nothing lands
    outside ``--out``. Dask's nanny gives workers ``MALLOC_TRIM_THRESHOLD_=65536`` so that
    they hand memory back to the OS; with torch's large, short-lived tensors that turns every
    allocation into fresh pages and made a case 1.6× slower on a worker than in process
    (measured: 10.2 s vs 6.3 s for three cases). Our workers keep glibc's default instead.
    """
    import dask
    from distributed import LocalCluster

    local_dir.mkdir(parents=True, exist_ok=True)
    gpu = _gpu_available()
    if gpu:
        log.info("GPU found: one Dask worker will use it, the others run on CPU")
    environ = {k: v for k, v in (dask.config.get("distributed.nanny.pre-spawn-environ", {}) or {}).items()
               if k != "MALLOC_TRIM_THRESHOLD_"}
    threads = str(max(1, (os.cpu_count() or 1) // max(1, n_workers)))
    for k in THREAD_ENV:  # the user's own setting wins
        environ.setdefault(k, os.environ.get(k) or threads)
    # allowed-failures 0: a case that kills its worker fails at once instead of killing three more;
    # temporary-directory: Dask's own scratch (spill, locks) stays under --out too.
    # worker-ttl None: Dask restarts a worker that has not sent a heartbeat for 5 minutes; a step that
    # holds the GIL longer (SimpleITK B-spline resampling, pyradiomics' C texture code at the paper
    # settings) stops the worker's heartbeats, so both workers of a 2-core run were restarted in
    # turn and 12 minutes gave 0 finished cases. A worker that really dies is still detected (its
    # process ends: the nanny and the scheduler's connection see it).
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ, "distributed.scheduler.allowed-failures": 0,
                          "temporary-directory": str(local_dir), "distributed.scheduler.worker-ttl": worker_ttl}):
        return LocalCluster(n_workers=max(1, n_workers), threads_per_worker=1, processes=True,
                            dashboard_address=None, local_directory=str(local_dir),
                            resources={"GPU": 1} if gpu else None, silence_logs=logging.WARNING)


def _gpu_available() -> bool:
    if "torch" not in sys.modules:
        # Don't import torch only to ask; CUDA_VISIBLE_DEVICES / nvidia-smi presence is enough of a hint.
        if not shutil.which("nvidia-smi"):
            return False
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


def _write_results(out: Path, rows: list[dict[str, Any]], cfg: RunConfig, partial: bool,
                   seconds: float | None = None) -> None:
    import pandas as pd

    from ..fileio import atomic_path

    df = pd.DataFrame(rows)
    if df.empty:
        df = pd.DataFrame(columns=["case_id", "status", "error"])
    lead = ["case_id", "status", "error", "error_type", "seconds"]
    df = df[[c for c in lead if c in df.columns] + [c for c in df.columns if c not in lead]]
    text = df.to_csv(index=False)
    with atomic_path(out / "results.csv") as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    if not partial:
        with contextlib.suppress(ImportError), atomic_path(out / "results.parquet") as tmp:
            df.astype({c: "string" for c in df.columns if df[c].dtype == object}).to_parquet(tmp, index=False)
    # summary.json after every case too, so it never disagrees with results.csv after a crash
    counts = df["status"].value_counts().to_dict() if len(df) else {}
    failures: dict[str, int] = {}
    for r in rows:
        if r["status"] == "failed":
            key = r.get("error_type") or "error"
            failures[key] = failures.get(key, 0) + 1
    atomic_write_json(out / "summary.json", {
        "complete": not partial, "cases": len(rows), "ok": counts.get("ok", 0), "skipped": counts.get("skipped", 0),
        "failed": counts.get("failed", 0), "failures_by_type": failures,
        "steps": cfg.steps, "workers": cfg.workers, "scheduler": cfg.scheduler,
        "seconds": round(seconds or 0.0, 2),
        # which results.csv this summary describes: two files cannot be replaced in one atomic step,
        # so a kill between the two writes is detectable (summary_matches_results) and healed on resume
        "results_csv_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        **provenance(params=cfg.params),
    })


def summary_matches_results(out: str | Path) -> bool:
    """Whether ``summary.json`` describes the ``results.csv`` beside it (False after a kill between
    their two writes, or when either is missing)."""
    out = Path(out)
    try:
        summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
        data = (out / "results.csv").read_bytes()
    except (OSError, ValueError):
        return False
    return summary.get("results_csv_sha256") == hashlib.sha256(data).hexdigest()
