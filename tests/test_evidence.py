"""Evidence-grade runs: the attestation written with every run, `audit sign` and `audit verify`.

A real run (the ddim target on a copy of the shipped digits model, real PNG files, two attacks)
is attested, signed with real keys (Ed25519 and ECDSA P-256 PEM, as `openssl genpkey` writes
them) and verified; then each part is tampered with in a copy (one score, one byte of one
image, one model file, the config, the attestation, the signature, a report) and `audit verify`
must fail naming it. Also: key errors (exit 2, one line), --data-root, the metrics recomputed
from scores.csv, --rescore on an evaluation and a copyright run, and a resumed run's attestation
(every image exactly once, verifying like an uninterrupted run's)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import yaml

from audit_core.testing import no_traceback, write_images

MODEL = Path(__file__).resolve().parents[1] / "plugins" / "ddim" / "audit_ddim" / "demo" / "digits-ddpm"


def one_line(output: str) -> str:
    return " ".join(output.split())


def fails(output: str) -> list[str]:
    return [ln for ln in output.splitlines() if ln.startswith("FAIL")]


# --------------------------------------------------------------------------------- keys
def write_key(path: Path, kind: str = "ed25519", passphrase: bytes | None = None) -> tuple[Path, Path]:
    """A private key PEM (PKCS#8, like `openssl genpkey`) and its public key PEM."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    key = {
        "ed25519": lambda: ed25519.Ed25519PrivateKey.generate(),
        "p256": lambda: ec.generate_private_key(ec.SECP256R1()),
        "rsa": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    }[kind]()
    enc = serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc))
    pub = path.with_suffix(".pub.pem")
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return path, pub


