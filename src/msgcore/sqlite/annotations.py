from typing import Annotated

from faststream._internal.context import Context
from faststream.annotations import ContextRepo, Logger
from faststream.params import NoCast

from msgcore.sqlite.broker.broker import SqliteBroker as SB
from msgcore.sqlite.message import SqliteMessage as SM

__all__ = ("ContextRepo", "Logger", "NoCast", "SqliteBroker", "SqliteMessage")

SqliteMessage = Annotated[SM, Context("message")]
SqliteBroker = Annotated[SB, Context("broker")]
