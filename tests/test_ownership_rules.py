"""The three safety rules that hand-made mutants showed no test exercised (issue 35), each tried
the way a bug would break it: the run directory's containment (``rundir``: manifests listing
``..``, absolute or linked paths), the query cache's foreign-folder check (``cache``: a folder
of dot-files only) and the changed-image hashes on resume (``store``: edit, resume, resume;
edit, resume, revert, resume). Fast (no model), so ``make mutate`` runs them per mutant."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from audit_core.data.cache import MARKER, QueryCache
from audit_core.base.errors import AuditError, ConfigError
from audit_core.run.rundir import MANIFEST, Manifest, check_run_dir, clear_run_dir, link_on_the_way, scrub_run_dir
from audit_core.run.store import RunStore
from audit_core import secrets

TOKEN = "tok-35a1b2c3d4e5f60718293a4b"


def write_manifest(run: Path, files: list[str]) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / MANIFEST).write_text(json.dumps({"format": "audit-run/1", "files": files}))
    (run / "state.sqlite").write_bytes(b"")


@pytest.fixture
def victim(tmp_path):
    """A user's file next to the run directory: nothing may touch it."""
    p = tmp_path / "victim.txt"
    p.write_text(f"precious {TOKEN}\n")
    return p


# --------------------------------------------------------------------------- rundir: containment
@pytest.mark.parametrize("entry", ["../victim.txt", "artifacts/../../victim.txt", "ABS", "..", ""])
def test_manifest_listing_a_path_outside_the_run_is_refused(tmp_path, victim, entry):
    """Planted bug: ``rundir._inside`` without its ``..`` check (or its absolute-path check):
    a manifest listing ``../victim.txt`` is accepted and ``--no-resume`` deletes the user's file
    next to the run folder. Now the manifest is refused and nothing is cleared."""
    run = tmp_path / "run"
    write_manifest(run, [str(victim) if entry == "ABS" else entry, "results.json"])
    (run / "results.json").write_text("{}")
    with pytest.raises(AuditError, match="not inside"):
        check_run_dir(run)
    with pytest.raises(AuditError, match="not inside"):
        Manifest.load(run)
    assert victim.read_text().startswith("precious") and (run / "results.json").exists()


@pytest.mark.parametrize("entry", ["../summary.md", "a/../../summary.md", "/tmp/summary.md", "..", ".", ""])
def test_manifest_add_never_lists_a_path_outside(tmp_path, entry):
    """Planted bug: ``_inside`` accepting ``..`` (or ``.``/empty): ``Manifest.add("../summary.md")``
    lists a file outside the run folder, which a later start-over would delete."""
    run = tmp_path / "run"
    run.mkdir()
    m = Manifest(run)
    m.add(entry, "scores.csv", run / "results.json")
    assert m.files == {"scores.csv", "results.json"}
    assert json.loads((run / MANIFEST).read_text())["files"] == ["results.json", "scores.csv"]
    m.add(tmp_path / "elsewhere.txt")  # absolute, outside: not the run's to list
    assert m.files == {"scores.csv", "results.json"}


def test_manifest_add_saves_only_when_something_new_is_listed(tmp_path):
    """Planted bug: the manifest not saved (or saved with a stale list) after ``add``."""
    run = tmp_path / "run"
    run.mkdir()
    m = Manifest(run)
    m.add()  # nothing to list, no manifest yet: one is written (an empty run directory is the run's)
    assert json.loads((run / MANIFEST).read_text()) == {"format": "audit-run/1", "files": []}
    m.add("a.txt")
    before = (run / MANIFEST).stat().st_mtime_ns
    os.utime(run / MANIFEST, ns=(1, 1))
    m.add("a.txt")  # already listed: not rewritten
    assert (run / MANIFEST).stat().st_mtime_ns == 1 != before
    assert Manifest.load(run).files == {"a.txt"}
    assert [p.name for p in Manifest.load(run).paths()] == ["a.txt"]


def test_manifest_entry_that_is_a_link_is_refused_and_its_target_untouched(tmp_path, victim):
    """Planted bug: links not checked: the scrub of a run whose ``summary.md`` is a link to the
    user's file rewrites that file (and a start-over would clear through it). Now refused."""
    run = tmp_path / "run"
    write_manifest(run, ["summary.md"])
    (run / "summary.md").symlink_to(victim)
    with pytest.raises(AuditError, match="symbolic link"):
        check_run_dir(run)
    assert victim.read_text() == f"precious {TOKEN}\n"


