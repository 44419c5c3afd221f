"""Scale-out: export a run for a GPU cluster (TRL under ``accelerate``), and import the trained model back.

- :mod:`.translate` maps a run's workbench settings onto TRL's argument names;
- :mod:`.export` (:func:`export_for_cluster`) writes the self-contained folder: data in TRL's format,
  config.json, and the files of ``template/`` (``train.py``, ``launch.sh``) copied as they are;
- :mod:`.importer` (:func:`import_checkpoint`) brings the trained folder back into a project,
  saving a TRL reward classifier (already the workbench's layout) with the workbench's record and model card;
- :mod:`.common`: what both directions share (format name, result file, the error).

``template/`` is not a package: its ``train.py`` runs on the cluster with only TRL and its
dependencies installed, and is never imported here.
"""

from rlhf_core.io.cluster.common import ALGOS, FORMAT_NAME, RESULT_FILE, ClusterExportError
from rlhf_core.io.cluster.export import HUB_DEFAULT_MODEL, TEMPLATE_FILES, export_for_cluster, template_bytes
from rlhf_core.io.cluster.importer import IMPORT_RUN_KIND, import_checkpoint
from rlhf_core.io.cluster.translate import ALIASES, Translation, translate_config, workbench_defaults

__all__ = [
    "ALGOS", "ALIASES", "FORMAT_NAME", "HUB_DEFAULT_MODEL", "IMPORT_RUN_KIND", "RESULT_FILE", "TEMPLATE_FILES",
    "ClusterExportError", "Translation", "export_for_cluster", "import_checkpoint", "template_bytes",
    "translate_config", "workbench_defaults",
]
