"""What counts as bad input, as opposed to a bug: the errors a user's project file, catalog, data,
expression or command-line value (or an unreachable `compute.dask_address`) can cause. Each
carries a one-line, located message.

Both ends report them in one line and never with a traceback: the CLI (`offerflow.cli.common`)
prints `error: <message>`, and a flow run (`offerflow.flows.bad_input`) ends `BadInput` with the
message logged once. Importing this module loads pandas, pyarrow and duckdb (the modules that
define the errors), so the CLI imports it only when an error reaches it.
"""

from __future__ import annotations

from offerflow.core.config import ConfigError
from offerflow.core.partitions import PartitionError
from offerflow.core.project_lock import ProjectLocked
from offerflow.core.store_files import StoreError
from offerflow.customer_ai.goals import GoalError
from offerflow.customer_ai.segments import SegmentError
from offerflow.decisioning.decision_types import DecisionError
from offerflow.decisioning.switches import ServingError
from offerflow.evaluation.holdout import DecisionLogError
from offerflow.ingest.catalog import CatalogError
from offerflow.ingest.events import EventFileError
from offerflow.ingest.snapshot import ValidationFailed
from offerflow.models.cluster import ClusterError
from offerflow.rules.capping import CapError
from offerflow.rules.parser import ExpressionError

BAD_INPUT_ERRORS: tuple[type[Exception], ...] = (
    ConfigError, CatalogError, EventFileError, ValidationFailed, GoalError, SegmentError, DecisionError,
    ExpressionError, CapError, StoreError, ServingError, DecisionLogError, PartitionError, FileNotFoundError,
    ProjectLocked, ClusterError)
