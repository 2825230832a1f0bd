"""What every route needs: the engine, the model store and the settings, plus model lookup."""

from __future__ import annotations

from dataclasses import dataclass

from app.config import Settings
from app.errors import BadRequest, NotFound
from inference.engine import Engine
from inference.store import InvalidModelName, ModelNotFound, ModelStore, StoredModel


@dataclass
class Services:
    engine: Engine
    store: ModelStore
    settings: Settings

    def find_model(self, name: object, *, missing_is_404: bool = False) -> StoredModel:
        """The stored model called ``name``, or Ollama's 400/404 for a missing, bad or unknown one."""
        if name is None or name == "":
            if missing_is_404:
                raise NotFound("model '' not found")
            raise BadRequest("model is required")
        if not isinstance(name, str):
            raise BadRequest('field "model" must be of type string')
        try:
            return self.store.resolve(name)
        except InvalidModelName as error:
            raise BadRequest("invalid model name") from error
        except ModelNotFound as error:
            raise NotFound(f"model '{name}' not found") from error
