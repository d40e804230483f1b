"""Which Dask cluster the settings name: none (score in the flow's process), a local one of
loop.dask_workers single-threaded processes, or an existing scheduler."""

from __future__ import annotations

from flows.score import dask_scorer, task_runner, uses_dask


def test_no_cluster_unless_the_settings_name_one(settings):
    assert not uses_dask(settings) and dask_scorer(None, settings) is None


def test_a_local_cluster_of_single_threaded_worker_processes(settings):
    settings.loop.dask_workers = 3
    runner = task_runner(settings)
    assert uses_dask(settings) and callable(dask_scorer(None, settings))
    assert runner.address is None
    assert runner.cluster_kwargs == {"n_workers": 3, "threads_per_worker": 1,
                                     "processes": True, "dashboard_address": None}


def test_an_existing_scheduler(settings):
    settings.loop.dask_address = "tcp://10.1.2.3:8786"
    runner = task_runner(settings)
    assert runner.address == "tcp://10.1.2.3:8786" and not runner.cluster_kwargs
