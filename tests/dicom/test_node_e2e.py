"""The node as a site runs it: ``sgf-deploy dicom serve`` child processes on loopback, studies sent
with DCMTK ``storescu``, results received by DCMTK ``storescp`` (pynetdicom when DCMTK is absent)."""

from __future__ import annotations

import shutil
import subprocess
import time

import numpy as np
import pydicom

from dicom_helpers import CLI, DCMTK, send, wait_for


def dciodvfy_errors(path) -> list[str]:
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]


def test_study_arrives_reconstructed_equal_to_run(tmp_path, study, run_output, node_env, nodes, destinations):
    dest = destinations(tmp_path / "pacs").start()
    node = nodes(tmp_path / "spool", node_env, "--forward", dest.address, "--settle", "0.5").start()
    if DCMTK:
        echo = subprocess.run(["echoscu", "-aec", "SGF_DEPLOY", "127.0.0.1", str(node.port)], capture_output=True)
        assert echo.returncode == 0, echo.stderr
    files = sorted(study[0].glob("*.dcm")) + sorted(study[1].glob("*.dcm"))
    send(files, node.port)
    got = wait_for(lambda: len(dest.files()) >= 4 and dest.files(), 60, "4 results at the destination")
    time.sleep(0.5)  # nothing more may arrive
    assert len(dest.files()) == 4
    received = {d.SOPInstanceUID: d for d in (pydicom.dcmread(f) for f in got)}
    expected = {d.SOPInstanceUID: d for d in (pydicom.dcmread(f) for f in sorted(run_output.glob("*.dcm")))}
    # same deterministic UIDs and the same pixels as `sgf-deploy run` on the two series
    assert received.keys() == expected.keys()
    for uid, ds in received.items():
        assert np.array_equal(ds.pixel_array, expected[uid].pixel_array)
        assert ds.ImageType[:2] == ["DERIVED", "SECONDARY"] and ds.Manufacturer == "sgf-deploy"
        assert "RescaleSlope" not in ds
        assert {s.ReferencedSOPInstanceUID for s in ds.SourceImageSequence} <= (
            {pydicom.dcmread(f).SOPInstanceUID for f in files})
    if shutil.which("dciodvfy"):
        for f in got:
            assert dciodvfy_errors(f) == [], f
    info = node.status()
    assert info["jobs"] == {"forwarded": 1} and info["failed_jobs"] == [] and info["quarantine"] == []
    status = subprocess.run([*CLI, "dicom", "status", "--spool", str(node.spool)], capture_output=True, text=True,
                            env=node_env, timeout=60)
    assert status.returncode == 0 and "forwarded 1" in status.stdout, status.stdout + status.stderr


def test_kill9_after_receive_then_restart_forwards_exactly_once(tmp_path, study, run_output, node_env, nodes,
                                                                destinations):
    """kill -9 right after the study was acknowledged (before it settled), destination down while the
    node restarts: the study arrives exactly once when the destination comes back."""
    dest = destinations(tmp_path / "pacs")  # not started yet: the destination is down
    spool = tmp_path / "spool"
    args = ("--forward", dest.address, "--settle", "1", "--retry-min", "0.5", "--retry-max", "1")
    node = nodes(spool, node_env, *args).start()
    targets, proposal = sorted(study[1].glob("*.dcm")), ()
    if DCMTK and shutil.which("dcmcrle"):  # the target series RLE-compressed: accepted and decoded like uncompressed
        (tmp_path / "rle").mkdir()
        for f in targets:
            subprocess.run(["dcmcrle", str(f), str(tmp_path / "rle" / f.name)], check=True, timeout=30)
        targets = sorted((tmp_path / "rle").glob("*.dcm"))
        assert pydicom.dcmread(targets[0]).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.5"
        proposal = ("--propose-rle",)
    send(sorted(study[0].glob("*.dcm")) + targets, node.port, storescu_args=proposal)
    node.kill9()  # every C-STORE was answered success: all 8 instances must be durable
    assert node.status()["instances"] == 8
    restarted = nodes(spool, node_env, *args, port=node.port).start()
    wait_for(lambda: restarted.status()["pending_forwards"], 60, "the result to wait for the destination")
    dest.start()
    wait_for(lambda: restarted.status()["jobs"].get("forwarded") == 1, 60, "the job to be forwarded")
    time.sleep(1.0)
    files = dest.files()  # storescp --unique-filenames: a second send would be a second file
    assert len(files) == 4
    assert len({pydicom.dcmread(f).SOPInstanceUID for f in files}) == 4
    info = restarted.status()
    assert info["jobs"] == {"forwarded": 1} and info["recent"][0]["slices"] == 4

