"""The wheel is a working tool: built from this checkout, installed into a fresh virtualenv outside it, its
``synthkd`` command generates rationales from a cwd outside the checkout, with the prompt template
shipped inside the package (and the accelerate configs are there too).

Offline: the wheel is built with this interpreter's setuptools (``--no-build-isolation --no-index``) and
installed with ``--no-deps --no-index``; the new virtualenv reaches the dependencies through a ``.pth``
line naming this interpreter's site-packages, which comes *after* its own site-packages, so ``synthkd``
is the installed copy (asserted) and the checkout is nowhere on its path.  The subprocesses run in the new
virtualenv, so tests/conftest.py's installed-copy guard (which checks this pytest process) is not involved.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import REPO, read_jsonl
from synthkd.templates import load_template

pytestmark = pytest.mark.slow

ANSWER = "There are 3 apples and 4 more come, 3 + 4 = 7. So the answer is 7."


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=240, **kw)
    assert p.returncode == 0, f"{cmd}\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}"
    return p


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A virtualenv outside the checkout with the wheel built from this checkout installed; its root."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        backend = tuple(int(x) for x in re.match(r"(\d+)\.(\d+)", version("setuptools")).groups())
    except PackageNotFoundError:
        backend = (0, 0)
    assert backend >= (70, 1), "the wheel is built offline with this interpreter's setuptools: install the [dev] extra"
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"  # build from a copy, so no build/ or *.egg-info is left in the checkout
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "synthkd", src / "synthkd", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = base / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", str(dist), str(src)], cwd=base)
    wheels = list(dist.glob("synthkd-*.whl"))
    assert len(wheels) == 1, wheels

    venv = base / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=base)
    py = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q",
          str(wheels[0])], cwd=base)
    purelib = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        cwd=base).stdout.strip())
    # the dependencies: this interpreter's site-packages, after the venv's own (only .pth *lines* are read
    # from there, not its .pth files, so an editable install of a checkout is not picked up)
    deps = [p for p in {*site.getsitepackages(), sysconfig.get_paths()["purelib"]} if Path(p).is_dir()]
    (purelib / "zz_test_deps.pth").write_text("".join(f"{p}\n" for p in sorted(deps)))
    return venv


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "PYTHON", "VIRTUAL_ENV"))}
    env["HOME"] = str(tmp_path / ".home")  # the autouse fixture's hermetic home/caches are inherited
    return env


def test_installed_wheel_generates_rationales_with_its_shipped_template(installed, tmp_path, make_server):
    prompts: list[str] = []

    def responder(endpoint: str, body: dict) -> str:
        prompts.append(body["messages"][-1]["content"] if "messages" in body else body["prompt"])
        return ANSWER

    server = make_server(responder=responder)
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    env = _env(tmp_path)
    py, exe = installed / "bin" / "python", installed / "bin" / "synthkd"

    where = json.loads(_run([str(py), "-c", "import json, synthkd, synthkd.templates as t; print(json.dumps("
                                            "[synthkd.__file__, [str(d) for d in t.prompt_dirs()]]))"],
                            cwd=cwd, env=env).stdout)
    site_pkgs = installed.resolve()
    assert Path(where[0]).resolve().is_relative_to(site_pkgs) and "site-packages" in where[0], where
    assert not Path(where[0]).resolve().is_relative_to(REPO), where
    assert len(where[1]) == 1 and Path(where[1][0]).resolve().is_relative_to(site_pkgs), where

    inp = cwd / "in.jsonl"
    inp.write_text("".join(json.dumps({"id": f"q{i}", "question": f"Tom has 3 apples and gets 4 more ({i}). How many?",
                                       "answer": 7}) + "\n" for i in range(3)))
    p = _run([str(exe), "generate", "rationales", "--kind", "math", "--input", "in.jsonl", "--output", "out.jsonl",
              "--teacher", "test-model", "--base-url", server.base_url, "--n-demos", "0", "--cache", "c.sqlite"],
             cwd=cwd, env=env)
    rows = read_jsonl(cwd / "out.jsonl")
    assert sorted(r["id"] for r in rows) == ["q0", "q1", "q2"], p.stderr  # written as they complete
    shipped = load_template("rationale/cot_math")  # this checkout's template: the wheel shipped the same text
    assert {(r["template"], r["template_sha"], r["answer"]) for r in rows} == {("rationale/cot_math", shipped.sha, 7)}
    assert len(prompts) == 3 and all(q.startswith("Answer the last question. Reason step by step") for q in prompts)

    # the accelerate configs are shipped too, and found from the installed package
    out = _run([str(py), "-m", "synthkd.assets", "accelerate", "ddp"], cwd=cwd, env=env).stdout.strip()
    assert Path(out).resolve().is_relative_to(site_pkgs) and Path(out).name == "ddp.yaml" and Path(out).is_file()
    assert "distributed_type: MULTI_GPU" in Path(out).read_text()
