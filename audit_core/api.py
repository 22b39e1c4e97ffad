"""The public plugin API: exactly what plugin authors may import (also importable from
``audit_core`` itself). Everything else in ``audit_core`` may change without notice; these
names keep working, and a change comes with a ``DeprecationWarning`` naming the new call.
Each item is documented in docs/writing-plugins.md ("Utilities")."""

from . import ddim, lazy_exports, seeding
from .attacks import Attack, AttackContext, AttackOutput, AttackParams, Batch, flat_sum, mean_over
from .config import resolve_path
from .errors import AccessError, AuditError, ConfigError, DataError, ModelError, PluginError, PluginFailure
from .executors import BatchResult, Executor, ExecutorParams, Job, WorkBatch, build_local, execute_batch
from .hookspecs import hookimpl
from .records import ImageRecord
from .reporting import Reporter, ReporterParams, RunView
from .seeding import derive_seed, randn
from .targets import GRADIENTS, NOISE, TEXT, VARIATION, Stats, Target, TargetContext, TargetParams, weights_sha256

# the list itself lives in audit_core/__init__.py (importable without torch); the same names here
from . import __all__ as _public  # noqa: E402

__all__ = [name for name in _public if name != "__version__"]
