"""Journal, scheduler, forwarder back-off, routing rules and settings: in-process, no network."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from sgf_deploy.dicom.forwarder import ForwardError, Forwarder
from sgf_deploy.dicom.journal import Journal
from sgf_deploy.dicom.node import PollingLoop
from sgf_deploy.dicom.rules import from_patterns, load_rules
from sgf_deploy.dicom.scheduler import schedule
from sgf_deploy.dicom.settings import Allowed, NodeSettings, parse_destination
from sgf_deploy.errors import InputError


def instance(study: str, series: str, sop: str, desc: str = "", frame: str = "1.9") -> dict:
    return {"sop_uid": sop, "study_uid": study, "series_uid": series, "sop_class": "1.2.840.10008.5.1.4.1.1.4",
            "path": f"/spool/{study}/{series}/{sop}.dcm", "description": desc, "protocol": "", "frame_of_reference": frame}


@pytest.fixture
def journal(tmp_path):
    j = Journal(tmp_path)
    yield j
    j.close()


def jobs(journal: Journal) -> list[dict]:
    return [dict(r) for r in journal.query("SELECT * FROM jobs ORDER BY id")]


def test_settle_pair_and_one_job_per_target(journal):
    t0 = 1000.0
    journal.add_instance(instance("1.1", "1.1.1", "1.1.1.1", "T1"), "reference", "SCANNER", now=t0)
    journal.add_instance(instance("1.1", "1.1.2", "1.1.2.1", "T2"), "target", "SCANNER", now=t0)
    assert not schedule(journal, settle=5, pair_timeout=60, now=t0 + 4)  # not settled yet
    journal.add_instance(instance("1.1", "1.1.2", "1.1.2.2", "T2"), "target", "SCANNER", now=t0 + 4)
    assert schedule(journal, settle=5, pair_timeout=60, now=t0 + 6)  # the reference settles; the target not
    assert jobs(journal) == []
    assert schedule(journal, settle=5, pair_timeout=60, now=t0 + 10)
    (job,) = jobs(journal)
    assert (job["ref_series"], job["tar_series"], job["state"], job["received_at"]) == ("1.1.1", "1.1.2", "paired", t0)
    # the same target sent again (same SOP UIDs) makes no second job
    journal.add_instance(instance("1.1", "1.1.2", "1.1.2.1", "T2"), "target", "SCANNER", now=t0 + 20)
    schedule(journal, settle=5, pair_timeout=60, now=t0 + 30)
    assert len(jobs(journal)) == 1
    assert journal.query("SELECT COUNT(*) AS n FROM instances")[0]["n"] == 3


def test_pairing_prefers_same_frame_of_reference_and_waits_for_an_arriving_reference(journal):
    t0 = 1000.0
    journal.add_instance(instance("2.1", "2.1.1", "2.1.1.1", frame="9.9"), "reference", "S", now=t0)
    journal.add_instance(instance("2.1", "2.1.2", "2.1.2.1", frame="7.7"), "reference", "S", now=t0)
    journal.add_instance(instance("2.1", "2.1.3", "2.1.3.1", frame="7.7"), "target", "S", now=t0)
    schedule(journal, settle=1, pair_timeout=60, now=t0 + 2)
    assert jobs(journal)[0]["ref_series"] == "2.1.2"
    # a target whose study's reference is still arriving waits, then pairs; one alone fails
    journal.add_instance(instance("3.1", "3.1.1", "3.1.1.1"), "target", "S", now=t0)
    journal.add_instance(instance("3.1", "3.1.2", "3.1.2.1"), "reference", "S", now=t0 + 100)
    journal.add_instance(instance("4.1", "4.1.1", "4.1.1.1"), "target", "S", now=t0)
    schedule(journal, settle=1, pair_timeout=50, now=t0 + 100.5)
    assert [j["tar_series"] for j in jobs(journal)] == ["2.1.3"]
    failed = journal.query("SELECT series_uid, reason FROM series WHERE state='failed'")
    assert [r["series_uid"] for r in failed] == ["4.1.1"] and "no reference series" in failed[0]["reason"]
    schedule(journal, settle=1, pair_timeout=50, now=t0 + 102)
    assert [j["tar_series"] for j in jobs(journal)] == ["2.1.3", "3.1.1"]


def test_roles_ignored_and_ambiguous(journal):
    journal.add_instance(instance("5.1", "5.1.1", "5.1.1.1"), None, "S", now=1.0)
    journal.add_instance(instance("5.1", "5.1.2", "5.1.2.1"), "ambiguous", "S", now=1.0)
    states = {r["series_uid"]: (r["state"], r["reason"]) for r in journal.query("SELECT * FROM series")}
    assert states["5.1.1"][0] == "ignored" and states["5.1.2"] == ("failed", "matches both the reference and the target rules")


def _reconstructed_job(journal: Journal, tmp_path: Path, dests: list[str]) -> int:
    journal.add_instance(instance("6.1", "6.1.1", "6.1.1.1"), "reference", "S", now=1.0)
    journal.add_instance(instance("6.1", "6.1.2", "6.1.2.1"), "target", "S", now=1.0)
    schedule(journal, settle=0, pair_timeout=60, now=2.0)
    out = tmp_path / "job1"
    out.mkdir()
    (out / "IM00001.dcm").write_bytes(b"x")
    journal.reconstructed(1, str(out), 1, 0.1, [], dests)
    return 1


def test_forwarder_backs_off_while_down_then_forwards_once(journal, tmp_path):
    settings = NodeSettings(forward=(parse_destination("PACS@127.0.0.1:104"),), retry_min=0.05, retry_max=0.2)
    calls: list[float] = []
    up = threading.Event()

    def send(files, dest, calling):
        calls.append(time.time())
        if not up.is_set():
            raise ForwardError(f"{dest}: association no connection")

    fwd = Forwarder(settings, journal, echo=lambda m: None, send=send)
    assert [fwd.backoff(n) for n in (1, 2, 3, 4, 5)] == [0.05, 0.1, 0.2, 0.2, 0.2]
    _reconstructed_job(journal, tmp_path, ["PACS@127.0.0.1:104"])
    assert fwd.step() and len(calls) == 1
    assert not fwd.step()  # backing off: not due yet
    time.sleep(0.06)
    fwd.step()
    assert len(calls) == 2 and journal.attempts(1, "PACS@127.0.0.1:104") == 2
    pending = journal.query("SELECT last_error FROM forwards")[0]["last_error"]
    assert "no connection" in pending
    up.set()
    time.sleep(0.11)
    assert fwd.step()
    assert journal.job(1)["state"] == "forwarded"
    assert not fwd.step() and len(calls) == 3


def test_polling_loop_survives_a_failing_step():
    stop = threading.Event()
    seen = []

    def step():
        seen.append(1)
        if len(seen) == 1:
            raise RuntimeError("database is locked")
        if len(seen) >= 3:
            stop.set()
        return True

    messages = []
    loop = PollingLoop("worker", step, 0.01, stop, messages.append)
    loop.start()
    loop.join(timeout=5)
    assert len(seen) >= 3 and "database is locked" in messages[0]


def test_rules_patterns_and_file(tmp_path):
    from pydicom.dataset import Dataset

    def header(**kw):
        ds = Dataset()
        for k, v in kw.items():
            setattr(ds, k, v)
        return ds

    rules = from_patterns("t1", "t2|flair")
    assert rules.role(header(SeriesDescription="AX T1 SE")) == "reference"
    assert rules.role(header(SeriesDescription="", ProtocolName="t2_tse_tra")) == "target"
    assert rules.role(header(SeriesDescription="localizer")) is None
    assert rules.role(header(SeriesDescription="T1 FLAIR")) == "ambiguous"
    f = tmp_path / "routing.toml"
    f.write_text('[[reference]]\ndescription = "mprage"\n\n[[target]]\ndescription = "t2"\necho_time = [60, 150]\n')
    rules = load_rules(f)
    assert rules.role(header(SeriesDescription="T2 TSE", EchoTime="100")) == "target"
    assert rules.role(header(SeriesDescription="T2 TSE", EchoTime="20")) is None
    assert rules.role(header(SeriesDescription="MPRAGE")) == "reference"
    f.write_text('{"reference": [{"descripton": "t1"}], "target": [{"description": "t2"}]}')
    with pytest.raises(InputError, match="unknown key 'descripton'"):
        load_rules(f.rename(tmp_path / "r.json"))
    with pytest.raises(InputError, match="not a regular expression"):
        from_patterns("t1(", "t2")


def test_settings_parsing():
    d = parse_destination("PACS@10.1.2.3:104")
    assert (d.ae_title, d.host, d.port, str(d)) == ("PACS", "10.1.2.3", 104, "PACS@10.1.2.3:104")
    for bad in ("PACS@host", "PACS:104", "WAY_TOO_LONG_AE_TITLE@h:1", "P@h:70000"):
        with pytest.raises(InputError):
            parse_destination(bad)
    assert Allowed.parse("SCANNER").admits("SCANNER", "10.0.0.1")
    assert not Allowed.parse("SCANNER@10.0.0.2").admits("SCANNER", "10.0.0.1")
    assert Allowed.parse("@10.0.0.1").admits("ANY", "10.0.0.1")


def test_one_node_per_spool(tmp_path):
    from sgf_deploy.dicom.node import Node
    from sgf_deploy.errors import SgfError

    first = Node(NodeSettings(spool=tmp_path / "spool"), echo=lambda m: None)
    try:
        with pytest.raises(SgfError, match="spool in use by another node"):
            Node(NodeSettings(spool=tmp_path / "spool"), echo=lambda m: None)
    finally:
        first.stop()
    Node(NodeSettings(spool=tmp_path / "spool"), echo=lambda m: None).stop()  # released on stop


@pytest.mark.parametrize("args, message", [
    (["status", "--spool", "{tmp}/nothing"], "no DICOM node journal here"),
    (["serve", "--spool", "{tmp}/s", "--forward", "PACS@host"], "expected AET@HOST:PORT"),
    (["serve", "--spool", "{tmp}/s", "--ref-match", "t1("], "not a regular expression"),
    (["serve", "--spool", "{tmp}/s", "--allow-ae", "A\\B"], "not a DICOM AE title"),
])
def test_cli_errors_are_one_line(tmp_path, args, message):
    from click.testing import CliRunner

    from sgf_deploy.cli import cli

    result = CliRunner().invoke(cli, ["dicom", *[a.format(tmp=tmp_path) for a in args]])
    assert result.exit_code == 2 and "Traceback" not in result.output
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("sgf-deploy: error:") and message in err, err


def test_a_failed_target_sent_again_is_tried_again(journal):
    journal.add_instance(instance("7.1", "7.1.1", "7.1.1.1"), "reference", "S", now=1.0)
    journal.add_instance(instance("7.1", "7.1.2", "7.1.2.1"), "target", "S", now=1.0)
    schedule(journal, settle=1, pair_timeout=60, now=3.0)
    journal.fail_job(1, "pixel data cannot be decoded")
    journal.add_instance(instance("7.1", "7.1.2", "7.1.2.1"), "target", "S", now=10.0)  # the site re-sends it
    schedule(journal, settle=1, pair_timeout=60, now=12.0)
    assert [(j["tar_series"], j["state"]) for j in jobs(journal)] == [("7.1.2", "paired")]
    # a forwarded result is never redone by a re-send
    journal.set_job(jobs(journal)[0]["id"], state="forwarded")
    journal.add_instance(instance("7.1", "7.1.2", "7.1.2.1"), "target", "S", now=20.0)
    schedule(journal, settle=1, pair_timeout=60, now=30.0)
    assert [j["state"] for j in jobs(journal)] == ["forwarded"]
