"""A real MONAI Label server for the tests: its own virtualenv, a sample app around a bundle, a small client.

MONAI Label pins ``numpy<2`` and old DICOM packages, so it lives in its own virtualenv (``<repo>/.venv-monailabel``,
or ``$MONAI_CONTRASTIVE_MONAILABEL_VENV``) with this plugin installed in editable mode (a bundle's ``_target_`` paths
must resolve there). The virtualenv is created on first use when ``MONAI_CONTRASTIVE_MONAILABEL_INSTALL=1`` or
``CI=true``; otherwise :func:`monailabel_python` returns ``None`` and the tests skip.

:func:`monailabel_server` copies the ``monaibundle`` sample app shipped in the monailabel wheel (or another app folder,
e.g. the plugin's :data:`PLUGIN_APP` that serves regression bundles), puts the bundle(s) at ``<app>/model/<name>/``,
starts ``monailabel start_server`` on 127.0.0.1 in its own process group, waits for ``/info/`` and yields a
:class:`MonaiLabelClient`; the process group is always killed on exit.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Iterator

REPO_ROOT = Path(__file__).resolve().parents[1]

VENV_ENV = "MONAI_CONTRASTIVE_MONAILABEL_VENV"
INSTALL_ENV = "MONAI_CONTRASTIVE_MONAILABEL_INSTALL"
DEFAULT_VENV = REPO_ROOT / ".venv-monailabel"

MONAILABEL_VERSION = "0.8.5"
# pydicom_seg (a monailabel dependency) imports pydicom._storage_sopclass_uids, which pydicom 3 removed; the newest
# dicomweb-client and pynetdicom require pydicom 3.
MONAILABEL_PINS = (f"monailabel=={MONAILABEL_VERSION}", "pydicom<3", "dicomweb-client==0.59.1", "pynetdicom==2.0.2")

STAMP_NAME = ".monai_contrastive_stamp.json"
INSTALL_LOG_NAME = "monai_contrastive_install.log"
PIP_TIMEOUT = 3600
# disk the MONAI Label virtualenv takes beside the hard-linked torch (1.5 GB seen: monailabel, mlflow, sam2, ...)
MONAILABEL_VENV_GB = 2.5

# MONAI Label settings for a quiet, offline, local server (environment variables read by monailabel.config).
SERVER_ENV = {
    "MONAI_LABEL_DATASTORE_AUTO_RELOAD": "false",
    "MONAI_LABEL_AUTO_UPDATE_SCORING": "false",
    "MONAI_LABEL_TRACKING_ENABLED": "false",
}
DEFAULT_CONF = {"zoo_source": "github", "sam2": "false"}
# the plugin's MONAI Label app (regression bundles answer /infer with their values as JSON)
PLUGIN_APP = REPO_ROOT / "monai_contrastive" / "apps" / "monailabel"


# --------------------------------------------------------------------------------------------------- virtualenv


def monailabel_venv() -> Path:
    """The MONAI Label virtualenv folder (``$MONAI_CONTRASTIVE_MONAILABEL_VENV`` or ``<repo>/.venv-monailabel``)."""
    return Path(os.environ.get(VENV_ENV) or DEFAULT_VENV).expanduser().resolve()


def install_allowed() -> bool:
    """Whether :func:`monailabel_python` may create / update the virtualenv (``$..._INSTALL=1`` or ``CI=true``)."""
    return os.environ.get(INSTALL_ENV, "").strip() == "1" or os.environ.get("CI", "").strip().lower() == "true"


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _setup_cfg_hash() -> str:
    return hashlib.sha256((REPO_ROOT / "setup.cfg").read_bytes()).hexdigest()


def _wanted_stamp() -> dict:
    return {"pins": list(MONAILABEL_PINS), "plugin": str(REPO_ROOT), "setup_cfg_sha256": _setup_cfg_hash()}


def _read_stamp(venv: Path) -> dict:
    try:
        return json.loads((venv / STAMP_NAME).read_text())
    except (OSError, ValueError):
        return {}


def _write_stamp(venv: Path, stamp: dict) -> None:
    tmp = venv / (STAMP_NAME + ".tmp")
    tmp.write_text(json.dumps(stamp, indent=1))
    os.replace(tmp, venv / STAMP_NAME)


def _tail(path: Path, n: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _run_logged(cmd: list[str], log: Path, timeout: float = PIP_TIMEOUT) -> None:
    """Run ``cmd`` appending its output to ``log``; raise with the log tail when it fails."""
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(cmd)}\n")
        f.flush()
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        try:
            rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    if rc != 0:
        raise RuntimeError(f"MONAI Label virtualenv install step failed ({rc}): {' '.join(cmd)}\n{_tail(log)}")


@contextlib.contextmanager
def _install_lock(venv: Path) -> Iterator[None]:
    """An exclusive lock for the install (pytest-xdist workers may all ask at once)."""
    venv.mkdir(parents=True, exist_ok=True)
    with open(venv / ".monai_contrastive_install.lock", "w") as f:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            yield
            return
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def requirement_closure(name: str) -> list[importlib_metadata.Distribution]:
    """The installed distribution ``name`` and, recursively, its unconditional requirements (no extras)."""
    try:
        from packaging.requirements import Requirement
    except ImportError:  # pragma: no cover - packaging ships with pip's toolchain and setuptools
        Requirement = None
    seen: dict[str, importlib_metadata.Distribution] = {}
    done: set[tuple[str, str]] = set()
    todo: list[tuple[str, str]] = [(name, "")]  # (distribution, extra requested of it)
    while todo:
        raw, extra = todo.pop()
        n = re.sub(r"[-_.]+", "-", raw).lower()
        if (n, extra) in done:
            continue
        done.add((n, extra))
        try:
            dist = seen.get(n) or importlib_metadata.distribution(n)
        except importlib_metadata.PackageNotFoundError:
            continue
        seen[n] = dist
        for req in dist.requires or []:
            if Requirement is not None:
                r = Requirement(req)
                if r.marker is not None and not r.marker.evaluate({"extra": extra}):
                    continue
                todo.append((r.name, ""))
                todo.extend((r.name, e) for e in r.extras)
            elif "extra ==" not in req:
                todo.append((re.split(r"[ ;<>=!~\[(]", req, maxsplit=1)[0], ""))
    return list(seen.values())


def link_distribution(dist: importlib_metadata.Distribution, site_packages: Path) -> int:
    """Hard-link (or copy) the files of an installed distribution that live in its site-packages folder."""
    src_root = Path(dist.locate_file("")).resolve()
    n = 0
    for f in dist.files or []:
        src = Path(dist.locate_file(f)).resolve()
        try:
            rel = src.relative_to(src_root)
        except ValueError:
            continue
        if "__pycache__" in rel.parts or not src.is_file() or rel.parts[0] == "..":
            continue
        dst = site_packages / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.exists():
            continue
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
        n += 1
    return n


def link_from_here(python: Path, log: Path, packages: dict[str, str | None]) -> dict:
    """Hard-link this interpreter's installed ``packages`` (``{name: version or None}``) and their requirements into
    ``python``'s virtualenv.

    PyPI's torch (the CUDA build, with its NVIDIA libraries) is over 5 GB and itk 1.5 GB; a copy of each per test
    virtualenv filled CI's disk. The linked files are the ones pip installed here, with their ``.dist-info``, so pip in
    the new virtualenv counts them as installed and downloads nothing for them; what pip then installs and
    ``pip check`` still decide whether the set is consistent. A package is skipped when it is not installed here or
    its version differs from the one asked for. Returns ``{distribution: files linked}``.
    """
    site = _site_packages(python)
    linked: dict = {}
    for root, version in packages.items():
        try:
            here = importlib_metadata.version(root)
        except importlib_metadata.PackageNotFoundError:
            continue
        if version is not None and here != version:
            continue
        for dist in requirement_closure(root):
            name = dist.metadata["Name"]
            if name not in linked:
                linked[name] = link_distribution(dist, site)
    with open(log, "a") as f:
        f.write(f"\nlinked from {sys.prefix}: {linked}\n")
    return linked


def _site_packages(python: Path) -> Path:
    out = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(out.stdout.strip())


def check_free_disk(path: Path, needed_gb: float, what: str) -> None:
    """Raise ``RuntimeError`` naming ``what``, the folder and the free space when less than ``needed_gb`` is free."""
    path.mkdir(parents=True, exist_ok=True)
    free_gb = shutil.disk_usage(path).free / 1e9
    if free_gb < needed_gb:
        raise RuntimeError(
            f"not enough disk for {what} at {path}: {free_gb:.1f} GB free, about {needed_gb:.1f} GB needed"
            " (torch is hard-linked from the running virtualenv; free disk space or point the virtualenv elsewhere)"
        )


def install_monailabel_venv(venv: Path | None = None) -> Path:
    """Create or update the MONAI Label virtualenv (idempotent); return its python.

    Steps: ``python -m venv``; ``pip install`` of :data:`MONAILABEL_PINS` (again when the pins change); ``pip install
    -e <repo>`` (again when ``setup.cfg`` changes). A stamp file in the virtualenv records what was installed.
    """
    venv = venv or monailabel_venv()
    with _install_lock(venv):
        python = _venv_python(venv)
        stamp, wanted = _read_stamp(venv), _wanted_stamp()
        if stamp == wanted and python.exists():
            return python
        log = venv / INSTALL_LOG_NAME
        if not python.exists() or stamp.get("pins") != wanted["pins"]:
            check_free_disk(venv, MONAILABEL_VENV_GB, "the MONAI Label virtualenv")
        if not python.exists():
            stamp = {}
            _run_logged([sys.executable, "-m", "venv", str(venv)], log)
        if stamp.get("pins") != wanted["pins"]:
            link_from_here(python, log, {"torch": None, "torchvision": None, "itk": None})  # sam2: torchvision
            _run_logged([str(python), "-m", "pip", "install", *MONAILABEL_PINS], log)
            stamp = {"pins": wanted["pins"]}
            _write_stamp(venv, stamp)
        if stamp.get("plugin") != wanted["plugin"] or stamp.get("setup_cfg_sha256") != wanted["setup_cfg_sha256"]:
            _run_logged([str(python), "-m", "pip", "install", "-e", str(REPO_ROOT)], log)
        _write_stamp(venv, wanted)
        return python


def monailabel_python() -> str | None:
    """The python of the MONAI Label virtualenv, installing it first when allowed; ``None`` when not available.

    - allowed (``MONAI_CONTRASTIVE_MONAILABEL_INSTALL=1`` or ``CI=true``): create / update it (see
      :func:`install_monailabel_venv`); an install failure raises ``RuntimeError`` with the pip log tail;
    - not allowed: an existing virtualenv with monailabel in it is used as it is; otherwise ``None``.
    """
    venv = monailabel_venv()
    if install_allowed():
        return str(install_monailabel_venv(venv))
    python = _venv_python(venv)
    if python.exists() and (python.parent / "monailabel").exists():
        return str(python)
    return None


def skip_reason() -> str:
    """Why the MONAI Label tests skip when :func:`monailabel_python` is ``None``."""
    return (
        f"no MONAI Label virtualenv at {monailabel_venv()} (set {INSTALL_ENV}=1 or CI=true to create it on first use:"
        f" pip install {' '.join(repr(p) for p in MONAILABEL_PINS)} and the plugin in editable mode)"
    )


# --------------------------------------------------------------------------------------------------- client


class MonaiLabelError(RuntimeError):
    """A MONAI Label request failed; ``status`` is the HTTP status (``None`` when no answer came)."""

    def __init__(self, message: str, status: int | None = None, body: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class MonaiLabelClient:
    """A minimal client of a MONAI Label server at ``http://127.0.0.1:<port>`` (urllib only).

    ``app_dir`` and ``bundle_dir`` (the served copy of the bundle, where training writes ``models/model.pt``) are set
    by :func:`monailabel_server`.
    """

    def __init__(
        self,
        port: int,
        log_path: Path | None = None,
        timeout: float = 300,
        app_dir: Path | None = None,
        bundle_dir: Path | None = None,
    ) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.port = port
        self.log_path = log_path
        self.timeout = timeout
        self.app_dir = app_dir
        self.bundle_dir = bundle_dir

    def log_tail(self, n: int = 80) -> str:
        """The last ``n`` lines of the server log."""
        return _tail(self.log_path, n) if self.log_path else ""

    def request(
        self,
        method: str,
        path: str,
        query: dict | None = None,
        body: bytes | None = None,
        headers: dict | None = None,
        timeout: float | None = None,
    ) -> tuple[bytes, dict]:
        """One HTTP request; returns ``(body, headers)``; raises :class:`MonaiLabelError` on an error status."""
        url = self.base + path + ("?" + urllib.parse.urlencode(query) if query else "")
        req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as r:
                return r.read(), dict(r.headers.items())
        except urllib.error.HTTPError as e:
            text = e.read().decode(errors="replace")
            raise MonaiLabelError(
                f"{method} {url} -> {e.code}: {text[:2000]}\n--- server log ---\n{self.log_tail()}", e.code, text
            ) from None
        except (urllib.error.URLError, OSError) as e:
            raise MonaiLabelError(f"{method} {url} failed: {e}\n--- server log ---\n{self.log_tail()}") from None

    def info(self) -> dict:
        """``GET /info/``: the app's name, labels and models."""
        return json.loads(self.request("GET", "/info/")[0])

    def datastore(self) -> dict:
        """``GET /datastore/?output=all``: the images and their labels as MONAI Label sees them."""
        return json.loads(self.request("GET", "/datastore/", {"output": "all"})[0])

    def infer(
        self, model: str, image_id: str, params: dict | None = None, timeout: float | None = None
    ) -> tuple[bytes, dict]:
        """``POST /infer/<model>?image=<image_id>&output=image``: the label image file and the response headers."""
        body, content_type = _multipart({"params": json.dumps(params or {})})
        return self.request(
            "POST",
            f"/infer/{urllib.parse.quote(model)}",
            {"image": image_id, "output": "image"},
            body,
            {"Content-Type": content_type},
            timeout,
        )

    def infer_json(self, model: str, image_id: str, params: dict | None = None, timeout: float | None = None) -> dict:
        """``POST /infer/<model>?image=<image_id>&output=json``: the result JSON (e.g. a regression bundle's values)."""
        body, content_type = _multipart({"params": json.dumps(params or {})})
        return json.loads(
            self.request(
                "POST",
                f"/infer/{urllib.parse.quote(model)}",
                {"image": image_id, "output": "json"},
                body,
                {"Content-Type": content_type},
                timeout,
            )[0]
        )

    def train(self, model: str, params: dict | None = None, timeout: float | None = None) -> dict:
        """``POST /train/<model>?run_sync=true`` with ``params`` as the JSON body: the finished task's record."""
        return json.loads(
            self.request(
                "POST",
                f"/train/{urllib.parse.quote(model)}",
                {"run_sync": "true"},
                json.dumps(params or {}).encode(),
                {"Content-Type": "application/json"},
                timeout,
            )[0]
        )

    def train_status(self) -> dict | None:
        """``GET /train/``: the record of the latest background training task (``None`` when there is none)."""
        try:
            return json.loads(self.request("GET", "/train/")[0])
        except MonaiLabelError as e:
            if e.status == 404:  # "No Train Tasks Found"
                return None
            raise

    def train_background(
        self, model: str, params: dict | None = None, timeout: float | None = None, poll: float = 2.0
    ) -> dict:
        """``POST /train/<model>`` (a background subprocess of the server), then poll ``GET /train/`` until the task
        ends; returns its record (``status`` ``DONE`` or ``ERROR``, ``details``: the last lines of its output)."""
        task = json.loads(
            self.request(
                "POST",
                f"/train/{urllib.parse.quote(model)}",
                None,
                json.dumps(params or {}).encode(),
                {"Content-Type": "application/json"},
            )[0]
        )
        deadline = time.monotonic() + (timeout or self.timeout)
        while time.monotonic() < deadline:
            status = self.train_status()
            if status and status.get("id") == task.get("id") and status.get("status") not in ("SUBMITTED", "RUNNING"):
                return status
            time.sleep(poll)
        raise TimeoutError(f"training task {task.get('id')} did not end in time\n{self.log_tail()}")


