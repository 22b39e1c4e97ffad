"""``audit reference build``: a caption-matched reference set for copyright mode (and
``audit reference check``, the split-reference sanity check, lives in :mod:`audit_core.run.sanity`).

For each caption of a CSV (e.g. the suspects' manifest) it generates N images with a
text-to-image generator plugin (``register_generators``) that is not the audited model, and writes

    OUT/images/<row>-<j>.png     the images (row = the caption's row, j = 0..N-1)
    OUT/manifest.csv             path,caption,source_caption_id,generator  (for data.reference)
    OUT/reference.json           how and when the set was built (read back by the copyright report)

Image j of caption row i uses the seed ``derive_seed(seed, "reference", source_caption_id, j)``,
so a set is reproducible and independent of batching. Every image is written atomically (a
temporary file, then a rename); a build that is killed and run again with the same settings keeps
the images already written and generates only the rest. Generated images also go to the query
cache (keyed by generator identity, prompt and seed), so another build with the same generator
and captions costs nothing. Everything is validated before the generator is loaded.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import os
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..base.atomic import atomic_write
from ..base.errors import ConfigError, DataError
from ..plugin import factory

STATE = "reference.json"
MANIFEST = "manifest.csv"
IMAGES = "images"
COLUMNS = ("path", "caption", "source_caption_id", "generator")

app = typer.Typer(help="Build caption-matched reference sets for copyright mode.", no_args_is_help=True)


def read_captions(path: Path) -> list[tuple[str, str]]:
    """``(source_caption_id, caption)`` per row of a CSV with a ``caption`` column; the id is the
    ``id`` column, else ``path``, else the row number. Empty captions and repeated ids are errors."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or "caption" not in reader.fieldnames:
                raise DataError(f"--captions {path}: needs a header with a `caption` column (found: {', '.join(reader.fieldnames or []) or 'none'})")
            rows = list(reader)
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"--captions {path} cannot be read: {exc}") from None
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for n, row in enumerate(rows, 2):  # line 1 is the header
        caption = (row.get("caption") or "").strip()
        if not caption:
            raise DataError(f"--captions {path}, line {n}: the caption is empty (every row needs one to generate from)")
        cid = (row.get("id") or row.get("path") or str(n - 1)).strip()
        if cid in seen:
            raise DataError(f"--captions {path}, line {n}: the id {cid!r} repeats an earlier row")
        seen.add(cid)
        out.append((cid, caption))
    if not out:
        raise DataError(f"--captions {path}: no captions")
    return out


def build_generator(name: str, params: dict[str, Any], device: str):
    """The registered generator ``name`` with validated params (not yet loaded: no model work);
    create it with ``build_plugin("generators", gcls, gparams, device)``."""

    gcls = factory.lookup("generators", name, where="--generator")
    return gcls, factory.validate(gcls, factory.resolve_values(gcls, params), at=("--param",), label="--generator " + name)


def _cache_key(identity: str, prompt: str, seed: int) -> str:
    return hashlib.sha256(f"txt2img|{identity}|{seed}|{prompt}".encode()).hexdigest()


def _write_png(path: Path, image) -> None:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    atomic_write(path, buf.getvalue())


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, text)


