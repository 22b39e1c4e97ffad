"""The public plugin API: exactly what plugin authors may import (also importable from
``audit_core`` itself). Everything else in ``audit_core`` may change without notice; these
names keep working, and a change comes with a ``DeprecationWarning`` naming the new call.
Each item is documented in docs/writing-plugins.md ("Utilities")."""

from .base import ddim, seeding
from . import lazy_exports
from .plugin.attacks import Attack, AttackContext, AttackOutput, AttackParams, Batch, flat_sum, mean_over
from .base.config import resolve_path
from .base.errors import AccessError, AuditError, ConfigError, DataError, ModelError, PluginError, PluginFailure
from .run.executors import BatchResult, Executor, ExecutorParams, Job, WorkBatch, build_local, execute_batch
from .plugin.hookspecs import hookimpl
from .base.records import ImageRecord
from .run.reporting import Reporter, ReporterParams, RunView
from .base.seeding import derive_seed, randn
from .plugin.targets import GRADIENTS, NOISE, TEXT, VARIATION, Stats, Target, TargetContext, TargetParams, weights_sha256

from .base import secrets
from .base.config import load_yaml, parse_value
from .base.records import LABEL_NAMES, SET_INFERENCE_BLOCKS
from .copyright.reference import build_generator
from .data import SIXTEEN_BIT_MODES, b64_bytes, png_b64, tensor_to_uint8, to_8bit, to_tensor
from .plugin.factory import build_plugin
from .plugin.generators import Generator, GeneratorParams
from .plugin.targets import PICKLE_SUFFIXES, VaeLatentTarget, pipeline_folder, require_weights, resolve_device, resolve_dtype
from .run.store import write_text
from .base.atomic import atomic_write
from .base.terminal import warn
from .run.sweeps import queries_curve
from .run.thumbnails import thumbnail_path
from .stats import metrics
from .stats.combine import CombiningAttack
from .stats.scorer import calibration_split

# the list itself lives in audit_core/__init__.py (importable without torch); the same names here
from . import __all__ as _public  # noqa: E402

__all__ = [name for name in _public if name != "__version__"]
