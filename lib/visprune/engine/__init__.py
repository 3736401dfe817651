"""The engine: configurations, data-set specs, the run cache, the runner, profiles and the
command line (DESIGN.md section 4).

- :mod:`.config`: :class:`RunConfig`, method parameters completed from the method registry;
- :mod:`.datasets`: the data-set specs (reader, task, metrics, files, profile paths);
- :mod:`.profiles`: where a profile's model and data live;
- :mod:`.cache`: content-keyed, atomic, resumable chunk files and locks;
- :mod:`.model_files`: what is read from a checkpoint without loading it;
- :mod:`.runner`: :class:`Evaluator`, which runs configurations and grids;
- :mod:`.summary`: headline metrics of a run by its data set's task;
- :mod:`.cli`: ``python -m visprune``.

Imports the instrument, the metrics, the readers and the toy world; nothing on the book side.
"""

from visprune.engine.cache import CacheWriteError, read_chunk, write_chunk
from visprune.engine.config import ENGINE_VERSION, RunConfig, complete_params, method_parameters, validate_config
from visprune.engine.datasets import DATASET_SPECS, DATASETS, DatasetSpec, chair_truth, dataset_spec, load_samples
from visprune.engine.model_files import model_fingerprint, model_shape
from visprune.engine.profiles import PROFILES, Profile, resolve_profile, with_results
from visprune.engine.runner import RECORD_COLUMNS, Evaluator, Processes, plan_chunks
from visprune.engine.summary import LOW_ANSWER_MASS, LowAnswerMassWarning, answer_mass_warning, summarize

__all__ = [
    "DATASETS", "DATASET_SPECS", "ENGINE_VERSION", "LOW_ANSWER_MASS", "PROFILES", "RECORD_COLUMNS", "CacheWriteError",
    "DatasetSpec", "Evaluator", "chair_truth", "load_samples", "read_chunk", "write_chunk", "LowAnswerMassWarning", "Processes", "Profile", "RunConfig", "answer_mass_warning",
    "complete_params", "dataset_spec", "method_parameters", "model_fingerprint", "model_shape", "plan_chunks",
    "resolve_profile", "summarize", "validate_config", "with_results",
]