# --------------------------------------------------------------------------------- one real run
def make_world(root: Path, mode: str = "evaluation") -> dict:
    """Images, a copy of the digits model and a config (relative paths, as a user writes them)."""
    shutil.copytree(MODEL, root / "model")
    groups = ("members", "nonmembers") if mode == "evaluation" else ("suspects", "reference")
    for seed, g in enumerate(groups, 1):
        write_images(root / "data" / g, 6, size=16, seed=seed)
    cfg = {
        "run": {"name": "evidence", "seed": 0, "device": "cpu", "batch_size": 4},
        "target": {"plugin": "ddim", "model": "model"},
        "data": {g: f"data/{g}" for g in groups},
        "attacks": [
            {"plugin": "naive-loss", "params": {"t": 200}},
            {"plugin": "rediffuse", "params": {"t": 100, "k": 50, "n": 2, "distance": "l2"}},
        ],
        "cache": {"enabled": False},
        "metrics": {"bootstrap": 20},
        "reports": [{"plugin": "html-report"}, {"plugin": "markdown-report"}, {"plugin": "evidence-report"}],
    }
    if mode == "copyright":
        cfg["inference"] = {"alpha": 0.05, "permutations": 99}
    (root / "audit.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return {"root": root, "config": root / "audit.yaml", "run": root / "run"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from audit_core.testing import invoke

    w = make_world(tmp_path_factory.mktemp("evidence"))
    code, out = invoke(["run", str(w["config"]), "--output", str(w["run"])])
    assert code == 0, out
    keys = tmp_path_factory.mktemp("keys")
    w["ed"], w["ed_pub"] = write_key(keys / "ed.pem")
    w["ec"], w["ec_pub"] = write_key(keys / "ec.pem", "p256")
    return w


@pytest.fixture
def clone(world, tmp_path):
    """A copy of the whole world (data, model, run directory) to tamper with; verify it with
    ``--data-root`` and ``--model-root`` pointing into the copy."""
    shutil.copytree(world["root"], tmp_path / "w")
    c = dict(world, root=tmp_path / "w", run=tmp_path / "w" / "run")
    c["maps"] = ["--data-root", str(tmp_path / "w" / "data"), "--model-root", str(tmp_path / "w" / "model")]
    return c


def attestation(run: Path) -> dict:
    return json.loads((run / "attestation.intoto.json").read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------- the attestation
def test_every_run_is_attested_with_its_inputs_and_outputs(world):
    att = attestation(world["run"])
    assert att["_type"] == "https://in-toto.io/Statement/v1"
    assert att["predicateType"] == "urn:audit-core:predicate:run:v1"
    names = {s["name"] for s in att["subject"]}
    assert {"results.json", "scores.csv", "config.resolved.yaml"} <= names
    assert not names & {"report.html", "state.sqlite", "attestation.intoto.json"}
    pred = att["predicate"]
    images = pred["inputs"]["data"]["images"]
    assert sorted(i["id"] for i in images) == sorted(f"{g}/img{i:04d}.png" for g in ("members", "nonmembers") for i in range(6))
    import hashlib

    for i in images:  # the recorded hash is the file's
        assert i["sha256"] == hashlib.sha256((Path(pred["inputs"]["data"]["root"]) / i["path"]).read_bytes()).hexdigest()
    files = {f["path"] for f in pred["inputs"]["model"]["files"]}
    assert "unet/diffusion_pytorch_model.safetensors" in files and "scheduler/scheduler_config.json" in files
    assert pred["software"]["packages"]["torch"] and pred["seeds"]["run_seed"] == 0
    assert set(pred["metrics"]) == {"naive-loss", "rediffuse"}
    rep = json.loads((world["run"] / "reports.intoto.json").read_text())
    assert {s["name"] for s in rep["subject"]} == {"report.html", "summary.md", "evidence.html", "evidence.md"}
    assert rep["predicate"]["attestation"]["digest"]["sha256"] == hashlib.sha256((world["run"] / "attestation.intoto.json").read_bytes()).hexdigest()
    listed = json.loads((world["run"] / ".audit-run.json").read_text())["files"]
    assert {"attestation.intoto.json", "reports.intoto.json"} <= set(listed)


def test_untouched_run_verifies_and_rescores_bit_for_bit(world, audit_cli):
    code, out = audit_cli("verify", world["run"], "--rescore", "5")
    assert code == 0, out
    assert "rescore: naive-loss: 5 score(s) equal scores.csv bit for bit" in out
    assert "rescore: rediffuse: 5 score(s) equal scores.csv bit for bit" in out
    assert "5 image(s) drawn with seed 0" in out and not fails(out)


def test_rescore_catches_a_score_that_the_model_does_not_give(clone, audit_cli):
    """A forged score that is internally consistent (results.json and the attestation re-made to
    match it) is caught only by scoring the image again."""
    from audit_core.cli.verify import draw_ids

    run = clone["run"]
    pred = attestation(run)["predicate"]
    target = draw_ids([i["id"] for i in pred["inputs"]["data"]["images"]], 1, 0)[0]
    rows = list(csv.DictReader((run / "scores.csv").open()))
    for r in rows:
        if r["attack"] == "naive-loss" and r["image_id"] == target:
            r["score"] = repr(float(r["score"]) * 1.5)
    with (run / "scores.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    reattest(run)
    code, out = audit_cli("verify", run, *clone["maps"], "--rescore", "1")
    assert code == 1
    assert any(f"rescore: naive-loss / image {target}: scored" in ln for ln in fails(out)), out


def reattest(run: Path) -> None:
    """What a forger without the key could do: recompute the subjects' digests."""
    from audit_core.run.attest import sha256_file

    att = attestation(run)
    for s in att["subject"]:
        s["digest"]["sha256"] = sha256_file(run / s["name"])
    (run / "attestation.intoto.json").write_text(json.dumps(att, indent=1) + "\n", encoding="utf-8")
    (run / "reports.intoto.json").unlink()


def test_metrics_are_recomputed_from_scores_csv(clone, audit_cli):
    run = clone["run"]
    res = json.loads((run / "results.json").read_text())
    res["attacks"]["rediffuse"]["metrics"]["auc"]["value"] = 0.99
    (run / "results.json").write_text(json.dumps(res), encoding="utf-8")
    reattest(run)  # the subject now matches: only the recomputation can tell
    code, out = audit_cli("verify", run, *clone["maps"])
    assert code == 1
    assert any("results.json: attacks.rediffuse.metrics.auc.value is 0.99, scores.csv gives" in ln for ln in fails(out)), out


# --------------------------------------------------------------------------------- tampering
def flip_byte(path: Path, at: int = -10) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def test_one_score_changed_in_scores_csv(clone, audit_cli):
    p = clone["run"] / "scores.csv"
    text = p.read_text()
    first = text.splitlines()[1]
    score = first.split(",")[4]
    p.write_text(text.replace(first, first.replace(score, repr(float(score) + 1e-9)), 1))
    code, out = audit_cli("verify", clone["run"], *clone["maps"])
    assert code == 1 and no_traceback(out)
    assert "FAIL  scores.csv: sha256 differs from attestation.intoto.json (changed after the run)" in out


def test_one_byte_of_one_suspect_image(clone, audit_cli):
    img = clone["root"] / "data" / "members" / "img0003.png"
    flip_byte(img)
    code, out = audit_cli("verify", clone["run"], *clone["maps"])
    assert code == 1
    assert fails(out) == [f"FAIL  image members/img0003.png: {img}: sha256 differs from the attestation"]


def test_one_model_file(clone, audit_cli):
    weights = clone["root"] / "model" / "unet" / "diffusion_pytorch_model.safetensors"
    flip_byte(weights)
    code, out = audit_cli("verify", clone["run"], *clone["maps"])
    assert code == 1
    assert fails(out) == [f"FAIL  model file {weights}: sha256 differs from the attestation"]


def test_the_config(clone, audit_cli):
    p = clone["run"] / "config.resolved.yaml"
    p.write_text(p.read_text().replace("seed: 0", "seed: 1"))
    code, out = audit_cli("verify", clone["run"], *clone["maps"])
    assert code == 1
    assert "FAIL  config.resolved.yaml: sha256 differs from attestation.intoto.json (changed after the run)" in out


def test_a_report(clone, audit_cli):
    p = clone["run"] / "evidence.md"
    p.write_text(p.read_text().replace("Evidence", "No evidence", 1))
    code, out = audit_cli("verify", clone["run"], *clone["maps"])
    assert code == 1
    assert fails(out) == ["FAIL  evidence.md: sha256 differs from reports.intoto.json (changed after the run)"]


def test_moved_data_fails_until_mapped_with_data_root(world, tmp_path, audit_cli):
    shutil.copytree(world["run"], tmp_path / "run")  # the run directory alone travels; the data moved
    shutil.copytree(world["root"] / "data", tmp_path / "elsewhere")
    code, out = audit_cli("verify", tmp_path / "run", "--data-root", tmp_path / "nowhere")
    assert code == 2 and "--data-root" in one_line(out)
    shutil.move(world["root"] / "data", tmp_path / "parked")
    try:
        code, out = audit_cli("verify", tmp_path / "run")
        assert code == 1 and len(fails(out)) == 12 and "map the data with --data-root DIR" in out
        code, out = audit_cli("verify", tmp_path / "run", "--data-root", tmp_path / "elsewhere")
        assert code == 0, out
    finally:
        shutil.move(tmp_path / "parked", world["root"] / "data")


# --------------------------------------------------------------------------------- signing
def test_sign_then_verify_with_either_key_type(clone, audit_cli):
    from audit_core.base.signing import fingerprint, load_public_key

    run = clone["run"]
    for key, pub in ((clone["ec"], clone["ec_pub"]), (clone["ed"], clone["ed_pub"])):
        code, out = audit_cli("sign", run, "--key", key)
        assert code == 0, out
        fpr = fingerprint(load_public_key(pub))
        code, out = audit_cli("verify", run, "--key", pub, *clone["maps"])
        assert code == 0, out
        assert f"attestation.intoto.json: signature by {fpr} verifies" in out
        assert f"reports.intoto.json: signature by {fpr} verifies" in out
    # the reports were re-rendered to show the signer
    for name in ("report.html", "summary.md", "evidence.html", "evidence.md"):
        text = (run / name).read_text()
        assert fpr in text and "audit verify" in text and "--key PUBLIC_KEY.pem" in text, name
    import hashlib

    digest = hashlib.sha256((run / "attestation.intoto.json").read_bytes()).hexdigest()
    assert digest in (run / "report.html").read_text() and digest in (run / "evidence.md").read_text()


@pytest.fixture
def signed(clone, audit_cli):
    code, out = audit_cli("sign", clone["run"], "--key", clone["ed"])
    assert code == 0, out
    return clone


def test_wrong_key(signed, audit_cli):
    code, out = audit_cli("verify", signed["run"], "--key", signed["ec_pub"], *signed["maps"])
    assert code == 1
    assert len(fails(out)) == 2 and all("not by the key" in ln and str(signed["ec_pub"]) in ln for ln in fails(out))


def test_the_attestation_edited_after_signing(signed, audit_cli):
    p = signed["run"] / "attestation.intoto.json"
    att = json.loads(p.read_text())
    att["predicate"]["inputs"]["data"]["images"][0]["sha256"] = "0" * 64
    p.write_text(json.dumps(att, indent=1) + "\n")
    code, out = audit_cli("verify", signed["run"], "--key", signed["ed_pub"], *signed["maps"])
    assert code == 1
    assert "FAIL  attestation.intoto.json: differs from the statement signed in signatures.intoto.jsonl (changed after signing)" in out
    # without the key the mismatch with the signed bytes still shows
    code, out = audit_cli("verify", signed["run"], *signed["maps"])
    assert code == 1 and "changed after signing" in out


def test_the_signature(signed, audit_cli):
    import base64

    p = signed["run"] / "signatures.intoto.jsonl"
    envs = [json.loads(ln) for ln in p.read_text().splitlines()]
    sig = bytearray(base64.b64decode(envs[0]["signatures"][0]["sig"]))
    sig[5] ^= 0x01
    envs[0]["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    p.write_text("".join(json.dumps(e) + "\n" for e in envs))
    code, out = audit_cli("verify", signed["run"], "--key", signed["ed_pub"], *signed["maps"])
    assert code == 1
    assert fails(out) == [
        f"FAIL  signatures.intoto.jsonl: the signature over attestation.intoto.json does not verify with {signed['ed_pub']} "
        f"({_fpr(signed['ed_pub'])})"
    ]


def _fpr(pub: Path) -> str:
    from audit_core.base.signing import fingerprint, load_public_key

    return fingerprint(load_public_key(pub))


def test_unsigned_run_with_a_key_fails_naming_the_missing_signature(clone, audit_cli):
    code, out = audit_cli("verify", clone["run"], "--key", clone["ed_pub"], *clone["maps"])
    assert code == 1 and fails(out)[0].startswith("FAIL  signatures.intoto.jsonl: missing (the run is not signed")


def test_sign_refuses_a_run_that_no_longer_matches(clone, audit_cli):
    flip_byte(clone["run"] / "results.json", 3)
    code, out = audit_cli("sign", clone["run"], "--key", clone["ed"])
    assert code == 2 and no_traceback(out) and "results.json does not match attestation.intoto.json" in one_line(out)
    assert not (clone["run"] / "signatures.intoto.jsonl").exists()


def test_key_problems_exit_2_with_one_line(clone, audit_cli, tmp_path, monkeypatch):
    enc, _ = write_key(tmp_path / "enc.pem", passphrase=b"correct horse")
    rsa, _ = write_key(tmp_path / "rsa.pem", "rsa")
    (tmp_path / "junk.pem").write_text("not a key\n")
    cases = [
        (["sign", "--key", tmp_path / "missing.pem"], "missing.pem: no such file"),
        (["sign", "--key", tmp_path / "junk.pem"], "junk.pem: not a PEM key"),
        (["sign", "--key", enc], "enc.pem: encrypted; give its passphrase in an environment variable with --passphrase-env VAR"),
        (["sign", "--key", enc, "--passphrase-env", "AUDIT_TEST_PASS"], "the passphrase in $AUDIT_TEST_PASS does not decrypt it"),
        (["sign", "--key", enc, "--passphrase-env", "AUDIT_TEST_UNSET"], "AUDIT_TEST_UNSET: the environment variable is not set"),
        (["sign", "--key", clone["ed_pub"]], "a public key; `audit sign` needs the private key"),
        (["sign", "--key", rsa], "only ECDSA P-256 or Ed25519 keys are supported"),
        (["verify", "--key", clone["ed"]], "a private key; give the public key"),
    ]
    monkeypatch.setenv("AUDIT_TEST_PASS", "wrong")
    monkeypatch.delenv("AUDIT_TEST_UNSET", raising=False)
    for args, want in cases:
        code, out = audit_cli(args[0], clone["run"], *args[1:])
        assert code == 2, (args, out)
        assert no_traceback(out) and out.count("Error:") == 1 and want in one_line(out), (args, out)
    assert not (clone["run"] / "signatures.intoto.jsonl").exists()
    monkeypatch.setenv("AUDIT_TEST_PASS", "correct horse")
    code, out = audit_cli("sign", clone["run"], "--key", enc, "--passphrase-env", "AUDIT_TEST_PASS")
    assert code == 0, out


# --------------------------------------------------------------------------------- copyright mode
def test_copyright_run_verifies_and_rescores(tmp_path, audit_cli):
    w = make_world(tmp_path / "cr", mode="copyright")
    code, out = audit_cli("run", w["config"], "--output", w["run"])
    assert code == 0, out
    pred = attestation(w["run"])["predicate"]
    assert pred["conclusion"]["mode"] == "copyright" and "p_value" in pred["conclusion"]
    assert set(pred["inputs"]["data"]["groups"]) == {"suspects", "reference"}
    code, out = audit_cli("verify", w["run"], "--rescore", "5")
    assert code == 0, out
    assert "rescore: rediffuse: 5 score(s) equal scores.csv bit for bit" in out
    ev = (w["run"] / "evidence.md").read_text()
    for g in ("suspects", "reference"):
        assert pred["inputs"]["data"]["groups"][g]["digest"] in ev
    assert "Were the 6 suspect images used to train model?" in ev


# --------------------------------------------------------------------------------- resume
def test_resumed_run_attests_every_image_once_and_verifies(toy, audit_cli, tmp_path, monkeypatch):
    from audit_core.base.errors import Interrupted
    from audit_core.run.store import RunStore

    cfg = toy()
    ref = tmp_path / "ref"
    assert audit_cli("run", cfg, "--output", ref)[0] == 0
    real_add = RunStore.add_batch
    calls = {"n": 0}

    def interrupted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise Interrupted()
        return real_add(self, *args, **kwargs)

    monkeypatch.setattr(RunStore, "add_batch", interrupted)
    out = tmp_path / "run"
    code, output = audit_cli("run", cfg, "--output", out)
    assert code == 130, output
    assert not (out / "attestation.intoto.json").exists()
    monkeypatch.setattr(RunStore, "add_batch", real_add)
    code, output = audit_cli("run", cfg, "--output", out, "--resume")
    assert code == 0, output
    a, b = attestation(ref)["predicate"], attestation(out)["predicate"]
    ids = [i["id"] for i in b["inputs"]["data"]["images"]]
    assert len(ids) == len(set(ids)) == 12
    assert b["inputs"]["data"]["images"] == a["inputs"]["data"]["images"]
    assert b["inputs"]["data"]["groups"] == a["inputs"]["data"]["groups"]
    assert b["metrics"] == a["metrics"]
    code, output = audit_cli("verify", out, "--rescore", "4")
    assert code == 0, output
    assert not fails(output)


def test_image_replaced_during_the_run_stops_it(toy, audit_cli, tmp_path, monkeypatch):
    """The bytes decoded for scoring are hashed on the way: a file replaced after the run read it
    at start would make the attestation name bytes that were not scored, so the run stops."""
    from audit_core import runner as runner_mod

    cfg = toy()
    real = runner_mod.Runner._score_all

    def swap_then_score(self, store):  # another valid image in its place, after the start hashes
        write_images(tmp_path / "other", 1, seed=99)
        shutil.copy(tmp_path / "other" / "img0000.png", toy.members / "img0002.png")
        return real(self, store)

    monkeypatch.setattr(runner_mod.Runner, "_score_all", swap_then_score)
    code, out = audit_cli("run", cfg, "--output", tmp_path / "run")
    assert code == 2 and no_traceback(out)
    assert "image members/img0002.png" in one_line(out) and "changed on disk during the run" in one_line(out)
