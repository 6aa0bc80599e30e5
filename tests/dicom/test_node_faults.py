"""Bad data and unwelcome callers never stop the node: each is refused or quarantined with the
reason in the journal, and the next good study still arrives."""

from __future__ import annotations

import copy
import warnings

import pydicom
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicom_helpers import send, wait_for

MR = "1.2.840.10008.5.1.4.1.1.4"
CT = "1.2.840.10008.5.1.4.1.1.2"


def _associate(port: int, calling: str, contexts: list[str]):
    from pynetdicom import AE

    ae = AE(ae_title=calling)
    for uid in contexts:
        ae.add_requested_context(uid, [ExplicitVRLittleEndian])
    ae.acse_timeout = ae.network_timeout = 10
    return ae.associate("127.0.0.1", port, ae_title="SGF_DEPLOY")


def _series_copy(files, description: str, study_uid: str | None = None) -> list[pydicom.Dataset]:
    """The datasets of ``files`` as a new series (new UIDs), optionally in another study."""
    series = generate_uid()
    out = []
    for f in files:
        ds = copy.deepcopy(pydicom.dcmread(f))
        ds.SeriesInstanceUID, ds.SOPInstanceUID = series, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesDescription = ds.ProtocolName = description
        if study_uid:
            ds.StudyInstanceUID = study_uid
        out.append(ds)
    return out


def test_bad_data_and_callers_are_refused_and_the_node_keeps_serving(tmp_path, study, run_output, node_env, nodes,
                                                                     destinations):
    dest = destinations(tmp_path / "pacs").start()
    node = nodes(tmp_path / "spool", node_env, "--forward", dest.address, "--settle", "0.5", "--pair-timeout", "1",
                 "--allow-ae", "SCANNER", "--allow-ae", "PACSQR@127.0.0.1").start()
    ref_files, tar_files = sorted(study[0].glob("*.dcm")), sorted(study[1].glob("*.dcm"))

    # a caller not in --allow-ae is rejected at association; an allowed AE@host is accepted
    assoc = _associate(node.port, "INTRUDER", [MR])
    assert assoc.is_rejected
    assoc = _associate(node.port, "PACSQR", ["1.2.840.10008.1.1"])
    assert assoc.is_established and assoc.send_c_echo().Status == 0x0000
    assoc.release()

    # a CT image: no presentation context is accepted for it (refused at negotiation)
    assoc = _associate(node.port, "SCANNER", [CT, MR])
    assert assoc.is_established
    assert [c.abstract_syntax for c in assoc.accepted_contexts] == [MR]
    assert [c.abstract_syntax for c in assoc.rejected_contexts] == [CT]
    assoc.release()

    assoc = _associate(node.port, "SCANNER", [MR])
    assert assoc.is_established
    try:
        # an instance with a UID that is not a UID (would be a path outside the spool): quarantined
        bad = copy.deepcopy(pydicom.dcmread(tar_files[0]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns about the invalid UI value: that is the point
            bad.SeriesInstanceUID = "../../etc"
        assert assoc.send_c_store(bad).Status == 0xC000
        # a target series with pixel data too short for Rows x Columns, with its own reference:
        # received, paired, and the job fails with the reason
        study_uid = generate_uid()
        for ds in _series_copy(ref_files, "T1 SE", study_uid):
            assert assoc.send_c_store(ds).Status == 0x0000
        for ds in _series_copy(tar_files, "T2 TSE", study_uid):
            ds.PixelData = ds.PixelData[:100]
            assert assoc.send_c_store(ds).Status == 0x0000
        # a target alone in its study: fails after --pair-timeout
        for ds in _series_copy(tar_files, "T2 TSE", generate_uid()):
            assert assoc.send_c_store(ds).Status == 0x0000
    finally:
        assoc.release()

    def settled():
        info = node.status()
        return info if info["failed_jobs"] and info["failed_series"] else None

    info = wait_for(settled, 30, "the bad job and the lonely target to fail")
    assert "pixel data" in info["failed_jobs"][0]["reason"]
    assert "no reference series" in info["failed_series"][0]["reason"]
    assert "not a valid UID" in info["quarantine"][0]["reason"]

    # ...and a good study still goes through
    send(ref_files + tar_files, node.port, calling="SCANNER")
    wait_for(lambda: node.status()["jobs"].get("forwarded") == 1, 60, "the good study to be forwarded")
    assert len(dest.files()) == 4 and node.proc.poll() is None