def _multipart(fields: dict[str, str]) -> tuple[bytes, str]:
    """``multipart/form-data`` with text fields only."""
    boundary = "monai-contrastive-" + hashlib.md5(repr(sorted(fields.items())).encode()).hexdigest()
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n')
    parts.append(f"--{boundary}--\r\n")
    return "".join(parts).encode(), f"multipart/form-data; boundary={boundary}"


# --------------------------------------------------------------------------------------------------- server


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# where ``monailabel apps`` looks for the sample apps (monailabel/main.py, ``_get_installed_dir``): the wheel installs
# them as data files under ``<sys.prefix>/monailabel/sample-apps``, not inside the package
_SAMPLE_APPS_SCRIPT = """
import os, pathlib, sys, monailabel
root = pathlib.Path(monailabel.__file__).resolve().parent.parent
for d in (root, pathlib.Path(sys.prefix) / "monailabel", pathlib.Path(sys.prefix) / "local" / "monailabel",
          pathlib.Path.home() / ".local" / "monailabel"):
    if (d / "sample-apps").is_dir():
        print(d / "sample-apps")
        break
"""


def sample_app_dir(python: str, app: str = "monaibundle") -> Path:
    """The ``sample-apps/<app>`` folder installed with the virtualenv's monailabel."""
    out = subprocess.run([python, "-c", _SAMPLE_APPS_SCRIPT], capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"cannot import monailabel with {python}:\n{out.stderr[-3000:]}")
    if not out.stdout.strip():
        raise RuntimeError(f"no MONAI Label sample-apps folder found for {python}")
    path = Path(out.stdout.strip()) / app
    if not path.is_dir():
        raise RuntimeError(f"no sample app {app!r} at {path}")
    return path