def test_run_dir_whose_artifacts_folder_is_a_link_is_refused_nothing_deleted(tmp_path):
    """Issue 34 (data loss): the manifest lists ``artifacts/a/x.png`` and ``artifacts/`` was
    replaced by a link to the user's folder: ``--no-resume`` deleted ``x.png`` there, through the
    link. Planted bug: ``refuse_links`` checking only the listed file, not the folders above it."""
    run, theirs = tmp_path / "run", tmp_path / "their-folder"
    (theirs / "a").mkdir(parents=True)
    (theirs / "a" / "x.png").write_bytes(b"png")
    write_manifest(run, ["artifacts/a/x.png", "results.json"])
    (run / "artifacts").symlink_to(theirs, target_is_directory=True)
    with pytest.raises(AuditError, match=r"symbolic link, .*artifacts"):
        check_run_dir(run)
    with pytest.raises(AuditError, match="symbolic link"):
        Manifest.load(run)
    # the last line of defence, should a link appear after the check: clearing never follows it
    clear_run_dir(Manifest(run, {"artifacts/a/x.png", "results.json"}))
    assert (theirs / "a" / "x.png").read_bytes() == b"png"


def test_legacy_run_dir_with_a_linked_artifacts_folder_is_refused(tmp_path):
    """A run directory from before manifests (no ``.audit-run.json``) with ``artifacts`` a link:
    adopting it would write and clear through the link. Planted bug: the legacy branch of
    ``check_run_dir`` not checking links."""
    run, theirs = tmp_path / "run", tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "x.png").write_bytes(b"png")
    run.mkdir()
    (run / "state.sqlite").write_bytes(b"")
    (run / "artifacts").symlink_to(theirs, target_is_directory=True)
    with pytest.raises(AuditError, match="symbolic link"):
        check_run_dir(run)
    with pytest.raises(AuditError, match="symbolic link"):
        Manifest.load(run)
    assert (theirs / "x.png").exists()


def test_link_on_the_way_finds_each_component(tmp_path):
    """Planted bugs in ``link_on_the_way``: looking only at the first component, or not at the
    file itself."""
    root = tmp_path / "r"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "f").write_text("x")
    assert link_on_the_way(root, "a/b/f") is None
    (root / "a" / "link").symlink_to(root / "a" / "b", target_is_directory=True)
    (root / "a" / "b" / "g").symlink_to(root / "a" / "b" / "f")
    assert link_on_the_way(root, "a/link/f") == root / "a" / "link"
    assert link_on_the_way(root, "a/b/g") == root / "a" / "b" / "g"
    assert link_on_the_way(root, "a/b/missing") is None


def test_clear_removes_only_listed_files_and_their_empty_folders(tmp_path):
    """Start-over removes the run's listed files and the folders they leave empty, keeps the
    manifest and lock, and leaves the user's files (planted bugs: clearing unlisted files,
    removing non-empty folders or the run folder itself, dropping the manifest)."""
    run = tmp_path / "run"
    (run / "artifacts" / "atk").mkdir(parents=True)
    (run / "artifacts" / "keep").mkdir(parents=True)
    for rel in ["results.json", "artifacts/atk/g.png", "artifacts/keep/r.png", "artifacts/keep/mine.txt", ".lock"]:
        (run / rel).write_text(rel)
    m = Manifest(run)
    m.add("results.json", "artifacts/atk/g.png", "artifacts/keep/r.png", ".lock", "never-written.txt")
    clear_run_dir(m)
    left = sorted(p.relative_to(run).as_posix() for p in run.rglob("*"))
    assert left == [".audit-run.json", ".lock", "artifacts", "artifacts/keep", "artifacts/keep/mine.txt"]
    assert json.loads((run / MANIFEST).read_text())["files"] == [".lock"]
    assert run.is_dir()


