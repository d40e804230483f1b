"""The `alpha` command line: the local stack, ingest, rounds, the schedule and the demo.

Errors alpha raises on purpose (AlphaError) are printed as one clear message with exit
code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from alpha.errors import AlphaError

app = typer.Typer(help="alpha: human-in-the-loop active learning for images.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
stack_app = typer.Typer(help="The local stack: S3 (SeaweedFS), Label Studio, Prefect server.",
                        no_args_is_help=True)
app.add_typer(stack_app, name="stack")
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML config file (default ./alpha.toml).")
]


def friendly_errors(command):
    """Show AlphaError as its message, not a traceback: the message already says what to do."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except AlphaError as error:
            err_console.print(f"[bold red]error:[/] {error}", highlight=False)
            raise typer.Exit(2) from None
        except Exception as error:
            refused = _prefect_refusal(error)
            if refused is None:
                raise
            err_console.print(f"[bold red]error:[/] {refused}", highlight=False)
            raise typer.Exit(2) from None

    return wrapper


def _prefect_refusal(error: Exception) -> AlphaError | None:
    """A Prefect server's 401 as flows.access words it. Looked for only once Prefect is
    loaded (an error from Prefect means it is), so a command that never talks to Prefect
    does not import it, and one that does imports it after _settings pointed it."""
    if "prefect" not in sys.modules:
        return None
    from flows.access import prefect_refusal

    return prefect_refusal(error)


def _settings(config: Path | None):
    from alpha.config import load_settings, point_prefect_at

    settings = load_settings(config)
    point_prefect_at(settings)
    return settings


# ---- stack -------------------------------------------------------------------------------
@stack_app.command("up")
@friendly_errors
def stack_up(
    db: Annotated[str | None, typer.Option(
        help="Label Studio's database, remembered for this install: sqlite (the default, "
        "enough for one annotator) or postgres (for a team annotating at once).")] = None,
    only: Annotated[str | None, typer.Option(
        help="Start only these services, comma-separated (e.g. s3,labelstudio).")] = None,
) -> None:
    """Install what is missing and start every service (idempotent)."""
    from infra import stack

    creds = stack.up(log=lambda line: console.print(f"[cyan]stack[/] {line}", highlight=False),
                     db=db, only=only.split(",") if only else None)
    where = stack.stack_paths().credentials
    console.print(
        f"Label Studio: {stack.SERVICES['labelstudio'].url}  login: {creds['ls_username']}"
        f"  password: see {where} (ls_password)\n"
        f"Prefect: {stack.SERVICES['prefect'].url}  login: the whole prefect_auth_string in "
        f"{where}", highlight=False
    )


@stack_app.command("down")
@friendly_errors
def stack_down() -> None:
    """Stop the services this stack started (by their recorded PIDs)."""
    from infra import stack

    stack.down(log=lambda line: console.print(f"[cyan]stack[/] {line}", highlight=False))


@stack_app.command("status")
@friendly_errors
def stack_status() -> None:
    """Show each service: URL, PID, health, log file. Exit 1 when one is not healthy."""
    from infra import stack

    rows = stack.status()
    table = Table("service", "url", "pid", "healthy", "log")
    for row in rows:
        table.add_row(row["service"], row["url"], str(row["pid"] or "-"),
                      "yes" if row["healthy"] else "no", row["log"])
    console.print(table)
    console.print(f"Label Studio's database: {stack.labelstudio_db()}", highlight=False)
    if not all(row["healthy"] for row in rows):
        raise typer.Exit(1)


