"""jobkit: an in-process, embeddable job manager.

Run jobs, and manage them: cancel a running job and keep its partial output, delete a
finished job with every artifact it wrote (or soft-delete it for audit), sweep expired
jobs, boost priorities, keep tenants apart, and know who did what.
"""

from typing import TYPE_CHECKING

from ._context import JobContext as JobContext
from ._context import SyncJobContext as SyncJobContext
from ._errors import ArtifactNotFound as ArtifactNotFound
from ._errors import BackendError as BackendError
from ._errors import InvalidInput as InvalidInput
from ._errors import InvalidState as InvalidState
from ._errors import JobCancelled as JobCancelled
from ._errors import JobkitError as JobkitError
from ._errors import JobNotFound as JobNotFound
from ._errors import PermissionDenied as PermissionDenied
from ._errors import Unauthenticated as Unauthenticated
from ._events import EventStream as EventStream
from ._manager import SWEEPER as SWEEPER
from ._manager import JobManager as JobManager
from ._policies import Action as Action
from ._policies import DefaultAuthorizer as DefaultAuthorizer
from ._policies import DeleteMode as DeleteMode
from ._policies import DeletePolicy as DeletePolicy
from ._policies import Retention as Retention
from ._records import Actor as Actor
from ._records import AuditAction as AuditAction
from ._records import AuditRecord as AuditRecord
from ._records import EventType as EventType
from ._records import Job as Job
from ._records import JobEvent as JobEvent
from ._records import JobStatus as JobStatus
from ._records import Page as Page
from ._records import Retry as Retry
from ._records import Schedule as Schedule
from ._records import SweepReport as SweepReport
from ._token import CancelSource as CancelSource
from ._token import CancelToken as CancelToken
from ._version import __version__ as __version__

if TYPE_CHECKING:
    from ._blocking import BlockingJobManager as BlockingJobManager
del TYPE_CHECKING


def __getattr__(name: str) -> object:
    # The blocking facade pulls in anyio's thread portal machinery (concurrent.futures):
    # imported on first use, so `import jobkit` stays quick for async hosts.
    if name == "BlockingJobManager":
        from ._blocking import BlockingJobManager

        globals()[name] = BlockingJobManager
        return BlockingJobManager
    raise AttributeError(f"module 'jobkit' has no attribute {name!r}")


__all__ = [
    "SWEEPER",
    "Action",
    "Actor",
    "ArtifactNotFound",
    "AuditAction",
    "AuditRecord",
    "BackendError",
    "BlockingJobManager",
    "CancelSource",
    "CancelToken",
    "DefaultAuthorizer",
    "DeleteMode",
    "DeletePolicy",
    "EventStream",
    "EventType",
    "InvalidInput",
    "InvalidState",
    "Job",
    "JobCancelled",
    "JobContext",
    "JobEvent",
    "JobManager",
    "JobNotFound",
    "JobStatus",
    "JobkitError",
    "Page",
    "PermissionDenied",
    "Unauthenticated",
    "Retention",
    "Retry",
    "Schedule",
    "SweepReport",
    "SyncJobContext",
    "__version__",
]