def test_scrub_rewrites_only_listed_files(tmp_path, victim):
    """The scrub touches the run's listed files only (planted bug: scrubbing the whole folder)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(f'{{"t": "{TOKEN}"}}')
    (run / "mine.txt").write_text(TOKEN)
    m = Manifest(run)
    m.add("results.json")
    secrets.register(TOKEN)
    try:
        changed, binary = scrub_run_dir(m)
    finally:
        secrets.forget_all()
    assert changed == [run / "results.json"] and binary == []
    assert TOKEN not in (run / "results.json").read_text() and (run / "mine.txt").read_text() == TOKEN


@pytest.mark.parametrize(
    "files, why",
    [
        ("not json", "damaged"),
        (json.dumps({"format": "audit-run/9", "files": []}), "damaged"),
        (json.dumps({"format": "audit-run/1", "files": [1]}), "damaged"),
        (json.dumps({"format": "audit-run/1"}), "damaged"),
        (json.dumps([]), "damaged"),
    ],
)
def test_damaged_manifest_is_refused(tmp_path, files, why):
    run = tmp_path / "run"
    run.mkdir()
    (run / MANIFEST).write_text(files)
    with pytest.raises(AuditError, match=why):
        check_run_dir(run)


def test_check_run_dir_accepts_new_empty_and_run_folders_refuses_others(tmp_path):
    """Planted bugs: a folder of user files taken for a run, or a file taken for a folder."""
    check_run_dir(tmp_path / "new")
    (tmp_path / "empty").mkdir()
    check_run_dir(tmp_path / "empty")
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "state.sqlite").write_bytes(b"")
    (legacy / "results.json").write_text("{}")
    check_run_dir(legacy)
    assert Manifest.load(legacy).files == {"state.sqlite", "results.json"}
    (legacy / "artifacts" / "a").mkdir(parents=True)
    (legacy / "artifacts" / "a" / "g.png").write_bytes(b"x")
    assert Manifest.load(legacy).files == {"state.sqlite", "results.json", "artifacts/a/g.png"}
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("x")
    (mine / "results.json").write_text("{}")
    with pytest.raises(AuditError, match=r"not a run directory .*thesis\.tex"):
        check_run_dir(mine)
    (tmp_path / "file").write_text("x")
    with pytest.raises(AuditError, match="not a folder"):
        check_run_dir(tmp_path / "file")
    assert Manifest.load(tmp_path / "nowhere").files == set()


# --------------------------------------------------------------------------- cache: foreign folders
@pytest.mark.parametrize(
    "layout",
    [
        {".bashrc": "x", ".git/HEAD": "ref"},
        {".bashrc": "x"},
        {".git/HEAD": "ref"},
        {".audit-tmp-zz.tmp/x": "a folder named like a temporary file"},
        {"ab/.hidden": "x"},
        {"ab/" + "cd" + "0" * 62 + ".qc": "entry in the wrong shard"},
        {"ab/" + "ab" + "0" * 62 + ".qc/x": "a folder named like an entry"},
        {"AB/x": "x"},
    ],
)
def test_a_folder_of_dot_files_or_odd_names_is_not_adopted_as_the_cache(tmp_path, layout):
    """Planted bug: ``cache.foreign_example`` skipping every dot-file: a folder holding only
    ``.bashrc`` and ``.git/`` (a home or project folder) was adopted as the cache, its marker
    and entries written into it. Now refused, nothing written; ``clear`` deletes nothing."""
    folder = tmp_path / "home"
    for rel, text in layout.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    before = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))
    with pytest.raises(ConfigError, match="not the audit query cache"):
        QueryCache(folder)
    with pytest.raises(ConfigError, match="not an audit query cache"):
        QueryCache(folder, create=False).clear()
    assert QueryCache(folder, create=False).trim(1) == 0
    assert not (folder / MARKER).exists()
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) == before


def test_cache_files_only_are_adopted(tmp_path):
    """An empty folder and a previous-version cache are adopted (the marker written); strict
    entry names in their shard and temporary files count as cache files."""
    folder = tmp_path / "old"
    key = "ab" + "1" * 62
    (folder / "ab").mkdir(parents=True)
    (folder / "ab" / f"{key}.npy").write_bytes(b"x")
    (folder / "ab" / f"{key}.qc").write_bytes(b"x")
    (folder / "ab" / ".abcdefgh.tmp").write_bytes(b"x")
    (folder / ".audit-tmp-abc.tmp").write_bytes(b"x")
    assert QueryCache(folder, create=False).foreign_example() is None
    QueryCache(folder)
    assert (folder / MARKER).is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    QueryCache(empty)
    assert (empty / MARKER).is_file()
    assert QueryCache(tmp_path / "missing", create=False).foreign_example() is None


# --------------------------------------------------------------------------- store: changed images
def test_changed_image_hashes_edit_resume_resume_and_revert(tmp_path):
    """Planted bug: ``store.rescore_changed`` storing the hash of new ids only: an edited image
    was reported as changed on every later resume, and after the user reverted the file, the
    scores computed on the edited image were kept silently. Each step here checks what the
    store says changed and that the kept scores belong to the file on disk."""
    store = RunStore(tmp_path)
    try:
        assert store.rescore_changed({"a": "h-a", "b": "h-b"}) == []  # first run: nothing to compare
        store.add_batch("atk", [("a", 0.1, 1, 1, None, None), ("b", 0.2, 1, 1, None, None)], 0.0)
        assert store.rescore_changed({"a": "h-a", "b": "h-b"}) == []  # unchanged resume keeps both
        assert set(store.scores("atk")) == {"a", "b"}
        # edit a -> resume: a is forgotten (scored again) and its new hash kept
        assert store.rescore_changed({"a": "h-a2", "b": "h-b"}) == ["a"]
        assert set(store.scores("atk")) == {"b"}
        store.add_batch("atk", [("a", 0.9, 1, 1, None, None)], 0.0)  # scored on the edited file
        assert store.image_hashes() == {"a": "h-a2", "b": "h-b"}
        # resume again without a change: nothing is reported, the edited file's score is kept
        assert store.rescore_changed({"a": "h-a2", "b": "h-b"}) == []
        assert store.scores("atk")["a"][0] == 0.9
        # revert a -> resume: the score made on the edited content must go
        assert store.rescore_changed({"a": "h-a", "b": "h-b"}) == ["a"]
        assert set(store.scores("atk")) == {"b"}
        assert store.image_hashes()["a"] == "h-a"
        # an image added later gets its hash too; None (no content hash) is never stored
        assert store.rescore_changed({"a": "h-a", "b": "h-b", "c": "h-c", "d": None}) == []
        assert store.image_hashes() == {"a": "h-a", "b": "h-b", "c": "h-c"}
    finally:
        store.close()


def test_forget_images_drops_scores_and_features_of_every_attack(tmp_path):
    import numpy as np

    store = RunStore(tmp_path)
    try:
        rows = [("a", 0.1, 1, 1, None, None), ("b", 0.2, 1, 1, None, None)]
        store.add_batch("x", rows, 0.0, features=np.array([[1.0], [2.0]]))
        store.add_batch("y", rows, 0.0)
        store.forget_images(["a"])
        assert set(store.scores("x")) == set(store.scores("y")) == {"b"}
        assert store.features("x") == {"b": [2.0]}
    finally:
        store.close()


# --------------------------------------------------------------------------- rundir: resume and placement
from audit_core.base.errors import ResumeError  # noqa: E402
from audit_core.run.rundir import (  # noqa: E402
    SETTINGS_KEY, check_placement, record_settings, resume_policy, settings_changed,
)


def saved_run(run: Path, fingerprint: str = "fp", finished: bool = False, rows: int = 1) -> None:
    run.mkdir(parents=True, exist_ok=True)
    store = RunStore(run)
    try:
        store.set_meta("fingerprint", fingerprint)
        if finished:
            store.set_meta("finished", "2026-01-01")
        if rows:
            store.add_batch("atk", [(f"i{n}", 0.5, 1, 1, None, None) for n in range(rows)], 0.0)
    finally:
        store.close()


def test_resume_policy_rules(tmp_path):
    """Every row of docs/reliability.md's resume table (planted bugs: a flipped condition, a
    missing refusal, discarding on an unchanged resume)."""
    assert resume_policy(tmp_path / "new", "fp", None, False).discard is False
    run = tmp_path / "run"
    saved_run(run)  # unfinished, fingerprint fp, 1 row
    with pytest.raises(ResumeError, match=r"unfinished run \(1 image score\(s\) saved\)"):
        resume_policy(run, "fp", None, False)
    assert resume_policy(run, "fp", True, False).discard is False  # --resume, unchanged
    assert resume_policy(run, "fp", False, False).discard is True  # --no-resume
    with pytest.raises(ResumeError, match="config changed since that run started"):
        resume_policy(run, "other", True, False)
    assert resume_policy(run, "other", True, True).discard is True  # --resume --force, changed
    assert resume_policy(run, "fp", True, True).discard is False  # --resume --force, unchanged
    done = tmp_path / "done"
    saved_run(done, finished=True)
    assert resume_policy(done, "fp", None, False).discard is True  # the same config again
    with pytest.raises(ResumeError, match="finished run of a different config"):
        resume_policy(done, "other", None, False)
    with pytest.raises(ResumeError, match="finished run of a different config"):
        resume_policy(done, "other", False, False)
    assert resume_policy(done, "other", None, True).discard is True
    empty = tmp_path / "empty-state"
    saved_run(empty, rows=0)  # a store without rows: no flag needed
    assert resume_policy(empty, "fp", None, False).discard is True
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "state.sqlite").write_bytes(b"not a database, " * 64)
    with pytest.raises(ResumeError, match="damaged"):
        resume_policy(damaged, "fp", True, False)
    assert resume_policy(damaged, "fp", False, False).discard is True  # --no-resume replaces it


def test_settings_the_stored_scores_depend_on(tmp_path):
    """``inference.stage2_factor`` / ``calibration_fraction`` on resume (planted bugs: the
    settings not merged, a missing key taken as a change, the comparison inverted)."""
    run = tmp_path / "run"
    assert settings_changed(run, {"inference.stage2_factor": 2}) is None  # no run yet
    saved_run(run)
    assert settings_changed(run, {"inference.stage2_factor": 2}) is None  # nothing recorded: an older run
    store = RunStore(run)
    try:
        record_settings(store, {"inference.stage2_factor": 2})
        record_settings(store, {"inference.calibration_fraction": 0.2})  # merged, not replaced
        assert store.get_meta(SETTINGS_KEY) == {"inference.stage2_factor": 2, "inference.calibration_fraction": 0.2}
        record_settings(store, {"inference.stage2_factor": 3})
        assert store.get_meta(SETTINGS_KEY) == {"inference.stage2_factor": 3, "inference.calibration_fraction": 0.2}
        record_settings(store, {"inference.stage2_factor": 2})
    finally:
        store.close()
    assert settings_changed(run, {}) is None
    assert settings_changed(run, {"inference.stage2_factor": 2, "inference.calibration_fraction": 0.2}) is None
    assert settings_changed(run, {"inference.stage2_factor": 3}) == ("inference.stage2_factor", 2, 3)
    assert settings_changed(run, {"inference.calibration_fraction": 0.4, "inference.stage2_factor": 2}) == (
        "inference.calibration_fraction", 0.2, 0.4)
    assert settings_changed(run, {"inference.other": 1}) is None


def test_placement_of_the_run_directory(tmp_path):
    """Planted bugs in ``check_placement``: the containment test inverted or dropped, the cache
    overlap checked one way only."""
    members, other = tmp_path / "members", tmp_path / "other"
    members.mkdir()
    other.mkdir()
    data = {"data.members": members, "data.missing": tmp_path / "nowhere"}
    check_placement(other / "run", data, None)
    check_placement(tmp_path / "run", data, tmp_path / "cache")
    for bad in (members, members / "run", members / "a" / "b"):
        with pytest.raises(AuditError, match=r"is inside data\.members"):
            check_placement(bad, data, None)
    check_placement(tmp_path / "members-run", data, None)  # a sibling with a common prefix is fine
    run = tmp_path / "run"
    for cache in (run, run / "cache", tmp_path):
        with pytest.raises(AuditError, match="cache.dir .* overlap"):
            check_placement(run, {}, cache)
    check_placement(run, {}, tmp_path / "run-cache")


def test_a_new_run_directory_must_be_creatable(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(AuditError, match=r"file\.txt is a file, not a folder"):
        check_run_dir(tmp_path / "file.txt" / "a" / "run")
    check_run_dir(tmp_path / "a" / "b" / "run")  # missing folders above are created later


# --------------------------------------------------------------------------- details the mutants showed
def test_manifest_file_format_and_relative_run_dirs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = Path("rel-run")
    run.mkdir()
    m = Manifest(run)
    m.add(run / "x.txt")  # relative, under the (relative) run directory
    m.add("y.txt")
    assert m.files == {"x.txt", "y.txt"}
    assert (run / MANIFEST).read_text() == json.dumps({"format": "audit-run/1", "files": ["x.txt", "y.txt"]}, indent=1) + "\n"


def test_check_run_dir_messages_and_legacy_rules(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    for name in ("a.txt", "b.txt", "c.txt", "d.txt", "results.json"):
        (mine / name).write_text("x")
    with pytest.raises(AuditError) as info:
        check_run_dir(mine)
    msg = str(info.value)
    assert "e.g. a.txt, b.txt, c.txt)" in msg and f"(e.g. {mine / 'audit-run'})" in msg
    legacy_plus = tmp_path / "legacy-plus"
    legacy_plus.mkdir()
    (legacy_plus / "state.sqlite").write_bytes(b"")
    (legacy_plus / "thesis.tex").write_text("x")
    with pytest.raises(AuditError, match=r"e\.g\. thesis\.tex\)"):
        check_run_dir(legacy_plus)
    # a link of the user's own, not where the run keeps its files, is no reason to refuse
    run = tmp_path / "run"
    write_manifest(run, ["results.json"])
    (run / "results.json").write_text("{}")
    (run / "my-link").symlink_to(tmp_path)
    check_run_dir(run)


def test_clear_goes_on_after_a_linked_entry(tmp_path):
    run, theirs = tmp_path / "run", tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "x").write_text("keep")
    run.mkdir()
    (run / "a-link").symlink_to(theirs, target_is_directory=True)
    (run / "b.txt").write_text("run's")
    clear_run_dir(Manifest(run, {"a-link/x", "b.txt"}))
    assert (theirs / "x").read_text() == "keep" and not (run / "b.txt").exists()


def test_cache_links_and_odd_entries_are_foreign(tmp_path):
    """Links named like cache files are not cache files (never followed), a file named like a
    shard is foreign, and a foreign file after the marker is still found."""
    key = "ab" + "2" * 62
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "f").write_text("x")
    cases = {
        "shard-link": lambda d: (d / "ab").symlink_to(target, target_is_directory=True),
        "entry-link": lambda d: ((d / "ab").mkdir(), (d / "ab" / f"{key}.qc").symlink_to(target / "f")),
        "tmp-link": lambda d: (d / ".audit-tmp-x.tmp").symlink_to(target / "f"),
        "shard-file": lambda d: (d / "ab").write_text("x"),
        "after-marker": lambda d: ((d / MARKER).write_text("{}"), (d / "zz-user.txt").write_text("x")),
    }
    for name, make in cases.items():
        d = tmp_path / name
        d.mkdir()
        make(d)
        assert QueryCache(d, create=False).foreign_example() is not None, name


def test_cache_folder_creation_clear_and_trim_ownership(tmp_path):
    import numpy as np

    from audit_core.data.cache import encode_entry

    nested = tmp_path / "a" / "b" / "cache"
    QueryCache(nested)  # missing parents are created
    assert (nested / MARKER).is_file()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="cache.dir: .*file is not a folder"):
        QueryCache(tmp_path / "file")
    with pytest.raises(ConfigError, match=r"cache\.dir: cannot create .*: Not a directory"):
        QueryCache(tmp_path / "file" / "sub")
    key = "ab" + "3" * 62

    def entry(folder):
        (folder / "ab").mkdir(parents=True, exist_ok=True)
        (folder / "ab" / f"{key}.qc").write_bytes(encode_entry(key, np.zeros(4, np.float32)))

    unmarked = tmp_path / "unmarked"  # cache files only: adopted by clear
    entry(unmarked)
    assert QueryCache(unmarked, create=False).clear() == 1 and (unmarked / MARKER).is_file()
    marked = tmp_path / "marked"
    QueryCache(marked)
    entry(marked)
    assert QueryCache(marked, create=False).clear() == 1
    foreign = tmp_path / "foreign"
    entry(foreign)
    (foreign / ".bashrc").write_text("x")
    assert QueryCache(foreign, create=False).trim(1) == 0  # not ours: nothing evicted
    assert (foreign / "ab" / f"{key}.qc").exists()
    assert QueryCache(tmp_path / "missing", create=False).clear() == 0
