"""The receiving side: a pynetdicom C-STORE / C-ECHO service class provider.

* Presentation contexts: Verification, MR Image Storage and Enhanced MR Image Storage, each with
  the transfer syntaxes pydicom can decode here (uncompressed always; RLE, JPEG baseline/extended,
  JPEG 2000 when a decoder is installed); anything else is refused at negotiation.
* ``--allow-ae``: an association from a calling AE title / host not on the list is rejected
  (A-ASSOCIATE-RJ, "calling AE title not recognised") before any data is sent.
* A C-STORE is answered *success* only after the instance is a complete file in the spool
  (fsync) and recorded in the journal; an instance that cannot be used is kept in the
  quarantine folder with the reason in the journal, and answered with a failure status.
"""

from __future__ import annotations

from typing import Any, Callable

from ..errors import MissingDependencyError
from .journal import Journal
from .rules import Rules
from .settings import NodeSettings
from .spool import Spool, durable_write, is_uid

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"
ACCEPTED_SOP_CLASSES = (MR_IMAGE_STORAGE, ENHANCED_MR_IMAGE_STORAGE)
VERIFICATION = "1.2.840.10008.1.1"
#: C-STORE statuses (PS3.4 Annex B): success, out of resources, cannot understand.
SUCCESS, OUT_OF_RESOURCES, CANNOT_UNDERSTAND = 0x0000, 0xA700, 0xC000

Echo = Callable[[str], None]


def pynetdicom_module() -> Any:
    try:
        import pynetdicom
    except ImportError:
        raise MissingDependencyError("the DICOM node needs pynetdicom: pip install 'sgf-deploy[dicom]'") from None
    return pynetdicom


def transfer_syntaxes() -> list[str]:
    """Transfer syntaxes whose pixel data pydicom can decode on this installation."""
    from pydicom import uid

    try:
        from pydicom.pixels import get_decoder  # pydicom >= 3
    except ImportError:  # older pydicom: the uncompressed transfer syntaxes only
        return [str(uid.ExplicitVRLittleEndian), str(uid.ImplicitVRLittleEndian)]
    names = ["ExplicitVRLittleEndian", "ImplicitVRLittleEndian", "DeflatedExplicitVRLittleEndian",
             "ExplicitVRBigEndian", "RLELossless", "JPEGBaseline8Bit", "JPEGExtended12Bit", "JPEGLossless",
             "JPEGLosslessSV1", "JPEGLSLossless", "JPEGLSNearLossless", "JPEG2000Lossless", "JPEG2000"]
    out = []
    for name in names:
        ts = getattr(uid, name)
        try:
            if get_decoder(ts).is_available:
                out.append(str(ts))
        except (NotImplementedError, ValueError):
            continue
    return out


class StoreHandler:
    """``EVT_C_STORE``: spool + journal first, then the success status."""

    def __init__(self, spool: Spool, journal: Journal, rules: Rules, echo: Echo) -> None:
        self.spool, self.journal, self.rules, self.echo = spool, journal, rules, echo

    def __call__(self, event: Any) -> int:
        calling = str(event.assoc.requestor.ae_title).strip()
        try:
            raw = event.request.DataSet.getvalue()
            meta = event.file_meta
            ds = event.dataset
        except Exception as exc:  # an undecodable dataset
            return self._quarantine(None, None, f"dataset cannot be parsed ({type(exc).__name__}: {exc})", calling)
        try:
            info = describe_instance(ds)
        except ValueError as exc:
            return self._quarantine(raw, meta, str(exc), calling)
        try:
            path = self.spool.instance_path(info["study_uid"], info["series_uid"], info["sop_uid"])
            durable_write(path, [b"\x00" * 128, b"DICM", _meta_bytes(meta), raw], self.spool.tmp)
            info["path"] = str(path)
            self.journal.add_instance(info, self.rules.role(ds), calling)
        except OSError as exc:  # disk full, permissions: the sender must retry later
            self.echo(f"cannot store {info['sop_uid']} from {calling}: {exc}")
            return OUT_OF_RESOURCES
        return SUCCESS

    def _quarantine(self, raw: bytes | None, meta: Any, reason: str, calling: str) -> int:
        path = None
        try:
            if raw is not None:
                q = self.spool.quarantine_path()
                chunks = [b"\x00" * 128, b"DICM", _meta_bytes(meta), raw] if meta is not None else [raw]
                durable_write(q, chunks, self.spool.tmp)
                path = str(q)
            self.journal.quarantine(path, reason, calling)
        except Exception as exc:  # never let bad data stop the node
            self.echo(f"could not quarantine data from {calling}: {exc}")
        self.echo(f"quarantined data from {calling}: {reason}")
        return CANNOT_UNDERSTAND


