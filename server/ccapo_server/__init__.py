"""ccapo's scoring server: `create_app(settings)` builds it, `python -m ccapo_server` runs it."""

from ccapo_server.app import create_app
from ccapo_server.settings import ServerSettings

__all__ = ["ServerSettings", "create_app"]
