"""Label Studio as alpha's work queue: one project per prefix, tasks in, annotations out.

S3 stays the source of truth. Label Studio only holds what people are working on, so every
operation here is safe to repeat or to kill at any point: the project and its storage are
found by title and bucket before anything is created, push skips images that already have a
task (asked of Label Studio itself), waits out the import of a push that was killed and
removes duplicate tasks (`_import_once`), and pull turns annotations into label records with
`records.upsert_record`, which writes nothing when a label did not change.

Speed matters once a project holds thousands of tasks: tasks are created in bulk imports (one
request per 500 tasks, predictions included), listed through the Data Manager API with only
the fields we read (`include=id,data`, no URI resolution), and annotations are read with the
export endpoint, only for tasks changed since the last pull.

Three modules, one seam each: `connection` (client, errors, project, storage, CORS, task
listing, users), `queue` (push, restore, import once, duplicates) and `pull` (cursor, export,
records). None of them reads result content: the task kind (alpha.kinds) makes the label
config, the pre-annotations and the targets, and reads annotations.
"""

from alpha.labelstudio.connection import (
    SAMPLING,
    SIMULATOR_EMAIL,
    SIMULATOR_USERNAME,
    Connection,
)
from alpha.labelstudio.pull import PullMixin, PullProblem, PullResult
from alpha.labelstudio.queue import PushItem, PushResult, QueueMixin, QueueState

__all__ = [
    "SAMPLING",
    "SIMULATOR_EMAIL",
    "SIMULATOR_USERNAME",
    "Connection",
    "LabelStudioProject",
    "PullProblem",
    "PullResult",
    "PushItem",
    "PushResult",
    "QueueState",
]


class LabelStudioProject(PullMixin, QueueMixin):
    """The Label Studio project that holds one alpha project's annotation queue: the
    connection (alpha.labelstudio.connection), the queue (.queue) and the pull (.pull)."""