def describe_instance(ds: Any, need_pixels: bool = True) -> dict[str, Any]:
    """The identity of an instance; ValueError names what is missing or wrong."""
    sop_class = str(ds.get("SOPClassUID", "") or "")
    if sop_class not in ACCEPTED_SOP_CLASSES:
        raise ValueError(f"SOP class {sop_class or '(none)'} is not MR Image or Enhanced MR Image Storage")
    info = {"sop_class": sop_class}
    for key, keyword in (("study_uid", "StudyInstanceUID"), ("series_uid", "SeriesInstanceUID"),
                         ("sop_uid", "SOPInstanceUID")):
        value = str(ds.get(keyword, "") or "").strip()
        if not is_uid(value):
            raise ValueError(f"{keyword} '{value[:80]}' is missing or not a valid UID")
        info[key] = value
    if "Rows" not in ds or "Columns" not in ds or (need_pixels and "PixelData" not in ds):
        raise ValueError(f"instance {info['sop_uid']} has no image (Rows/Columns/PixelData missing)")
    info["description"] = str(ds.get("SeriesDescription", "") or "")
    info["protocol"] = str(ds.get("ProtocolName", "") or "")
    info["frame_of_reference"] = str(ds.get("FrameOfReferenceUID", "") or "")
    return info


def _meta_bytes(meta: Any) -> bytes:
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_file_meta_info

    buf = DicomBytesIO()
    write_file_meta_info(buf, meta, enforce_standard=True)
    return buf.getvalue()


def association_filter(settings: NodeSettings, echo: Echo) -> Callable[[Any], None]:
    """``EVT_REQUESTED``: reject callers not admitted by ``--allow-ae`` before negotiation."""

    def on_requested(event: Any) -> None:
        if not settings.allow:
            return
        rq = event.assoc.requestor  # its ae_title is filled in only after this event: read the request
        aet, host = str(rq.primitive.calling_ae_title or "").strip(), str(rq.address)
        if not any(a.admits(aet, host) for a in settings.allow):
            echo(f"rejected association from {aet}@{host}: not in --allow-ae")
            event.assoc.acse.send_reject(0x01, 0x01, 0x03)  # permanent, service user, calling AE not recognised
            event.assoc.kill()  # as pynetdicom's own rejection does: lets the DUL send the A-ASSOCIATE-RJ first

    return on_requested


def start_scp(settings: NodeSettings, handler: StoreHandler, echo: Echo) -> Any:
    """Start the listening server (non-blocking); returns pynetdicom's server (``shutdown()``)."""
    pynetdicom = pynetdicom_module()
    ae = pynetdicom.AE(ae_title=settings.ae_title)
    syntaxes = transfer_syntaxes()
    for sop in ACCEPTED_SOP_CLASSES:
        ae.add_supported_context(sop, syntaxes)
    ae.add_supported_context(VERIFICATION)
    ae.maximum_associations = 16
    ae.network_timeout = 60
    handlers = [(pynetdicom.evt.EVT_C_STORE, handler), (pynetdicom.evt.EVT_REQUESTED, association_filter(settings, echo))]
    return ae.start_server((settings.host, settings.port), block=False, evt_handlers=handlers)
