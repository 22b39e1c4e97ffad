"""A third-party plugin author's mistakes (issue 34, the plugin author's path): each case, before
its fix, corrupted the run directory or misled the author."""

from __future__ import annotations

import json

import pytest

from audit_core import Executor, Reporter, build_local, execute_batch, write_text
from audit_core.testing import no_traceback, plugin_of


def _reporter_returning(value_of):
    class Sloppy(Reporter):
        name = "sloppy"

        def render(self, view):
            path = view.dir / "sloppy.txt"
            write_text(path, "x\n")
            return value_of(path)

    return plugin_of("reporters", Sloppy)


@pytest.mark.parametrize("value_of", [str, lambda p: p, lambda p: None], ids=["str", "path", "none"])
def test_a_reporter_returning_a_bare_path_fails_clearly_and_lists_no_junk_in_the_manifest(
    value_of, toy, audit_cli, register_plugin, tmp_path
):
    """`return str(path)` was read one character at a time: every character joined the run's
    manifest (so `--force` would later clear files named `t`, `m`, `p` ... in the run directory)
    and `Wrote t` was printed per character, exit 0."""
    register_plugin(_reporter_returning(value_of), name="sloppy-reporter")
    out = tmp_path / "run"
    code, output = audit_cli("run", toy(reports=[{"plugin": "sloppy"}]), "--output", out)
    flat = " ".join(output.split())
    assert code == 1, output
    assert "reporter 'sloppy' (registered in-process as 'sloppy-reporter') failed: TypeError: render() returned" in flat
    assert "it must return the list of the paths it wrote, e.g. [path]" in flat and no_traceback(output)
    listed = json.loads((out / ".audit-run.json").read_text())["files"]
    assert all(len(f) > 1 for f in listed), listed
    assert json.loads((out / "results.json").read_text())["attacks"]  # the results are kept


def test_a_reporter_returning_a_generator_still_works(toy, audit_cli, register_plugin, tmp_path):
    register_plugin(_reporter_returning(lambda p: (q for q in [p])), name="sloppy-reporter")
    out = tmp_path / "run"
    code, output = audit_cli("run", toy(reports=[{"plugin": "sloppy"}]), "--output", out)
    assert code == 0, output
    assert "sloppy.txt" in json.loads((out / ".audit-run.json").read_text())["files"]


def test_a_reporter_writing_outside_the_run_directory_is_a_plugin_bug(toy, audit_cli, register_plugin, tmp_path):
    """A file name param such as `../x.txt` made a reporter write beside the run directory; the
    run said nothing (the manifest left the file out, so nobody owned it)."""
    outside = tmp_path / "escaped.txt"
    register_plugin(_reporter_returning(lambda p: [p, write_outside(outside)]), name="sloppy-reporter")
    out = tmp_path / "run"
    code, output = audit_cli("run", toy(reports=[{"plugin": "sloppy"}]), "--output", out)
    flat = " ".join(output.split())
    assert code == 1 and no_traceback(output), output
    assert f"render() wrote {outside}, outside the run directory" in flat, flat
    assert "escaped.txt" not in (out / ".audit-run.json").read_text()
    assert outside.exists()  # not the run's file: never deleted by it


def write_outside(path):
    path.write_text("x\n")
    return path


def _executor(mode):
    class Sloppy(Executor):
        name = "sloppy"

        def run(self, job, batches):
            target, attack = job.local if job.local is not None else build_local(job)
            ctx = job.attack_context
            batches = list(batches)
            for batch in batches[:1] if mode == "drop" else batches:
                res = execute_batch(target, attack, batch, ctx["run_seed"], ctx["seed_key"], job.keep_maps)
                yield res.scores if mode == "raw" else res
            if mode == "raise":
                raise RuntimeError("executor bug")

    return plugin_of("executors", Sloppy)


@pytest.mark.parametrize(
    "mode, says",
    [
        ("drop", "returned no result for 10 of 12 images"),  # before: results on 2 images, or a traceback
        ("raw", "yielded a ndarray from run(). run() must yield the BatchResult that execute_batch returns"),
        ("raise", "failed in run(): RuntimeError: executor bug"),  # before: "internal error" and a traceback
    ],
)
def test_an_executor_bug_is_named_like_any_plugin_bug(mode, says, toy, audit_cli, register_plugin, tmp_path):
    register_plugin(_executor(mode), name="sloppy-executor")
    out = tmp_path / "run"
    code, output = audit_cli("run", toy(run={"executor": {"plugin": "sloppy"}}), "--output", out)
    flat = " ".join(output.split())
    assert code == 1, output
    assert "executor 'sloppy' (registered in-process as 'sloppy-executor')" in flat and says in flat, output
    assert "This is a bug in that plugin" in flat and no_traceback(output) and "internal error" not in flat
    assert not (out / "results.json").exists()  # no results from part of the data