def _kill_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the process group of ``proc``, then SIGKILL whatever is left after ``grace`` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        # the leader is gone; make sure no child (e.g. a training subprocess) lives on in the group
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        break


def _wait_ready(proc: subprocess.Popen, client: MonaiLabelClient, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"MONAI Label server exited ({proc.returncode}) before answering /info/\n{client.log_tail()}"
            )
        try:
            client.request("GET", "/info/", timeout=10)
        except MonaiLabelError:
            time.sleep(1.0)
            continue
        # the answer must come from this server (not from another one on the same port)
        if proc.poll() is None and f"127.0.0.1:{client.port}" in client.log_tail(10**6):
            return
        time.sleep(1.0)
    raise TimeoutError(f"MONAI Label server did not answer /info/ within {timeout:.0f} s\n{client.log_tail()}")


@contextlib.contextmanager
def monailabel_server(
    bundle_dir: str,
    studies_dir: str,
    bundle_name: str,
    tmp_path,
    port: int | None = None,
    extra_conf: dict | None = None,
    timeout: float = 300,
    env: dict | None = None,
    link_bundle: bool = False,
    python: str | None = None,
    app: str | os.PathLike | None = None,
    more_bundles: dict[str, str] | None = None,
) -> Iterator[MonaiLabelClient]:
    """A running MONAI Label server (``monaibundle`` sample app) serving ``bundle_dir`` as ``bundle_name``.

    Args:
        bundle_dir: the bundle folder (``configs/``, ``models/model.pt``); copied to ``<app>/model/<bundle_name>``
            (``link_bundle=True`` symlinks it instead, so training writes into the original).
        studies_dir: the datastore folder (images; labels under ``labels/final/``); MONAI Label writes its
            ``.datastore.json`` and submitted labels there.
        bundle_name: the model name in ``/info`` and the URLs.
        tmp_path: a writable folder; the server's files go to a new ``monailabel_*`` folder in it: ``app/`` (the
            sample app copy, with the bundle under ``app/model/``), ``server.log`` and ``sessions/``.
        port: the port on 127.0.0.1; a free one when ``None``.
        extra_conf: more ``--conf key value`` pairs (they override ``zoo_source=github``, ``sam2=false``).
        timeout: seconds to wait for ``/info/`` to answer (and the client's default request timeout).
        env: more environment variables for the server (e.g. ``MONAI_LABEL_DATASTORE_FILE_EXT``).
        python: the MONAI Label virtualenv's python; :func:`monailabel_python` when ``None``.
        app: the app folder to copy (default: the ``monaibundle`` sample app), e.g. :data:`PLUGIN_APP`.
        more_bundles: ``{name: bundle folder}`` served too (copied like ``bundle_dir``; ``--conf models`` lists all).

    Yields:
        a :class:`MonaiLabelClient`; the server's process group is killed on exit, whatever happens.
    """
    python = python or monailabel_python()
    if python is None:
        raise RuntimeError(skip_reason())
    tmp_path = Path(tmp_path)
    if not link_bundle and tmp_path.resolve().is_relative_to(Path(bundle_dir).resolve()):
        raise ValueError(f"tmp_path {tmp_path} lies inside the bundle {bundle_dir}, which is copied into it")
    tmp_path.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="monailabel_", dir=tmp_path))  # one per server: tmp_path may be reused
    app_dir = run_dir / "app"
    app_src = Path(app) if app is not None else sample_app_dir(python)
    shutil.copytree(app_src, app_dir, ignore=shutil.ignore_patterns("__pycache__", "logs", "model"))
    model_dir = app_dir / "model"
    model_dir.mkdir(exist_ok=True)
    target = model_dir / bundle_name
    if link_bundle:
        target.symlink_to(Path(bundle_dir).resolve(), target_is_directory=True)
    else:
        shutil.copytree(bundle_dir, target, ignore=shutil.ignore_patterns("__pycache__", "runs", "eval", ".cache"))
    for name, folder in (more_bundles or {}).items():
        shutil.copytree(
            folder, model_dir / name, ignore=shutil.ignore_patterns("__pycache__", "runs", "eval", ".cache")
        )
    models = ",".join([bundle_name, *(more_bundles or {})])

    conf = {"models": models, **DEFAULT_CONF, **{k: str(v) for k, v in (extra_conf or {}).items()}}
    bin_dir = Path(python).parent
    server_env = dict(os.environ)
    server_env.pop("PYTHONPATH", None)
    server_env.pop("PYTHONHOME", None)
    server_env.update(
        {"VIRTUAL_ENV": str(bin_dir.parent), "PATH": f"{bin_dir}{os.pathsep}{server_env.get('PATH', '')}"}
    )
    server_env.update(SERVER_ENV)
    server_env["MONAI_LABEL_SESSION_PATH"] = str(run_dir / "sessions")
    server_env.update({k: str(v) for k, v in (env or {}).items()})

    log_path = run_dir / "server.log"
    attempts = 1 if port else 3  # a picked free port may be taken before the server binds it
    for attempt in range(attempts):
        use_port = port or free_port()
        # ``python -m monailabel.main`` is what the ``monailabel`` bash wrapper runs (the wrapper also puts the folder
        # above the virtualenv on PYTHONPATH, which we do not want)
        cmd = [python, "-m", "monailabel.main", "start_server", "--app", str(app_dir), "--studies", str(studies_dir)]
        for key, value in conf.items():
            cmd += ["--conf", key, value]
        cmd += ["--host", "127.0.0.1", "--port", str(use_port)]
        with open(log_path, "a") as log:
            log.write(f"\n$ {' '.join(cmd)}\n")
            log.flush()
            proc = subprocess.Popen(
                cmd,
                cwd=str(app_dir),
                env=server_env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: killed as a whole
            )
        client = MonaiLabelClient(use_port, log_path, timeout, app_dir, target)
        try:
            try:
                _wait_ready(proc, client, timeout)
            except RuntimeError:
                if attempt + 1 < attempts and "address already in use" in client.log_tail(20).lower():
                    continue
                raise
            yield client
            return
        finally:
            _kill_group(proc)


def copy_studies(demo_dir, studies) -> list[str]:
    """Copy the first test and the first training volume of a synthetic CT demo folder (``imagesTs``/``labelsTs``,
    ``imagesTr``/``labelsTr``) into a MONAI Label studies folder, labels under ``labels/final``; return their ids."""
    import shutil
    from pathlib import Path

    demo_dir, studies = Path(demo_dir), Path(studies)
    (studies / "labels" / "final").mkdir(parents=True, exist_ok=True)
    ids = []
    for sub_img, sub_lab in [("imagesTs", "labelsTs"), ("imagesTr", "labelsTr")]:
        name = sorted(os.listdir(demo_dir / sub_img))[0]
        shutil.copy(demo_dir / sub_img / name, studies / name)
        shutil.copy(demo_dir / sub_lab / name, studies / "labels" / "final" / name)
        ids.append(name[: -len(".nii.gz")])
    return ids