# ---- the loop ----------------------------------------------------------------------------
@app.command()
@friendly_errors
def ingest(
    path: Annotated[Path, typer.Argument(help="Folder of PNG/JPEG images.")],
    labels: Annotated[
        Path | None, typer.Option(help="CSV of known labels: filename,label (the seed set).")
    ] = None,
    masks: Annotated[
        Path | None, typer.Option(help="Folder of known masks (segmentation): single-channel "
                                  "PNGs of class indices named like the images "
                                  "(images/a/b.jpg <-> masks/a/b.png); the seed set.")
    ] = None,
    coco: Annotated[
        Path | None, typer.Option(help="COCO instances JSON of known objects (instance, "
                                  "panoptic): polygons or RLE; the images it lists are the "
                                  "seed set.")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Copy a folder of images (and known labels, masks or COCO objects) into the bucket."""
    from alpha.ingest import ingest_folder
    from alpha.progress import bar, terminal_bars
    from alpha.store import Store

    settings = _settings(config)
    with terminal_bars(err_console):
        report = ingest_folder(Store.from_settings(settings), settings, path, labels,
                               masks=masks, coco=coco,
                               progress=bar("ingest: checking and uploading images"))
    console.print(report.summary(), highlight=False)
    for problem in report.problems:
        err_console.print(f"[yellow]skipped:[/] {problem}", highlight=False)


@app.command("round")
@friendly_errors
def run_round(
    config: ConfigOption = None,
    strategy: Annotated[str | None, typer.Option(help="Override loop.strategy.")] = None,
) -> None:
    """Run one active learning round (pull, train, score, select, push) as a Prefect flow."""
    from alpha.progress import terminal_bars
    from alpha.status import describe_round

    settings = _settings(config)
    from flows.round import active_learning_round  # after _settings: it points Prefect

    with terminal_bars(err_console):  # the flow's long steps draw on it (alpha.progress)
        result = active_learning_round(config_file=str(config) if config else None,
                                       strategy=strategy or settings.loop.strategy)
    console.print(describe_round(result), highlight=False)


@app.command()
@friendly_errors
def status(config: ConfigOption = None) -> None:
    """Show the project: labels by status and class, the annotators' queue, the latest model,
    the last rounds and whether a round is unfinished."""
    from alpha.errors import ServiceUnavailable
    from alpha.history import read_history
    from alpha.labelstudio import LabelStudioProject, QueueState
    from alpha.status import status_view
    from alpha.store import Store

    settings = _settings(config)
    store = Store.from_settings(settings)
    history = read_history(store, settings)
    queue: QueueState | str
    try:
        project = LabelStudioProject(settings, store)
        if project.existing_project_id() is None:  # a status never creates the project
            queue = f"no Label Studio project {settings.project_title!r} yet"
        else:
            queue = project.queue_state()
    except ServiceUnavailable as error:  # the bucket's part is still worth showing
        queue = str(error)
    console.print(status_view(history, queue))


@app.command()
@friendly_errors
def pull(
    config: ConfigOption = None,
    full: Annotated[bool, typer.Option(help="Re-read every annotated task.")] = False,
) -> None:
    """Bring finished annotations from Label Studio into the bucket's label records."""
    from alpha.loop import open_context

    settings = _settings(config)
    from flows.locks import project_lock  # after _settings: Prefect reads its URL on import

    with project_lock(settings, "pull"):  # the cursor moves under one pull at a time
        result = open_context(config).project.pull(full=full)
    console.print(f"pulled: {result.new} new, {result.updated} updated, {result.unchanged} "
                  f"unchanged, {result.skipped} skipped, {result.retracted} retracted",
                  highlight=False)
    for problem in result.problems:
        err_console.print(f"[yellow]not written:[/] task {problem.task_id} "
                          f"({problem.image_id}): {problem.reason}", highlight=False)


@app.command()
@friendly_errors
def push(config: ConfigOption = None) -> None:
    """Send the latest round's selection to Label Studio (again: nothing is sent twice)."""
    from alpha.errors import DataError
    from alpha.loop import open_context, push_step
    from alpha.progress import bar, terminal_bars
    from alpha.rounds import latest_selected_round

    settings = _settings(config)
    from flows.locks import project_lock  # after _settings: Prefect reads its URL on import

    with project_lock(settings, "round"):  # not under a running round's feet
        ctx = open_context(config)
        round_id = latest_selected_round(ctx.store)
        if round_id is None:
            raise DataError("Nothing to push: no round has selected images yet. Run `alpha "
                            "round` first (it trains, selects and pushes).")
        with project_lock(settings, "queue"), terminal_bars(err_console):
            result = push_step(ctx, round_id, progress=bar("push: tasks"))
    console.print(f"{round_id}: {result}", highlight=False)


@app.command()
@friendly_errors
def relabel(config: ConfigOption = None) -> None:
    """Refill the Label Studio project with every label in the bucket (after Label Studio
    lost its database, or the project was deleted): one task per labeled image, carrying
    its label."""
    from alpha.loop import open_context
    from alpha.records import read_all_records

    _settings(config)
    ctx = open_context(config)
    result = ctx.project.restore(read_all_records(ctx.store).values())
    console.print(f"restored {len(result.created)} labeled tasks to project "
                  f"{result.project_id} ({len(result.already_present)} were there)",
                  highlight=False)


@app.command()
@friendly_errors
def report(
    config: ConfigOption = None,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Where to write the HTML page (default ./alpha-report-PREFIX.html)."
    )] = None,
) -> None:
    """Write one self-contained HTML page of plots about the project (learning curve, labels
    per class, agreement, throughput, queue, model versions), from the bucket."""
    from alpha.report import default_report_path, write_report
    from alpha.store import Store

    settings = _settings(config)
    path = write_report(Store.from_settings(settings), settings,
                        out or default_report_path(settings.s3.prefix))
    console.print(str(path.resolve()), highlight=False, soft_wrap=True)


@app.command()
@friendly_errors
def serve(config: ConfigOption = None) -> None:
    """Serve the round on loop.schedule_cron, the pull every loop.pull_interval_s, and
    train-and-select, which the pull starts after loop.retrain_after new labels."""
    settings = _settings(config)
    from flows.serve import serve_rounds

    serve_rounds(settings, config_file=str(config) if config else None)


@app.command()
@friendly_errors
def demo(
    simulate_rounds: Annotated[
        int, typer.Option(help="Rounds to run with the simulated annotator (0 = one real round).")
    ] = 0,
    pool: Annotated[int | None, typer.Option(
        help="Unlabeled images in the pool (default: 3000; semantic 300, instance 40, "
             "panoptic 200).")] = None,
    seed_labels: Annotated[int | None, typer.Option(
        help="Known labels to start from (default: 300; semantic 20, instance 8, panoptic "
             "30).")] = None,
    kind: Annotated[str, typer.Option(
        help="Task kind: classification (Fashion-MNIST), semantic (garment scenes with "
             "masks), instance (stardist's nuclei, a mask per nucleus) or panoptic (garments "
             "as things on wall, floor and grass as stuff).")] = "classification",
) -> None:
    """Set up a real dataset, run the loop, and print where to label."""
    from alpha.demo import run_demo
    from alpha.progress import terminal_bars

    with terminal_bars(err_console):  # the rounds' long steps draw on it
        run_demo(console, simulate_rounds=simulate_rounds, pool_size=pool,
                 seed_size=seed_labels, kind=kind)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
