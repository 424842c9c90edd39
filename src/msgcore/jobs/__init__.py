"""Jobs: ids with persisted status and results, the client that submits and waits."""

from msgcore.jobs.client import Client
from msgcore.jobs.job import ALL, FIRST, Job, ReturnWhen, WaitResult
from msgcore.jobs.sync import SyncClient, SyncJob

__all__ = ["ALL", "FIRST", "Client", "Job", "ReturnWhen", "SyncClient", "SyncJob", "WaitResult"]
