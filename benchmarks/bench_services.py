"""ReDiffuse through each service path against the in-process run, on the demo model.

    python benchmarks/bench_services.py [--limit 100] [--t 200] [--k 100] [--n 4]
                                        [--paths audit,hf,a1111,gradio,comfyui] [--json OUT]

The demo model (``builtin:digits-ddpm``, 16x16x1, T=1000) is served five ways, each a real
server in its own process on a loopback port, and audited by ``audit run`` with the same data
(``--limit`` members + ``--limit`` non-members of ``builtin:digits``) and the same ReDiffuse
params (``clip: true``: every remote image is 8-bit, so the in-process variations are clipped
too):

- ``audit``: ``audit serve`` (audit-variation/1) and ``target: {plugin: http}``;
- ``hf``: ``audit serve --protocol hf`` and ``protocol: hf``;
- ``a1111``: ``audit serve --protocol a1111`` and ``protocol: a1111``;
- ``gradio``: plugins/gradio/tests/gradio_app.py (a real Gradio app) and ``plugin: gradio``;
- ``comfyui``: plugins/http/tests/comfyui_stub.py (ComfyUI's documented API) and ``protocol: comfyui``.

Seeds reach every server exactly (63 bits) except Gradio's, whose numbers are floats: 53 bits
there, so its noise differs from the in-process run's and its AUC differs by sampling noise as
well as 8-bit rounding. Prints a Markdown table (AUC, |difference|, wall time, requests).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MODEL = "builtin:digits-ddpm"
SHAPE = {"image_size": 16, "channels": 1, "num_train_timesteps": 1000, "kind": "pixel"}


def start(cmd: list[str], log: Path) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    out = log.open("w")
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    deadline = time.monotonic() + 300
    while True:
        m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", log.read_text())
        if m:
            url = m.group(1)
            break
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"{cmd[:4]} did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.3)
    import httpx

    while True:  # Gradio prints its URL before it listens
        try:
            httpx.get(url, timeout=5)
            return proc, url
        except httpx.TransportError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{url} never answered:\n{log.read_text()[-2000:]}") from None
            time.sleep(0.3)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def serve_cmd(protocol: str) -> list[str]:
    audit = [str(BIN / "audit"), "serve", "--target", "ddim", "--model", MODEL, "--port", "0", "--device", "cpu"]
    return {
        "audit": audit,
        "hf": audit + ["--protocol", "hf"],
        "a1111": audit + ["--protocol", "a1111"],
        "gradio": [sys.executable, "plugins/gradio/tests/gradio_app.py", "--target", "ddim", "--model", MODEL],
        "comfyui": [sys.executable, "plugins/http/tests/comfyui_stub.py", "--target", "ddim", "--model", MODEL],
    }[protocol]


def target_for(path: str, url: str) -> dict:
    if path == "audit":
        return {"plugin": "http", "url": url, "concurrency": 4}
    if path == "hf":
        return {"plugin": "http", "protocol": "hf", "url": url, "seed_bits": 63, "concurrency": 4, **SHAPE}
    if path == "a1111":
        return {"plugin": "http", "protocol": "a1111", "url": url, "a1111_seed_bits": 63, "concurrency": 4, **SHAPE}
    if path == "comfyui":
        return {"plugin": "http", "protocol": "comfyui", "url": url, "seed_bits": 63, "poll_s": 0.02, "concurrency": 4, **SHAPE}
    return {"plugin": "gradio", "url": url, "api_name": "/img2img", "seed_bits": 53, "concurrency": 4,
            "inputs": ["{image}", "{strength}", "{total_steps}", "{seed}"], **SHAPE}


def run(name: str, target: dict, args, work: Path) -> tuple[dict, float]:
    cfg = {
        "run": {"name": name, "seed": 0, "device": "cpu", "batch_size": 50},
        "target": target,
        "data": {"members": "builtin:digits/members", "nonmembers": "builtin:digits/nonmembers", "limit": args.limit},
        "attacks": [{"plugin": "rediffuse", "params": {"t": args.t, "k": args.k, "n": args.n, "clip": True}}],
        "cache": {"enabled": False},
        "metrics": {"bootstrap": 200},
    }
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    t0 = time.perf_counter()
    proc = subprocess.run([str(BIN / "audit"), "run", str(path), "--output", str(work / name)], capture_output=True, text=True,
                          env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{name}: audit run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads((work / name / "results.json").read_text()), seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--t", type=int, default=200)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--paths", default="audit,hf,a1111,gradio,comfyui")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-services-"))
    rows = []
    local, local_s = run("in-process", {"plugin": "ddim", "model": MODEL}, args, work)
    auc0 = local["attacks"]["rediffuse"]["metrics"]["auc"]["value"]
    rows.append({"path": "in-process (ddim)", "auc": auc0, "diff": 0.0, "seconds": local_s, "requests": 0, "seeds": "-"})
    print(f"in-process: AUC {auc0:.4f} ({local_s:.0f} s)", flush=True)
    for path in args.paths.split(","):
        try:
            proc, url = start(serve_cmd(path), work / f"{path}.log")
            try:
                res, seconds = run(path, target_for(path, url), args, work)
            finally:
                stop(proc)
        except RuntimeError as exc:  # one path failing does not lose the others
            print(f"{path}: FAILED: {exc}", flush=True)
            continue
        auc = res["attacks"]["rediffuse"]["metrics"]["auc"]["value"]
        row = {"path": path, "auc": auc, "diff": abs(auc - auc0), "seconds": seconds, "requests": res["target"]["requests"],
               "seeds": res["target"]["seeds"].split(":")[0]}
        rows.append(row)
        print(f"{path}: AUC {auc:.4f} (|diff| {row['diff']:.4f}, {seconds:.0f} s, {row['requests']} requests)", flush=True)
    print(f"\n{args.limit}+{args.limit} images, ReDiffuse t={args.t} k={args.k} n={args.n} clip=true, demo model {MODEL}\n")
    print("| path | AUC | abs. difference | wall time (s) | requests | seeds |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['path']} | {r['auc']:.4f} | {r['diff']:.4f} | {r['seconds']:.0f} | {r['requests']} | {r['seeds']} |")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
