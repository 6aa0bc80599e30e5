"""The DICOM node: receive series over the network, pair, reconstruct, forward -- and lose nothing.

``sgf-deploy dicom serve`` runs :class:`~sgf_deploy.dicom.node.Node`:

* :mod:`.scp` -- the C-STORE / C-ECHO service class provider (pynetdicom): every instance is on
  disk (fsync) in the spool (:mod:`.spool`) and in the journal before the response says success;
* :mod:`.journal` -- SQLite: instances, series, jobs (``paired -> reconstructed -> forwarded``, or
  ``failed`` with the reason), per-destination forwarding and the quarantine;
* :mod:`.rules` -- which series is a reference and which a target;
* :mod:`.scheduler` -- a series is complete after ``settle`` seconds without new instances;
  targets are paired with a reference of the same study;
* :mod:`.worker` -- reconstructs through :func:`sgf_deploy.runtime.pipeline.reconstruct_volumes`
  (the code ``sgf-deploy run`` uses) and writes the derived series with the same writer;
* :mod:`.forwarder` -- C-STORE SCU to each destination, with back-off while it is down;
* :mod:`.status` -- what ``sgf-deploy dicom status`` prints.

pynetdicom is imported lazily (``pip install 'sgf-deploy[dicom]'``).
"""

from .settings import Destination, NodeSettings, parse_destination

__all__ = ["Destination", "NodeSettings", "parse_destination"]