def _dataset(mode):
    def load(subset, options):
        if mode == "raise":
            raise KeyError("loader bug")
        if mode == "none":
            return None
        return [{"id": f"{subset}/{i}"} for i in range(3)]

    return plugin_of("datasets", ("sloppy-data", load))


@pytest.mark.parametrize(
    "mode, says",
    [
        ("raise", "failed loading 'members': KeyError: 'loader bug'"),  # before: "internal error" and a traceback
        ("none", "returned NoneType for 'members'. A loader must return a list of ImageRecord."),
        ("dicts", "returned a list holding a dict for 'members'. A loader must return a list of ImageRecord."),
    ],
)
def test_a_dataset_loader_bug_is_named_like_any_plugin_bug(mode, says, toy, audit_cli, register_plugin, tmp_path):
    register_plugin(_dataset(mode), name="sloppy-dataset")
    out = tmp_path / "run"
    data = {"members": "builtin:sloppy-data/members", "nonmembers": "builtin:sloppy-data/nonmembers"}
    code, output = audit_cli("run", toy(data=data), "--output", out)
    flat = " ".join(output.split())
    assert code == 1, output
    assert "dataset 'sloppy-data' (registered in-process as 'sloppy-dataset')" in flat and says in flat, output
    assert "This is a bug in that plugin" in flat and no_traceback(output) and "internal error" not in flat
    assert not out.exists()


@pytest.mark.parametrize("cache", [False, True])
@pytest.mark.parametrize("wrong", ["one draw", "flat"])
def test_a_target_returning_variations_of_the_wrong_shape_is_named(wrong, cache, tmp_path):
    """`_variations` returning one draw per image instead of n was served as is (the attack
    averaged 1 draw where it asked for n, exit 0); [B * n, C, H, W] was blamed on the attack."""
    import torch

    from audit_core import PluginFailure
    from audit_core.data.cache import MemoryCache
    from audit_core.testing import ToyTarget, VariationOnlyTarget
    from audit_core.testing.toys import ToyParams

    class Sloppy(VariationOnlyTarget):
        name = "sloppy-variations"

        def _variations(self, x, t, k, seeds, captions, clip):
            out = ToyTarget._variations(self, x, t, k, seeds, captions, clip)
            return out[:, :1] if wrong == "one draw" else out.flatten(0, 1)

    target = Sloppy(ToyParams())
    if cache:
        target.cache = MemoryCache()
    x = torch.zeros(2, 1, 8, 8)
    with pytest.raises(PluginFailure, match=r"target 'sloppy-variations' .*returned shape \[.*\] from _variations\(\) for 2 image\(s\) x 3 seed\(s\).*\[2, 3, 1, 8, 8\]"):
        target.variation(x, 100, 50, [[1, 2, 3], [4, 5, 6]])


@pytest.mark.parametrize("wrong", ["shape", "numpy"])
def test_a_target_whose_eps_returns_the_wrong_thing_is_named_not_the_attack(wrong):
    """A grey-box target's `eps` of another shape failed inside the attack that called it
    (`attack 'pia' ... failed in score(): RuntimeError: The size of tensor a ...`, blaming a
    shipped attack for the target's bug)."""
    import torch

    from audit_core import PluginFailure
    from audit_core.testing import ToyTarget
    from audit_core.testing.toys import ToyParams

    class Sloppy(ToyTarget):
        name = "sloppy-eps"

        def eps(self, z_t, t, captions=None):
            out = super().eps(z_t, t, captions)
            return out[:, :, :4] if wrong == "shape" else out.numpy()

    target = Sloppy(ToyParams())
    with pytest.raises(PluginFailure, match=r"target 'sloppy-eps' .*returned .* from eps\(\) for an input of shape \[2, 1, 8, 8\]"):
        target.eps(torch.zeros(2, 1, 8, 8), 10)