def build(
    captions_csv: Path,
    generator: str,
    out: Path,
    per_caption: int = 1,
    seed: int = 0,
    params: dict[str, Any] | None = None,
    device: str = "auto",
    use_cache: bool = True,
    console=None,
) -> dict[str, Any]:
    """Build (or finish) the reference set in ``out``; returns the state written to reference.json
    plus ``generated_now`` and ``done_before`` counts."""
    from rich.console import Console

    from ..base import secrets, seeding
    from ..data import check_file

    console = console or Console(stderr=True)
    if per_caption < 1:
        raise ConfigError("--per-caption must be at least 1")
    rows = read_captions(captions_csv)
    gcls, gparams = build_generator(generator, dict(params or {}), device)
    secrets.register_config(gparams.model_dump())
    captions_sha = hashlib.sha256(json.dumps(rows).encode()).hexdigest()
    settings = {
        "generator": gcls.name,
        "params": secrets.redact(gparams.model_dump(mode="json")),
        "seed": int(seed),
        "per_caption": int(per_caption),
        "captions_sha256": captions_sha,
    }
    state_path = out / STATE
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    if state_path.exists():
        try:
            old = json.loads(state_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"--out {out}: {STATE} cannot be read ({exc}); use another --out") from None
        if {k: old.get(k) for k in settings} != settings:
            changed = ", ".join(k for k in settings if old.get(k) != settings[k])
            raise ConfigError(
                f"--out {out} holds a reference set built with other settings ({changed} differ). Use another "
                f"--out, or delete that folder to rebuild it."
            )
    elif out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out {out} is a non-empty folder that is not a reference set (no {STATE}); use an empty or new folder")
    jobs = [
        (i, j, cid, caption, seeding.derive_seed(seed, "reference", cid, j), f"{IMAGES}/{i:05d}-{j:02d}.png")
        for i, (cid, caption) in enumerate(rows)
        for j in range(per_caption)
    ]
    done = {rel for *_, rel in jobs if (out / rel).exists() and check_file(str(out / rel), 1 << 31) is None}
    todo = [job for job in jobs if job[5] not in done]
    (out / IMAGES).mkdir(parents=True, exist_ok=True)
    started = (json.loads(state_path.read_text())["started"] if state_path.exists() else None) or _now()
    gen = None
    described = None
    generated = cached = 0
    cache = None
    import numpy as np  # here, not at the top: every `audit` command (--help too) imports this module

    if use_cache:
        from ..data.cache import QueryCache

        cache = QueryCache()
    try:
        if todo:
            gen = factory.build("generators", gcls, gparams, device)
            identity, described = gen.identity(), gen.describe()
            _write_text(state_path, json.dumps({**settings, "identity_sha256": hashlib.sha256(identity.encode()).hexdigest(),
                                                 "describe": described, "started": started, "finished": None}, indent=2))
            with _progress(console) as progress:
                task = progress.add_task("generating", total=len(jobs), completed=len(jobs) - len(todo))
                step = max(1, gen.max_batch())
                for start in range(0, len(todo), step):
                    chunk = todo[start : start + step]
                    keys = [_cache_key(identity, job[3], job[4]) for job in chunk]
                    hit = [cache.get(k) if cache else None for k in keys]
                    missing = [n for n, h in enumerate(hit) if h is None]
                    fresh = gen.generate([chunk[n][3] for n in missing], [chunk[n][4] for n in missing]) if missing else []
                    images = {}
                    for n, img in zip(missing, fresh):
                        images[n] = img.convert("RGB")
                        if cache:
                            import torch

                            cache.put(keys[n], torch.from_numpy(np.asarray(images[n], dtype=np.uint8).copy()))
                    for n, h in enumerate(hit):
                        if h is not None:
                            from PIL import Image

                            images[n] = Image.fromarray(h.numpy().astype(np.uint8))
                    for n, job in enumerate(chunk):
                        _write_png(out / job[5], images[n])
                    generated += len(missing)
                    cached += len(chunk) - len(missing)
                    progress.update(task, advance=len(chunk))
        else:
            old = json.loads(state_path.read_text(encoding="utf-8")) if state_path.exists() else {}
            described = old.get("describe") or gcls.name
    finally:
        if gen is not None:
            gen.close()
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for _, _, cid, caption, _, rel in jobs:
        w.writerow([rel, caption, cid, described])
    _write_text(out / MANIFEST, buf.getvalue())
    state = {**settings, "describe": described, "started": started, "finished": _now(), "n_images": len(jobs),
             "captions_file": str(captions_csv)}
    old_state = json.loads(state_path.read_text(encoding="utf-8")) if state_path.exists() else {}
    if "identity_sha256" in old_state:
        state["identity_sha256"] = old_state["identity_sha256"]
    _write_text(state_path, json.dumps(state, indent=2))
    return {**state, "generated_now": generated, "from_cache": cached, "done_before": len(done)}


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _progress(console):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("ETA"), TimeRemainingColumn(), console=console,
        disable=not console.is_terminal and os.environ.get("AUDIT_PROGRESS") != "1",
    )


@app.command("build")
def build_cmd(
    captions: Annotated[Path, typer.Option("--captions", help="A CSV with a `caption` column (and optional `id` or `path`), e.g. the suspects' manifest.")],
    generator: Annotated[str, typer.Option("--generator", help="A registered text-to-image generator (see `audit plugins`), e.g. diffusers or a1111.")],
    out: Annotated[Path, typer.Option("--out", help="The folder to write (new, empty, or an unfinished build to continue).")],
    per_caption: Annotated[int, typer.Option("--per-caption", min=1, help="Images per caption.")] = 1,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the per-image seeds.")] = 0,
    model: Annotated[Optional[str], typer.Option("--model", help="Shorthand for --param model=PATH.")] = None,
    param: Annotated[list[str], typer.Option("--param", help="A generator param: KEY=VALUE (repeatable).")] = [],  # noqa: B006
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda[:N]")] = "auto",
    cache: Annotated[bool, typer.Option("--cache/--no-cache", help="Reuse and store generated images in the query cache.")] = True,
) -> None:
    """Generate N images per caption with a generator that is not the audited model, and write a
    manifest (path,caption,source_caption_id,generator) for `data.reference`."""
    from rich.console import Console

    from ..base.config import parse_value

    params: dict[str, Any] = {}
    for item in param:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--param {item!r}: expected KEY=VALUE")
        params[key.strip()] = parse_value(value)
    if model is not None:
        params["model"] = model
    console = Console(stderr=True)
    res = build(captions, generator, out, per_caption, seed, params, device, cache, console)
    console.print(
        f"{res['n_images']} reference image(s) in {out}: {res['done_before']} done earlier, "
        f"{res['generated_now']} generated now, {res['from_cache']} from the cache. "
        f"Use `data.reference: {out / MANIFEST}`.",
        highlight=False, soft_wrap=True,
    )


def register(cli: typer.Typer) -> None:
    cli.add_typer(app, name="reference")
